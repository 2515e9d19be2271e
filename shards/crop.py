"""Sub-image crop rule for dataset preparation (Real-ESRGAN `scripts/extract_subimages.py`, ref. §5.2).

Along each axis of length L, with crop size c, step s and threshold t:

* starts = 0, s, 2s, ... while start + c <= L;
* if the margin left after the last crop, L - (last + c), is larger than t, one more crop is
  aligned with the far border, starting at L - c (with t = 0 every pixel is covered).

Our extension for small images (the reference script fails on them): an axis shorter than the crop
but at least `min_size` long is kept whole (one window covering the axis), so an image smaller
than the crop but at least the training patch size becomes a single patch; an axis shorter than
`min_size` makes the image too small and it yields no patch (the caller reports it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class CropConfig:
    """Sub-image extraction settings.

    Defaults follow Real-ESRGAN docs/Training.md (crop 400, step 200, thresh 0 on DF2K_multiscale);
    `min_size` 256 is the training `gt_size` of the reference configs.
    """

    crop_size: int = 400
    step: int = 200
    thresh: int = 0
    min_size: int = 256

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.step < 1:
            raise ValueError(f"crop_size and step must be >= 1, got {self.crop_size} and {self.step}")
        if self.thresh < 0:
            raise ValueError(f"thresh must be >= 0, got {self.thresh}")
        if not 1 <= self.min_size <= self.crop_size:
            raise ValueError(f"min_size must be in [1, crop_size={self.crop_size}], got {self.min_size}")


@dataclass(frozen=True)
class Box:
    """A crop window in pixel coordinates of the (multiscaled) image."""

    top: int
    left: int
    height: int
    width: int

    def as_dict(self) -> dict[str, int]:
        return {"top": self.top, "left": self.left, "height": self.height, "width": self.width}


def crop_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Start offsets of full-size crops along one axis (S-ext rule; empty when length < crop).

    Example:
        >>> crop_starts(1000, 400, 200, 0)
        [0, 200, 400, 600]
        >>> crop_starts(1050, 400, 200, 0)
        [0, 200, 400, 600, 650]
    """
    if length < crop:
        return []
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def crop_windows(length: int, cfg: CropConfig) -> list[tuple[int, int]]:
    """(start, size) windows along one axis, including the keep-whole rule for short axes."""
    if length >= cfg.crop_size:
        return [(s, cfg.crop_size) for s in crop_starts(length, cfg.crop_size, cfg.step, cfg.thresh)]
    if length >= cfg.min_size:
        return [(0, length)]
    return []


def crop_boxes(height: int, width: int, cfg: CropConfig) -> list[Box]:
    """All crop windows of an image in row-major order (the order S-ext numbers them `_s001`, ...).

    Returns an empty list when either side is shorter than `cfg.min_size`.

    Example:
        >>> [(b.top, b.left) for b in crop_boxes(600, 500, CropConfig(400, 200, 0, 256))]
        [(0, 0), (0, 100), (200, 0), (200, 100)]
    """
    rows = crop_windows(height, cfg)
    cols = crop_windows(width, cfg)
    return [Box(top, left, h, w) for (top, h), (left, w) in itertools.product(rows, cols)]
