"""Small helpers shared by the jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from degrade import DegradationConfig
from degrade.tomlio import apply_overrides, to_dict
from shards.atomic import write_bytes_atomic as _write_bytes

__all__ = ["resolve_degradation_config", "write_bytes_atomic", "write_image_atomic"]


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
