"""Fixtures for the shard tests: synthetic images and dataset trees, small shards written directly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from shards.manifest import FORMAT, VERSION, write_manifest
from shards.write import ShardWriter, encode_json, encode_png


def synthetic_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like HWC uint8 RGB image: smooth gradients, a sinusoid texture and mild noise.

    Smooth enough that PNG encoding and LANCZOS resizing are fast, varied enough that any misplaced
    crop or flip changes the pixels.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b, c = rng.uniform(0.1, 0.9, 3)
    channels = [
        128 + 100 * np.sin(x * a / 7 + y * b / 11 + k) * np.cos(y * c / 5 - k) + rng.normal(0, 4, (height, width))
        for k in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB array with OpenCV (PNG/JPEG by suffix); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1]), path
    return path


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The image helpers of this file, for tests (test modules cannot import a conftest)."""
    return SimpleNamespace(synthetic_rgb=synthetic_rgb, write_rgb=write_rgb, tile_image=tile_image,
                           write_shards=write_shards)


@pytest.fixture
def make_tree(tmp_path: Path):
    """Factory: make_tree({"DIV2K/DIV2K_train_HR/0001.png": (h, w), ...}) writes synthetic images."""

    def make(files: dict[str, tuple[int, int]], root: Path | None = None) -> Path:
        root = root or tmp_path / "data"
        for i, (rel, (h, w)) in enumerate(sorted(files.items())):
            write_rgb(root / rel, synthetic_rgb(h, w, seed=i))
        return root

    return make


def tile_image(index: int, size: int) -> np.ndarray:
    """A small RGB image that encodes its index (so a loaded patch can be traced to its sample)."""
    rgb = synthetic_rgb(size, size, seed=1000 + index)
    rgb[0, 0] = (index % 256, index // 256 % 256, 7)
    return rgb


def write_shards(folder: Path, counts: list[int], size: int = 24) -> tuple[Path, dict[str, np.ndarray]]:
    """Shards holding counts[i] samples each (key s{index:05d}) and a complete manifest.

    Returns (folder, images by key).
    """
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, np.ndarray] = {}
    index = 0
    infos = []
    for s, count in enumerate(counts):
        writer = ShardWriter(folder / f"train-{s:06d}.tar")
        for _ in range(count):
            key = f"s{index:05d}"
            images[key] = tile_image(index, size)
            writer.add(key, {"png": encode_png(images[key]), "json": encode_json({"index": index})})
            index += 1
        infos.append(writer.finish().as_dict())
    write_manifest(folder, {"format": FORMAT, "version": VERSION, "complete": True, "config": {},
                            "config_hash": "", "shards": infos})
    return folder, images


@pytest.fixture
def make_shards(tmp_path: Path):
    """Factory: write_shards into tmp_path/shards unless a folder is given."""

    def make(counts: list[int], size: int = 24, folder: Path | None = None) -> tuple[Path, dict[str, np.ndarray]]:
        return write_shards(folder or tmp_path / "shards", counts, size)

    return make
