"""`calibrate --start estimate`: an estimator-driven start (moment matching) in a low-resolution model,
then a short local compass search.

Why a second model: the paper config blurs and adds noise at HR resolution or at a random intermediate
size, and the final resize to the LQ size shrinks noise (×1/4 for white noise averaged 4×4) and blur
(σ/4). Images that were degraded *at their own resolution* (a camera's noise and JPEG, a messenger's
re-compression, a scan's blur) are then only reachable at the edge of the paper's boxes, and a compass
search with a small budget does not get there. The model here is the paper's second-order pipeline with
its first stage kept as "the HR → LQ downscale" (paper blur, resize straight to the LQ size, no noise,
near-lossless JPEG q100 4:4:4) and its second stage acting at the LQ size (resize "keep" relative to the
target): its blur σ is in LQ pixels, its noise σ in /255 at LQ size, its JPEG the file's own. Final step:
the identity resize, the sinc with `final_sinc_prob`, JPEG last.

The first stage's downscale is chosen before anything else (`DOWNSCALES`: the paper's blur and mixed resize
modes, or a plain area / bilinear / bicubic resize without blur, as a phone or messenger resizes), by the
distance of a noise- and blur-free simulation: a bicubic resize without antialiasing leaves aliasing that the
noise estimator reads as noise and the sharpness statistic as sharpness, so a target resized that way is
otherwise only reachable by adding noise. The search then also moves ``hr_blur_prob`` (the paper blur's
probability before the downscale).

Start (moment matching): the JPEG range from the files' quantization tables (or the pixel estimate's
5-95 % quantiles when most tiles are JPEG-like, else no JPEG); Gaussian vs Poisson and gray vs colour
from the medians of the two noise indicators; then for blur σ and noise level a 1-D transfer curve
"median feature of the simulated LQ vs parameter value" (a few simulations on the same HR crops, so the
HR photos' own noise and softness and what JPEG does to noise are inside the curve), inverted at the
target's quartiles over the part of the curve that still rises (`_informative_points`: not where the estimator
saturates); a uniform range [a, b] has its quartiles at a + (b − a)/4 and a + 3(b − a)/4, which
gives a and b. Every simulation (transfer ones included) counts against the budget and is in
the trace; a candidate whose config was simulated before (values that cannot change the LQ are made
canonical in `lq_config`) is not simulated or counted again. Qualities read from the files' headers are
held. Deterministic per seed (common random numbers as in `pipelines.data_jobs.calibrate`).

Robustness over the HR crops (`VALIDATION_DRAWS` further sets of HR crops, drawn like the search's with other
seeds). With a few dozen crops the distance of one config moves by about as much between two crop draws as
between a plain-resize, noise-free config and a paper-downscale config with noise, so on one draw the fit can
explain a resize's aliasing by added noise (measured, README "Fitting degradations to your images"). Hence:
(1) each downscale is simulated on every draw and chosen by its mean distance; the spread of a config's distance
between draws (pooled over the four downscales) is the distance's *seed noise*; the paper's blur + mixed resize
is replaced by the best plain resize when that is within the seed noise. (2) After the search, a parsimony step
on the draws the search did not see: each degradation the fit uses (Gaussian noise, Poisson noise, the LQ blur,
the final sinc, the blur before the downscale) is switched off in turn, and the simpler config is kept when its
mean distance there is not worse than the current one's by more than the seed noise. Every one of these
simulations counts against the budget and is in the trace (with its draw).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from degrade import DegradationConfig
from degrade.resize import RESIZE_MODES
from pipelines.data_jobs.calibrate import (
    _NOT_JPEG,
    FEATURES,
    FITTED,
    _progress,
    _simulate,
    compass_search,
    feature_distance,
)
from pipelines.data_jobs.calibrate_mixture import Mixture, mixture_from_files

__all__ = ["LQ_FITTED", "DOWNSCALES", "VALIDATION_DRAWS", "SIMPLIFICATIONS", "MIN_BUDGET", "lq_config",
           "estimated_start", "simplify", "fit_estimated"]

# name: (low, high) of the second (LQ-size) stage and the final step
LQ_FITTED: dict[str, tuple[float, float]] = {
    "noise_lo": (0.0, 30.0), "noise_hi": (0.0, 30.0), "poisson_lo": (0.0, 3.0), "poisson_hi": (0.0, 3.0),
    "gaussian_noise_prob": (0.0, 1.0), "gray_noise_prob": (0.0, 1.0), "jpeg_lo": (10.0, 100.0),
    "jpeg_hi": (10.0, 100.0), "blur_lo": (0.1, 4.0), "blur_hi": (0.1, 4.0), "blur_prob": (0.0, 1.0),
    "final_sinc_prob": (0.0, 1.0), "hr_blur_prob": (0.0, 1.0),
}
# The downscale of the first stage, chosen before the rest is fitted (module docstring): name -> (resize modes,
# probability of the paper's blur before the resize). "paper" is the paper's first stage.
DOWNSCALES: dict[str, tuple[tuple[str, ...], float]] = {
    "paper": (RESIZE_MODES, 1.0), "area": (("area",), 0.0), "bilinear": (("bilinear",), 0.0),
    "bicubic": (("bicubic",), 0.0),
}
_PAIRS = (("noise_lo", "noise_hi"), ("poisson_lo", "poisson_hi"), ("jpeg_lo", "jpeg_hi"), ("blur_lo", "blur_hi"))
_NO_JPEG = 100.0  # jpeg range (100, 100) with 4:4:4 sampling: the near-lossless "no JPEG" of this model
_BLUR_PROBE = (0.1, 0.8, 1.5, 2.2, 3.0, 4.0)
_NOISE_PROBE = (0.0, 2.0, 4.0, 7.0, 11.0, 16.0, 24.0)
_POISSON_PROBE = (0.0, 0.4, 0.8, 1.5, 3.0)
VALIDATION_DRAWS = 2  # further HR crop draws (module docstring: downscale choice, seed noise, parsimony step)
DRAW_SEED_STEP = 10007  # draw k uses seed + k * DRAW_SEED_STEP for its crops and its degradations
# The parsimony step's moves, each "less degradation" than before: name -> the values it changes.
SIMPLIFICATIONS: dict[str, dict[str, float]] = {
    "no Gaussian noise": {"noise_lo": 0.0, "noise_hi": 0.0}, "no Poisson noise": {"poisson_lo": 0.0, "poisson_hi": 0.0},
    "no LQ blur": {"blur_prob": 0.0}, "no final sinc": {"final_sinc_prob": 0.0},
    "no blur before the downscale": {"hr_blur_prob": 0.0},
    # blur lowers the noise reading and the sharpness, noise raises both: as a pair they can stand in for nothing,
    # and neither goes alone
    "no noise and no LQ blur": {"noise_lo": 0.0, "noise_hi": 0.0, "poisson_lo": 0.0, "poisson_hi": 0.0,
                                "blur_prob": 0.0},
}
# stock and downscales on every draw + transfer curves (noise twice) + 2 starts + 1 search step + the parsimony step
# (the current config and each move on the validation draws, then the result on the search draw)
MIN_BUDGET = ((1 + len(DOWNSCALES)) * (1 + VALIDATION_DRAWS) + 2 * len(_NOISE_PROBE) + len(_BLUR_PROBE) + 2 + 1
              + VALIDATION_DRAWS * (1 + len(SIMPLIFICATIONS)) + 1)


def lq_config(values: dict[str, float], base: DegradationConfig, mixture: Mixture | None = None,
              downscale: str = "paper") -> DegradationConfig:
    """The two-stage model of the module docstring with the `LQ_FITTED` values (ranges clamped ordered), the
    first stage's resize modes from `DOWNSCALES` (``hr_blur_prob`` missing: the downscale's own) and the LQ
    stage's compression mixture read from the files (`calibrate_mixture`; None: JPEG 4:2:0)."""
    modes, hr_blur_prob = DOWNSCALES[downscale]
    values = {"hr_blur_prob": hr_blur_prob, **values}
    v = {k: min(max(values[k], lo), hi) for k, (lo, hi) in LQ_FITTED.items()}
    for lo, hi in _PAIRS:
        v[lo] = min(v[lo], v[hi])
    # Values that cannot change the LQ are set to one canonical value, so two candidates that differ only there
    # are one config (simulated once, see fit_estimated) and the written config says what is used.
    if v["gaussian_noise_prob"] == 0.0:
        v["noise_lo"] = v["noise_hi"] = 0.0
    if v["gaussian_noise_prob"] == 1.0:
        v["poisson_lo"] = v["poisson_hi"] = 0.0
    if v["noise_hi"] == 0.0 and v["poisson_hi"] == 0.0:
        v["gray_noise_prob"] = 0.0
    if v["blur_prob"] == 0.0:
        v["blur_lo"] = v["blur_hi"] = LQ_FITTED["blur_lo"][0]
    keep = {"resize_prob": (0.0, 0.0, 1.0), "resize_relative_to": "target"}
    first = replace(base.stages[0], **keep, blur_prob=v["hr_blur_prob"], resize_modes=modes,
                    noise_range=(0.0, 0.0), poisson_scale_range=(0.0, 0.0),
                    gaussian_noise_prob=1.0, jpeg_range=(_NO_JPEG, _NO_JPEG), jpeg_sampling=("4:4:4",))
    no_jpeg = mixture is None and v["jpeg_lo"] >= _NO_JPEG
    compression = mixture.stage_fields() if mixture is not None else \
        {"jpeg_sampling": ("4:4:4",) if no_jpeg else ("4:2:0",)}
    # The LQ stage blurs with full-size isotropic Gaussian kernels (no sinc): a σ of 3-4 LQ pixels in a 7-pixel
    # kernel is a box, and an anisotropic kernel leaves its sharp axis to the sharpness statistic (which reads
    # the strongest edges), so with either the sharpness curve saturates near σ 2.
    second = replace(base.stages[-1] if len(base.stages) > 1 else base.stages[0], **keep,
                     kernel_list=("iso",), kernel_prob=(1.0,), kernel_sizes=(21,),
                     sinc_prob=0.0,
                     blur_sigma=(max(0.05, v["blur_lo"]), max(0.05, v["blur_hi"])), blur_prob=v["blur_prob"],
                     noise_range=(v["noise_lo"], v["noise_hi"]), poisson_scale_range=(v["poisson_lo"], v["poisson_hi"]),
                     gaussian_noise_prob=v["gaussian_noise_prob"], gray_noise_prob=v["gray_noise_prob"],
                     jpeg_range=(max(1.0, v["jpeg_lo"]), v["jpeg_hi"]), **compression)
    return replace(base, stages=(first, second), final_sinc_prob=v["final_sinc_prob"], final_order_prob=1.0)


