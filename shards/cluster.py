"""The shard job on a Dask cluster (`--scheduler tcp://HOST:8786` or `--scheduler local:N`).

Optional extra `dist` (`pip install -e ".[dist]"`); imported only when a scheduler is given. The work
unit is one output shard:

1. plan: one task per source image decodes it and returns its patch count or why it is skipped (a
   header alone cannot tell a corrupt file from a good one, and the result must match the local run
   exactly, so the plan decodes; it costs one extra decode per image, a fraction of the encoding);
2. the driver turns the counts into the fixed patch -> shard assignment (patch i in shard i // S);
3. one task per shard reads its sources, crops and encodes its patches and writes the shard
   (`.tmp` + rename) directly into `--out`, which must be storage every worker sees; it returns only
   the shard's manifest entry. The driver writes the manifest (the finished prefix of shards and its
   cursor, after each one), so a killed driver resumes like the local job.

The shards and the manifest are byte-identical to the local joblib run: no manifest field names the
execution (scheduler, workers, retries and times are only in the summary). A worker killed mid-task
loses nothing: Dask reruns the task on another worker, which rewrites the half-written `.tmp`; the
summary counts tasks that were rerun after a worker died.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from shards import decode
from shards.patches import ImageResult, PatchPlan, iter_patches, open_image
from shards.progress import progress_bar
from shards.sources import SourceFile
from shards.write import ShardWriter, encode_json


class ClusterError(RuntimeError):
    """The cluster cannot run the job as asked (no scheduler, output not shared, ...)."""


def connect(scheduler: str):
    """(client, cluster or None) for "tcp://HOST:PORT" or "local:N" (a LocalCluster of N worker processes)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError('--scheduler needs Dask: pip install -e ".[dist]"') from exc
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ClusterError(f"--scheduler {scheduler!r}: give local:N with N >= 1 worker processes")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
        return Client(cluster), cluster
    if not scheduler.startswith("tcp://"):
        raise ClusterError(f"--scheduler {scheduler!r}: use tcp://HOST:PORT (a running dask scheduler) or local:N")
    try:
        return Client(scheduler, timeout=30), None
    except OSError as exc:
        raise ClusterError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc


def plan_image(src: SourceFile, plan: PatchPlan) -> ImageResult:
    """Task: the patch count of one source (or why it is skipped), without keeping any pixels."""
    if not os.path.lexists(src.path):
        raise FileNotFoundError(f"worker {socket.gethostname()} cannot see the source {src.path}: sources and "
                                "--out must be on storage every worker shares")
    result, _ = open_image(src, plan)
    return result


@dataclass(frozen=True)
class Piece:
    """Patches first..last-1 of one source image, in a shard."""

    src: SourceFile
    first: int
    last: int


def assign(counts: list[int], shard_size: int) -> list[list[tuple[int, int, int]]]:
    """Per shard, the (image index, first patch, end patch) ranges it holds: patch i goes to shard i // S."""
    shards: list[list[tuple[int, int, int]]] = []
    ordinal = 0
    for i, n in enumerate(counts):
        j = 0
        while j < n:
            k = ordinal // shard_size
            if k == len(shards):
                shards.append([])
            take = min(n - j, (k + 1) * shard_size - ordinal)
            shards[k].append((i, j, j + take))
            j += take
            ordinal += take
    return shards


def cursor_after(counts: list[int], patches: int) -> tuple[int, int]:
    """The local job's cursor once the first `patches` patches are written: (image, next patch of it)."""
    if patches == 0:
        return 0, 0
    last = patches - 1
    for i, start in enumerate(itertools.accumulate([0, *counts[:-1]])):
        if start <= last < start + counts[i]:
            j = last - start
            return (i, j + 1) if j + 1 < counts[i] else (i + 1, 0)
    raise ValueError(f"{patches} patches is more than the {sum(counts)} planned")


def write_shard(out: str, name: str, index: int, shard_size: int, pieces: list[Piece], plan: PatchPlan) -> dict:
    """Task: encode one shard's patches and publish it into `out` (tmp + rename); its manifest entry."""
    from shards.prepare import sample_key, shard_name

    folder = Path(out)
    if not folder.is_dir():
        raise FileNotFoundError(f"worker {socket.gethostname()} cannot see the output folder {out}: --out must be "
                                "on storage every worker shares")
    writer = ShardWriter(folder / shard_name(name, index))  # a rerun after a killed worker truncates the .tmp
    try:
        ordinal = index * shard_size
        for piece in pieces:
            result, opened = open_image(piece.src, plan)
            if opened is None or result.count < piece.last:
                raise RuntimeError(f"{piece.src.path} changed while sharding (now {result.count} patches, "
                                   f"{result.skip or 'usable'}); rerun the job")
            for meta, data in itertools.islice(iter_patches(opened, plan, piece.first), piece.last - piece.first):
                key = sample_key(ordinal, meta)
                writer.add(key, {"json": encode_json({**meta, "key": key, "index": ordinal}), plan.encoding: data})
                ordinal += 1
        return writer.finish().as_dict()
    except BaseException:
        writer.abort()
        raise


