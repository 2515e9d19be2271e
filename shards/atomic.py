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


class FolderBusy(RuntimeError):
    """Another job holds the lock of an output folder."""


class folder_lock:  # noqa: N801 - used as a context manager, like open()
    """An exclusive, non-blocking lock on ``folder/.lock`` for the duration of a job (POSIX ``flock``).

    Two ``shard`` (or ``degrade``) jobs on one ``--out`` would interleave their shards and manifests;
    the second one stops at once with FolderBusy, naming the folder and the holder's process id. The
    lock dies with its process (kill -9 included), so there is never a stale lock to remove; the file
    is deleted when the job ends.
    """

    def __init__(self, folder: Path, job: str = "job") -> None:
        self.path, self.job, self._handle = Path(folder) / ".lock", job, None

    def __enter__(self) -> folder_lock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - closed in __exit__
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise FolderBusy(f"another {self.job} is writing to {self.path.parent} (process {holder}); wait for it "
                             f"to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            # Unlink while still holding the lock (a job that opened the old file fails to lock it), then close.
            self.path.unlink(missing_ok=True)
            self._handle.close()  # closing releases the flock
            self._handle = None
