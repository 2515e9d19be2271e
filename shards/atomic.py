"""The project's one atomic file writer: a temporary file beside the target, then ``os.replace``.

Readers see the old file or the whole new one, never a truncated one. On any failure (disk full, a
signal) the temporary file is removed, so no ``.tmp`` is left behind. The temporary name carries the
process id (two processes writing the same target never share it), and plain ``open`` keeps the
user's umask for the file mode (``tempfile.mkstemp`` would make every output 0600). ``fsync`` makes
the data durable before the rename (checkpoints, manifests); images skip it.

It lives in ``shards/`` (the storage layer, stdlib only) so that ``models/``, ``shards/`` and
``pipelines/`` can all use it without ``models/`` or ``shards/`` importing ``pipelines/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_file_atomic", "write_bytes_atomic", "temporary_path"]


def temporary_path(path: Path) -> Path:
    """The temporary name ``write_file_atomic`` uses for ``path`` in this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_file_atomic(path: Path, write: Callable[[BinaryIO], object], *, fsync: bool = True) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it into place.

    The parent folder is created if needed. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: Path, data: bytes, *, fsync: bool = False) -> Path:
    """``write_file_atomic`` for a bytes payload."""
    return write_file_atomic(path, lambda handle: handle.write(data), fsync=fsync)
