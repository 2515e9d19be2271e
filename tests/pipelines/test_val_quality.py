"""Validation after each round: NIQE beside PSNR/SSIM, best checkpoint by val_select, curves.png, TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.rrdbnet import RRDBNet
from pipelines.inference.quality import niqe
from pipelines.training.metrics import MetricsWriter
from pipelines.training.train_config import ConfigError, load_train_config, stage_defaults
from pipelines.training.val_quality import ValidationTracker
from pipelines.training.validate import ValidationPair
from tests.conftest import single_thread_fixture
from tests.pipelines.niqe_cases import read_photo

_one_thread = single_thread_fixture()


def _net(seed: int) -> RRDBNet:
    net = RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(seed))
    return net.eval().requires_grad_(False)


def _pairs() -> list[ValidationPair]:
    rgb = cv2.cvtColor(read_photo("astronaut.png"), cv2.COLOR_BGR2RGB)
    pairs = []
    for i, (y, x) in enumerate(((0, 0), (200, 240))):
        gt = np.ascontiguousarray(rgb[y:y + 192, x:x + 192])  # 4 NIQE blocks
        lq = cv2.resize(gt, (48, 48), interpolation=cv2.INTER_AREA)
        pairs.append(ValidationPair(f"k{i}", lq, gt))
    return pairs


def _tracker(run_dir: Path, select: str, val_lq: str = "") -> tuple[ValidationTracker, list[str]]:
    messages: list[str] = []
    return ValidationTracker(run_dir, select, MetricsWriter(run_dir / "metrics.jsonl"), messages.append, val_lq), \
        messages


class _Blend(torch.nn.Module):
    """A model whose output is bicubic x4 blended with a random net: the blend weight orders the quality."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.net, self.weight, self.scale = _net(0), weight, 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
        return (1 - self.weight) * up + self.weight * self.net(x)


def test_niqe_is_recorded_and_best_checkpoint_follows_psnr(tmp_path):
    tracker, messages = _tracker(tmp_path, "psnr")
    pairs = _pairs()
    records = []
    for iteration, weight in ((10, 0.5), (20, 0.05), (30, 0.3)):
        model = _Blend(weight)
        records.append(tracker.run(iteration, model, model, pairs, 4, torch.device("cpu")))
    # NIQE of the outputs, computed here independently from the model and quality.niqe
    model = _Blend(0.3)
    expected = []
    for pair in pairs:
        out = model(torch.from_numpy(pair.lq).permute(2, 0, 1)[None].float() / 255)
        out8 = (out[0].clamp(0, 1) * 255).round() / 255
        expected.append(float(niqe(out8[None])[0]))
    assert records[2]["val"]["niqe"] == pytest.approx(np.mean(expected), abs=1e-9)
    psnrs = [r["val"]["psnr"] for r in records]
    assert psnrs[1] > psnrs[2] > psnrs[0]  # less of the random net, better PSNR
    assert "best" in records[0] and "best" in records[1] and "best" not in records[2]
    best = json.loads((tmp_path / "models" / "net_g_best.json").read_text())
    assert best == {"metric": "psnr", "value": psnrs[1], "iter": 20, "source": "val"}
    saved = torch.load(tmp_path / "models" / "net_g_best.pth", weights_only=True)
    assert set(saved) == {"params", "params_ema"} and set(saved["params_ema"]) == set(_Blend(0).state_dict())
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in logged] == [10, 20, 30] and all("niqe" in r["val"] for r in logged)
    assert any("NIQE" in m for m in messages)
    grid = cv2.imread(str(tmp_path / "val" / "iter_00000030.png"))
    assert grid.shape == (2 * (192 + 20 + 4), 3 * 192, 3)  # a caption band under each row
    curves = cv2.imread(str(tmp_path / "curves.png"))
    assert curves is not None and curves.shape[0] > 400
    # resuming keeps the best so far: a worse validation does not replace it
    again, _ = _tracker(tmp_path, "psnr")
    assert again.best == best
    assert "best" not in again.run(40, _Blend(0.4), _Blend(0.4), pairs, 4, torch.device("cpu"))


def test_niqe_selection_uses_val_lq_when_given(tmp_path):
    lq_dir = tmp_path / "real_lr"
    lq_dir.mkdir()
    for i, pair in enumerate(_pairs()):
        cv2.imwrite(str(lq_dir / f"{i}.png"), cv2.cvtColor(pair.lq, cv2.COLOR_RGB2BGR))
    tracker, _ = _tracker(tmp_path / "run", "niqe", str(lq_dir))
    record = tracker.run(5, _Blend(0.1), _Blend(0.1), [], 4, torch.device("cpu"))
    assert record["val_lq"]["count"] == 2 and record["val_lq"]["niqe_count"] == 2
    assert record["best"]["source"] == "val_lq" and record["best"]["value"] == record["val_lq"]["niqe"]
    with pytest.raises(FileNotFoundError, match="val_lq"):
        _tracker(tmp_path / "run2", "niqe", str(tmp_path / "missing"))


def test_tensorboard_scalars_are_written_when_installed(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs the extra: pip install -e .[tensorboard]")
    tracker, _ = _tracker(tmp_path, "none")
    tracker.run(1, _Blend(0.1), _Blend(0.1), _pairs()[:1], 4, torch.device("cpu"))
    tracker.log_training(1, {"l_g_pix": 0.5, "lr": 1e-4})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "models" / "net_g_best.pth").exists()  # val_select none exports nothing


def test_val_select_defaults_and_validation():
    assert stage_defaults("net")["val_select"] == "psnr"
    assert stage_defaults("gan")["val_select"] == "niqe"
    with pytest.raises(ConfigError, match="val_select"):
        load_train_config("net", overrides=["val_select=lpips"])