def retried_tasks(client, keys: list[str]) -> int:
    """How many of these tasks the scheduler reran because a worker died while holding them."""
    wanted = set(keys)

    def count(dask_scheduler) -> int:
        return sum(1 for key, ts in dask_scheduler.tasks.items() if key in wanted and ts.suspicious > 0)

    try:
        return int(client.run_on_scheduler(count))
    except Exception:  # noqa: BLE001 - a statistic only; never fail the job over it
        return 0


def run(cfg, files: list[SourceFile], duplicates: dict[int, str], done_shards: int,
        save) -> tuple[list[ImageResult], int]:
    """Plan and write the shards from `done_shards` on; `save(results, new_entries)` records each finished prefix.

    Returns the plan (one result per file, in order) and the number of retried tasks.
    """
    from dask.distributed import KilledWorker, as_completed

    plan = PatchPlan(cfg.crop, cfg.variants, cfg.png_level, cfg.encoding, cfg.max_pixels)
    client, cluster = connect(cfg.scheduler)
    keys: list[str] = []
    try:
        return _run(client, cfg, plan, files, duplicates, done_shards, save, keys, as_completed)
    except (FileNotFoundError, RuntimeError, KilledWorker) as exc:  # raised in a task: one line, not a traceback
        raise ClusterError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run(client, cfg, plan: PatchPlan, files: list[SourceFile], duplicates: dict[int, str], done_shards: int,
         save, keys: list[str], as_completed) -> tuple[list[ImageResult], int]:
    """The body of `run`, with the client connected (futures' keys collected in `keys`)."""
    todo = [i for i in range(len(files)) if i not in duplicates]
    futures = client.map(plan_image, [files[i] for i in todo], plan=plan, pure=False)
    keys += [f.key for f in futures]
    results: list[ImageResult | None] = [None] * len(files)
    for i in duplicates:
        results[i] = ImageResult(skip=(decode.DUPLICATE, f"same file as {duplicates[i]}"))
    with progress_bar(len(futures), "planning images", "image") as bar:
        for _ in as_completed(futures):
            bar.update(1)
    for i, result in zip(todo, client.gather(futures), strict=True):
        results[i] = result
    counts = [r.count if r.skip is None else 0 for r in results]
    assignment = assign(counts, cfg.shard_size)
    shards: dict[int, dict] = {}
    submitted = {}
    for k in range(done_shards, len(assignment)):
        pieces = [Piece(files[i], a, b) for i, a, b in assignment[k]]
        fut = client.submit(write_shard, str(cfg.out), cfg.name, k, cfg.shard_size, pieces, plan, pure=False)
        submitted[fut] = k
    keys += [f.key for f in submitted]
    prefix = done_shards
    with progress_bar(len(assignment), "writing shards", "shard", initial=done_shards) as bar:
        for fut in as_completed(list(submitted)):
            shards[submitted[fut]] = fut.result()
            bar.update(1)
            grown = prefix
            while grown in shards:
                grown += 1
            if grown != prefix:
                prefix = grown
                save(results, [shards[k] for k in range(done_shards, prefix)])
    return results, retried_tasks(client, keys)


def prepare_on_cluster(cfg, files: list[SourceFile], state, old: dict | None, save, t0: float):
    """`prepare_shards` with Dask tasks: same shards, same manifest, the same resume rule (a PrepareReport)."""
    from shards.prepare import PrepareReport, _duplicates, _State

    kept = list(state.shards)

    def account(results: list[ImageResult], shards: list[dict]) -> None:
        """The state the local job would save with these shards done: sources before its cursor accounted."""
        fresh = _State(shards=shards)
        written = sum(s["samples"] for s in shards)
        counts = [r.count if r.skip is None else 0 for r in results]
        fresh.cursor = (len(files), 0) if written == sum(counts) else cursor_after(counts, written)
        for i, result in enumerate(results):
            if i < fresh.cursor[0] or (i == fresh.cursor[0] and fresh.cursor[1] > 0):
                fresh.account(files[i], result)
        state.__dict__.update(fresh.__dict__)

    def record(results: list[ImageResult], new: list[dict]) -> None:
        account(results, kept + new)
        if state.cursor[0] < len(files):
            save(False)

    results, retried = run(cfg, files, _duplicates(files), len(kept), record)
    account(results, state.shards)  # all shards written: the cursor is at the end, every source accounted
    manifest = save(True)
    return PrepareReport(Path(cfg.out), manifest, False, old is not None, len(state.shards) - len(kept),
                         len(files), time.monotonic() - t0, retried)
