"""The images NIQE is compared on with BasicSR: bundled photos, clean, degraded and cropped to odd sizes.

Shared by ``tests/pipelines/test_quality.py`` and ``bench/reference/ref_niqe.py`` (which runs in the
reference environment), so both score the same pixels; each case's SHA-256 is stored with its reference
value, so a different OpenCV/numpy build that changed a pixel fails the test instead of comparing apples
with pears. numpy and OpenCV only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(img + rng.normal(0.0, sigma, img.shape)), 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _bicubic_x4(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def degrade(img: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """One named degradation of a BGR uint8 image (used by the cases and the monotonicity tests)."""
    if kind == "blur":
        return _blur(img, strength)
    if kind == "noise":
        return _noise(img, strength, seed=0)
    if kind == "jpeg":
        return _jpeg(img, int(strength))
    raise ValueError(kind)


def read_photo(name: str) -> np.ndarray:
    return cv2.imread(str(SAMPLES / name), cv2.IMREAD_COLOR)


def cases() -> dict[str, np.ndarray]:
    """name -> BGR uint8 image."""
    out: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        img = read_photo(name)
        stem = name.split(".")[0]
        out[f"{stem}"] = img
        out[f"{stem}-blur2"] = _blur(img, 2.0)
        out[f"{stem}-noise15"] = _noise(img, 15.0, seed=0)
        out[f"{stem}-jpeg20"] = _jpeg(img, 20)
        out[f"{stem}-bicubicx4"] = _bicubic_x4(img)
    astronaut, chelsea = read_photo("astronaut.png"), read_photo("chelsea.png")
    out["astronaut-crop97x193"] = np.ascontiguousarray(astronaut[11:108, 40:233])  # two blocks, odd sizes
    out["astronaut-crop250x333"] = np.ascontiguousarray(astronaut[100:350, 77:410])
    out["chelsea-crop299x101"] = np.ascontiguousarray(chelsea[1:300, 200:301])
    out["astronaut-hflip"] = np.ascontiguousarray(astronaut[:, ::-1])  # other block grid: not the same NIQE
    aligned = astronaut[:480, :384]  # whole blocks: flips keep the block grid
    out["astronaut-480x384"] = np.ascontiguousarray(aligned)
    out["astronaut-480x384-hflip"] = np.ascontiguousarray(aligned[:, ::-1])
    out["astronaut-480x384-rot180"] = np.ascontiguousarray(aligned[::-1, ::-1])
    out["astronaut-crop96x96"] = np.ascontiguousarray(astronaut[:96, :96])  # one block: the reference fails
    out["astronaut-crop95x400"] = np.ascontiguousarray(astronaut[:95, :400])  # no block
    return out


def digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()[:16]
