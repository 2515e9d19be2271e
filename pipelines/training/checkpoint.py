"""Atomic checkpoints: written to a temporary file, fsynced, then renamed over the final name.

A checkpoint holds the generator, its EMA, the discriminator, both optimizers, the iteration (the
learning rate is a pure function of it, so there is no scheduler state), every rank's generator state,
the data-stream position, the training-pair pools of every rank and the resolved config. It only holds
tensors and plain containers, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from shards.atomic import write_file_atomic

__all__ = ["save_atomic", "load_checkpoint", "latest_checkpoint", "checkpoint_path", "checkpoint_iterations",
           "CheckpointError"]

_NAME = re.compile(r"^iter_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{iteration:08d}.pt"


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` through ``write_file_atomic``: fsynced, renamed into place, no ``.tmp`` left on failure."""
    write_file_atomic(Path(path), lambda handle: torch.save(obj, handle))


def checkpoint_iterations(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint in ``run_dir/checkpoints``, oldest first (temporary files ignored)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest iteration in ``run_dir/checkpoints`` (temporary files ignored)."""
    found = checkpoint_iterations(run_dir)
    return found[-1][1] if found else None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (corrupt, truncated, foreign)."""


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or foreign file: say which
        raise CheckpointError(f"cannot load checkpoint {path}: {error}") from error
