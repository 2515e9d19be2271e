"""PSNR and SSIM as BasicSR defines them (reference §4.7), and a JSONL metrics writer.

Both take HWC uint8 (or float in 0..255) images, crop ``crop_border`` pixels per side, and compute in
float64; SSIM uses an 11×11 Gaussian window with σ = 1.5 (cv2), c1 = (0.01·255)², c2 = (0.03·255)²,
the valid region only, averaged over channels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

__all__ = ["psnr", "ssim", "MetricsWriter", "to_y_channel"]


def _prepare(img1: np.ndarray, img2: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")
    a, b = img1.astype(np.float64), img2.astype(np.float64)
    if crop_border:
        inner = (slice(crop_border, -crop_border), slice(crop_border, -crop_border))
        a, b = a[inner], b[inner]
    if y_channel:
        a, b = to_y_channel(a), to_y_channel(b)
    return a, b


def to_y_channel(rgb: np.ndarray) -> np.ndarray:
    """MATLAB BT.601 luma of an RGB image in 0..255: Y = 16 + (65.481R + 128.553G + 24.966B)/255."""
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return y[..., None]


def psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """10·log10(255² / MSE) in float64; inf for identical images (BasicSR `calculate_psnr`)."""
    a, b = _prepare(img1, img2, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return math.inf if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    taps = cv2.getGaussianKernel(11, 1.5)
    window = taps @ taps.T
    mu1 = cv2.filter2D(a, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(b, -1, window)[5:-5, 5:-5]
    sigma1 = cv2.filter2D(a * a, -1, window)[5:-5, 5:-5] - mu1**2
    sigma2 = cv2.filter2D(b * b, -1, window)[5:-5, 5:-5] - mu2**2
    sigma12 = cv2.filter2D(a * b, -1, window)[5:-5, 5:-5] - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * sigma12 + c2)) / ((mu1**2 + mu2**2 + c1) * (sigma1 + sigma2 + c2))
    return float(ssim_map.mean())


def ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Mean SSIM over channels (BasicSR `calculate_ssim`)."""
    a, b = _prepare(img1, img2, crop_border, y_channel)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))


class MetricsWriter:
    """Appends one JSON object per line to ``path`` (flushed, so a crash loses at most one line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
