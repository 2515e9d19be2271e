"""Per-sample 2-D filtering with reflect padding (BasicSR `filter2D`, reference §2.7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from degrade.checks import check_dtype

__all__ = ["filter2d", "reflect_pad", "reflect_indices"]


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
    padded = reflect_pad(images, pad)
    if kernels.shape[0] == 1:
        weight = kernels.expand(c, k, k).unsqueeze(1)
        return F.conv2d(padded, weight, groups=c)
    weight = kernels.repeat_interleave(c, dim=0).unsqueeze(1)  # (B·C, 1, k, k), sample-major
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * pad, w + 2 * pad), weight, groups=b * c)
    return out.reshape(b, c, h, w)
