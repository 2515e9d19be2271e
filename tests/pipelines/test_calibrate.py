"""`calibrate`: measuring, bad input, and outputs the other commands accept.

The evidence of issue 10 §3 (fitted distance at most half the stock one, coverage of the true ranges on three
target sets with known degradations) is tests/pipelines/test_calibrate_evidence.py; bench/calibrate.py runs
it with any budget."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from degrade import DegradationConfig
from pipelines.data_jobs.calibrate import FEATURES, FITTED, CalibrateConfig, config_from_vector
from pipelines.data_jobs.calibrate_report import run_calibrate
from tests.conftest import load_sample_rgb

SMALL = {"lq_size": 32, "sim_patches": 8, "max_patches": 64, "budget": 3, "progress": False}


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
    # tiles on the 8-grid keep the JPEG visible; 32x32 tiles (16 blocks) sometimes fit a coarser table
    error = np.abs(np.array(report["per_patch"]["jpeg_quality"]).reshape(2, 9) - np.array([[40], [70]]))
    assert np.all(np.median(error, axis=1) <= 2) and np.mean(error <= 5) >= 0.75
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


def test_image_declaring_too_many_pixels_is_skipped_undecoded(tmp_path):
    folder = _jpeg_folder(tmp_path)
    header = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    header[16:24] = (50_000).to_bytes(4, "big") * 2  # IHDR: 50000 x 50000
    (folder / "huge.png").write_bytes(bytes(header))
    result = CliRunner().invoke(main, ["calibrate", "--target", str(folder), "--measure-only", "--lq-size", "32",
                                       "--min-patches", "4", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "skipped huge.png: declares 50000x50000 pixels" in result.output


def test_config_from_vector_at_paper_values_is_the_paper_config():
    paper = {k: b[2] for k, b in FITTED.items()}
    assert config_from_vector(paper, DegradationConfig()) == DegradationConfig()


@pytest.mark.slow
def test_fit_writes_loadable_config_report_and_png_deterministically(tmp_path):
    pytest.importorskip("matplotlib", reason="report.png needs matplotlib: install .[plots]")
    folder = _jpeg_folder(tmp_path)
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        run_calibrate(CalibrateConfig(target=folder, out=out, min_patches=4, start="paper", **SMALL))
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


def test_lq_model_degrades_at_the_target_size_and_zero_values_change_little():
    import torch

    from pipelines.data_jobs.calibrate_start import LQ_FITTED, lq_config

    quiet = {k: lo for k, (lo, _) in LQ_FITTED.items()} | {"jpeg_lo": 100.0, "jpeg_hi": 100.0, "blur_prob": 0.0}
    cfg = lq_config(quiet, DegradationConfig())
    assert [s.resize_relative_to for s in cfg.stages] == ["target", "target"]
    assert [s.resize_prob for s in cfg.stages] == [(0.0, 0.0, 1.0)] * 2 and cfg.final_order_prob == 1.0
    hr = torch.full((2, 3, 64, 64), 0.5)
    hr[:, :, :, 32:] = 0.25  # a step: flat areas must stay flat (no noise, near-lossless q100 4:4:4)
    lq, _ = __import__("degrade").degrade(hr, cfg, torch.Generator().manual_seed(0))
    assert lq.shape == (2, 3, 16, 16)
    assert torch.allclose(lq[..., :, :6], torch.full_like(lq[..., :, :6], 0.5), atol=1.5 / 255)
    assert torch.allclose(lq[..., :, 10:], torch.full_like(lq[..., :, 10:], 0.25), atol=1.5 / 255)


def test_uniform_bounds_and_transfer_inversion():
    from pipelines.data_jobs.calibrate_start import _invert, _uniform_bounds

    samples = np.random.default_rng(0).uniform(3.0, 8.0, 200_000)
    lo, hi = _uniform_bounds(*np.quantile(samples, [0.25, 0.75]))
    assert abs(lo - 3.0) < 0.02 and abs(hi - 8.0) < 0.02  # the quartiles' sampling error is ~0.005
    probe = (0.0, 1.0, 2.0, 3.0, 4.0)
    # a curve that saturates and turns back (as sharpness does at strong blur) is only used up to its maximum
    medians = [1.0, 3.0, 5.0, 4.0, 2.0]
    assert np.allclose(_invert(probe, medians, np.array([2.0, 4.0, 6.0])), [0.5, 1.5, 2.0])
    # ... and only up to where it flattens to under a third of its steepest slope (an estimator near saturation):
    # slopes 1, 2, 0.2, 0.1 keep the points 0-2; a target above them gets 2, not the 3.5 of the flat tail
    medians = [1.0, 2.0, 4.0, 4.2, 4.3]
    assert np.allclose(_invert(probe, medians, np.array([1.5, 3.0, 4.25])), [0.5, 1.5, 2.0])
    assert np.allclose(_invert(probe, [0.0, 1.0, 2.0, 2.5, 3.0], np.array([2.75])), [3.5])  # 1/2 of it: kept


def test_estimate_start_needs_a_budget_and_order_two():
    from pipelines.data_jobs.calibrate_start import MIN_BUDGET

    with pytest.raises(ValueError, match=f"budget of at least {MIN_BUDGET}"):
        CalibrateConfig(budget=MIN_BUDGET - 1)
    with pytest.raises(ValueError, match="--start paper"):
        CalibrateConfig(order=1)
    assert CalibrateConfig(budget=3, start="paper", order=1).order == 1


def _info(name, fmt, **kw):
    return {"file": name, "format": fmt, **kw}


def test_mixture_follows_the_files_shares_and_ranges():
    from pipelines.data_jobs.calibrate_mixture import mixture_from_files

    files = [_info("a.jpg", "jpeg", quality=40, subsampling="4:2:0", table_error=0.0),
             _info("b.jpg", "jpeg", quality=70, subsampling="4:4:4", table_error=0.0),
             _info("c.jpg", "jpeg", quality=55, subsampling="4:2:0", table_error=0.0),
             _info("d.webp", "webp", quality=62, lossless=False),
             _info("e.webp", "webp", quality=81, lossless=False),
             _info("f.jpg", "jpeg", quality=90, subsampling="4:1:1", table_error=0.0)]
    m = mixture_from_files(files)
    assert m.compression_types == ("jpeg", "webp") and m.compression_prob == (4 / 6, 2 / 6)
    # 4:1:1 is no mode of the degradation model: modelled as 4:2:0, and said so
    assert m.jpeg_sampling == ("4:2:0", "4:4:4") and m.jpeg_sampling_prob == (3 / 4, 1 / 4)
    assert m.jpeg_range == (40.0, 90.0) and m.webp_range == (62.0, 81.0) and m.exact_jpeg
    assert m.notes == ("f.jpg: JPEG subsampling 4:1:1 is modelled as 4:2:0",)
    stage = __import__("dataclasses").replace(DegradationConfig().stages[-1], **m.stage_fields())
    assert stage.compression_types == ("jpeg", "webp") and stage.webp_range == (62.0, 81.0)
    # anything that does not say how it was compressed: no mixture (the pixel estimate decides)
    assert mixture_from_files(files + [_info("g.png", "png")]) is None
    assert mixture_from_files([_info("h.webp", "webp", quality=None, lossless=True)]) is None
    assert not mixture_from_files([{**files[0], "table_error": 1.5}]).exact_jpeg


def _compressed_folder(tmp_path, kind, qualities):
    folder = tmp_path / kind
    folder.mkdir()
    photos = ("coffee.png", "astronaut.png")
    for k, q in enumerate(qualities):
        rgb = np.ascontiguousarray(load_sample_rgb(photos[k % 2])[64:160, 64:160, ::-1])
        if kind == "webp":
            ok, data = cv2.imencode(".webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, q])
        else:
            ok, data = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, q, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
        (folder / f"{k}.{'webp' if kind == 'webp' else 'jpg'}").write_bytes(data.tobytes())
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind,qualities", [("webp", (35, 60, 80)), ("jpeg444", (45, 65, 85))])
def test_fitted_final_compression_follows_the_target_files(tmp_path, kind, qualities):
    """A folder of WebPs gives a WebP-only final compression with the files' qualities (re-encoding search,
    ±4, tests/degrade/test_webp_header.py); a folder of 4:4:4 JPEGs gives 4:4:4 JPEG with the tables' exact range."""
    pytest.importorskip("matplotlib", reason="report.png needs matplotlib: install .[plots]")
    folder = _compressed_folder(tmp_path, kind, qualities)
    out = tmp_path / "out"
    from pipelines.data_jobs.calibrate_start import MIN_BUDGET

    run_calibrate(CalibrateConfig(target=folder, out=out, min_patches=8, start="estimate",
                                  **{**SMALL, "budget": MIN_BUDGET}))
    stage = DegradationConfig.load(out / "degradation.toml").stages[-1]
    report = json.loads((out / "report.json").read_text())
    assert len(report["trace"]) <= MIN_BUDGET  # every simulation counts, the parsimony step's included
    assert {t["draw"] for t in report["trace"]} == {0, 1, 2}
    truth = (float(min(qualities)), float(max(qualities)))
    if kind == "webp":
        assert stage.compression_types == ("webp",) and stage.compression_prob == (1.0,)
        assert all(abs(f - t) <= 4 for f, t in zip(stage.webp_range, truth, strict=True)), stage.webp_range
        assert report["file_summary"]["webp"]["lossy"] == 3
    else:
        assert stage.compression_types == ("jpeg",) and stage.jpeg_sampling == ("4:4:4",)
        assert stage.jpeg_range == truth  # exact from the tables, held during the search
    assert report["compression_mixture"]["compression_types"] == list(stage.compression_types)


