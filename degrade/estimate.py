"""Estimators of what degraded an image: noise level and kind, JPEG quality, blur. Batched, per image.

Every function takes (B, 3, H, W) RGB tensors in [0, 1] (any device; computed on CPU in float64) and
returns per-image values, except `jpeg_quality_from_file`, which reads a file's headers. They are
the measuring half of `pipelines.data_jobs.calibrate`, which fits a `DegradationConfig` by comparing their
distributions on real and simulated images, so a bias shared by both sides cancels there; the
docstrings say where each estimator is biased when it is used alone. Accuracy tables: README
"Estimating degradations" (measured by tests/degrade/test_estimate.py and bench/estimate.py).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from degrade.jpeg_header import JpegFileInfo, file_format, jpeg_quality_from_file
from degrade.webp_header import WebpFileInfo, webp_quality_from_file

__all__ = ["NoiseEstimate", "JpegEstimate", "noise_sigma", "noise_estimate", "jpeg_quality", "blockiness",
           "sharpness", "blur_sigma", "jpeg_quality_from_file", "JpegFileInfo", "file_format",
           "BLOCKINESS_THRESHOLD", "webp_quality_from_file", "WebpFileInfo", "unclipped_blocks"]

_PATCH = 7  # patch side of the PCA noise estimate (49 dimensions; Chen et al. use 7x7 to 8x8)
_LUMA = (0.299, 0.587, 0.114)  # the Y weights libjpeg uses, so blockiness is measured where JPEG quantizes
BLOCKINESS_THRESHOLD = 1.12  # below: "not JPEG-like" (see `jpeg_quality`)
_REBLUR = 1.0  # σ of the re-blur in `sharpness`
_INTRINSIC_BLUR = 1.16  # median `sharpness` of the unblurred bundled photos (0.78-1.38); removed in quadrature
_BLUR_GAIN = 1.10  # d sharpness / d σ on the bundled photos for σ 0.5-3 (tests/degrade/test_estimate.py)


def _check(images: Tensor) -> np.ndarray:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if min(images.shape[-2:]) < 2 * _PATCH:
        raise ValueError(f"images must be at least {2 * _PATCH}x{2 * _PATCH} pixels, got {tuple(images.shape[-2:])}")
    return images.detach().to("cpu", torch.float64).numpy() * 255.0


# --- noise -------------------------------------------------------------------------------------------------------

def _chen_levels(eigenvalues: Tensor) -> tuple[Tensor, Tensor]:
    """Chen et al. (ICCV 2015) on (M, r) ascending eigenvalues: the noise variance is the mean of the
    smallest eigenvalues, taking the largest tail of the spectrum whose mean does not exceed its
    median (texture eigenvalues are outliers above; pure noise eigenvalues have mean ≈ median).
    Returns (σ² (M,), tail length (M,))."""
    desc = torch.flip(eigenvalues.clamp(min=0.0), dims=[-1])
    r = desc.shape[-1]
    i = torch.arange(r)
    length = r - i
    tail_mean = torch.flip(torch.cumsum(torch.flip(desc, dims=[-1]), dim=-1), dims=[-1]) / length
    # desc is sorted, so the median of desc[i:] is the mean of its two middle elements.
    lo, hi = i + (length - 1) // 2, i + length // 2
    tail_median = (desc[:, lo] + desc[:, hi]) / 2
    ok = tail_mean <= tail_median * (1 + 1e-12)
    first = torch.where(ok.any(dim=1), torch.argmax(ok.to(torch.int8), dim=1), torch.full_like(ok[:, 0], r - 1,
                                                                                              dtype=torch.int64))
    return tail_mean.gather(1, first[:, None])[:, 0], r - first


def _planes_noise(planes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(M, H, W) planes → σ² (M,), per-patch noise-subspace energy (M, N) and patch means (M, N)."""
    # float32 patches (exact for 8-bit values) and float64 covariance accumulation: fast and precise enough.
    patches = torch.nn.functional.unfold(planes[:, None].float(), _PATCH)  # (M, 49, N)
    means = patches.mean(dim=1).double()
    centred = patches - patches.mean(dim=2, keepdim=True)
    cov = (centred @ centred.transpose(1, 2)).double() / max(1, patches.shape[2] - 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    values = values.to(planes.dtype)
    variance, tail = _chen_levels(values)
    in_tail = (torch.arange(values.shape[1])[None] < tail[:, None]).float()  # the smallest `tail`
    basis = vectors.float() * in_tail[:, None, :]  # zero the texture directions
    energy = ((basis.transpose(1, 2) @ centred) ** 2).sum(dim=1).double() / tail[:, None]
    return variance, energy, means


@dataclass(frozen=True)
class NoiseEstimate:
    """Per image: sigma (/255 units), channel_correlation (1 = gray noise, 0 = independent colour noise)
    and signal_dependence (≈0 for additive Gaussian, ≈1 for Poisson/shot noise; NaN when too few
    unclipped patches)."""

    sigma: Tensor
    channel_correlation: Tensor
    signal_dependence: Tensor


def _signal_dependence(energy: np.ndarray, means: np.ndarray, clipped: np.ndarray, bins: int = 6) -> float:
    """Fit noise variance = a + b·intensity over intensity bins; return the share b·μ / (a + b·μ) at the mean μ.

    Patches with a clipped pixel are left out: clipping at 0 and 255 shrinks the variance near the
    ends of the range and would fake a dependence on intensity for Gaussian noise.
    """
    keep = ~clipped
    if keep.sum() < 20 * bins:
        return float("nan")
    energy, means = energy[keep], means[keep] / 255.0
    edges = np.quantile(means, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, means, side="right") - 1, 0, bins - 1)
    # Median per bin: texture leaks a few large energies into the noise subspace; the median ignores them.
    x = np.array([means[index == k].mean() for k in range(bins) if (index == k).any()])
    y = np.array([np.median(energy[index == k]) for k in range(bins) if (index == k).any()])
    if x.size < 3 or np.ptp(x) < 0.05:
        return float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    mid = float(means.mean())
    total = intercept + slope * mid
    return float(np.clip(slope * mid / total, -1.0, 2.0)) if total > 1e-6 else float("nan")


