"""Issue 10 §3 evidence for `calibrate --start estimate`, with a CI-sized budget: three target sets with known
degradations (tests/pipelines/calibrate_targets.py: made from astronaut and coffee), fitted with chelsea and
rocket as HR. Checked: the fitted feature distance is at most half the stock paper config's, and the fitted
LQ-stage ranges cover the true ranges within the issue's estimator tolerances (each bound: noise σ ±3,
JPEG quality ±8, blur σ ±30 %), including "no noise" for the sets without it: a noise kind the truth lacks
may be fitted only up to the noise tolerance (Gaussian σ ≤ 3; Poisson scale s at most the one whose σ at
mid-gray, s·√(0.5/256)·255 ≈ 11.3 s, is 3). The LQ stage acts at the target's resolution
(pipelines/data_jobs/calibrate_start.py), so its ranges are in the same units as the truth.

Runs (name, seed): all three sets at seed 0, and at seeds 1 and 2 the messenger set (the one that used to buy its
noise reading with added noise, then missed the distance) and the old-scan set (whose blur range used to reach
past the tolerance where the sharpness statistic saturates). Every criterion is checked in every run (measured values:
bench/results/calibrate_ci_seed{0,1,2}.json, README "Fitting degradations to your images: the evidence").

Not asserted, because the issue gives no tolerance for it: the Poisson scale range of the old-scan set
(reported in the README table), and the gray-vs-colour noise probability (after 4:2:0 JPEG the camera set's
colour noise reads as gray, README "what the fit cannot recover").
"""

from __future__ import annotations

import pytest

from degrade import DegradationConfig
from pipelines.data_jobs.calibrate import CalibrateConfig
from pipelines.data_jobs.calibrate_report import run_calibrate
from tests.pipelines.calibrate_targets import TRUE_RANGES, hr_paths, make_target_set

# CI-sized: 26-37 s per run on the idle 2-core machine (bench/calibrate.py runs the same with any budget)
CI = {"lq_size": 32, "sim_patches": 24, "max_patches": 64, "budget": 80, "progress": False}
RUNS = [("camera", 0), ("messenger", 0), ("old_scan", 0), ("messenger", 1), ("messenger", 2), ("old_scan", 1),
        ("old_scan", 2)]
TOLERANCE = {"noise": 3.0, "jpeg": 8.0}
BLUR_TOLERANCE = 0.30  # relative
# degrade.noise.add_poisson_noise: noise (Poisson(q·v)/v − q)·s has σ = s·√(q/v); at q = 0.5, v = 256 levels, in /255
POISSON_SIGMA_PER_SCALE = (0.5 / 256) ** 0.5 * 255


def _calibrate(name: str, seed: int, tmp_path) -> tuple[object, DegradationConfig]:
    folder = make_target_set(name, tmp_path / name)
    out = tmp_path / f"{name}-out"
    result = run_calibrate(CalibrateConfig(target=folder, hr=hr_paths(), out=out, start="estimate", seed=seed, **CI))
    return result, DegradationConfig.load(out / "degradation.toml")


def _within(fitted: tuple[float, float], true: tuple[float, float], tolerance: float) -> bool:
    return all(abs(f - t) <= tolerance for f, t in zip(fitted, true, strict=True))


def _misses(result, lq_stage, truth: dict) -> dict[str, str]:
    """Each criterion of the module docstring that the fit misses, with its numbers."""
    misses: dict[str, str] = {}

    def check(criterion: str, ok: bool, detail: object) -> None:
        if not ok:
            misses[criterion] = f"{criterion}: {detail}"

    if "noise" in truth:  # Gaussian noise only: the fit must pick Gaussian noise
        check("noise", lq_stage.gaussian_noise_prob >= 0.5 and _within(lq_stage.noise_range, truth["noise"],
                                                                       TOLERANCE["noise"]),
              (lq_stage.gaussian_noise_prob, lq_stage.noise_range))
    elif lq_stage.gaussian_noise_prob > 0:  # no Gaussian noise in the targets: at most the tolerance
        check("noise", lq_stage.noise_range[1] <= TOLERANCE["noise"], lq_stage.noise_range)
    if "poisson" not in truth and lq_stage.gaussian_noise_prob < 1:
        check("poisson", lq_stage.poisson_scale_range[1] <= TOLERANCE["noise"] / POISSON_SIGMA_PER_SCALE,
              lq_stage.poisson_scale_range)
    if "jpeg" in truth:
        check("jpeg", _within(lq_stage.jpeg_range, truth["jpeg"], TOLERANCE["jpeg"]), lq_stage.jpeg_range)
    if "blur" in truth:
        check("blur", lq_stage.blur_prob >= 0.5 and all(abs(f - t) <= BLUR_TOLERANCE * t for f, t in
                                                         zip(lq_stage.blur_sigma, truth["blur"], strict=True)),
              (lq_stage.blur_prob, lq_stage.blur_sigma))
    if "poisson" in truth:  # Poisson noise only: the fit must pick Poisson noise (its range is not checked)
        check("poisson", lq_stage.gaussian_noise_prob <= 0.5 and lq_stage.poisson_scale_range[1] > 0,
              (lq_stage.gaussian_noise_prob, lq_stage.poisson_scale_range))
    if "jpeg" not in truth:  # no JPEG in the targets: the near-lossless q100 of the LQ model
        check("jpeg", lq_stage.jpeg_range == (100.0, 100.0), lq_stage.jpeg_range)
    check("distance", result.fitted_distance <= 0.5 * result.stock_distance,
          f"fitted {result.fitted_distance:.3f} > half the stock's {result.stock_distance:.3f}")
    return misses


@pytest.mark.slow
@pytest.mark.parametrize("name,seed", RUNS)
def test_fit_halves_the_stock_distance_and_covers_the_true_ranges(name, seed, tmp_path):
    result, cfg = _calibrate(name, seed, tmp_path)
    misses = _misses(result, cfg.stages[-1], TRUE_RANGES[name])
    assert not misses, f"{name} seed {seed}: " + "; ".join(misses.values())
