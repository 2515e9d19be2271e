"""`calibrate`: fit a `DegradationConfig` to the user's own low-resolution images, by simulation.

1. Measure the targets: every image is cut into LQ-size tiles at offsets that are multiples of 8 (so
   a JPEG grid survives), and each tile gets the `degrade.estimate` features below. File headers add
   what pixels cannot say exactly: the JPEG quality and chroma subsampling, WebP by magic bytes.
2. Simulate: HR crops (the bundled photos by default), USM-sharpened as training does, are degraded by
   the real pipeline (`degrade.apply`) under a candidate config and measured the same way. Every
   candidate uses the same crops and the same generator seed (common random numbers), so two
   candidates differ only by their config and the search is deterministic per seed.
3. Distance: per feature the 1-D Wasserstein distance (scipy) between target and simulated values,
   divided by that feature's spread (standard deviation) under the stock paper config; the mean over
   features. W1 compares whole distributions, not just means, is in the feature's own units and stays
   finite for distributions with disjoint support; normalizing by the stock spread (not the target's,
   which is ~0 for a folder of one JPEG quality) weighs the features equally. (``--start estimate``: the spread
   over the stock simulated on all its HR crop draws, and distances averaged over draws; `calibrate_start`.)
4. Search: compass search over the fitted parameters (`FITTED`) in their boxes: try ±step on one
   coordinate at a time, keep improvements, halve the steps after a sweep without one, until the
   budget of simulations is spent. Evaluation 0 is the stock config; evaluation 1 starts from it with
   the JPEG range read from the files' quantization tables when the targets are JPEG files.

Everything not in `FITTED` stays at the paper's value: kernel families and their probabilities, sizes,
β and rotation ranges, sinc cutoffs, resize probabilities, ranges and modes, stage count
(``--order``). With ``--start estimate`` the final compression mixture (JPEG / WebP shares, chroma
subsampling, qualities) is read from the target files (`pipelines.data_jobs.calibrate_mixture`).

HR crops flatter than nearly every target tile (`content_activity` below the targets' 2 % quantile) are not
simulated: scene content the targets lack (flat sky, walls) reads as "less noise, more blocking" under every
candidate, and the fit would add noise to make up for content rather than for degradation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

import degrade
from degrade import DegradationConfig, estimate
from pipelines.data_jobs.preview import IMAGE_SUFFIXES, bundled_samples, load_rgb

__all__ = ["CalibrateConfig", "FEATURES", "FITTED", "measure", "content_activity", "hr_crops", "load_target_patches",
           "fit", "compass_search", "config_from_vector",
           "feature_distance", "TargetSet"]

FEATURES = ("noise_sigma", "noise_channel_correlation", "noise_signal_dependence", "jpeg_quality", "blockiness",
            "sharpness")
_NOT_JPEG = 100.0  # the jpeg_quality feature of a tile that is not JPEG-like
_MAX_BLOCKINESS = 4.0  # above the median of whole photos at quality 20 (2.2, README "Estimating degradations")
# name: (low, high, paper value). Noise, JPEG and blur apply to every stage (later stages' upper bounds keep the
# paper's proportions, see config_from_vector); ranges are kept ordered by clamping the partner bound.
FITTED: dict[str, tuple[float, float, float]] = {
    "noise_lo": (0.0, 30.0, 1.0), "noise_hi": (0.0, 30.0, 30.0),
    "poisson_lo": (0.0, 3.0, 0.05), "poisson_hi": (0.0, 3.0, 3.0),
    "gaussian_noise_prob": (0.0, 1.0, 0.5), "gray_noise_prob": (0.0, 1.0, 0.4),
    "jpeg_lo": (10.0, 100.0, 30.0), "jpeg_hi": (10.0, 100.0, 95.0),
    "blur_lo": (0.1, 4.0, 0.2), "blur_hi": (0.1, 4.0, 3.0),
    "final_sinc_prob": (0.0, 1.0, 0.8), "final_order_prob": (0.0, 1.0, 0.5),
}
_PAIRS = (("noise_lo", "noise_hi"), ("poisson_lo", "poisson_hi"), ("jpeg_lo", "jpeg_hi"), ("blur_lo", "blur_hi"))


@dataclass(frozen=True)
class CalibrateConfig:
    """What to fit to and how hard to search; `python cli.py calibrate --help` documents each option."""

    target: Path = Path("targets")
    hr: tuple[Path, ...] = ()  # empty: the bundled photos
    out: Path = Path("calib")
    scale: int = 4
    order: int = 2
    lq_size: int = 64
    budget: int = 200
    seed: int = 0
    max_patches: int = 256  # target tiles measured at most (a seeded subsample beyond)
    sim_patches: int = 48  # HR crops degraded per candidate
    min_patches: int = 16
    measure_only: bool = False
    overwrite: bool = False
    progress: bool = True
    # "estimate": moment-matched start in the LQ-size model, then a local search (calibrate_start.py);
    # "paper": compass search from the paper config with ``order`` stages (the first version)
    start: str = "estimate"

    def __post_init__(self) -> None:
        if self.lq_size < 16 or self.lq_size % 8:
            raise ValueError(f"lq_size must be a multiple of 8 and at least 16, got {self.lq_size}")
        if self.budget < 2:
            raise ValueError(f"budget must be at least 2 simulations (stock + one candidate), got {self.budget}")
        if self.start not in ("estimate", "paper"):
            raise ValueError(f"start must be 'estimate' or 'paper', got {self.start!r}")
        if self.start == "estimate" and self.order != 2:
            raise ValueError(f"--start estimate fits its own two-stage model (order 2), got --order {self.order}: "
                             "use --start paper to search a config of another order")
        from pipelines.data_jobs.calibrate_start import MIN_BUDGET  # it imports this module

        if self.start == "estimate" and self.budget < MIN_BUDGET:
            raise ValueError(f"--start estimate needs a budget of at least {MIN_BUDGET} simulations "
                             f"(stock, downscales, transfer curves, start, parsimony step), got {self.budget}")
        if self.min_patches < 2 or self.max_patches < self.min_patches:
            raise ValueError(f"need 2 <= min_patches <= max_patches, got {self.min_patches}, {self.max_patches}")


@dataclass(frozen=True)
class TargetSet:
    patches: torch.Tensor  # (N, 3, lq, lq)
    origin: list[tuple[str, int, int]]  # (file, top, left) per patch
    files: list[dict]  # per readable file: name, format, size, jpeg header info
    skipped: list[str] = field(default_factory=list)  # "file: reason"


def measure(patches: torch.Tensor) -> dict[str, np.ndarray]:
    """The `FEATURES` of each (N, 3, H, W) tile; NaN where an estimator has no answer."""
    noise = estimate.noise_estimate(patches)
    jpeg = estimate.jpeg_quality(patches)
    return {
        "noise_sigma": noise.sigma.numpy(),
        "noise_channel_correlation": noise.channel_correlation.numpy(),
        "noise_signal_dependence": noise.signal_dependence.numpy(),
        "jpeg_quality": torch.nan_to_num(jpeg.quality, nan=_NOT_JPEG).numpy(),
        # flat tiles (nothing between the grid lines) read as ratios of hundreds; beyond 4 only "very blocky" matters
        "blockiness": np.minimum(jpeg.blockiness.numpy(), _MAX_BLOCKINESS),
        "sharpness": np.minimum(estimate.sharpness(patches).numpy(), 10.0),  # flat tiles read as inf
    }


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (pass --target a folder of images)")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _file_info(path: Path) -> dict:
    info: dict = {"file": path.name, "format": estimate.file_format(path)}
    if info["format"] == "jpeg":
        header = estimate.jpeg_quality_from_file(path)
        info.update(dataclasses.asdict(header))
    elif info["format"] == "webp":  # lossy: the quality by re-encoding (decodes the file after a size check)
        webp = estimate.webp_quality_from_file(path, max_pixels=_MAX_PIXELS)
        if webp is None:
            raise ValueError("not a readable WebP file (no VP8/VP8L frame header)")
        info.update(dataclasses.asdict(webp), segment_quants=list(webp.segment_quants))
    return info


_MAX_PIXELS = 100_000_000  # larger declared images are skipped, not decoded


def _declared_size(path: Path, info: dict) -> tuple[int, int] | None:
    """(width, height) from the JPEG frame header or the PNG IHDR, checked before decoding; None if unknown."""
    if info["format"] in ("jpeg", "webp"):
        return info["width"], info["height"]
    if info["format"] == "png":
        with open(path, "rb") as handle:
            head = handle.read(24)
        if len(head) == 24 and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None


def load_target_patches(folder: Path, lq_size: int, max_patches: int, seed: int) -> TargetSet:
    """All non-overlapping lq_size tiles on the 8-pixel grid of every readable image; unreadable files are
    reported in ``skipped`` and left out. More than ``max_patches`` tiles: a seeded subsample."""
    tiles, origin, files, skipped = [], [], [], []
    for path in _image_files(folder):
        try:
            info = _file_info(path)
            size = _declared_size(path, info)
            if size is not None and size[0] * size[1] > _MAX_PIXELS:
                raise ValueError(f"declares {size[0]}x{size[1]} pixels, more than {_MAX_PIXELS} (not decoded)")
            rgb = load_rgb(path)
        except (OSError, ValueError) as error:
            skipped.append(f"{path.name}: {error}")
            continue
        h, w = rgb.shape[:2]
        info.update(height=h, width=w)
        files.append(info)
        if min(h, w) < lq_size:
            skipped.append(f"{path.name}: {w}x{h} is smaller than one {lq_size}x{lq_size} patch")
            continue
        for top in range(0, h - lq_size + 1, lq_size):
            for left in range(0, w - lq_size + 1, lq_size):
                tiles.append(np.ascontiguousarray(rgb[top : top + lq_size, left : left + lq_size]))
                origin.append((path.name, top, left))
    if len(tiles) > max_patches:
        keep = sorted(torch.randperm(len(tiles), generator=torch.Generator().manual_seed(seed))[:max_patches].tolist())
        tiles, origin = [tiles[i] for i in keep], [origin[i] for i in keep]
    patches = (torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0 if tiles
               else torch.zeros(0, 3, lq_size, lq_size))
    return TargetSet(patches, origin, files, skipped)


CONTENT_QUANTILE = 0.02  # HR crops flatter than this quantile of the targets' content activity are not simulated
_CONTENT_POOL = 8  # candidate crops drawn per HR crop used


def content_activity(images: torch.Tensor, lq_size: int | None = None) -> np.ndarray:
    """Per image, how much scene structure it holds: the standard deviation (/255 units) of its luma averaged over
    4x4 blocks at the LQ size (``lq_size``: area-resized to it first). Noise (σ/4 after the averaging), JPEG
    (it keeps the 8x8 block means) and light blur barely change it; flat sky and walls read low."""
    if lq_size is not None and images.shape[-1] != lq_size:
        images = torch.nn.functional.interpolate(images, size=(lq_size, lq_size), mode="area")
    luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    return (torch.nn.functional.avg_pool2d(luma[:, None], 4).flatten(1).std(dim=1) * 255.0).numpy()


def hr_crops(paths: tuple[Path, ...], size: int, count: int, seed: int, min_activity: float | None = None,
             lq_size: int | None = None) -> tuple[torch.Tensor, dict]:
    """``count`` seeded random size×size crops spread over the HR photos (reflect-padded when smaller).

    With ``min_activity``: crops whose `content_activity` at ``lq_size`` is below it are passed over (from a pool
    of ``_CONTENT_POOL × count`` draws, in draw order), so the simulation sees scenes like the targets' — HR photos
    with flat sky the targets lack would otherwise read as "less noise, more blocking" under every candidate and
    the fit would add noise to make up for content. Too few pass: the most active of the pool fill up. Returns the
    crops and {"min_activity", "passed", "pool"}."""
    images = [load_rgb(p) for p in (paths or bundled_samples())]
    generator = torch.Generator().manual_seed(seed + 1)
    pool = count if min_activity is None else _CONTENT_POOL * count
    crops, activity = [], []
    for k in range(pool):
        rgb = images[k % len(images)]
        h, w = rgb.shape[:2]
        if min(h, w) < size:
            import cv2

            rgb = cv2.copyMakeBorder(rgb, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)
            h, w = rgb.shape[:2]
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        crop = torch.from_numpy(np.ascontiguousarray(rgb[top : top + size, left : left + size])).permute(2, 0, 1)
        crops.append(crop.float()[None] / 255.0)
        if min_activity is not None:
            activity.append(float(content_activity(crops[-1], lq_size or size)[0]))
            if sum(a >= min_activity for a in activity) >= count:
                break
    info = {"min_activity": min_activity, "passed": len(crops), "pool": len(crops)}
    if min_activity is not None:
        passed = [i for i, a in enumerate(activity) if a >= min_activity]
        rest = sorted((i for i, a in enumerate(activity) if a < min_activity), key=lambda i: -activity[i])
        crops = [crops[i] for i in (passed + rest)[:count]]
        info["passed"] = min(count, len(passed))
    return torch.cat(crops), info


def config_from_vector(values: dict[str, float], base: DegradationConfig) -> DegradationConfig:
    """The paper config ``base`` with the `FITTED` parameters set (ranges clamped to be ordered)."""
    v = dict(values)
    for lo, hi in _PAIRS:
        v[lo] = min(v[lo], v[hi])
    stages = []
    first = base.stages[0]
    for stage in base.stages:
        # Later stages keep the base config's proportions of the upper bounds (paper: blur 1.5/3, noise 25/30,
        # Poisson 2.5/3), so the paper values give back exactly the paper config.
        blur_hi = v["blur_hi"] * stage.blur_sigma[1] / first.blur_sigma[1]
        noise_hi = max(v["noise_lo"], v["noise_hi"] * stage.noise_range[1] / max(first.noise_range[1], 1e-9))
        poisson_hi = max(v["poisson_lo"],
                         v["poisson_hi"] * stage.poisson_scale_range[1] / max(first.poisson_scale_range[1], 1e-9))
        stages.append(replace(stage, noise_range=(v["noise_lo"], noise_hi),
                              poisson_scale_range=(v["poisson_lo"], poisson_hi),
                              gaussian_noise_prob=v["gaussian_noise_prob"], gray_noise_prob=v["gray_noise_prob"],
                              jpeg_range=(max(1.0, v["jpeg_lo"]), v["jpeg_hi"]),
                              blur_sigma=(max(0.05, min(v["blur_lo"], blur_hi)), max(0.05, blur_hi))))
    return replace(base, stages=tuple(stages), final_sinc_prob=v["final_sinc_prob"],
                   final_order_prob=v["final_order_prob"])


def feature_distance(target: dict[str, np.ndarray], sim: dict[str, np.ndarray],
                     spread: dict[str, float]) -> dict[str, float]:
    """Per feature W1(target, sim) / spread; NaN values are left out of both sides."""
    out = {}
    for name in FEATURES:
        a, b = target[name][np.isfinite(target[name])], sim[name][np.isfinite(sim[name])]
        out[name] = float(wasserstein_distance(a, b) / spread[name]) if a.size and b.size else 0.0
    return out


def _simulate(hr: torch.Tensor, config: DegradationConfig, seed: int) -> dict[str, np.ndarray]:
    lq, _ = degrade.degrade(hr, config, torch.Generator().manual_seed(seed))
    return measure(lq)


def _progress(total: int, enabled: bool):
    from pipelines.common import progress_bar

    return progress_bar(total, "calibrate", "sim", enabled=enabled)


def compass_search(best: dict[str, float], best_total: float, bounds: dict[str, tuple[float, float]],
                   steps: dict[str, float], evaluate: Callable[[dict[str, float]], float],
                   spent: Callable[[], int], budget: int,
                   idle_sweeps: int | None = None) -> tuple[dict[str, float], float]:
    """Compass search over the ``bounds`` names, in their order: +step then −step on one coordinate at a time
    (clamped to its bounds; a move that changes nothing is skipped), the first improvement (by more than 1e-9)
    is kept; after a sweep over all names without one, every step is halved. ``evaluate(values)`` gives a
    candidate's distance; the search stops when ``spent()`` (simulations so far) reaches ``budget``, or after
    ``idle_sweeps`` sweeps in a row that simulated nothing (a cached ``evaluate``). Returns the best values and
    their distance."""
    names, i, improved, idle = list(bounds), 0, False, 0
    steps = dict(steps)
    while spent() < budget and (idle_sweeps is None or idle < idle_sweeps):
        if i % len(names) == 0:
            spent_at_sweep = spent()
        name = names[i % len(names)]
        lo, hi = bounds[name]
        for sign in (1.0, -1.0):
            if spent() >= budget:
                break
            value = min(hi, max(lo, best[name] + sign * steps[name]))
            if math.isclose(value, best[name]):
                continue
            total = evaluate({**best, name: value})
            if total < best_total - 1e-9:
                best, best_total, improved = {**best, name: value}, total, True
                break
        i += 1
        if i % len(names) == 0:
            if not improved:
                steps = {k: v / 2 for k, v in steps.items()}
            improved = False
            idle = idle + 1 if spent() == spent_at_sweep else 0
    return best, best_total


def fit(target: dict[str, np.ndarray], hr: torch.Tensor, base: DegradationConfig, budget: int, seed: int,
        start: dict[str, float] | None = None, progress: bool = False) -> dict:
    """Compass search of the `FITTED` parameters; returns stock/fitted values, distances and the trace."""
    sim_config = replace(base, per_sample=True)  # every crop its own draws: a distribution per candidate
    paper = {k: b[2] for k, b in FITTED.items()}
    trace: list[dict] = []
    bar = _progress(budget, progress)

    def evaluate(values: dict[str, float], spread: dict[str, float] | None = None):
        config = config_from_vector(values, sim_config)
        sim = _simulate(hr, config, seed)
        if spread is None:
            spread = {k: max(float(np.nanstd(sim[k])), 1e-3) for k in FEATURES}
        per = feature_distance(target, sim, spread)
        total = float(np.mean(list(per.values())))
        trace.append({"eval": len(trace), "values": {k: round(v, 4) for k, v in values.items()}, "distance": total,
                      "features": per})
        bar.update(1)
        bar.set_postfix(distance=f"{min(t['distance'] for t in trace):.3f}")
        return total, per, sim, spread

    stock_total, stock_per, stock_sim, spread = evaluate(paper)
    best, best_total, best_sim, best_per = dict(paper), stock_total, stock_sim, stock_per
    if start and start != paper and len(trace) < budget:
        total, per, sim, _ = evaluate(start, spread)
        if total < best_total:
            best, best_total, best_sim, best_per = dict(start), total, sim, per
    found: dict[tuple, tuple[dict, dict]] = {}  # the per-feature distances and features of each candidate

    def distance(values: dict[str, float]) -> float:
        total, per, sim, _ = evaluate(values, spread)
        found[tuple(values.items())] = (per, sim)
        return total

    searched, total = compass_search(best, best_total, {k: (lo, hi) for k, (lo, hi, _) in FITTED.items()},
                                     {k: (hi - lo) / 4 for k, (lo, hi, _) in FITTED.items()}, distance,
                                     lambda: len(trace), budget)
    if searched is not best:
        best, best_total = searched, total
        best_per, best_sim = found[tuple(best.items())]
    bar.close()
    return {"stock": {"values": paper, "distance": stock_total, "features": stock_per, "sim": stock_sim},
            "fitted": {"values": best, "distance": best_total, "features": best_per, "sim": best_sim},
            "spread": spread, "trace": trace, "config": config_from_vector(best, base)}
