"""Streaming loader: GT patches from tar shards for every DDP rank, resumable at the exact batch.

Training usage (one `ShardStream` per rank; rank and world size are passed explicitly)::

    from shards.read import LoaderConfig, ShardStream

    cfg = LoaderConfig("shards/", batch_size=12, patch_size=400, num_workers=5, seed=0)
    stream = ShardStream(cfg, rank=rank, world_size=world_size)
    if checkpoint is not None:
        stream.load_state_dict(checkpoint["data"])      # continue where the run stopped
    batches = iter(stream)                                # infinite; epochs advance by themselves
    for it in range(start_iter, total_iter):
        batch = next(batches)                             # GTBatch(gt, keys, problems)
        gt = batch.gt.to(device)                          # (12, 3, 400, 400) float32 RGB in [0, 1]
        ...
        checkpoint["data"] = stream.state_dict()          # {"epoch": e, "batch": k, ...}

`cfg.shards` is a folder holding `manifest.json` (as written by `cli.py shard`), a brace pattern
such as "shards/train-{000000..000123}.tar", a list of paths, or URLs webdataset can open
(e.g. "pipe:aws s3 cp s3://bucket/train-000000.tar -"); for remote shards give `epoch_samples`
or a local copy of the manifest (`manifest=`), since the epoch length must be known up front.

Epoch rule. With T samples in the epoch, W DataLoader workers, R ranks and batch size B:

* every rank yields exactly N = T // (R * B) batches per epoch (no DDP hang, whatever the shards);
* the shard list is permuted with a seed derived from (seed, epoch) and dealt round-robin to the
  R * W (rank, worker) slots; worker w of a rank produces the batches i = w, w + W, ... of the
  rank's epoch (the DataLoader's own round-robin order), so it owns N // W or N // W + 1 of them;
* each worker reads its shards through a shuffle buffer; if it needs more samples than its shards
  hold it starts over on them (a few samples repeat), if it needs fewer it stops early (those
  samples are not seen this epoch; the per-epoch permutation changes which);
* hence, when the shards hold equally many samples, the shard count is a multiple of R * W and
  each worker's share is a multiple of B, every sample is seen exactly once per epoch across all
  ranks and workers. With fewer shards than R * W, some shards are read by several slots.

Randomness (shard order, shuffle buffer, crop offsets, flips) comes only from generators derived
from (seed, epoch, rank, worker), so a stream is reproducible and independent of timing.

Resume: `state_dict()` records (epoch, batches consumed). `load_state_dict()` restarts that epoch
and the workers replay the skipped part of their streams without decoding images (reading the
tar data again), so the next batch is exactly the one an uninterrupted run would have yielded,
provided seed, world size, batch size and num_workers are unchanged (an undecodable sample in
the skipped part shifts the position by one sample). If the world size or batch size changed, the
samples consumed in the epoch are kept: k batches of B on R ranks become batch k * R * B // (R' * B')
of the new layout (`rescaled_position`), so the epoch still ends after about T samples in all; the
rest of that epoch comes from the new (rank, worker) layout, so which samples it holds differs from
an uninterrupted run (some may repeat, some be missed); the next epoch follows the epoch rule.

Bad shards: a missing or corrupt shard (or an undecodable sample) is logged as a warning naming
the shard and counted in `ShardStream.bad_shards` / `bad_samples`; reading goes on with the next
shard. `strict=True` raises ShardReadError instead. Images are decoded with OpenCV only; nothing
in a shard is ever unpickled.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shards import seeds
from shards.imagesize import MAX_SAMPLE_PIXELS
from shards.manifest import MANIFEST_NAME, read_manifest, shard_paths, total_samples
from shards.stages import GTBatch, Problems, Sample, gt_batches, shard_samples, shuffle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderConfig:
    """Streaming loader options. Defaults: RealESRGANDataset's per-GPU settings (ref. §1.1, §4.5)."""

    shards: str | Sequence[str]
    batch_size: int = 12
    patch_size: int = 400  # the dataset's crop_pad_size; the 256 crop happens after degradation
    shuffle_buffer: int = 512  # samples held (encoded) per worker
    hflip: bool = True
    rot: bool = False
    num_workers: int = 5  # the reference's per-GPU worker count; train's data.num_workers defaults to this
    seed: int = 0
    strict: bool = False
    epoch_samples: int | None = None  # epoch length T; default: the manifest's sample count
    manifest: str | None = None  # a manifest for shards given as a pattern/list/URLs
    uint8: bool = False  # yield uint8 [0, 255] instead of float32 [0, 1] (4x less inter-process copying)
    pin_memory: bool = False
    prefetch_factor: int = 2
    max_pixels: int = MAX_SAMPLE_PIXELS  # samples declaring more are bad samples, never decoded (0: no limit)

    def __post_init__(self) -> None:
        for name in ("batch_size", "patch_size", "prefetch_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.shuffle_buffer < 0 or self.seed < 0:
            raise ValueError("num_workers, shuffle_buffer and seed must be >= 0")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise ValueError(f"epoch_samples must be >= 1, got {self.epoch_samples}")


@dataclass(frozen=True)
class ShardSet:
    """The shard URLs of a stream and the number of samples in one epoch."""

    urls: tuple[str, ...]
    total_samples: int


def _expand(spec: str | Sequence[str]) -> list[str]:
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    return [url for item in items for url in braceexpand(str(item))]


def url_file_name(url: str) -> str:
    """The file name of a shard inside a path or URL (also inside a `pipe:` command line)."""
    names = re.findall(r"[^/\s]+\.tar(?:\.gz)?", url)
    return names[-1] if names else url.rstrip("/").split("/")[-1]


def _counts_from(manifest_path: Path, urls: list[str]) -> int:
    listed = {e["name"]: int(e["samples"]) for e in read_manifest(manifest_path)["shards"]}
    missing = [u for u in urls if url_file_name(u) not in listed]
    if missing:
        raise ValueError(f"{manifest_path} does not list {missing[0]} (and {len(missing) - 1} more)")
    return sum(listed[url_file_name(u)] for u in urls)


def resolve_shards(spec: str | Sequence[str], manifest: str | None = None,
                   epoch_samples: int | None = None) -> ShardSet:
    """URLs and epoch length for a shard spec (folder with manifest, pattern, list or URLs).

    Raises:
        ValueError: no shard, an unfinished shard job, or an unknown epoch length.
    """
    if isinstance(spec, str | Path) and Path(spec).is_dir():
        m = read_manifest(Path(spec))
        if m.get("kind", "patches") != "patches":
            raise ValueError(f"{Path(spec) / MANIFEST_NAME} describes {m['kind']}, not GT patches for training")
        if not m["complete"]:
            raise ValueError(f"{Path(spec) / MANIFEST_NAME}: the shard job has not finished; rerun it first")
        urls = shard_paths(Path(spec), m)
        total = total_samples(m)
    else:
        urls = _expand(spec)
        if manifest is not None:
            total = _counts_from(Path(manifest), urls)
        elif epoch_samples is None and urls and all(Path(u).is_file() for u in urls) \
                and (Path(urls[0]).parent / MANIFEST_NAME).is_file():
            total = _counts_from(Path(urls[0]).parent / MANIFEST_NAME, urls)
        elif epoch_samples is None:
            raise ValueError(f"cannot tell how many samples {urls[:1]}... hold: pass epoch_samples, or manifest=")
        else:
            total = epoch_samples
    if not urls:
        raise ValueError(f"no shards in {spec!r}")
    return ShardSet(tuple(urls), epoch_samples if epoch_samples is not None else total)


def slot_shards(urls: Sequence[str], seed: int, epoch: int, rank: int, world_size: int,
                worker: int, num_workers: int) -> list[str]:
    """The shards slot (rank, worker) reads in an epoch: every (R*W)-th of the epoch's permutation.

    A slot left without a shard (fewer shards than slots) reads shard (slot mod K) of the
    permutation, so no worker is idle and every rank still fills its batches.
    """
    order = seeds.epoch_permutation(len(urls), seed, epoch)
    slots = world_size * num_workers
    slot = rank * num_workers + worker
    mine = [urls[int(i)] for i in order[slot::slots]]
    return mine or [urls[int(order[slot % len(urls)])]]


def batches_per_rank(total: int, world_size: int, batch_size: int) -> int:
    """N = T // (R * B): batches every rank yields per epoch."""
    return total // (world_size * batch_size)


def worker_batches(n: int, worker: int, num_workers: int) -> int:
    """How many of the indices 0..n-1 are congruent to worker mod num_workers."""
    return n // num_workers + (1 if worker < n % num_workers else 0)


def _worker_stream(urls: list[str], cfg: LoaderConfig, epoch: int, rank: int, worker: int,
                   problems: Problems) -> Iterator[Sample]:
    """The worker's shards, shuffled, again and again (pass p uses its own shuffle generator)."""
    for p in itertools.count():
        gen = seeds.rng(cfg.seed, epoch, rank, worker, seeds.SHUFFLE, p)
        n = 0
        for sample in shuffle(shard_samples(urls, problems), cfg.shuffle_buffer, gen):
            n += 1
            yield sample
        if n == 0:
            raise RuntimeError(f"rank {rank} worker {worker}: none of its shards gave a sample: {urls}")


class EpochDataset(IterableDataset):
    """One rank's batches of one epoch, starting at batch `skip` (the DataLoader splits workers)."""

    def __init__(self, cfg: LoaderConfig, shard_set: ShardSet, epoch: int, rank: int, world_size: int,
                 skip: int = 0) -> None:
        super().__init__()
        self.cfg, self.shard_set, self.epoch = cfg, shard_set, epoch
        self.rank, self.world_size, self.skip = rank, world_size, skip
        self.n_batches = batches_per_rank(shard_set.total_samples, world_size, cfg.batch_size)

    def __iter__(self) -> Iterator[GTBatch]:
        info = get_worker_info()
        loader_id, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader asks its workers in turn starting with worker 0; rotating the logical
        # worker by `skip` makes loader worker 0 produce global batch `skip`, as it did originally.
        worker = (loader_id + self.skip) % workers
        cfg, b = self.cfg, self.cfg.batch_size
        urls = slot_shards(self.shard_set.urls, cfg.seed, self.epoch, self.rank, self.world_size, worker, workers)
        total = worker_batches(self.n_batches, worker, workers)
        done = worker_batches(self.skip, worker, workers)
        problems = Problems(cfg.strict)
        samples = _worker_stream(urls, cfg, self.epoch, self.rank, worker, problems)
        aug = seeds.rng(cfg.seed, self.epoch, self.rank, worker, seeds.AUGMENT)
        # Replay the consumed batches without decoding: same samples drawn, same uniforms drawn.
        for _ in itertools.islice(samples, done * b):
            pass
        aug.random((done, b, 5))
        yield from gt_batches(samples, total - done, b, aug, cfg.patch_size, cfg.hflip, cfg.rot, cfg.uint8,
                              problems, cfg.max_pixels)


def rescaled_position(batch: int, state: dict, world_size: int, batch_size: int) -> int:
    """The batch to continue at after a world-size or batch-size change: the samples consumed, in new batches."""
    old_world, old_batch = int(state.get("world_size", world_size)), int(state.get("batch_size", batch_size))
    return batch * old_world * old_batch // (world_size * batch_size)


class ShardStream:
    """An infinite, resumable iterator of GT batches for one DDP rank (see the module docstring)."""

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.shard_set = resolve_shards(cfg.shards, cfg.manifest, cfg.epoch_samples)
        self.batches_per_epoch = batches_per_rank(self.shard_set.total_samples, world_size, cfg.batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{self.shard_set.total_samples} samples are fewer than world_size x batch_size "
                             f"= {world_size * cfg.batch_size}: not one batch per rank")
        slots = world_size * max(cfg.num_workers, 1)
        if len(self.shard_set.urls) < slots:
            log.warning("%d shards for %d (rank, worker) slots: some shards are read by several slots per "
                        "epoch; write more, smaller shards", len(self.shard_set.urls), slots)
        self.epoch = 0
        self.batch = 0
        self.bad_shards: Counter[str] = Counter()
        self.bad_samples: Counter[str] = Counter()

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[GTBatch]:
        """The batches skip..N-1 of one epoch (through a DataLoader when num_workers > 0)."""
        data = EpochDataset(self.cfg, self.shard_set, epoch, self.rank, self.world_size, skip)
        if self.cfg.num_workers == 0:
            yield from data
            return
        yield from DataLoader(data, batch_size=None, num_workers=self.cfg.num_workers,
                              pin_memory=self.cfg.pin_memory, prefetch_factor=self.cfg.prefetch_factor)

    def _note(self, problems: list[tuple[str, str, str]]) -> None:
        for kind, url, detail in problems:
            (self.bad_shards if kind == "shard" else self.bad_samples)[url] += 1
            log.warning("skipped %s in shard %s: %s", "the rest" if kind == "shard" else "a sample", url, detail)

    def __iter__(self) -> Iterator[GTBatch]:
        while True:
            for batch in self.epoch_batches(self.epoch, self.batch):
                self.batch += 1
                self._note(batch.problems)
                yield batch
            if self.batch != self.batches_per_epoch:
                raise RuntimeError(f"epoch {self.epoch} ended after {self.batch} of {self.batches_per_epoch} batches")
            self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict:
        """Position of the stream (batches consumed in the current epoch) and what it depends on."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.cfg.seed, "world_size": self.world_size,
                "batch_size": self.cfg.batch_size, "num_workers": self.cfg.num_workers,
                "total_samples": self.shard_set.total_samples}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; call before iter(stream)."""
        for key in ("seed", "world_size", "batch_size", "num_workers", "total_samples"):
            now = self.state_dict()[key]
            if key in state and state[key] != now:
                log.warning("data stream resumed with %s=%s (saved: %s): the samples consumed this epoch are kept, "
                            "the exact sample order is not", key, now, state[key])
        epoch, batch = int(state["epoch"]), int(state["batch"])
        batch = rescaled_position(batch, state, self.world_size, self.cfg.batch_size)
        if batch >= self.batches_per_epoch:
            epoch, batch = epoch + 1, 0
        self.epoch, self.batch = epoch, batch
