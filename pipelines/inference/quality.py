"""Image quality metrics: PSNR and SSIM as BasicSR (reference §4.7) and NIQE, batched in torch.

`niqe` re-implements BasicSR 1.4.2's ``calculate_niqe(img_bgr_uint8, crop_border, input_order='HWC',
convert_to='y')`` (itself a port of the official MATLAB release) step by step:

1. Y of MATLAB's YCbCr from the float32 ``k/255`` values, in float64, rounded to integers; ``crop_border``.
2. Crop to whole 96×96 blocks (top-left anchored); at least two blocks are needed (the reference fails on one).
3. Per scale: local normalisation ``(I - μ) / (σ + 1)`` with the 7×7 Gaussian window and edge replication
   (``scipy.ndimage.convolve(mode='nearest')``), 18 AGGD features per block (the block and its products with
   the block rolled circularly by (0,1), (1,0), (1,1), (1,-1)); moment matching over the grid
   ``0.2:0.001:10`` by nearest ``r(γ)`` (the same choice as the reference's ``argmin``, found by binary search
   because ``r`` is increasing, NaN picking the first grid point as ``np.argmin`` does).
4. Between scales MATLAB's bicubic ``imresize`` by 0.5 with antialiasing (kernel width 8, symmetric padding).
5. Distance ``sqrt(dμᵀ pinv((Σ_pris + Σ_img) / 2) dμ)``; mean by ``nanmean``, covariance of the NaN-free rows.

Precision follows the reference: Y, the filtered images and the resize are float32 as in the reference (scipy's
``convolve`` sums in float64 and returns the input's float32; its ``imresize`` runs in torch float32); the
block moments are summed in float32 (torch's cascaded sums; the reference's are numpy's pairwise float32
sums). Everything runs on the images' device, batched per image size.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import gamma as gamma_fn

from pipelines.training.metrics import psnr, ssim, to_y_channel

__all__ = ["psnr", "ssim", "to_y_channel", "niqe", "niqe_features", "matlab_imresize", "aggd_fit", "ggd_fit",
           "NIQE_BLOCK", "PRISTINE_PARAMS_PATH"]

NIQE_BLOCK = 96
PRISTINE_PARAMS_PATH = Path(__file__).with_name("data") / "niqe_pris_params.npz"
_GRID = np.arange(0.2, 10.001, 0.001)  # the reference's shape grid, 9801 values


@lru_cache(maxsize=1)
def _pristine() -> dict[str, np.ndarray]:
    with np.load(PRISTINE_PARAMS_PATH, allow_pickle=False) as data:
        return {key: np.array(data[key], dtype=np.float64) for key in ("mu_pris_param", "cov_pris_param",
                                                                        "gaussian_window")}


def _separable_taps(window: np.ndarray) -> np.ndarray:
    """1-D taps g with outer(g, g) == window (a Gaussian is separable); symmetric, so flipping is moot."""
    return window[3] / np.sqrt(window[3, 3])


@lru_cache(maxsize=8)
def _tables(device: torch.device) -> dict[str, torch.Tensor]:
    """Shape grid, r(γ) and Γ(1/γ), Γ(2/γ), Γ(3/γ) per grid point, computed with scipy as the reference does."""
    inv = np.reciprocal(_GRID)
    g1, g2, g3 = gamma_fn(inv), gamma_fn(inv * 2), gamma_fn(inv * 3)
    params = _pristine()
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    return {"gam": as_t(_GRID), "r": as_t(np.square(g2) / (g1 * g3)), "g1": as_t(g1), "g2": as_t(g2),
            "g3": as_t(g3), "mu": as_t(params["mu_pris_param"][0]), "cov": as_t(params["cov_pris_param"]),
            "taps": as_t(_separable_taps(params["gaussian_window"]))}


def _grid_index(value: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of argmin((table - value)²) for an increasing table; ties to the lower index, NaN to 0 (np.argmin)."""
    upper = torch.searchsorted(table, value.contiguous()).clamp(1, table.numel() - 1)
    lower = upper - 1
    pick_upper = (table[upper] - value) ** 2 < (table[lower] - value) ** 2
    return torch.where(torch.isnan(value), torch.zeros_like(upper), torch.where(pick_upper, upper, lower))


def aggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD (shape α, left scale β_l, right scale β_r) by moment matching over the last dim, as the reference.

    Float64; a side without samples gives NaN as in the reference (mean of an empty array).
    """
    index, beta_l, beta_r = _aggd(x)
    return _tables(x.device)["gam"][index], beta_l, beta_r


def _aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grid index of α, β_l, β_r) of the AGGD fit over the last dim.

    Sums in x's dtype (torch's cascaded sums, like numpy's pairwise float32 sums in the reference), the
    statistics from them in float64.
    """
    tab = _tables(x.device)
    n = x.shape[-1]
    negative_part = x.clamp(max=0)
    left_sum = (negative_part * negative_part).sum(-1).double()
    total = (x * x).sum(-1).double()
    right_sum = total - left_sum
    left_std = torch.sqrt(left_sum / (x < 0).sum(-1))  # 0/0 = NaN for a side without samples, as the reference
    right_std = torch.sqrt(right_sum / (x > 0).sum(-1))
    gammahat = left_std / right_std
    rhat = (x.abs().sum(-1).double() / n) ** 2 / (total / n)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    index = _grid_index(rhatnorm, tab["r"])
    scale = torch.sqrt(tab["g1"][index] / tab["g3"][index])
    return index, left_std * scale, right_std * scale


def ggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric GGD (shape α, scale β): the AGGD fit with both sides pooled (NIQE's first two features)."""
    alpha, beta_l, beta_r = aggd_fit(x)
    return alpha, (beta_l + beta_r) / 2


@lru_cache(maxsize=32)
def _resize_taps(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB imresize bicubic weights and 0-based input indices (BasicSR ``calculate_weights_indices``).

    Float32 like the reference; indices may fall outside the input (symmetric padding is applied later).
    """
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    x = torch.linspace(1, out_len, out_len)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    indices = left.view(out_len, 1) + torch.linspace(0, p - 1, p).view(1, p)
    dist = (u.view(out_len, 1) - indices) * (scale if scale < 1 else 1.0)
    a = dist.abs()
    weights = ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))
    if scale < 1:
        weights = scale * weights
    weights = weights / weights.sum(1, keepdim=True)
    zeros = (weights == 0).sum(0)
    if zeros[0] != 0:  # the reference drops an edge column with any zero weight
        indices, weights = indices[:, 1:], weights[:, 1:]
    if zeros[-1] != 0:
        indices, weights = indices[:, :-1], weights[:, :-1]
    index = indices.long() - 1  # MATLAB is 1-based
    if -int(index.min()) > in_len or int(index.max()) - in_len >= in_len:
        raise ValueError(f"imresize: a side of {in_len} px is too short for the bicubic kernel")
    return weights.contiguous(), index.contiguous()


def _symmetric_pad(img: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """MATLAB 'symmetric' padding (edge sample repeated: ... x1 x0 | x0 x1 ...) along ``dim``."""
    n = img.shape[dim]
    parts = [img.narrow(dim, 0, before).flip(dim)] if before > 0 else []
    parts.append(img)
    if after > 0:
        parts.append(img.narrow(dim, n - after, after).flip(dim))
    return torch.cat(parts, dim) if len(parts) > 1 else img


def _resize_dim(img: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    weights, index = _resize_taps(img.shape[dim], out_len, scale)
    before = max(0, -int(index.min()))
    after = max(0, int(index.max()) - (img.shape[dim] - 1))
    padded = _symmetric_pad(img, dim, before, after)
    index = index + before
    taps = weights.shape[1]
    stride = int(index[1, 0] - index[0, 0]) if out_len > 1 else 1
    regular = (bool((weights == weights[:1]).all()) and stride > 0
               and torch.equal(index, index[:1, :1] + stride * torch.arange(out_len).view(-1, 1)
                               + torch.arange(taps).view(1, -1)))
    out = None
    for k in range(taps):  # tap by tap in tap order, as the reference's float32 dot products
        if regular:  # same taps for every output at a fixed stride (NIQE's 0.5): strided slices, no gather
            start = int(index[0, k])
            term = padded.narrow(dim, start, stride * (out_len - 1) + 1)
            term = term[(slice(None),) * (dim % img.ndim) + (slice(None, None, stride),)]
            term = term * float(weights[0, k])
        else:
            w = weights[:, k].to(img.device, img.dtype).view([out_len if d == dim % img.ndim else 1
                                                              for d in range(img.ndim)])
            term = padded.index_select(dim, index[:, k].to(img.device)) * w
        out = term if out is None else out.add_(term)
    return out


def matlab_imresize(img: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` with antialiasing on the last two dims (H first, then W)."""
    out_h, out_w = math.ceil(img.shape[-2] * scale), math.ceil(img.shape[-1] * scale)
    return _resize_dim(_resize_dim(img, img.ndim - 2, out_h, scale), img.ndim - 1, out_w, scale)


def _filter(img: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """scipy ``convolve(img, window, mode='nearest')`` over (B, H, W): float64 sums, result in the input's dtype.

    The 7×7 window is the outer product of ``taps`` (tested), so two 7-tap passes over edge-replicated
    padding give the same sums up to float64 rounding, far below the float32 result's resolution.
    """
    h, w = img.shape[-2:]
    padded = F.pad(img.unsqueeze(1), (3, 3, 3, 3), mode="replicate").squeeze(1).double()
    g = taps.tolist()
    rows = padded[:, :, 0:w] * g[0]
    for k in range(1, 7):  # in place: one pass over memory per tap (the filter dominates NIQE's cost)
        rows.add_(padded[:, :, k:k + w], alpha=g[k])
    out = rows[:, 0:h, :] * g[0]
    for k in range(1, 7):
        out.add_(rows[:, k:k + h, :], alpha=g[k])
    return out.to(img.dtype)


def _scale_features(img: torch.Tensor, block: int) -> torch.Tensor:
    """(B, H, W) with H, W multiples of ``block`` -> (B, blocks, 18) float64 features."""
    tab = _tables(img.device)
    mu = _filter(img, tab["taps"])
    sigma = torch.sqrt(torch.abs(_filter(img * img, tab["taps"]) - mu * mu))
    normalized = (img - mu) / (sigma + 1)
    b, h, w = normalized.shape
    blocks = normalized.reshape(b, h // block, block, w // block, block).transpose(2, 3)
    blocks = blocks.reshape(b, -1, block, block)
    index, beta_l, beta_r = _aggd(blocks.flatten(-2))
    feats = [tab["gam"][index], (beta_l + beta_r) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        product = blocks * torch.roll(blocks, shifts=shift, dims=(-2, -1))  # in the block dtype, as the reference
        index, beta_l, beta_r = _aggd(product.flatten(-2))
        mean = (beta_r - beta_l) * (tab["g2"][index] / tab["g1"][index])  # the AGGD mean (paper eq. 8)
        feats += [tab["gam"][index], mean, beta_l, beta_r]
    return torch.stack(feats, dim=-1)


def _luma(images: torch.Tensor) -> torch.Tensor:
    """MATLAB Y in 0..255 (float32, not rounded) of (B, 3, H, W) RGB in [0, 1], as the reference computes it.

    The reference divides the uint8 image by 255 in float32, takes the dot product in float64, divides by 255,
    casts to float32 and multiplies by 255 in float32; the same steps here give the same rounding.
    """
    c = images.float().double()
    y = c[:, 2] * 24.966
    y.add_(c[:, 1], alpha=128.553).add_(c[:, 0], alpha=65.481).add_(16.0).div_(255.0)
    return y.float().mul_(255.0)


def niqe_features(images: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """(B, blocks, 36) NIQE block features of same-size RGB images in [0, 1] (NaN where the reference has NaN)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"niqe: expected (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
    y = _luma(images)
    if crop_border:
        y = y[:, crop_border:-crop_border, crop_border:-crop_border]
    y = y.round()
    h, w = y.shape[-2:]
    nh, nw = h // NIQE_BLOCK, w // NIQE_BLOCK
    if nh * nw < 2:
        raise ValueError(f"niqe: image of {h}x{w} px (after crop_border={crop_border}) is smaller than two "
                         f"{NIQE_BLOCK}x{NIQE_BLOCK} blocks; NIQE needs at least 192x96 or 96x192 px")
    y = y[:, : nh * NIQE_BLOCK, : nw * NIQE_BLOCK]
    first = _scale_features(y, NIQE_BLOCK)
    half = matlab_imresize((y / 255.0).float(), 0.5) * 255.0  # float32, as the reference's torch imresize
    second = _scale_features(half, NIQE_BLOCK // 2)
    return torch.cat([first, second], dim=-1)


def _mvg_distance(feats: torch.Tensor) -> torch.Tensor:
    tab = _tables(feats.device)
    valid = ~torch.isnan(feats).any(-1)  # (B, N)
    count = valid.sum(-1)
    if bool((count < 2).any()):
        bad = int(torch.nonzero(count < 2)[0, 0])
        raise ValueError(f"niqe: image {bad} has fewer than two blocks with finite features (flat image?); "
                         "NIQE is undefined for it")
    mu = torch.nanmean(feats, dim=1)
    rows = torch.where(valid.unsqueeze(-1), feats, torch.zeros_like(feats))
    mean = rows.sum(1) / count.unsqueeze(-1)
    centered = (rows - mean.unsqueeze(1)) * valid.unsqueeze(-1)
    cov = centered.transpose(1, 2) @ centered / (count - 1).view(-1, 1, 1)
    inv = torch.linalg.pinv((tab["cov"] + cov) / 2, rtol=1e-15)  # numpy's default cut-off
    d = (tab["mu"] - mu).unsqueeze(-1)
    return torch.sqrt((d.transpose(1, 2) @ inv @ d).reshape(-1))


@torch.no_grad()
def niqe(images: torch.Tensor | list[torch.Tensor], crop_border: int = 0) -> torch.Tensor:
    """NIQE of RGB images in [0, 1]: (B, 3, H, W) or a list of (3, H, W); float64 (B,) on the images' device.

    Equals BasicSR 1.4.2 ``calculate_niqe`` on the 8-bit BGR version of each image (see the module docstring).
    Raises ValueError for an image smaller than two 96×96 blocks (after ``crop_border``).
    """
    if isinstance(images, torch.Tensor):
        return _mvg_distance(niqe_features(images, crop_border))
    if not images:
        raise ValueError("niqe: no images given")
    out = torch.empty(len(images), dtype=torch.float64, device=images[0].device)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(i)
    for indices in by_size.values():
        batch = torch.stack([images[i] for i in indices])
        out[torch.tensor(indices, device=out.device)] = niqe(batch, crop_border).to(out.device)
    return out
