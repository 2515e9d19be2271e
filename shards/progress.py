"""The command line's one progress bar (tqdm on stderr), shared by the jobs in `pipelines/` and the Dask shard
job here (`shards.cluster`), which may not import `pipelines/`; `pipelines.common` re-exports it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["LOG_INTERVAL_S", "progress_bar", "is_terminal"]

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