def noise_estimate(images: Tensor, chunk: int = 8) -> NoiseEstimate:
    """Noise level, gray-vs-colour indicator and signal dependence per image (patch-PCA, Chen et al. 2015).

    sigma: per RGB channel, the covariance of all 7x7 patches has eigenvalues σ² in the directions
    the texture does not use; their mean (Chen's mean-vs-median rule picks how many) is σ², averaged
    over the channels. The 1/255 grid adds 1/12 to the variance, which is subtracted.
    channel_correlation: the same estimate on the decorrelated differences (R−G)/√2 and (B−G)/√2 has
    variance σ²(1 − ρ), where ρ is the correlation of the noise across channels: ρ = 1 for gray noise
    (one field added to all channels), 0 for independent colour noise.
    signal_dependence: per-patch energy in the noise subspace against the patch's mean intensity.

    Biases: texture the PCA cannot separate from noise (fine regular texture, small images) raises
    σ; clipped (saturated) areas lower it; JPEG removes noise and adds its own correlated error, so
    after JPEG σ measures what is left (usually lower for strong compression, raised by ringing on
    clean images); blur and downscaling before the noise do not change it, after the noise they
    lower it. Chroma subsampling smooths colour noise in the differences, which pushes
    channel_correlation towards 1. Poisson noise of the reference's model is gray or colour like
    Gaussian noise, so channel_correlation works for both.
    """
    _check(images)
    if images.shape[0] > chunk:  # bounds memory: 49 values per pixel and plane
        parts = [noise_estimate(images[i : i + chunk], chunk) for i in range(0, images.shape[0], chunk)]
        return NoiseEstimate(*(torch.cat([getattr(p, f) for p in parts]) for f in ("sigma", "channel_correlation",
                                                                                   "signal_dependence")))
    planes = torch.from_numpy(_check(images))
    b = planes.shape[0]
    differences = (planes[:, [0, 2]] - planes[:, [1, 1]]) / np.sqrt(2.0)
    variance, energy, means = _planes_noise(torch.cat([planes, differences], dim=1).flatten(0, 1))
    variance = variance.reshape(b, 5)
    var = (variance[:, :3].mean(dim=1) - 1.0 / 12.0).clamp(min=0.0)
    diff_var = (variance[:, 3:].mean(dim=1) - 1.0 / 12.0).clamp(min=0.0)
    corr = torch.where(var > 0.25, (1.0 - diff_var / var.clamp(min=1e-12)).clamp(-1.0, 1.0), float("nan"))
    flat = planes[:, :3].float()
    low, high = -torch.nn.functional.max_pool2d(-flat, _PATCH, 1), torch.nn.functional.max_pool2d(flat, _PATCH, 1)
    clipped = ((low < 0.5) | (high > 254.5)).reshape(b, 3, -1)
    energy, means = energy.reshape(b, 5, -1)[:, :3], means.reshape(b, 5, -1)[:, :3]
    dep = [_signal_dependence(energy[k].flatten().numpy(), means[k].flatten().numpy(), clipped[k].flatten().numpy())
           for k in range(b)]
    return NoiseEstimate(var.sqrt(), corr, torch.tensor(dep, dtype=torch.float64))


