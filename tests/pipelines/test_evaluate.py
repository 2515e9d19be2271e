"""`cli.py evaluate`: methods × sets, NIQE always, PSNR/SSIM with GT, report files, bad input handled."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from models.rrdbnet import RRDBNet
from models.weights import export_generator
from pipelines.inference.enhance import TileState, enhance, prepare_model
from pipelines.inference.evaluate import EvaluateConfig, bicubic_upscale, evaluate, parse_model_spec
from pipelines.inference.quality import niqe
from pipelines.training.metrics import psnr, ssim
from tests.conftest import single_thread_fixture
from tests.pipelines.niqe_cases import read_photo

_one_thread = single_thread_fixture()


def _tiny() -> RRDBNet:
    return RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def data(tmp_path: Path) -> dict:
    lq, gt = tmp_path / "lq", tmp_path / "gt"
    lq.mkdir()
    gt.mkdir()
    astronaut, coffee = read_photo("astronaut.png"), read_photo("coffee.png")
    hr = {"a": astronaut[0:256, 100:356], "b": coffee[40:296, 200:456], "c": astronaut[300:340, 0:40]}
    for name, image in hr.items():
        cv2.imwrite(str(lq / f"{name}.png"), cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4),
                                                          interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(gt / "a.png"), hr["a"])
    cv2.imwrite(str(gt / "b.png"), hr["b"][:200])  # wrong size
    (lq / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    weights = tmp_path / "tiny.pth"
    net = _tiny()
    export_generator(weights, net, net)
    return {"lq": lq, "gt": gt, "weights": weights, "out": tmp_path / "report"}


def _config(data: dict, **kw) -> EvaluateConfig:
    return EvaluateConfig((data["lq"],), data["out"], (("tiny", str(data["weights"])),), bicubic=True,
                          gt=(data["gt"],), tile=0, device="cpu", progress=False, **kw)


def test_report_values_equal_independent_computations(data):
    summary = evaluate(_config(data))
    report = json.loads((data["out"] / "results.json").read_text())
    images = report["sets"]["lq"]["images"]
    lq_a = cv2.imread(str(data["lq"] / "a.png"))
    gt_a = cv2.imread(str(data["gt"] / "a.png"))
    model = prepare_model(_tiny(), torch.device("cpu"))
    expected = {"tiny": enhance(model, lq_a, TileState(0, 0))[0], "bicubic": bicubic_upscale(lq_a, 4)}
    for method, output in expected.items():
        row = images["a.png"]["methods"][method]
        rgb = cv2.cvtColor(output, cv2.COLOR_BGR2RGB)
        want_niqe = float(niqe(torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None])[0])
        assert row["niqe"] == pytest.approx(want_niqe, abs=1e-9)
        gt_rgb = cv2.cvtColor(gt_a, cv2.COLOR_BGR2RGB)
        assert row["psnr"] == pytest.approx(psnr(rgb, gt_rgb, crop_border=4, y_channel=True), abs=1e-9)
        assert row["ssim"] == pytest.approx(ssim(rgb, gt_rgb, crop_border=4, y_channel=True), abs=1e-9)
    # bicubic beats a random tiny net on a natural photo; the table marks it bold
    assert images["a.png"]["methods"]["bicubic"]["psnr"] > images["a.png"]["methods"]["tiny"]["psnr"]
    assert "| bicubic | **" in summary.table
    assert report["methods"]["tiny"]["sha256"] and report["settings"]["crop_border"] == 4
    # bad inputs: reported per file, never a crash
    assert "size mismatch" in images["b.png"]["methods"]["bicubic"]["gt_error"]
    assert images["b.png"]["methods"]["bicubic"]["niqe"] is not None
    assert "smaller than two 96x96 blocks" in images["c.png"]["methods"]["bicubic"]["niqe_error"]
    assert "no GT named c" in images["c.png"]["methods"]["bicubic"]["gt_error"]
    assert [Path(s["file"]).name for s in summary.skipped] == ["broken.jpg"]
    csv_text = (data["out"] / "results.csv").read_text()
    assert "skipped:" in csv_text and csv_text.count("\n") == 1 + 3 * 2 + 1
    sheet = cv2.imread(str(data["out"] / "comparison.png"))
    assert sheet is not None and sheet.shape[1] == 3 * (256 + 4) + 4


def test_existing_report_is_not_overwritten_unless_asked(data):
    evaluate(_config(data, comparison_images=0))
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluate(_config(data))
    evaluate(_config(data, overwrite=True))


def test_cli_exit_code_and_bad_options(data):
    runner = CliRunner()
    args = ["evaluate", "--lq", str(data["lq"]), "--bicubic", "-o", str(data["out"]), "-q", "--device", "cpu"]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 1, result.output  # broken.jpg was skipped
    assert "NIQE" in result.output and "1 image(s) skipped" in result.output
    bad = runner.invoke(cli.main, ["evaluate", "--lq", str(data["lq"]), "--model", "nonsense", "-o", "x"])
    assert bad.exit_code != 0 and "NAME=WEIGHTS" in bad.output
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvaluateConfig((data["lq"],), data["out"])
    assert parse_model_spec("ours = runs/x.pth") == ("ours", "runs/x.pth")


def test_bicubic_is_matlab_imresize_for_gray_and_16_bit():
    gray16 = (np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 97).astype(np.uint16)
    out = bicubic_upscale(gray16, 2)
    assert out.dtype == np.uint16 and out.shape == (48, 40)
    rgb = bicubic_upscale(cv2.cvtColor(gray16, cv2.COLOR_GRAY2BGR), 2)
    assert np.abs(rgb[..., 0].astype(int) - out.astype(int)).max() <= 1
