"""The `degrade` job (`pipelines.data_jobs.pairs.make_pairs`) on a Dask cluster: one task per output pair shard.

The cluster plumbing (connecting, counting rerun tasks, the shared-storage rule) is `shards.cluster`'s; this
module only says what one pair-shard task does. The output is byte-identical to the local run: each pair's
generator is seeded from (seed, sample index), whichever worker makes it.
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

from pipelines.common import progress_bar
from shards.cluster import ClusterError, connect, retried_tasks
from shards.write import ShardWriter, encode_json


def input_offsets(spec, urls: list[str]) -> list[int] | None:
    """Sample count before each input shard (from the input folder's manifest), or None when unknown."""
    from shards.manifest import read_manifest
    from shards.read import url_file_name

    if not (isinstance(spec, str | Path) and Path(spec).is_dir()):
        return None
    counts = {e["name"]: int(e["samples"]) for e in read_manifest(Path(spec))["shards"]}
    if any(url_file_name(u) not in counts for u in urls):
        return None
    return list(itertools.accumulate([0, *(counts[url_file_name(u)] for u in urls[:-1])]))


def degrade_shard(cfg, urls: list[str], offsets: list[int] | None, index: int, start: int, end: int) -> dict:
    """Task: pairs start..end-1 (input samples in shard order) into output shard `index`; its manifest entry."""
    from pipelines.data_jobs.pairs import make_pair
    from shards.stages import Problems, shard_samples

    folder = Path(cfg.out)
    if not folder.is_dir():
        raise FileNotFoundError(f"worker {socket.gethostname()} cannot see the output folder {folder}: --out must "
                                "be on storage every worker shares")
    first, skip = 0, start
    if offsets is not None:  # start reading at the input shard that holds sample `start`
        first = max(i for i, o in enumerate(offsets) if o <= start)
        skip = start - offsets[first]
    samples = shard_samples(urls[first:], Problems(strict=True))
    writer = ShardWriter(folder / f"{cfg.name}-{index:06d}.tar")
    try:
        for _ in itertools.islice(samples, skip):  # read, not decoded
            pass
        i = start
        for sample in itertools.islice(samples, end - start):
            key, gt_png, lq_png, record = make_pair(sample, i, cfg)  # raises ShardJobError, a RuntimeError
            writer.add(key, {"gt.png": gt_png, "lq.png": lq_png, "json": encode_json(record)})
            i += 1
        if i != end:
            raise RuntimeError(f"the input ended after {i} samples, {end} expected; it changed while running")
        return writer.finish().as_dict()
    except BaseException:
        writer.abort()
        raise


def pairs_on_cluster(cfg, urls: list[str], total: int | None, shards: list[dict], save) -> int:
    """Write the pair shards from len(shards) on; `save(index, done)` after each finished prefix; retried tasks."""
    from dask.distributed import KilledWorker, as_completed

    if cfg.format != "shards":
        raise ClusterError("--scheduler writes --format shards only (folders would be one file per pair on every "
                           "worker); run folders locally")
    if total is None:
        raise ClusterError("--scheduler needs the input's sample count: give a shard folder with its manifest.json")
    offsets = input_offsets(cfg.shards, urls)
    n = -(-total // cfg.shard_size)
    done = len(shards)
    client, cluster = connect(cfg.scheduler)
    try:
        submitted = {client.submit(degrade_shard, cfg, urls, offsets, k, k * cfg.shard_size,
                                   min((k + 1) * cfg.shard_size, total), pure=False): k for k in range(done, n)}
        finished: dict[int, dict] = {}
        with progress_bar(n, "writing pair shards", "shard", initial=done) as bar:
            for fut in as_completed(list(submitted)):
                finished[submitted[fut]] = fut.result()
                bar.update(1)
                while len(shards) in finished:
                    shards.append(finished.pop(len(shards)))
                    pairs = min(len(shards) * cfg.shard_size, total)
                    if pairs < total:
                        save(pairs, False)
        return retried_tasks(client, [f.key for f in submitted])
    except (FileNotFoundError, RuntimeError, KilledWorker) as exc:
        raise ClusterError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
