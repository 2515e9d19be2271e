"""Shared fixtures: devices to run on, the bundled sample photos, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "samples"
SAMPLE_FILES = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".png", ".jpg"})

# `dev` keeps property tests quick; CI=true selects `ci`, which tries more examples.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _devices() -> list:
    devices: list = ["cpu"]
    if torch.cuda.is_available():  # marked, so `pytest -m cuda` (bench/gpu_check.sh) selects the CUDA cases
        devices.append(pytest.param("cuda", marks=pytest.mark.cuda))
    return devices


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    """Every test that takes `device` runs on CPU, and on CUDA when one is present."""
    return torch.device(request.param)


def cuda_or_skip() -> torch.device:
    """The CUDA device, or a visible skip; tests calling it carry @pytest.mark.cuda (selected by gpu_check.sh)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: this check needs one (bench/gpu_check.sh runs it on a GPU)")
    return torch.device("cuda")


def single_thread_fixture(scope: str = "function", autouse: bool = True):
    """A fixture that runs tests with one torch thread and restores the count afterwards; assign it in a test
    module (``one_thread = single_thread_fixture("module")``). The tiny nets and ops these modules run take
    microseconds, and on a shared 2-core machine a second OpenMP thread only waits at barriers for a descheduled
    one (measured up to 14x slower); results depend on the thread count only through float summation order."""

    @pytest.fixture(scope=scope, autouse=autouse)
    def one_thread():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)

    return one_thread


def load_sample_rgb(name: str) -> np.ndarray:
    """A bundled photo as HWC RGB uint8."""
    bgr = cv2.imread(str(SAMPLES_DIR / name), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read bundled sample {name}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_batch(rgb: np.ndarray) -> torch.Tensor:
    """HWC uint8 RGB -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


@pytest.fixture(scope="session")
def sample_batch() -> torch.Tensor:
    """Four 128x128 centre crops of the bundled photos as one (4, 3, 128, 128) batch."""
    crops = []
    for path in SAMPLE_FILES:
        rgb = load_sample_rgb(path.name)
        h, w = rgb.shape[:2]
        top, left = (h - 128) // 2, (w - 128) // 2
        crops.append(to_batch(rgb[top : top + 128, left : left + 128]))
    return torch.cat(crops)
