"""Multiscale copies of a training image (Real-ESRGAN `scripts/generate_multiscale_DF2K.py`, ref. §5.1).

The reference resizes each DF2K image with PIL LANCZOS to (int(w*s), int(h*s)) for s in
(0.75, 0.5, 1/3), plus one copy whose shortest edge is 400 (w < h: w = 400, h = int(400*h/w); else
h = 400, w = int(400*w/h)); the training meta-info then lists these together with the original HR
images. We produce the same set of variants in memory, in this order: original, scales, shortest edge.

Differences from the script, both for images the script was never run on (DF2K images are ~2K
wide, where neither happens): a shortest-edge copy that would upscale the image is not made, and
a variant whose size equals an earlier variant's (the original, or e.g. 0.5 and shortest edge 200
of a 600x400 image) is not made twice, since it would repeat the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class MultiscaleConfig:
    """Which variants of a source image are cut into patches (defaults: the DF2K recipe, ref. §5.1)."""

    scales: tuple[float, ...] = (0.75, 0.5, 1 / 3)
    shortest_edge: int = 400  # 0 disables the shortest-edge copy
    keep_original: bool = True

    def __post_init__(self) -> None:
        if any(not 0.0 < s <= 1.0 for s in self.scales):
            raise ValueError(f"multiscale factors must lie in (0, 1], got {self.scales}")
        if self.shortest_edge < 0:
            raise ValueError(f"shortest_edge must be >= 0, got {self.shortest_edge}")


ORIGINAL_ONLY = MultiscaleConfig(scales=(), shortest_edge=0, keep_original=True)


@dataclass(frozen=True)
class Variant:
    """One multiscale copy: its label (dot-free, used in sample keys), factor and size."""

    label: str
    scale: float
    width: int
    height: int


def scale_label(scale: float) -> str:
    """A dot-free label for a factor: 0.75 -> 's0750', 1/3 -> 's0333'."""
    return f"s{round(scale * 1000):04d}"


def shortest_edge_size(width: int, height: int, edge: int) -> tuple[int, int]:
    """(w, h) of the copy whose shortest side is `edge` (S-ms rule, including its int() truncation).

    Example:
        >>> shortest_edge_size(2040, 1356, 400)
        (601, 400)
    """
    if width < height:
        return edge, int(edge * height / width)
    return int(edge * width / height), edge


def plan_variants(width: int, height: int, cfg: MultiscaleConfig) -> list[Variant]:
    """The variants of a width x height image, in output order (sizes as S-ms computes them).

    Example:
        >>> [(v.label, v.width, v.height) for v in plan_variants(2040, 1356, MultiscaleConfig())]
        [('orig', 2040, 1356), ('s0750', 1530, 1017), ('s0500', 1020, 678), ('s0333', 680, 452), ('e400', 601, 400)]
    """
    candidates: list[Variant] = []
    if cfg.keep_original:
        candidates.append(Variant("orig", 1.0, width, height))
    for s in cfg.scales:
        candidates.append(Variant(scale_label(s), s, int(width * s), int(height * s)))
    if cfg.shortest_edge > 0 and min(width, height) > cfg.shortest_edge:
        w, h = shortest_edge_size(width, height, cfg.shortest_edge)
        candidates.append(Variant(f"e{cfg.shortest_edge}", cfg.shortest_edge / min(width, height), w, h))
    variants: list[Variant] = []
    for v in candidates:
        # A size already made would repeat the same pixels (e.g. 600x400: 0.5 and shortest edge 200).
        if v.width >= 1 and v.height >= 1 and all((v.width, v.height) != (u.width, u.height) for u in variants):
            variants.append(v)
    return variants


def render_variant(rgb: np.ndarray, variant: Variant) -> np.ndarray:
    """The pixels of one variant: the input itself for the original size, else PIL LANCZOS (S-ms).

    Args:
        rgb: HWC uint8 RGB image.
        variant: a variant planned for this image's size.

    Returns:
        HWC uint8 RGB array of shape (variant.height, variant.width, 3).
    """
    if (variant.width, variant.height) == (rgb.shape[1], rgb.shape[0]):
        return rgb
    resized = Image.fromarray(rgb).resize((variant.width, variant.height), Image.Resampling.LANCZOS)
    return np.asarray(resized)


def parse_scales(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of factors, fractions allowed: "0.75,0.5,1/3" -> (0.75, 0.5, 1/3).

    "1/3" gives exactly the float 1/3 the reference script uses; an empty string gives ().
    """
    from fractions import Fraction

    try:
        return tuple(float(Fraction(part.strip())) for part in text.split(",") if part.strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"cannot read scale factors from {text!r}: use numbers or fractions like 0.75,1/3") from exc