def noise_sigma(images: Tensor) -> Tensor:
    """(B,) Gaussian noise level in /255 units; see `noise_estimate` for the method and its biases."""
    return noise_estimate(images).sigma


# --- JPEG --------------------------------------------------------------------------------------------------------

def _luma(image: np.ndarray) -> np.ndarray:
    return _LUMA[0] * image[0] + _LUMA[1] * image[1] + _LUMA[2] * image[2]


def _blockiness_one(y: np.ndarray) -> float:
    """Mean |step| across the 8x8 grid lines over the mean |step| elsewhere, both directions pooled."""
    ratios = []
    for d in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        at_grid = d[:, 7::8]
        inside = np.delete(d, np.s_[7::8], axis=1)
        if at_grid.size == 0:
            return float("nan")
        ratios.append((at_grid.mean() + 1e-3) / (inside.mean() + 1e-3))
    return float(np.mean(ratios))


def blockiness(images: Tensor) -> Tensor:
    """(B,) blockiness on the 8x8 grid anchored at the top-left pixel: ≈1 for images never JPEG-compressed
    on that grid, growing as the quality drops. Crops must keep the grid: offsets multiples of 8."""
    return torch.tensor([_blockiness_one(_luma(image)) for image in _check(images)], dtype=torch.float64)


def unclipped_blocks(rgb: np.ndarray, min_share: float = 0.1) -> np.ndarray | None:
    """(H, W) bool: the pixels of the 8x8 blocks (grid at the top-left pixel) with no channel at 0 or 255;
    None when fewer than ``min_share`` of the blocks are unclipped (a block or two of evidence would let one
    flat block decide: measure every pixel then).

    A decoder clips what the IDCT puts outside [0, 255]; re-encoding a block with clipped pixels moves its
    coefficients off the quantization lattice, so such blocks are no fixed point at any quality (on dark or
    bright tiles they hid most decoded JPEGs), while unclipped blocks of a decoded JPEG are exact ones."""
    h, w = rgb.shape[:2]
    hb, wb = h // 8, w // 8
    clipped = ((rgb == 0) | (rgb == 255)).any(axis=2)[: hb * 8, : wb * 8]
    keep_blocks = ~clipped.reshape(hb, 8, wb, 8).any(axis=(1, 3))
    if keep_blocks.sum() < max(1.0, min_share * keep_blocks.size):
        return None
    mask = np.zeros((h, w), dtype=bool)
    mask[: hb * 8, : wb * 8] = np.repeat(np.repeat(keep_blocks, 8, axis=0), 8, axis=1)
    return mask


def _luma_hwc(bgr: np.ndarray) -> np.ndarray:
    """`_luma` of an (H, W, 3) BGR array as float64, in the same order of operations."""
    image = bgr.astype(np.float64)
    return _LUMA[0] * image[..., 2] + _LUMA[1] * image[..., 1] + _LUMA[2] * image[..., 0]


def _recompression_error(bgr: np.ndarray, source_luma: np.ndarray, quality: int,
                         mask: np.ndarray | None = None) -> float:
    """Mean squared luma change of one libjpeg round trip of ``bgr`` (contiguous uint8, its luma given) at
    ``quality``, over ``mask`` (None: every pixel)."""
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    change = (_luma_hwc(cv2.imdecode(encoded, cv2.IMREAD_COLOR)) - source_luma) ** 2
    return float(change.mean() if mask is None else change[mask].mean())