def test_downscale_choice_prefers_the_plain_resize_within_the_seed_noise():
    from pipelines.data_jobs.calibrate_start import choose_downscale

    # per draw; within-config standard deviations 0.1 each: pooled seed noise 0.1
    distances = {"paper": [0.4, 0.5, 0.6], "area": [0.6, 0.7, 0.8], "bilinear": [0.45, 0.55, 0.65],
                 "bicubic": [0.7, 0.8, 0.9]}
    chosen, noise = choose_downscale(distances)
    assert chosen == "bilinear" and noise == pytest.approx(0.1)  # 0.55 <= 0.5 + 0.1
    distances["bilinear"] = [0.55, 0.65, 0.75]  # 0.65 > 0.6: the paper's blur + mixed modes are better
    assert choose_downscale(distances)[0] == "paper"
    assert choose_downscale({"paper": [0.5], "bicubic": [0.55]}) == ("paper", 0.0)  # one draw: no seed noise


def test_parsimony_step_removes_what_does_not_help_beyond_the_margin():
    from pipelines.data_jobs.calibrate_start import SIMPLIFICATIONS, simplify

    calls = []

    def evaluate(values, dry):
        """A distance where noise and LQ blur compensate: either alone is worse, both together or neither alike;
        the final sinc helps by 0.2; the Poisson range changes nothing."""
        noise, blur = values["noise_hi"] > 0, values["blur_prob"] > 0
        distance = 0.5 + (0.3 if noise != blur else 0.0) + (0.0 if values["final_sinc_prob"] > 0 else 0.2)
        if not dry:
            calls.append(values)
        return (distance, 2)  # two validation draws, nothing cached

    start = {"noise_lo": 2.0, "noise_hi": 10.0, "poisson_lo": 0.0, "poisson_hi": 0.0, "blur_prob": 1.0,
             "final_sinc_prob": 0.5, "hr_blur_prob": 0.0}
    kept, moves = simplify(start, evaluate, margin=0.05, room=100)
    assert kept["noise_hi"] == 0.0 and kept["blur_prob"] == 0.0  # only the pair move removes them
    assert kept["final_sinc_prob"] == 0.5  # worse by 0.2 > 0.05 without it
    assert [m["move"] for m in moves if m["kept"]] == ["no noise and no LQ blur"]
    assert set(SIMPLIFICATIONS) >= {m["move"] for m in moves}
    # no room: nothing is tried beyond the current config
    assert simplify(start, evaluate, margin=0.05, room=2) == (start, [])


