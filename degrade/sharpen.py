"""Unsharp-mask (USM) sharpening of the ground truth (BasicSR `USMSharp`, reference §2.11).

The reference blurs with a 51×51 2-D Gaussian (cv2.getGaussianKernel(51, 0) ⊗ itself, σ = 8), twice
per call. A Gaussian is separable and reflect padding is separable, so two 1-D passes over the
reflect-padded image give the same result with 102 instead of 2,601 multiply-adds per pixel; this
is where most of the speed-up over the reference comes from (USM is ~80% of its degradation time).
On CPU the two passes run through OpenCV's vectorized filters plane by plane, the planes spread over
torch's threads (`degrade.parallel`); elsewhere (and for images not larger than the blur half-size) as two
band-matrix products. The horizontal pass runs as a vertical pass over the transposed plane
(`degrade.filter.separable_filter_plane`: OpenCV's column filter is about twice as fast as its row filter).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from degrade.checks import check_images
from degrade.filter import _check_images, _thread_work_planes, reflect_indices, separable_filter_plane
from degrade.parallel import run_parallel

__all__ = ["gaussian_taps", "reflect_band_matrix", "gaussian_blur_separable", "usm_sharpen", "USMSharpen"]


def gaussian_taps(size: int, sigma: float = 0.0, *, dtype: torch.dtype = torch.float64,
                  device: torch.device | None = None) -> Tensor:
    """1-D Gaussian taps as `cv2.getGaussianKernel(size, sigma)` computes them for size > 7.

    sigma ≤ 0 selects cv2's rule σ = 0.3·((size − 1)/2 − 1) + 0.8 (σ = 8 for size 51). cv2 uses fixed
    tables for size ≤ 7 with sigma ≤ 0; we always use the formula (USM uses 51).
    """
    if size % 2 == 0 or size < 1:
        raise ValueError(f"Gaussian size must be a positive odd integer, got {size}")
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma * sigma))
    return (taps / taps.sum()).to(dtype)


def reflect_band_matrix(n: int, taps: Tensor) -> Tensor:
    """(n, n) matrix M with (x @ M)[j] = Σ_i taps[i]·x_reflect[j + i − k//2] along one axis.

    Folding the reflect padding (BORDER_REFLECT_101, as ``F.pad(mode="reflect")``) into the matrix
    turns a 1-D filter into one dense matmul, which BLAS runs far faster on CPU than a depthwise
    convolution with a long kernel (measured in bench/degrade.py).
    """
    k = taps.numel()
    padded_source = reflect_indices(n, k // 2, taps.device)  # padded position → source pixel
    source = padded_source[torch.arange(n, device=taps.device)[:, None] + torch.arange(k, device=taps.device)[None, :]]
    target = torch.arange(n, device=taps.device)[:, None].expand(n, k)
    matrix = torch.zeros(n, n, dtype=taps.dtype, device=taps.device)
    return matrix.index_put_((source, target), taps.expand(n, k), accumulate=True)


def gaussian_blur_separable(images: Tensor, taps: Tensor) -> Tensor:
    """Blur with the 2-D kernel taps⊗taps as two 1-D passes; reflect padding, same size.

    Equal (to float rounding) to `filter2d(images, outer(taps, taps))`.
    """
    _check_images(images)
    b, c, h, w = images.shape
    taps = taps.to(device=images.device, dtype=images.dtype)
    if _opencv_applies(images, taps.numel() // 2):
        return _blur_opencv(images, taps)
    along_w = images.reshape(b * c * h, w) @ reflect_band_matrix(w, taps)
    along_h = reflect_band_matrix(h, taps).T @ along_w.reshape(b * c, h, w)
    return along_h.reshape(b, c, h, w)


def _opencv_applies(images: Tensor, half: int) -> bool:
    """Whether the OpenCV CPU path handles these images (float32/64 CPU tensors larger than the half-size)."""
    h, w = images.shape[-2:]
    return (images.device.type == "cpu" and images.dtype in (torch.float32, torch.float64) and h > half and w > half
            and not images.requires_grad)


def mask_threshold(threshold: float, dtype: np.dtype | type) -> np.floating:
    """The largest x of ``dtype`` with fl(x·255) ≤ threshold, so that ``|r|·255 > threshold ⇔ |r| > x``.

    Rounding is monotone, so fl(x·255) > t holds exactly above one cut; comparing |r| with that cut
    gives the mask of the tensor formula bit for bit with one pass instead of two (scale, compare).
    The comparison runs in the images' dtype, as torch compares a float32 tensor with a Python float.
    """
    dtype = np.dtype(dtype)
    t, scale = dtype.type(threshold), dtype.type(255)
    if not np.isfinite(t):
        return t  # ±inf, NaN: |r| > t is then exactly |r|·255 > t
    with np.errstate(over="ignore"):
        x = dtype.type(t / scale)
        while x * scale > t:
            x = np.nextafter(x, dtype.type(-np.inf))
        while np.nextafter(x, dtype.type(np.inf)) * scale <= t:
            x = np.nextafter(x, dtype.type(np.inf))
    return x


def _blur_plane(image: np.ndarray, kernel: np.ndarray, out: np.ndarray) -> None:
    """``kernel ⊗ kernel`` blur of one plane into ``out`` (reflect-101), see `separable_filter_plane`."""
    separable_filter_plane(image, kernel, kernel, out)


def _usm_plane(image: np.ndarray, kernel: np.ndarray, weight: float, cut: np.floating, out: np.ndarray) -> None:
    """USM of one plane into ``out``: the tensor formula's operations in its order, in place, while in cache."""
    work, residual, soft = _thread_work_planes("usm", (image.shape,) * 3, image.dtype)
    _blur_plane(image, kernel, work)
    np.subtract(image, work, out=residual)
    np.abs(residual, out=work)
    cv2.threshold(work, float(cut), 1.0, cv2.THRESH_BINARY, dst=work)  # the mask as 0.0 / 1.0, see mask_threshold
    _blur_plane(work, kernel, soft)
    np.multiply(residual, weight, out=residual)
    np.add(image, residual, out=residual)
    np.clip(residual, 0, 1, out=residual)  # sharp
    np.subtract(1, soft, out=work)
    np.multiply(work, image, out=out)
    np.multiply(soft, residual, out=soft)
    np.add(soft, out, out=out)  # soft·sharp + (1 − soft)·img


def _usm_opencv(images: Tensor, taps: Tensor, weight: float, threshold: float) -> Tensor:
    """CPU path of `usm_sharpen`: the same formula plane by plane, the planes spread over torch's threads.

    Every step computes what the tensor formula computes (same operations in the same order, so the
    same numbers), only in place on one plane at a time instead of on whole-batch temporaries (a pass
    over memory each).
    """
    source = images.detach().contiguous().numpy().reshape(-1, *images.shape[-2:])
    kernel = taps.detach().numpy()
    out = np.empty_like(source)
    cut = mask_threshold(threshold, source.dtype)
    run_parallel(lambda p: _usm_plane(source[p], kernel, weight, cut, out[p]), source.shape[0])
    return torch.from_numpy(out.reshape(images.shape))


def _blur_opencv(images: Tensor, taps: Tensor) -> Tensor:
    """CPU path of `gaussian_blur_separable`: `_blur_plane` (reflect-101 border) on every plane."""
    source = images.detach().contiguous().numpy().reshape(-1, *images.shape[-2:])
    kernel = taps.detach().numpy()
    out = np.empty_like(source)

    def blur(plane: int) -> None:
        _blur_plane(source[plane], kernel, out[plane])

    run_parallel(blur, source.shape[0])
    return torch.from_numpy(out.reshape(images.shape))


def usm_sharpen(images: Tensor, weight: float = 0.5, threshold: float = 10, radius: int = 50) -> Tensor:
    """Unsharp masking with a soft threshold mask, as the reference sharpens the GT.

    residual = img − blur(img); mask = 1[|residual|·255 > threshold]; soft = blur(mask);
    out = soft·clip(img + weight·residual, 0, 1) + (1 − soft)·img. The blur is a Gaussian of size
    radius+1 if radius is even (51 by default, σ = 8 by cv2's rule). Source: BasicSR `USMSharp`.

    Args:
        images: (B, C, H, W) in [0, 1]; H and W must exceed the blur half-size (25 by default).
        weight: sharpening strength.
        threshold: residual threshold in 1/255 units.
        radius: blur size; made odd as the reference does.

    Returns:
        (B, C, H, W) sharpened images in [0, 1].

    Example:
        >>> x = torch.full((1, 3, 64, 64), 0.5)
        >>> bool(torch.allclose(usm_sharpen(x), x))
        True
    """
    check_images(images)  # dtype, NaN, range: the GT entry point of training
    size = radius + 1 if radius % 2 == 0 else radius
    taps = gaussian_taps(size, 0.0, dtype=images.dtype, device=images.device)
    if _opencv_applies(images, size // 2):
        return _usm_opencv(images, taps, weight, threshold)
    residual = images - gaussian_blur_separable(images, taps)
    mask = (residual.abs() * 255 > threshold).to(images.dtype)
    soft_mask = gaussian_blur_separable(mask, taps)
    sharp = (images + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * images


class USMSharpen(torch.nn.Module):
    """Module wrapper of `usm_sharpen` for callers that need an `nn.Module`."""

    def __init__(self, weight: float = 0.5, threshold: float = 10, radius: int = 50) -> None:
        super().__init__()
        self.weight, self.threshold, self.radius = weight, threshold, radius

    def forward(self, images: Tensor) -> Tensor:
        return usm_sharpen(images, self.weight, self.threshold, self.radius)