_QUANTILES = (0.25, 0.75)  # the quartiles: robust to the tiles an estimator misreads (flat, saturated)


def _uniform_bounds(q25: float, q75: float) -> tuple[float, float]:
    """[a, b] of the uniform law whose quartiles are q25, q75 (b − a = 2 (q75 − q25))."""
    width = max(0.0, q75 - q25) / 2
    return q25 - width, q75 + width


_FLAT_SLOPE = 1 / 3  # a curve segment this much flatter than the steepest one before it: the estimator saturates


def _informative_points(probe: tuple[float, ...], medians: list[float]) -> int:
    """How many probe points of a transfer curve carry information: up to its maximum, and not past the first
    segment after the steepest one that is flatter than `_FLAT_SLOPE` of it. Where the estimator saturates
    (sharpness beyond σ ≈ 2 LQ pixels on small tiles), a few hundredths of content difference between target and
    HR photos move the inverse by a whole probe step."""
    stop = int(np.argmax(medians)) + 1
    x, y = np.asarray(probe[:stop], dtype=float), np.asarray(medians[:stop], dtype=float)
    if stop < 3:
        return stop
    slopes = np.diff(y) / np.diff(x)
    steepest = int(np.argmax(slopes))
    flat = [k for k in range(steepest + 1, slopes.size) if slopes[k] < _FLAT_SLOPE * slopes[steepest]]
    return flat[0] + 1 if flat else stop


