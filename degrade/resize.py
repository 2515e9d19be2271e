"""Resizing with the reference's modes (area, bilinear, bicubic) and semantics (reference §1.2).

The reference calls ``F.interpolate`` with PyTorch's defaults: ``align_corners=False`` for bilinear
and bicubic, no antialiasing, and "area" as adaptive average pooling. Stage 1 passes a
``scale_factor`` (the output side is floor(side·scale) and the sampling grid uses 1/scale), the
later resizes pass an absolute size; both are offered here.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from degrade.checks import check_dtype
from degrade.filter import _check_images

__all__ = ["RESIZE_MODES", "resize"]

RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")


def resize(
    images: Tensor,
    size: int | tuple[int, int] | None = None,
    mode: str = "bicubic",
    *,
    scale_factor: float | None = None,
) -> Tensor:
    """Resize a batch to ``size`` (H, W) or by ``scale_factor``, exactly as the reference does.

    Values are not clamped: bicubic can overshoot [0, 1], as in the reference, where the following
    noise step clamps.

    Args:
        images: (B, C, H, W) floats.
        size: output (H, W), or one int for a square output. Exclusive with ``scale_factor``.
        mode: "area", "bilinear" or "bicubic".
        scale_factor: resize factor; output side floor(side·scale_factor), sampling grid as
            ``F.interpolate(scale_factor=...)`` computes it.

    Returns:
        (B, C, H', W') resized images.

    Example:
        >>> import torch
        >>> resize(torch.zeros(1, 3, 40, 40), (10, 20), "area").shape
        torch.Size([1, 3, 10, 20])
    """
    check_dtype(images)
    _check_images(images)
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if (size is None) == (scale_factor is None):
        raise ValueError("pass exactly one of size and scale_factor")
    if size is not None:
        size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"resize target must be at least 1x1, got {size}")
        if tuple(images.shape[-2:]) == size and mode == "area":
            return images  # adaptive pooling to the same size is the identity
        return F.interpolate(images, size=size, mode=mode)
    if scale_factor <= 0:
        raise ValueError(f"scale_factor must be positive, got {scale_factor}")
    return F.interpolate(images, scale_factor=scale_factor, mode=mode)
