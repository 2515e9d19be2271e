"""Per-sample 2-D filtering with reflect padding (BasicSR `filter2D`, reference §2.7).

On CPU (float32/float64) each sample is filtered on its own through OpenCV, on the smallest path its
kernel allows: the kernels the pipeline builds are zero-padded to 21×21, so the zero border is cut off
(7×7 needs a ninth of the work); a rank-one (separable) kernel, e.g. every isotropic Gaussian, runs as
two 1-D passes (`separable_filter_plane`); any other kernel goes to `cv2.filter2D`, which itself switches to
a DFT for large kernels; the identity (a skipped blur) is a copy. The samples are spread over torch's
threads (`degrade.parallel`). The results equal the 2-D correlation with the full kernel within float
rounding, and depend only on the sample's own kernel and image size, never on the rest of the batch or
the thread count (replay). Other devices, other dtypes and images smaller than the padding use one
grouped convolution for the whole batch.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from degrade.checks import check_dtype
from degrade.parallel import run_parallel

__all__ = ["filter2d", "reflect_pad", "reflect_indices", "kernel_support", "separable_factors",
           "separable_filter_plane"]

_OPENCV_DTYPES = (torch.float32, torch.float64)
_scratch = threading.local()  # per-thread work planes (_thread_work_planes)


def _check_images(images: Tensor, name: str = "images") -> None:
    check_dtype(images, name)
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(images.shape)}")


def reflect_indices(n: int, pad: int, device: torch.device | None = None) -> Tensor:
    """Source index of each of the n + 2·pad positions of a reflect-101 padded axis (cv2 BORDER_REFLECT_101).

    For pad < n this is what ``F.pad(mode="reflect")`` does; larger pads keep reflecting back and forth
    (as cv2 does), so tiny images can still be filtered with the reference's 21×21 kernels.
    """
    positions = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(positions)
    period = 2 * (n - 1)
    folded = positions.remainder(period)
    return torch.where(folded >= n, period - folded, folded)


def reflect_pad(images: Tensor, pad: int) -> Tensor:
    """Reflect-101 pad the last two dimensions by ``pad`` on every side, for any image size."""
    h, w = images.shape[-2:]
    if pad < h and pad < w:
        return F.pad(images, (pad, pad, pad, pad), mode="reflect")
    rows = reflect_indices(h, pad, images.device)
    cols = reflect_indices(w, pad, images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def filter2d(images: Tensor, kernels: Tensor) -> Tensor:
    """Filter each image with its own kernel: cross-correlation (no flip), like `cv2.filter2D`.

    The border is reflect-padded by k//2 (``F.pad(mode="reflect")``, i.e. cv2's BORDER_REFLECT_101;
    images smaller than the padding keep reflecting, see `reflect_pad`) so the output has the input's
    size. One kernel per sample is a grouped convolution with
    groups = B·C; a single shared kernel is a depthwise convolution.

    Args:
        images: (B, C, H, W) floats.
        kernels: (B, k, k) — one per sample — or (1, k, k) shared; k odd. Cast to the images' dtype
            and device.

    Returns:
        (B, C, H, W) filtered images.

    Example:
        >>> delta = torch.zeros(1, 3, 3); delta[0, 1, 1] = 1
        >>> x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(filter2d(x, delta), x))
        True
    """
    _check_images(images)
    if kernels.ndim != 3 or kernels.shape[-1] != kernels.shape[-2]:
        raise ValueError(f"kernels must have shape (B, k, k) or (1, k, k), got {tuple(kernels.shape)}")
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {k}")
    if kernels.shape[0] not in (1, b):
        raise ValueError(f"got {kernels.shape[0]} kernels for a batch of {b} images: pass one per sample or one")
    pad = k // 2
    kernels = kernels.to(device=images.device, dtype=images.dtype)
    if (images.device.type == "cpu" and images.dtype in _OPENCV_DTYPES and h > pad and w > pad
            and not (images.requires_grad or kernels.requires_grad)):
        return _filter2d_opencv(images, kernels)
    padded = reflect_pad(images, pad)
    if kernels.shape[0] == 1:
        weight = kernels.expand(c, k, k).unsqueeze(1)
        return F.conv2d(padded, weight, groups=c)
    weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # (B·C, 1, k, k), sample-major
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.reshape(b, c, h, w)


def kernel_support(kernel: np.ndarray) -> int:
    """Half-size of the smallest centred square holding every nonzero tap of an odd (k, k) kernel."""
    k = kernel.shape[-1]
    centre = k // 2
    rows, cols = np.nonzero(kernel)
    if rows.size == 0:
        return 0
    return int(max(np.abs(rows - centre).max(), np.abs(cols - centre).max()))


def separable_factors(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(column, row) with kernel == outer(column, row) to the kernel dtype's rounding, or None.

    The factors are the centre column scaled by 1/centre and the centre row. A kernel counts as
    separable when the rank-one product is within 4 ulps (of the largest tap) of every tap, i.e. when
    the two kernels are the same numbers up to the rounding that produced the kernel; filtering with
    the factors then equals the 2-D filter within float rounding.
    """
    k = kernel.shape[-1]
    centre = kernel[k // 2, k // 2]
    if centre == 0:
        return None
    exact = kernel.astype(np.float64)
    column = exact[:, k // 2] / float(centre)
    row = exact[k // 2, :]
    scale = np.abs(exact).max()
    if np.abs(np.outer(column, row) - exact).max() > 4 * np.finfo(kernel.dtype).eps * scale:
        return None
    return column.astype(kernel.dtype), row.astype(kernel.dtype)


def _thread_work_planes(name: str, shapes: tuple[tuple[int, ...], ...], dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """Work planes of ``shapes`` for the calling thread, kept between calls under ``name`` (allocating them is a
    page-fault pass each); another shape or dtype replaces them. Callers that run nested use different names."""
    key = (shapes, dtype.str)
    cached = getattr(_scratch, name, None)
    if cached is None or cached[0] != key:
        cached = (key, tuple(np.empty(shape, dtype) for shape in shapes))
        setattr(_scratch, name, cached)
    return cached[1]


def separable_filter_plane(image: np.ndarray, column: np.ndarray, row: np.ndarray, out: np.ndarray) -> None:
    """Correlate one (H, W) plane with ``outer(column, row)`` into ``out`` (reflect-101 border), as
    ``cv2.sepFilter2D(image, -1, row, column)`` does within float rounding.

    OpenCV's column filter runs a long kernel about twice as fast as its row filter (0.46 vs 0.97 ms for 51
    taps, 0.20 vs 0.34 ms for 21 taps on a 400² float32 plane, one AMD EPYC core; it uses the kernel's
    symmetry), so the horizontal pass runs as a vertical pass over the transposed plane: vertical pass,
    transpose, vertical pass, transpose back (1.0 instead of 1.46 ms per 51-tap blur, with the same error
    against a float64 blur).
    """
    shape, turned = image.shape, image.shape[::-1]
    vertical, transposed, filtered = _thread_work_planes("separable", (shape, turned, turned), image.dtype)
    identity = np.ones(1, image.dtype)
    cv2.sepFilter2D(image, -1, identity, column, dst=vertical, borderType=cv2.BORDER_REFLECT_101)
    cv2.transpose(vertical, transposed)
    cv2.sepFilter2D(transposed, -1, identity, row, dst=filtered, borderType=cv2.BORDER_REFLECT_101)
    cv2.transpose(filtered, out)


def _filter_sample_opencv(image: np.ndarray, kernel: np.ndarray, out: np.ndarray) -> None:
    """Filter one (C, H, W) image with one (k, k) kernel into ``out``: the cheapest exact OpenCV path."""
    half = kernel_support(kernel)
    centre = kernel.shape[-1] // 2
    kernel = np.ascontiguousarray(kernel[centre - half : centre + half + 1, centre - half : centre + half + 1])
    if half == 0:  # a scaled pulse (1 for a skipped blur): x·v exactly as the 2-D filter computes it
        np.multiply(image, kernel[0, 0], out=out)
        return
    factors = separable_factors(kernel)
    for c in range(image.shape[0]):
        if factors is None:
            cv2.filter2D(image[c], -1, kernel, dst=out[c], borderType=cv2.BORDER_REFLECT_101)
        else:
            separable_filter_plane(image[c], factors[0], factors[1], out[c])


def _filter2d_opencv(images: Tensor, kernels: Tensor) -> Tensor:
    """CPU path of `filter2d`: sample by sample through OpenCV (see the module docstring)."""
    source = images.detach().contiguous().numpy()
    weights = kernels.detach().contiguous().numpy()
    out = np.empty_like(source)
    shared = weights.shape[0] == 1
    run_parallel(lambda b: _filter_sample_opencv(source[b], weights[0 if shared else b], out[b]), source.shape[0])
    return torch.from_numpy(out)