def _invert(probe: tuple[float, ...], medians: list[float], targets: np.ndarray) -> np.ndarray:
    """Parameter values where the transfer curve reaches ``targets``: the curve over its `_informative_points`
    (an estimator that saturates or turns back at strong degradations gives no information there), made
    increasing; targets beyond it get its last informative value."""
    stop = _informative_points(probe, medians)
    curve = np.maximum.accumulate(np.asarray(medians[:stop], dtype=float))
    curve = curve + np.arange(curve.size) * 1e-9  # strictly increasing for np.interp
    return np.interp(targets, curve, np.asarray(probe[:stop], dtype=float))


def _pooled_sd(distances: dict[str, list[float]]) -> float:
    """The distance's seed noise: its standard deviation between draws, pooled over the configs (0: one draw)."""
    variances = [np.var(d, ddof=1) for d in distances.values() if len(d) > 1]
    return float(np.sqrt(np.mean(variances))) if variances else 0.0


def choose_downscale(distances: dict[str, list[float]]) -> tuple[str, float]:
    """The `DOWNSCALES` name of least mean distance over the draws, but a plain resize (no blur) instead of the
    paper's blur + mixed modes when its mean is within the seed noise; returns it and the seed noise."""
    noise = _pooled_sd(distances)
    means = {name: float(np.mean(d)) for name, d in distances.items()}
    best = min(means, key=means.get)
    plain = [name for name in means if DOWNSCALES[name][1] == 0.0]
    if DOWNSCALES[best][1] > 0.0 and plain:
        simplest = min(plain, key=means.get)
        if means[simplest] <= means[best] + noise:
            best = simplest
    return best, noise