_SEARCH = (8, 98)  # re-compression search range (qualities whose tables are distinct enough to tell apart)
_STEP = 1  # grid of the search: every quality (a coarser grid misses fixed points between its points)
_GAP = 3  # the dip compares with the errors 3 qualities away
_DIP = 0.5  # a fixed point's error is below this fraction of its grid neighbours' (clean images: ≥ 0.9)
# ... and, over unclipped blocks, near the least error of the whole search (≈ 0 at a decoded JPEG's quality and at
# the qualities whose tables are its fractions): error ≤ 2 × least + 0.1 levels². A bump of the error curve at
# coarse tables (q 8-20) is a relative dip too, but its error stays far above that (64x64 tiles with few unclipped
# blocks: 1-2 vs 0.0). Measured over clipped blocks (too few unclipped) the true quality's error is 2-6, not ~0.
_NEAR_LEAST = (2.0, 0.1)


def _search_quality(rgb: np.ndarray, step: int = _STEP) -> tuple[int, float]:
    """The deepest local minimum of the luma re-compression error over the quality, and its dip.

    Coarse grid (every ``step``) first: the dip of a grid point is its error over the smaller error of
    its two grid neighbours (≈0 at a decoded JPEG's quality, ≥1 where the error just keeps falling, as
    for clean images), and a dip counts only where the error itself is near the search's least
    (`_NEAR_LEAST`, when measured over unclipped blocks); then every quality within ``step`` of the
    deepest one, keeping the least error.
    """
    low, high = _SEARCH
    grid = list(range(low, high + 1, step))
    mask = unclipped_blocks(rgb)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    source_luma = _luma_hwc(bgr)
    errors = [_recompression_error(bgr, source_luma, q, mask) for q in grid]
    gap = max(1, _GAP // step)  # neighbouring qualities share most table entries: compare with farther ones
    dips = [errors[i] / max(min(errors[i - gap], errors[i + gap]), 1e-9) for i in range(gap, len(grid) - gap)]
    # A lattice of steps Q contains the lattices of Q/2, Q/3...: the image is also nearly a fixed point at
    # the qualities whose tables are such fractions, so the lowest quality with a deep dip is the one.
    bound = _NEAR_LEAST[0] * min(errors) + _NEAR_LEAST[1] if mask is not None else math.inf
    deep = [i for i, d in enumerate(dips) if d < _DIP and errors[i + gap] <= bound]
    centre = gap + (deep[0] if deep else int(np.argmin(dips)))
    dip = dips[centre - gap] if deep else max(dips[centre - gap], _DIP)  # no fixed point: not JPEG-like
    if step == 1:
        return grid[centre], dip
    fine = {q: _recompression_error(bgr, source_luma, q, mask)
            for q in range(grid[centre] - step + 1, grid[centre] + step)}
    best = min(fine, key=fine.get)
    return best, dip


@dataclass(frozen=True)
class JpegEstimate:
    """Per image: quality (IJG scale; NaN where not JPEG-like), blockiness, jpeg_like, and dip (see `jpeg_quality`)."""

    quality: Tensor
    blockiness: Tensor
    jpeg_like: Tensor
    dip: Tensor


def jpeg_quality(images: Tensor, threshold: float = BLOCKINESS_THRESHOLD, workers: int = 0) -> JpegEstimate:
    """JPEG quality of decoded images (e.g. PNGs of what once was a JPEG), by re-compression search.

    A decoded JPEG is nearly a fixed point of re-encoding at its own quality with libjpeg's tables:
    its DCT coefficients already lie on that quantization lattice, so the round trip changes it
    least there. Every quality 8-98 is tried (libjpeg via OpenCV, luma error); the "dip" of a
    quality is its error over the smaller error 3 qualities away, ≈0 at a decoded JPEG's quality
    and ≥0.6 everywhere for clean images (their error just keeps falling with the quality), and over
    unclipped blocks a dip counts only where the error is near the search's least (≤ 2x it + 0.1). The
    lattice of steps Q contains those of Q/2, Q/3, so the lowest quality with a dip below 0.5 is
    reported; images without one are "not JPEG-like" (quality NaN). The error is taken over the 8x8
    blocks without clipped pixels (`unclipped_blocks`): a clipped block is a fixed point of no quality.

    Blockiness (returned too) is the usual indicator but is not used for the decision: on 64x64
    patches it misses most q ≥ 85, and photos that were JPEGs before on the same grid (the bundled
    ones reach 2.9) pass any threshold; ``threshold`` is kept for callers that want it.

    Assumes: the 8x8 grid starts at the top-left pixel (no crop by a non-multiple of 8, no resize
    after compression — a resized JPEG is not JPEG-like any more), a single compression with the IJG
    tables (custom tables give the nearest IJG quality), 4:2:0 chroma (the re-encoder's). Biases:
    double compression reports one of the two qualities; noise added after the JPEG hides it; flat
    patches carry no evidence and read as not JPEG-like, and so do patches with fewer than 10 % of their
    blocks free of clipped (0 / 255) pixels; ~10 ms per 64x64 patch (91 encodes) on one core.

    ``workers`` threads search the images (0: ``torch.get_num_threads()``); OpenCV's encoder and decoder
    release the GIL, and every image's search is independent, so the result does not depend on it.
    """
    pixels = _check(images)
    block = torch.tensor([_blockiness_one(_luma(image)) for image in pixels], dtype=torch.float64)
    arrays = [np.clip(np.round(image), 0, 255).astype(np.uint8).transpose(1, 2, 0) for image in pixels]
    workers = min(len(arrays), workers or torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(_search_quality, arrays))
    else:
        found = [_search_quality(array) for array in arrays]
    quality = torch.tensor([q for q, _ in found], dtype=torch.float64)
    dip = torch.tensor([d for _, d in found], dtype=torch.float64)
    like = dip < _DIP
    return JpegEstimate(torch.where(like, quality, float("nan")), block, like, dip)


# --- blur --------------------------------------------------------------------------------------------------------

def _gradient(plane: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(plane, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(plane, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    return np.hypot(gx, gy)


def _edge_width(y: np.ndarray, top: float = 0.05) -> float:
    """Re-blur gradient ratio (Zhuo & Sim 2011): a step edge blurred by σ has gradient ratio
    R = √(σ² + σr²) / σ to its re-blur by σr, so σ = σr / √(R² − 1); the median over the strongest edges."""
    reblurred = cv2.GaussianBlur(y, (0, 0), _REBLUR, borderType=cv2.BORDER_REFLECT_101)
    g0, g1 = _gradient(y)[2:-2, 2:-2], _gradient(reblurred)[2:-2, 2:-2]
    strength = g1.ravel()
    count = max(8, int(top * strength.size))
    index = np.argpartition(strength, -count)[-count:]
    ratio = g0.ravel()[index] / np.maximum(strength[index], 1e-9)
    ratio = np.median(ratio)
    return float(_REBLUR / np.sqrt(ratio**2 - 1.0)) if ratio > 1.0 + 1e-6 else float("inf")


def sharpness(images: Tensor) -> Tensor:
    """(B,) apparent edge blur σ in pixels, uncalibrated (includes the image's own softness)."""
    return torch.tensor([_edge_width(_luma(image) / 255.0) for image in _check(images)], dtype=torch.float64)


def blur_sigma(images: Tensor, intrinsic: float = _INTRINSIC_BLUR) -> Tensor:
    """(B,) σ of the Gaussian blur an image has suffered: √(s² − s₀²) / gain, 0 if s ≤ s₀, where s is
    `sharpness`, s₀ = ``intrinsic`` the sharpness of the unblurred source and gain = 1.10 the slope
    of s against the true σ (both calibrated on the bundled photos: their s₀ is 0.78-1.38, median
    1.16, the default; with each photo's own s₀ the σ of 0.5-3 is recovered within ±25 %).

    Used blind (without the source's s₀), the answer absorbs how soft the photo itself is: ±0.3 px
    for photos like the bundled ones. Assumes edges are steps blurred by a Gaussian; an image with no
    strong edges (a flat patch) gives a meaningless value. Biases: noise adds gradient and makes
    images look sharper (lower σ); so do JPEG ringing and USM sharpening; anisotropic kernels give
    an average width.
    """
    s = sharpness(images)
    return torch.sqrt(torch.clamp(s**2 - intrinsic**2, min=0.0)) / _BLUR_GAIN
