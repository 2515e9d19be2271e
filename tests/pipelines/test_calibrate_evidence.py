"""Issue 10 §3 evidence for `calibrate --start estimate`, with a CI-sized budget: three target sets with known
degradations (tests/pipelines/calibrate_targets.py: made from astronaut and coffee), fitted with chelsea and
rocket as HR. Checked: the fitted feature distance is at most half the stock paper config's, and the fitted
LQ-stage ranges cover the true ranges within the issue's estimator tolerances (each bound: noise σ ±3,
JPEG quality ±8, blur σ ±30 %). The LQ stage acts at the target's resolution (pipelines/data_jobs/calibrate_start.py),
so its ranges are in the same units as the truth.

Not asserted, because the fit does not recover them (README "Fitting degradations to your images: the
evidence"): for the messenger set the fit adds Gaussian noise σ ≈ 12-19 at LQ size that the targets do not
have (what the noise estimator reads on re-compressed, aliased targets the HR crops only reach with noise,
largely removed again by JPEG 30-50); the Poisson scale of the old-scan set has no tolerance in the issue and
its fitted range is reported, not checked.
"""

from __future__ import annotations

import pytest

from degrade import DegradationConfig
from pipelines.data_jobs.calibrate import CalibrateConfig
from pipelines.data_jobs.calibrate_report import run_calibrate
from tests.pipelines.calibrate_targets import TRUE_RANGES, hr_paths, make_target_set

# CI-sized: ~25 s per set on one core (bench/calibrate.py runs the same with any budget)
CI = {"lq_size": 32, "sim_patches": 24, "max_patches": 64, "budget": 60, "seed": 0, "progress": False}
TOLERANCE = {"noise": 3.0, "jpeg": 8.0}
BLUR_TOLERANCE = 0.30  # relative


def _calibrate(name: str, tmp_path) -> tuple[object, DegradationConfig]:
    folder = make_target_set(name, tmp_path / name)
    out = tmp_path / f"{name}-out"
    result = run_calibrate(CalibrateConfig(target=folder, hr=hr_paths(), out=out, start="estimate", **CI))
    return result, DegradationConfig.load(out / "degradation.toml")


def _within(fitted: tuple[float, float], true: tuple[float, float], tolerance: float) -> bool:
    return all(abs(f - t) <= tolerance for f, t in zip(fitted, true, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["camera", "messenger", "old_scan"])
def test_fit_halves_the_stock_distance_and_covers_the_true_ranges(name, tmp_path):
    result, cfg = _calibrate(name, tmp_path)
    assert result.fitted_distance <= 0.5 * result.stock_distance, (result.fitted_distance, result.stock_distance)
    lq_stage, truth = cfg.stages[-1], TRUE_RANGES[name]
    if "noise" in truth:  # Gaussian noise only: the fit must pick Gaussian noise
        assert lq_stage.gaussian_noise_prob >= 0.5
        assert _within(lq_stage.noise_range, truth["noise"], TOLERANCE["noise"]), lq_stage.noise_range
    if "jpeg" in truth:
        assert _within(lq_stage.jpeg_range, truth["jpeg"], TOLERANCE["jpeg"]), lq_stage.jpeg_range
    if "blur" in truth:
        assert lq_stage.blur_prob >= 0.5
        assert all(abs(f - t) <= BLUR_TOLERANCE * t for f, t in zip(lq_stage.blur_sigma, truth["blur"], strict=True)), \
            lq_stage.blur_sigma
    if "poisson" in truth:  # Poisson noise only: the fit must pick Poisson noise (its range is not checked)
        assert lq_stage.gaussian_noise_prob <= 0.5 and lq_stage.poisson_scale_range[1] > 0
    if "jpeg" not in truth:  # no JPEG in the targets: the near-lossless q100 of the LQ model
        assert lq_stage.jpeg_range == (100.0, 100.0)