def estimated_start(target: dict[str, np.ndarray], files: list[dict], simulate,
                    draws: int = 1) -> tuple[dict[str, float], dict, str]:
    """Moment-matched `LQ_FITTED` values; ``simulate(values, downscale, draw=0) -> (distance, features)`` runs (and
    records) one simulation on HR crop draw ``draw``. The downscale is chosen on ``draws`` draws
    (`choose_downscale`). Returns the start values, the transfer curves (with the downscale distances and the seed
    noise) and the chosen `DOWNSCALES` name."""
    v = {"noise_lo": 0.0, "noise_hi": 0.0, "poisson_lo": 0.0, "poisson_hi": 0.0, "gaussian_noise_prob": 1.0,
         "gray_noise_prob": 0.0, "blur_lo": 0.1, "blur_hi": 0.1, "blur_prob": 1.0, "final_sinc_prob": 0.0}
    jpeg = target["jpeg_quality"]
    mixture = mixture_from_files(files)
    if mixture is not None:  # every file says how it was compressed (WebP-only: the JPEG range is unused)
        v["jpeg_lo"], v["jpeg_hi"] = mixture.jpeg_range or (_NO_JPEG, _NO_JPEG)
    elif np.mean(jpeg < _NOT_JPEG) >= 0.5:
        v["jpeg_lo"], v["jpeg_hi"] = (float(q) for q in np.quantile(jpeg[jpeg < _NOT_JPEG], [0.05, 0.95]))
    else:
        v["jpeg_lo"] = v["jpeg_hi"] = _NO_JPEG
    poisson = float(np.nanmedian(target["noise_signal_dependence"])) > 0.5
    v["gaussian_noise_prob"] = 0.0 if poisson else 1.0
    v["gray_noise_prob"] = 1.0 if float(np.nanmedian(target["noise_channel_correlation"])) > 0.5 else 0.0
    # The downscale first, without noise or blur: how sharp and aliased the LQ is before anything else (a plain
    # bicubic resize without antialiasing aliases what the paper's blur + mixed modes smooth) changes what the
    # noise and sharpness estimators read, so it must be settled before their transfer curves.
    tried = {name: [simulate({**v, "hr_blur_prob": DOWNSCALES[name][1]}, name, draw)[0] for draw in range(draws)]
             for name in DOWNSCALES}
    downscale, noise = choose_downscale(tried)
    v["hr_blur_prob"] = DOWNSCALES[downscale][1]
    curves: dict = {"downscale": {"distance": tried, "chosen": downscale, "seed_noise": noise}}

    def transfer(names: tuple[str, str], probe: tuple[float, ...], feature: str) -> None:
        medians = []
        for value in probe:
            sim = simulate({**v, names[0]: value, names[1]: value}, downscale)[1]
            medians.append(float(np.nanmedian(sim[feature])))
        wanted = np.nanquantile(target[feature], _QUANTILES)
        lo, hi = _uniform_bounds(*_invert(probe, medians, wanted))
        bounds = LQ_FITTED[names[0]]
        v[names[0]], v[names[1]] = max(bounds[0], lo), min(bounds[1], max(hi, lo))
        curves[names[0].split("_")[0]] = {"probe": list(probe), "median_" + feature: medians,
                                          "target_quartiles": wanted.tolist()}

    noise_names, noise_probe = (("poisson_lo", "poisson_hi"), _POISSON_PROBE) if poisson else \
        (("noise_lo", "noise_hi"), _NOISE_PROBE)
    transfer(noise_names, noise_probe, "noise_sigma")  # first with no blur: noise barely moves sharpness
    transfer(("blur_lo", "blur_hi"), _BLUR_PROBE, "sharpness")  # then blur, with that noise in
    transfer(noise_names, noise_probe, "noise_sigma")  # noise again, now through the fitted blur
    return v, curves, downscale


