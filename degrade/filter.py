"""Per-sample 2-D filtering with reflect padding (BasicSR `filter2D`, reference §2.7).

On CPU (float32/float64) each sample is filtered on its own through OpenCV, on the smallest path its
kernel allows: the kernels the pipeline builds are zero-padded to 21×21, so the zero border is cut off
(7×7 needs a ninth of the work); a rank-one (separable) kernel, e.g. every isotropic Gaussian, runs as
two 1-D passes (`cv2.sepFilter2D`); any other kernel goes to `cv2.filter2D`, which itself switches to
a DFT for large kernels; the identity (a skipped blur) is a copy. The samples are spread over torch's
threads (`degrade.parallel`). The results equal the 2-D correlation with the full kernel within float
rounding, and depend only on the sample's own kernel and image size, never on the rest of the batch or
the thread count (replay). Other devices, other dtypes and images smaller than the padding use one
grouped convolution for the whole batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from degrade.checks import check_dtype
from degrade.parallel import run_parallel

__all__ = ["filter2d", "reflect_pad", "reflect_indices", "kernel_support", "separable_factors"]

_OPENCV_DTYPES = (torch.float32, torch.float64)


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
            cv2.sepFilter2D(image[c], -1, factors[1], factors[0], dst=out[c], borderType=cv2.BORDER_REFLECT_101)


def _filter2d_opencv(images: Tensor, kernels: Tensor) -> Tensor:
    """CPU path of `filter2d`: sample by sample through OpenCV (see the module docstring)."""
    source = images.detach().contiguous().numpy()
    weights = kernels.detach().contiguous().numpy()
    out = np.empty_like(source)
    shared = weights.shape[0] == 1
    run_parallel(lambda b: _filter_sample_opencv(source[b], weights[0 if shared else b], out[b]), source.shape[0])
    return torch.from_numpy(out)
