"""Run independent per-plane / per-sample OpenCV work on the threads torch is allowed to use.

OpenCV's filters (`sepFilter2D`, `filter2D`) run on one core per call, and numpy's element-wise loops
too; both release the GIL. The CPU paths of `degrade` call them once per image plane or per sample, so
spreading those calls over a small thread pool uses every core torch was given
(`torch.set_num_threads`, the one thread setting of the toolkit: a DataLoader or Dask worker with one
torch thread runs everything inline, no pool). Each item is computed by exactly the same calls
whichever thread runs it, so results do not depend on the thread count.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import torch

__all__ = ["worker_count", "run_parallel"]

_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}  # by thread count


def _forget_pools() -> None:
    """In a forked child: the parent's pool threads do not exist there (and the lock may be held)."""
    global _lock
    _lock = threading.Lock()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def worker_count(items: int) -> int:
    """Threads to use for ``items`` independent pieces of work: torch's thread count, at most one per item."""
    return max(1, min(torch.get_num_threads(), items))


def _executor(workers: int) -> ThreadPoolExecutor:
    """The process's pool with ``workers`` threads (made on first use; a forked child makes its own)."""
    with _lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="degrade")
        return _pools[workers]


def run_parallel(task: Callable[[int], None], items: int | Sequence[int]) -> None:
    """Call ``task(i)`` for every item (an index range or a list of indices), on up to torch's thread count.

    Items are handed out one at a time (the fastest thread takes the next), so uneven items balance. An
    exception in any task is raised here after all tasks have finished or failed.
    """
    indices = range(items) if isinstance(items, int) else list(items)
    workers = worker_count(len(indices))
    if workers == 1:
        for i in indices:
            task(i)
        return
    futures = [_executor(workers).submit(task, i) for i in indices]
    wait(futures)  # none still writing into the caller's arrays when an error is raised
    for future in futures:
        future.result()