def simplify(values: dict[str, float], evaluate, margin: float, room: int,
             canonical=lambda v: tuple(sorted(v.items()))) -> tuple[dict[str, float], list[dict]]:
    """The parsimony step (backward elimination): each `SIMPLIFICATIONS` move that changes the config
    (``canonical(values)``) in turn, in passes until a pass keeps none (noise and blur can stand in for each other:
    once the blur is gone the noise may be too); the simpler values are kept when ``evaluate(values, dry) ->
    (mean distance, simulations it takes)`` is not worse than the current values' by more than ``margin``
    (``dry``: only count). A move that would need more than the ``room`` left is not tried. Returns the kept values
    and one record per move tried."""
    current, (current_mean, used) = dict(values), evaluate(values, dry=False)
    room -= used
    steps, tried, changed = [], set(), True
    while changed:
        changed = False
        for name, change in SIMPLIFICATIONS.items():
            simpler = {**current, **change}
            key = (canonical(current), name)
            if canonical(simpler) == canonical(current) or key in tried or evaluate(simpler, dry=True)[1] > room:
                continue
            tried.add(key)
            mean, used = evaluate(simpler, dry=False)
            room -= used
            kept = mean <= current_mean + margin
            steps.append({"move": name, "mean_distance": mean, "before": current_mean, "kept": kept})
            if kept:
                current, current_mean, changed = simpler, mean, True
    return current, steps


