"""Target sets with known degradations for the calibrate evidence (tests/pipelines/test_calibrate.py,
bench/calibrate.py): made from two bundled photos, calibrated against the other two as HR.

Each photo is first reduced 2x (area) — the "camera" image — then degraded per draw with
parameters drawn uniformly from the set's true ranges; a draw is one target file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from degrade.noise import add_gaussian_noise, add_poisson_noise
from tests.conftest import SAMPLES_DIR, load_sample_rgb

TARGET_PHOTOS = ("astronaut.png", "coffee.png")
HR_PHOTOS = ("chelsea.png", "rocket.jpg")
# set name: the true ranges the evidence checks the fit against
TRUE_RANGES = {
    "camera": {"noise": (3.0, 8.0), "jpeg": (85.0, 95.0)},
    "messenger": {"jpeg": (30.0, 50.0), "resize": (0.5, 0.5)},  # no noise: none may be fitted (evidence test)
    "old_scan": {"blur": (1.5, 2.5), "poisson": (0.5, 1.0)},
}


def hr_paths() -> tuple[Path, ...]:
    return tuple(SAMPLES_DIR / name for name in HR_PHOTOS)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].double() / 255.0


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


def _write(path: Path, rgb: np.ndarray, quality: int | None) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality is not None else []
    ok, data = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]), params)
    assert ok
    path.write_bytes(data.tobytes())


def make_target_set(name: str, folder: Path, draws: int = 3, seed: int = 0) -> Path:
    """Write ``draws`` degraded versions of each target photo into ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = TRUE_RANGES[name]
    for photo in TARGET_PHOTOS:
        rgb = load_sample_rgb(photo)
        base = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
        for k in range(draws):
            stem = folder / f"{Path(photo).stem}_{k}"
            noise_seed = torch.tensor([int(rng.integers(1 << 30))])
            if name == "camera":
                sigma = rng.uniform(*truth["noise"])
                noisy = _to_uint8(add_gaussian_noise(_to_tensor(base), sigma, False, noise_seed))
                _write(stem.with_suffix(".jpg"), noisy, int(round(rng.uniform(*truth["jpeg"]))))
            elif name == "messenger":
                small = cv2.resize(base, (base.shape[1] // 2, base.shape[0] // 2), interpolation=cv2.INTER_CUBIC)
                _write(stem.with_suffix(".jpg"), small, int(round(rng.uniform(*truth["jpeg"]))))
            else:
                blurred = cv2.GaussianBlur(base.astype(np.float64), (0, 0), rng.uniform(*truth["blur"]),
                                           borderType=cv2.BORDER_REFLECT_101)
                scale = rng.uniform(*truth["poisson"])
                noisy = add_poisson_noise(_to_tensor(np.clip(np.round(blurred), 0, 255).astype(np.uint8)), scale,
                                          False, noise_seed)
                _write(stem.with_suffix(".png"), _to_uint8(noisy), None)
    return folder
