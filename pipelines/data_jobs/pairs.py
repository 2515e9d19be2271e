"""Offline degraded pairs (`python cli.py degrade`): GT patches from shards -> (GT, LQ, parameter record).

The LQ images come from `degrade.degrade`, the same code the trainer runs on the fly. Each input
sample i gets its own CPU generator seeded from (seed, i), so its LQ depends only on the seed, its
index and its pixels: the same seed and inputs give byte-identical output, whatever the resume
points, and every LQ can be replayed from its record with
`degrade.apply(gt, DegradationParams.from_records([record["params"]]), config)` (after USM if
`record["usm"]`).

Input samples are read in shard order (no shuffle); the first `count` are used. The GT is the stored
patch, centre-cropped or reflect-101 padded to `gt_size` if given, then trimmed at the bottom/right
to a multiple of the scale. Outputs:

* `format="shards"`: `NAME-000000.tar` shards with members `KEY.gt.png`, `KEY.lq.png`, `KEY.json`;
* `format="folders"`: `HR/KEY.png`, `LR/KEY.png`, `meta_info.txt` with `HR/KEY.png, LR/KEY.png` lines
  (the paired meta-info format of Real-ESRGAN's generate_meta_info_pairdata.py, ref. §4.6, with
  dataroot_gt = dataroot_lq = the output folder) and `records.jsonl`.

Atomic and resumable like the shard job: a checkpoint (manifest with a cursor) every `shard_size`
pairs; files are renamed into place when complete; text files are truncated back to the
checkpointed length on resume.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

import degrade
from pipelines.common import rgb_to_tensor, tensor_to_rgb
from shards import seeds
from shards.atomic import write_bytes_atomic
from shards.manifest import FORMAT, MANIFEST_NAME, VERSION, digest, read_manifest, verify_shard, write_manifest
from shards.prepare import Progress, ShardJobError
from shards.read import resolve_shards
from shards.stages import Problems, decode_sample, shard_samples
from shards.write import ShardWriter, encode_json, encode_png

FORMATS = ("shards", "folders")


@dataclass(frozen=True)
class PairConfig:
    """Options of the offline degradation job."""

    shards: str | tuple[str, ...]
    out: Path
    degradation: degrade.DegradationConfig = field(default_factory=degrade.DegradationConfig)
    seed: int = 0
    count: int | None = None  # the first `count` input samples; None: all
    format: str = "shards"
    gt_size: int = 0  # 0: the stored patch as is
    usm: bool = False  # degrade USM(GT), as the reference's GAN stage does; the stored GT stays unsharpened
    name: str = "pairs"
    shard_size: int = 1000  # pairs per shard (and per checkpoint)
    png_level: int = 3
    device: str = "cpu"
    overwrite: bool = False
    scheduler: str = ""  # "" = this process; "tcp://HOST:PORT" or "local:N": a Dask task per shard (pairs_cluster.py)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if self.gt_size < 0 or self.gt_size % self.degradation.scale:
            raise ValueError(f"gt_size must be 0 or a positive multiple of the scale {self.degradation.scale}")
        if self.shard_size < 1 or self.seed < 0:
            raise ValueError("shard_size must be >= 1 and seed >= 0")
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", self.name):
            raise ValueError(f"name {self.name!r} must be letters, digits, '_' or '-'")

    def output_config(self) -> dict:
        """The options that determine the output bytes (hashed; a mismatch blocks resuming)."""
        return {"kind": "pairs", "degradation": self.degradation.to_dict(), "seed": self.seed, "count": self.count,
                "format": self.format, "gt_size": self.gt_size, "usm": self.usm, "name": self.name,
                "shard_size": self.shard_size, "png_level": self.png_level, "device": self.device}


@dataclass(frozen=True)
class PairReport:
    out: Path
    manifest: dict
    already_complete: bool
    resumed: bool
    pairs_written: int
    elapsed_s: float
    retried_tasks: int | None = None  # Dask tasks rerun after their worker died (None: not on Dask)


def prepare_gt(rgb: np.ndarray, gt_size: int, scale: int) -> np.ndarray:
    """Centre crop / reflect-101 pad to gt_size (if > 0), then trim bottom/right to a multiple of scale."""
    if gt_size:
        h, w = rgb.shape[:2]
        rgb = cv2.copyMakeBorder(rgb, 0, max(gt_size - h, 0), 0, max(gt_size - w, 0), cv2.BORDER_REFLECT_101)
        h, w = rgb.shape[:2]
        top, left = (h - gt_size) // 2, (w - gt_size) // 2
        rgb = rgb[top : top + gt_size, left : left + gt_size]
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[: h - h % scale, : w - w % scale])


def degrade_pair(gt_rgb: np.ndarray, index: int, cfg: PairConfig) -> tuple[np.ndarray, dict]:
    """LQ (HWC uint8 RGB) and the parameter record of input sample `index` (see the module docstring)."""
    gt = rgb_to_tensor(gt_rgb, cfg.device)
    source = degrade.usm_sharpen(gt) if cfg.usm else gt
    generator = torch.Generator().manual_seed(seeds.derive_seed(cfg.seed, index, "degrade"))
    lq, params = degrade.degrade(source, cfg.degradation, generator)
    return tensor_to_rgb(lq), params.records()[0]  # clamp-then-round: the same codes as round-then-clamp


def pair_key(index: int, source_key: str) -> str:
    return f"{index:09d}_{re.sub(r'[^A-Za-z0-9_-]', '-', source_key)[-60:]}"


def make_pair(sample, index: int, cfg: PairConfig) -> tuple[str, bytes, bytes, dict]:
    """(key, GT PNG, LQ PNG, record) of input sample `index`: the one definition of a pair, run by the local
    job and by the Dask task alike, so both write the same bytes."""
    rgb = decode_sample(sample)
    if rgb is None:
        raise ShardJobError(f"shard {sample.url}: cannot decode the image of sample {sample.key!r}")
    gt = prepare_gt(rgb, cfg.gt_size, cfg.degradation.scale)
    lq, params = degrade_pair(gt, index, cfg)
    key = pair_key(index, sample.key)
    record = {"key": key, "index": index, "source_key": sample.key, "source_shard": sample.url,
              "seed": cfg.seed, "usm": cfg.usm, "gt_size": list(gt.shape[:2]), "params": params}
    return key, encode_png(gt, cfg.png_level), encode_png(lq, cfg.png_level), record


class _FolderSink:
    """HR/, LR/, meta_info.txt and records.jsonl, appended per pair; text files are `.partial` until done."""

    def __init__(self, out: Path, text_bytes: dict[str, int]) -> None:
        self.out = out
        for sub in ("HR", "LR"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.text = {}
        for name in ("meta_info.txt", "records.jsonl"):
            path = out / (name + ".partial")
            with open(path, "ab") as f:  # truncate to the checkpoint: later lines are rewritten
                f.truncate(text_bytes.get(name, 0))
            self.text[name] = open(path, "ab")  # noqa: SIM115 - closed in close()

    def add(self, key: str, gt_png: bytes, lq_png: bytes, record: dict) -> None:
        write_bytes_atomic(self.out / "HR" / f"{key}.png", gt_png)
        write_bytes_atomic(self.out / "LR" / f"{key}.png", lq_png)
        self.text["meta_info.txt"].write(f"HR/{key}.png, LR/{key}.png\n".encode())
        self.text["records.jsonl"].write(encode_json(record) + b"\n")

    def checkpoint(self) -> dict[str, int]:
        sizes = {}
        for name, f in self.text.items():
            f.flush()
            os.fsync(f.fileno())
            sizes[name] = f.tell()
        return sizes

    def close(self, complete: bool) -> None:
        for name, f in self.text.items():
            f.close()
            if complete:
                os.replace(self.out / (name + ".partial"), self.out / name)


def _start(cfg: PairConfig, inputs: dict) -> tuple[dict | None, bool]:
    """(existing manifest to resume from or None, already complete)."""
    out = Path(cfg.out)
    path = out / MANIFEST_NAME
    if not path.exists():
        return None, False
    old = read_manifest(path)
    if cfg.overwrite:
        for entry in old.get("shards", []):
            (out / entry["name"]).unlink(missing_ok=True)
        path.unlink()
        return None, False
    if old["config"] != cfg.output_config() or old.get("inputs") != inputs:
        raise ShardJobError(f"{path} was made with other options or inputs; pass --overwrite to replace it")
    if old["complete"]:
        return old, True
    for entry in old["shards"]:
        if problem := verify_shard(out, entry):
            raise ShardJobError(f"finished shard damaged: {problem}; pass --overwrite to rebuild")
    return old, False


def make_pairs(cfg: PairConfig, progress: Callable[[Progress], None] | None = None) -> PairReport:
    """Run (or resume) the offline degradation job; see the module docstring."""
    t0 = time.monotonic()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        shard_set = resolve_shards(cfg.shards)
        urls, available = list(shard_set.urls), shard_set.total_samples
    except ValueError:  # no manifest to count with: read until the input ends
        urls, available = list(resolve_shards(cfg.shards, epoch_samples=1).urls), None
    inputs = {"urls": urls, "digest": digest([[u, os.path.getsize(u) if os.path.isfile(u) else -1] for u in urls])}
    old, complete = _start(cfg, inputs)
    if complete:
        return PairReport(out, old, True, False, 0, time.monotonic() - t0)
    total = min(x for x in (cfg.count, available) if x is not None) if (cfg.count or available) else None
    shards = list(old["shards"]) if old else []
    cursor = old["cursor"] if old else {"index": 0, "text": {}}
    start = int(cursor["index"])
    for stale in out.glob(f"{cfg.name}-*.tar.tmp"):
        stale.unlink()

    def save(index: int, text: dict[str, int], done: bool) -> dict:
        manifest = {"format": FORMAT, "version": VERSION, "kind": "pairs", "complete": done,
                    "config": cfg.output_config(), "config_hash": digest(cfg.output_config()), "inputs": inputs,
                    "shards": shards, "totals": {"pairs": index, "shards": len(shards)},
                    "cursor": {"index": index, "text": text}}
        write_manifest(out, manifest)
        return manifest

    if cfg.scheduler:
        from pipelines.data_jobs.pairs_cluster import pairs_on_cluster

        retried = pairs_on_cluster(cfg, urls, total, shards, lambda index, done: save(index, {}, done))
        index = min(len(shards) * cfg.shard_size, total)
        return PairReport(out, save(index, {}, True), False, old is not None, index - start,
                          time.monotonic() - t0, retried)
    folder = _FolderSink(out, cursor["text"]) if cfg.format == "folders" else None
    writer: ShardWriter | None = None
    index = start
    samples = shard_samples(urls, Problems(strict=True))
    try:
        for _ in itertools.islice(samples, start):  # already written: skip without decoding
            pass
        for sample in samples:
            if cfg.count is not None and index >= cfg.count:
                break
            key, gt_png, lq_png, record = make_pair(sample, index, cfg)
            if folder is not None:
                folder.add(key, gt_png, lq_png, record)
            else:
                writer = writer or ShardWriter(out / f"{cfg.name}-{len(shards):06d}.tar")
                writer.add(key, {"gt.png": gt_png, "lq.png": lq_png, "json": encode_json(record)})
            index += 1
            if (index - start) and index % cfg.shard_size == 0:
                if writer is not None:
                    shards.append(writer.finish().as_dict())
                    writer = None
                save(index, folder.checkpoint() if folder else {}, False)
            if progress is not None:
                progress(Progress(index, total or 0, index - start, index, len(shards), 0,
                                  time.monotonic() - t0))
        if writer is not None:
            shards.append(writer.finish().as_dict())
            writer = None
        manifest = save(index, folder.checkpoint() if folder else {}, True)
        if folder is not None:
            folder.close(True)
            folder = None
    finally:
        if writer is not None:
            writer.abort()
        if folder is not None:
            folder.close(False)
    return PairReport(out, manifest, False, old is not None, index - start, time.monotonic() - t0)