def fit_estimated(target: dict[str, np.ndarray], files: list[dict], hr: torch.Tensor, base: DegradationConfig,
                  budget: int, seed: int, progress: bool = False, hr_draws: tuple[torch.Tensor, ...] = ()) -> dict:
    """Stock paper config (evaluation 0, gives the spreads), the moment-matched start, a local compass search in
    the LQ model on ``hr``, then the parsimony step on ``hr_draws`` (further HR crop draws; none: the downscale is
    chosen on ``hr`` alone and there is no parsimony step); the same result layout as
    `pipelines.data_jobs.calibrate.fit`, plus "simplify". Distances are on ``hr`` (the stock's crops)."""
    mixture = mixture_from_files(files)
    stock_config = replace(base, per_sample=True)
    draws = (hr, *hr_draws)
    trace: list[dict] = []
    bar = _progress(budget, progress)
    state: dict = {}

    def run(config: DegradationConfig, values: dict, kind: str, draw: int = 0) -> tuple[float, dict, dict]:
        sim = _simulate(draws[draw], config, seed + DRAW_SEED_STEP * draw)
        per = feature_distance(target, sim, state["spread"])
        total = float(np.mean(list(per.values())))
        trace.append({"eval": len(trace), "kind": kind, "draw": draw,
                      "values": {k: round(float(x), 4) for k, x in values.items()}, "distance": total, "features": per})
        bar.update(1)
        return total, per, sim

    seen: dict[tuple[DegradationConfig, int], tuple[float, dict, dict]] = {}

    def config_of(values: dict, downscale: str | None = None) -> DegradationConfig:
        return lq_config(values, replace(base, per_sample=True), mixture, downscale or state["downscale"])

    def candidate(values: dict, kind: str, downscale: str | None = None, draw: int = 0) -> tuple[float, dict, dict]:
        """One simulation of the LQ model; a config simulated before on this draw is not simulated (nor counted)
        again."""
        key = (config_of(values, downscale), draw)
        if key not in seen:
            seen[key] = run(key[0], values, kind, draw)
        return seen[key]

    # The stock config on every draw: the spreads (the distance's normalization) from all its crops, and the
    # reported stock distance is its mean over the draws, as the fitted one's.
    stock_sims = [_simulate(d, stock_config, seed + DRAW_SEED_STEP * k) for k, d in enumerate(draws)]
    state["spread"] = {k: max(float(np.nanstd(np.concatenate([s[k] for s in stock_sims]))), 1e-3) for k in FEATURES}
    for k, sim in enumerate(stock_sims):
        per = feature_distance(target, sim, state["spread"])
        trace.append({"eval": len(trace), "kind": "stock", "draw": k, "values": {},
                      "distance": float(np.mean(list(per.values()))), "features": per})
        bar.update(1)

    def transfer(values: dict, downscale: str, draw: int = 0) -> tuple[float, dict]:
        total, _, sim = candidate(values, f"transfer ({downscale})", downscale, draw)
        return total, sim

    start, curves, state["downscale"] = estimated_start(target, files, transfer, len(draws))
    seed_noise = curves["downscale"]["seed_noise"]
    validation = range(1, len(draws))
    reserve = len(validation) * (1 + len(SIMPLIFICATIONS)) + 1 if hr_draws else 0  # the parsimony step's room
    best_total = candidate(start, "start")[0]
    best = dict(start)
    # What reads as noise in the targets may be texture, aliasing or JPEG artefacts the HR crops lack: the
    # noise-free variant of the start is tried too, and the better one is kept.
    quiet = {**start, "noise_lo": 0.0, "noise_hi": 0.0, "poisson_lo": 0.0, "poisson_hi": 0.0}
    if quiet != start:
        total = candidate(quiet, "start without noise")[0]
        if total < best_total:
            best, best_total = quiet, total
    # Qualities read from the files' headers (libjpeg tables, table error 0; WebP: the JPEG range is unused) are
    # measured, not fitted.
    held = ("jpeg_lo", "jpeg_hi") if mixture is not None and (mixture.exact_jpeg or mixture.jpeg_range is None) \
        else ()
    searched_bounds = {k: b for k, b in LQ_FITTED.items() if k not in held}
    # 64 sweeps without a new simulation: 64 halvings, the steps are ~0 and every candidate was simulated before
    best, best_total = compass_search(best, best_total, searched_bounds,
                                      {k: (hi - lo) / 16 for k, (lo, hi) in searched_bounds.items()},
                                      lambda values: candidate(values, "search")[0], lambda: len(trace),
                                      budget - reserve, idle_sweeps=64)
    searched = dict(best)
    simplified: list[dict] = []
    if hr_draws:

        def on_validation(values: dict, dry: bool) -> tuple[float, int]:
            missing = sum((config_of(values), d) not in seen for d in validation)
            if dry:
                return math.nan, missing
            return float(np.mean([candidate(values, "simplify", draw=d)[0] for d in validation])), missing

        best, simplified = simplify(best, on_validation, seed_noise, budget - len(trace) - 1, config_of)
        candidate(best, "fitted")  # on the search draw too (simulated before unless simplified)
    bar.close()
    # Reported: means over the draws (on every draw the fitted config was simulated on; the stock's on all)
    fitted_runs = [seen[(config_of(best), d)] for d in range(len(draws)) if (config_of(best), d) in seen]
    stock_runs = [(t["distance"], t["features"], sim) for t, sim in zip(trace, stock_sims, strict=False)]

    def summary(runs: list[tuple[float, dict, dict]], values: dict) -> dict:
        return {"values": values, "distance": float(np.mean([r[0] for r in runs])), "draws": len(runs),
                "features": {k: float(np.mean([r[1][k] for r in runs])) for k in FEATURES},
                "sim": {k: np.concatenate([r[2][k] for r in runs]) for k in FEATURES}}

    paper = {k: b[2] for k, b in FITTED.items()}
    return {"stock": summary(stock_runs, paper), "fitted": summary(fitted_runs, best),
            "start": {"values": start, "transfer": curves, "held": list(held)}, "spread": state["spread"],
            "trace": trace, "simplify": {"seed_noise": seed_noise, "searched": searched, "moves": simplified},
            "downscale": state["downscale"], "mixture": None if mixture is None else mixture.to_json(),
            "config": lq_config(best, base, mixture, state["downscale"])}
