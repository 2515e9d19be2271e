"""`calibrate`: measuring, bad input, outputs the other commands accept, and the evidence that the fit is
real (issue 10 §3): for three target sets with known degradations, calibrated on *other* photos as HR,
the fitted config's feature distance is at most half the stock config's and its ranges cover the true
ones within the estimator tolerances (noise ±3, JPEG ±8, blur σ ±30 %)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from degrade import DegradationConfig
from pipelines.calibrate import FEATURES, FITTED, CalibrateConfig, config_from_vector
from pipelines.calibrate_report import run_calibrate
from tests.conftest import load_sample_rgb
from tests.pipelines.calibrate_targets import TRUE_RANGES, hr_paths, make_target_set

# CI-sized search: 32x32 LQ patches, 24 HR crops per candidate, 14 simulations (bench/calibrate.py: full budget).
CI = {"lq_size": 32, "sim_patches": 24, "max_patches": 64, "budget": 14, "progress": False}


def _jpeg_folder(tmp_path, qualities=(40, 70)):
    folder = tmp_path / "targets"
    folder.mkdir()
    rgb = load_sample_rgb("coffee.png")[:96, :96]
    for q in qualities:
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
        (folder / f"q{q}.jpg").write_bytes(data.tobytes())
    return folder


def test_measure_only_reports_per_patch_estimates_and_file_headers(tmp_path):
    folder = _jpeg_folder(tmp_path)
    (folder / "broken.png").write_bytes(b"not an image")
    result = CliRunner().invoke(main, ["calibrate", "--target", str(folder), "--measure-only", "--lq-size", "32",
                                       "--min-patches", "4", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "skipped broken.png" in result.output and "measured 18 patches" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [f["quality"] for f in report["files"]] == [40, 70]
    assert report["file_summary"]["jpeg"]["subsampling"] == {"4:2:0": 2}
    assert set(FEATURES) <= set(report["per_patch"]) and len(report["per_patch"]["jpeg_quality"]) == 18
    q = np.array(report["per_patch"]["jpeg_quality"]).reshape(2, 9)  # tiles on the 8-grid keep the JPEG visible
    assert np.all(np.abs(q - np.array([[40], [70]])) <= 5)
    assert not (tmp_path / "out" / "degradation.toml").exists()


def test_too_few_patches_is_one_clear_error(tmp_path):
    folder = _jpeg_folder(tmp_path, qualities=(50,))
    result = CliRunner().invoke(main, ["calibrate", "--target", str(folder), "--lq-size", "64",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "found 1 usable 64x64 patches in 1 readable images, need at least 16" in result.output


def test_missing_target_and_existing_outputs_are_errors(tmp_path):
    result = CliRunner().invoke(main, ["calibrate", "--target", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no such folder" in result.output
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    result = CliRunner().invoke(main, ["calibrate", "--target", str(_jpeg_folder(tmp_path)), "--measure-only",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "--overwrite" in result.output
    assert (tmp_path / "out" / "report.json").read_text() == "{}"


def test_config_from_vector_at_paper_values_is_the_paper_config():
    paper = {k: b[2] for k, b in FITTED.items()}
    assert config_from_vector(paper, DegradationConfig()) == DegradationConfig()


def test_fit_writes_loadable_config_report_and_png_deterministically(tmp_path):
    folder = _jpeg_folder(tmp_path)
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        run_calibrate(CalibrateConfig(target=folder, out=out, min_patches=4, **{**CI, "budget": 3,
                                                                                "sim_patches": 8}))
        outs.append(out)
    cfg = DegradationConfig.load(outs[0] / "degradation.toml")
    assert cfg.stages[-1].jpeg_range == (40.0, 70.0)  # the start point read from the files' tables
    report = json.loads((outs[0] / "report.json").read_text())
    assert len(report["trace"]) == 3 and report["fitted"]["distance"] <= report["stock"]["distance"]
    assert (outs[0] / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (outs[0] / "degradation.toml").read_bytes() == (outs[1] / "degradation.toml").read_bytes()
    result = CliRunner().invoke(main, ["preview-degradations", "--config", str(outs[0] / "degradation.toml"),
                                       "--count", "1", "--gt-size", "64", "--out", str(tmp_path / "preview")])
    assert result.exit_code == 0, result.output


def _covers(fitted: tuple[float, float], true: tuple[float, float], tolerance: float) -> bool:
    return fitted[0] <= true[0] + tolerance and fitted[1] >= true[1] - tolerance


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRUE_RANGES))
def test_fit_halves_the_stock_distance_and_covers_the_true_ranges(tmp_path, name):
    folder = make_target_set(name, tmp_path / name)
    result = run_calibrate(CalibrateConfig(target=folder, hr=hr_paths(), out=tmp_path / "out", **CI))
    assert result.fitted_distance <= 0.5 * result.stock_distance, result.summary
    cfg = DegradationConfig.load(tmp_path / "out" / "degradation.toml")
    last, truth = cfg.stages[-1], TRUE_RANGES[name]
    if "jpeg" in truth:
        assert _covers(last.jpeg_range, truth["jpeg"], 8.0), last.jpeg_range
    if "noise" in truth:
        assert _covers(last.noise_range, truth["noise"], 3.0), last.noise_range
