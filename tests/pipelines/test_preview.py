"""`cli.py preview-degradations`: outputs, determinism, replayable records, clear errors."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

import degrade
from cli import main
from pipelines.data_jobs.preview import caption_lines, centre_crop_tensor, load_rgb
from tests.conftest import SAMPLES_DIR


def _run(*args):
    return CliRunner().invoke(main, ["preview-degradations", *args], catch_exceptions=False)


def test_preview_is_deterministic_and_records_replay(tmp_path):
    image = str(SAMPLES_DIR / "chelsea.png")
    common = [image, "--count", "2", "--gt-size", "64", "--seed", "5"]
    first = _run(*common, "--out", str(tmp_path / "a"))
    second = _run(*common, "--out", str(tmp_path / "b"))
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    for name in ("preview.png", "records.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    document = json.loads((tmp_path / "a" / "records.json").read_text())
    assert [s["index"] for s in document["samples"]] == [0, 1]
    config = degrade.DegradationConfig.from_dict(document["config"])
    gt = degrade.usm_sharpen(centre_crop_tensor(load_rgb(SAMPLES_DIR / "chelsea.png"), 64))
    # Replaying the first record reproduces the first draw of the same seed.
    params = degrade.DegradationParams.from_records([document["samples"][0]["record"]])
    expected_params = degrade.sample_params(config, 1, torch.Generator().manual_seed(5))
    assert params.records() == expected_params.records()
    assert degrade.apply(gt, params, config).shape == (1, 3, 16, 16)
    other = _run(*common[:-1], "6", "--out", str(tmp_path / "c"))
    assert other.exit_code == 0
    assert (tmp_path / "c" / "records.json").read_bytes() != (tmp_path / "a" / "records.json").read_bytes()


def test_stages_order_and_scale_options(tmp_path):
    result = _run(str(SAMPLES_DIR / "coffee.png"), "--count", "1", "--gt-size", "64", "--stages", "--order", "3",
                  "--scale", "2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "records.json").read_text())
    assert len(document["samples"][0]["record"]["stages"]) == 3 and document["config"]["scale"] == 2
    sheet = (tmp_path / "preview.png").read_bytes()
    assert sheet.startswith(b"\x89PNG")


def test_missing_and_corrupt_inputs_fail_before_writing(tmp_path):
    missing = _run(str(tmp_path / "nope.png"), "--out", str(tmp_path / "out"))
    assert missing.exit_code != 0 and "nope.png" in missing.output and "no such file" in missing.output
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = _run(str(SAMPLES_DIR / "coffee.png"), str(corrupt), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and "broken.png" in result.output and "not a readable image" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_config_is_reported(tmp_path):
    bad = tmp_path / "deg.toml"
    bad.write_text("scale = 3\n")
    result = _run("--config", str(bad), "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and "deg.toml" in result.output and "scale must be one of" in result.output


def test_captions_name_the_main_parameters():
    params = degrade.sample_params(degrade.DegradationConfig(), 1, torch.Generator().manual_seed(0))
    record = params.records()[0]
    lines = caption_lines(record)
    assert len(lines) == 3 and lines[-1].startswith("final:")
    assert record["stages"][0]["blur"]["family"].split("_")[0][:5] in lines[0]
    assert f"q{record['stages'][0]['jpeg_quality']:.0f}" in lines[0]


def test_16bit_gray_and_alpha_inputs_are_converted(tmp_path):
    import cv2

    gray16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    g = load_rgb(tmp_path / "g16.png")
    assert g.shape == (64, 64, 3) and g.dtype == np.uint8
    assert g[-1, -1, 0] == round(int(gray16[-1, -1]) * 255 / 65535)
    assert load_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]
