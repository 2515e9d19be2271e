"""Small helpers shared by the jobs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import cv2
import numpy as np

from degrade import DegradationConfig
from degrade.tomlio import apply_overrides, to_dict
from shards.atomic import write_bytes_atomic as _write_bytes

if TYPE_CHECKING:
    from tqdm import tqdm

    from shards.prepare import Progress

__all__ = ["resolve_degradation_config", "write_bytes_atomic", "write_image_atomic", "progress_bar", "is_terminal",
           "SnapshotBar"]


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


# A log file (not a terminal) gets a bar line at most this often, so a day-long job leaves a short log.
LOG_INTERVAL_S = 30.0


def progress_bar(total: int | None, desc: str, unit: str, *, initial: int = 0, enabled: bool = True,
                 file: TextIO | None = None) -> tqdm:
    """The command line's one progress bar (tqdm on stderr): the same look in shard, degrade, upscale, evaluate
    and calibrate. ``total`` None: counts and rate without a percentage; ``initial``: work done by an earlier run
    (resume), so the rate is this run's. Messages go above it with ``bar.write``."""
    from tqdm import tqdm

    stream = sys.stderr if file is None else file
    tty = is_terminal(stream)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, disable=not enabled,
                dynamic_ncols=tty, mininterval=0.1 if tty else LOG_INTERVAL_S)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (redraw in place) rather than a log file or a pipe."""
    return bool(getattr(stream, "isatty", lambda: False)())


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
