"""Atomic checkpoints: written to a temporary file, fsynced, then renamed over the final name.

A checkpoint holds the generator, its EMA, the discriminator, both optimizers and schedulers, the
iteration, every RNG state, the data-stream position, the training-pair pools of every rank and the
resolved config. It only holds tensors and plain containers, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = ["save_atomic", "load_checkpoint", "latest_checkpoint", "checkpoint_path"]

_NAME = re.compile(r"^iter_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{iteration:08d}.pt"


def save_atomic(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest iteration in ``run_dir/checkpoints`` (temporary files ignored)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign file: say which
        raise RuntimeError(f"cannot load checkpoint {path}: {error}") from error
