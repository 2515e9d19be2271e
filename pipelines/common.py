"""Small helpers shared by the jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
import numpy as np
import torch

from degrade import DegradationConfig
from degrade.tomlio import apply_overrides, to_dict
from shards.atomic import write_bytes_atomic as _write_bytes
from shards.progress import LOG_INTERVAL_S, is_terminal, progress_bar  # the jobs' one bar (shards/ uses it too)

if TYPE_CHECKING:
    from tqdm import tqdm

    from shards.prepare import Progress

__all__ = ["resolve_degradation_config", "write_bytes_atomic", "write_image_atomic", "rgb_to_tensor", "tensor_to_rgb",
           "progress_bar", "is_terminal", "LOG_INTERVAL_S", "SnapshotBar"]


def resolve_degradation_config(path: Path | None = None, *, order: int | None = None, scale: int | None = None,
                               overrides: Sequence[str] = ()) -> DegradationConfig:
    """Defaults < TOML file < --order/--scale < --set overrides."""
    config = DegradationConfig.load(path) if path is not None else DegradationConfig()
    if order is not None:
        config = config.with_order(order)
    if scale is not None:
        config = replace(config, scale=scale)
    return apply_overrides(DegradationConfig, to_dict(config), overrides) if overrides else config


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (``shards.atomic.write_bytes_atomic``: temporary file beside ``path``,
    ``os.replace``, removed on failure, umask file mode, parent folder created)."""
    _write_bytes(path, data)


def write_image_atomic(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode a cv2-layout image (BGR / BGRA / gray) by the path's suffix and write it atomically."""
    ok, encoded = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.dtype} {image.shape} image as {path.suffix}")
    write_bytes_atomic(path, encoded.tobytes())


class SnapshotBar:
    """A ``progress`` callback for ``prepare_shards`` / ``make_pairs``: renders their ``Progress`` snapshots
    (done / total, samples, shards, skipped) as one `progress_bar`, created at the first snapshot, when the total
    and what a resumed run had already done are known."""

    def __init__(self, desc: str, unit: str, file: TextIO | None = None) -> None:
        self.desc, self.unit, self.file = desc, unit, file
        self.bar: tqdm | None = None

    def __call__(self, p: Progress) -> None:
        if self.bar is None:
            self.bar = progress_bar(p.images_total or None, self.desc, self.unit,
                                    initial=p.images_done - p.images_this_run, file=self.file)
        self.bar.set_postfix_str(f"samples {p.samples:,}, shards {p.shards}, skipped {p.skipped}", refresh=False)
        self.bar.update(p.images_done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
# The one uint8 <-> tensor conversion of the jobs. Elsewhere on purpose: degrade/ (standalone) has its own;
# shards/stages.py converts into a preallocated numpy batch (shards/ does not import pipelines/); upscale handles
# 16-bit and alpha; the training-pair pool stores whole NCHW batches already on the 1/255 grid.
def rgb_to_tensor(rgb: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """HWC uint8 RGB -> (1, 3, H, W) float32 k / 255 in [0, 1] on ``device`` (converted on the CPU, then moved)."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).float().div(255)
    return tensor if device is None else tensor.to(device)


def tensor_to_rgb(tensor: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> HWC uint8 RGB on the CPU (C-contiguous).

    Clamped to [0, 1], times 255, rounded half to even (torch.round, as BasicSR's tensor2img np.round), so
    clamping before or after rounding gives the same codes.
    """
    if tensor.ndim == 4 and tensor.shape[0] != 1:
        raise ValueError(f"tensor_to_rgb converts one image, got a batch of {tensor.shape[0]}")
    image = tensor[0] if tensor.ndim == 4 else tensor
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().contiguous().numpy()