def test_compass_search_finds_a_quadratic_minimum_within_its_budget():
    from pipelines.data_jobs.calibrate import compass_search

    calls: list[dict] = []

    def distance(values: dict[str, float]) -> float:
        return (values["x"] - 0.3) ** 2 + (values["y"] - 0.7) ** 2

    def bowl(values: dict[str, float]) -> float:
        calls.append(values)
        return distance(values)

    bounds = {"x": (0.0, 1.0), "y": (0.0, 1.0)}
    best, total = compass_search({"x": 0.0, "y": 0.0}, distance({"x": 0.0, "y": 0.0}), bounds,
                                 {"x": 0.25, "y": 0.25}, bowl, lambda: len(calls), budget=60)
    assert len(calls) == 60  # the budget, exactly
    assert total == distance(best) == min(distance(c) for c in calls) and total < 1e-4
    assert all(0.0 <= c[k] <= 1.0 for c in calls for k in bounds)  # moves are clamped to the bounds
    # a cached evaluation (nothing new simulated) stops after `idle_sweeps` sweeps without a simulation
    cache: dict[tuple, float] = {}
    simulated = []

    def cached(values: dict[str, float]) -> float:
        key = tuple(round(v, 1) for v in values.values())
        if key not in cache:
            simulated.append(key)
            cache[key] = (key[0] - 0.3) ** 2 + (key[1] - 0.7) ** 2
        return cache[key]

    compass_search({"x": 0.0, "y": 0.0}, 1.0, bounds, {"x": 0.25, "y": 0.25}, cached, lambda: len(simulated),
                   budget=10_000, idle_sweeps=3)
    assert len(simulated) < 50  # stopped long before the budget
