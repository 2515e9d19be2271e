"""The shard job: source images -> multiscale variants -> sub-image crops -> PNG samples in tar shards.

`prepare_shards(ShardConfig(...))` is what `python cli.py shard` runs. The steps per source image
(one joblib/loky task each, all CPU cores by default) are: decode (shards.decode), multiscale
variants (shards.multiscale, ref. §5.1), crop windows (shards.crop, ref. §5.2), PNG encoding. The
main process consumes the results strictly in sorted source order and appends each patch to the
current shard, so patch i always lands in shard i // shard_size, whatever the number of workers.

Memory is bounded independently of the dataset size and, in the main process, of the image size:
at most 2 x workers images are in flight, each worker streams the encoded patches of its image to a
spool file in `OUT/.NAME.spool/` (deleted as it is consumed; see shards.patches), the main process
copies them one patch at a time into the current shard, and a shard is streamed to disk as it fills.

Atomic and resumable: a shard is written as `NAME-000000.tar.tmp` and renamed when complete; the
manifest (with a cursor: the next source image and patch) is replaced atomically after each
shard. Rerunning the same command verifies the finished shards listed in the manifest (size and
SHA-256) and continues from the cursor; the result is byte-identical to an uninterrupted run.
A finished output is left alone; a different configuration or changed source files are refused
unless `overwrite=True`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import joblib
from joblib.externals.loky import get_reusable_executor

from shards import decode
from shards.crop import CropConfig
from shards.imagesize import MAX_SOURCE_PIXELS
from shards.manifest import (
    FORMAT,
    MANIFEST_NAME,
    VERSION,
    ManifestError,
    digest,
    read_manifest,
    verify_shard,
    write_manifest,
)
from shards.multiscale import MultiscaleConfig
from shards.patches import ImageResult, PatchPlan, iter_patches, open_image, process_image, read_spool
from shards.sources import (
    MULTISCALE_MODES,
    SourceFile,
    SourceNotFound,
    list_source_files,
    resolve_sources,
)
from shards.write import SAMPLE_ENCODINGS, ShardWriter, encode_json

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ShardJobError(RuntimeError):
    """The output folder cannot be used as asked (other configuration, damaged shards, ...)."""


@dataclass(frozen=True)
class ShardConfig:
    """Options of the shard job. Defaults: Real-ESRGAN's DF2K+OST recipe (ref. §4.6, §5)."""

    src: str = "DF2K+OST"
    root: Path = Path("datasets")
    out: Path = Path("shards")
    name: str = "train"
    crop: CropConfig = field(default_factory=CropConfig)
    multiscale: str = "auto"  # auto: DIV2K/Flickr2K/DF2K only; all; none
    variants: MultiscaleConfig = field(default_factory=MultiscaleConfig)
    shard_size: int = 1000  # samples per shard (~300 MB of 400x400 PNG patches)
    png_level: int = 3  # zlib level used by the reference's extract_subimages.py
    workers: int = 0  # 0: all CPU cores
    overwrite: bool = False
    verify: str = "sha256"  # how finished shards are checked on resume: "sha256" or "size"
    scheduler: str = ""  # "" = joblib on this machine; "tcp://HOST:PORT" or "local:N" = Dask (shards.cluster)
    encoding: str = "png"  # patch member format: "png" (lossless, smallest) or "npy" (raw uint8, fastest to read)
    max_pixels: int = MAX_SOURCE_PIXELS  # sources declaring more pixels are skipped as too_large, undecoded

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must match {_NAME.pattern}")
        if self.multiscale not in MULTISCALE_MODES:
            raise ValueError(f"multiscale must be one of {MULTISCALE_MODES}, got {self.multiscale!r}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if not 0 <= self.png_level <= 9:
            raise ValueError(f"png_level must be in [0, 9], got {self.png_level}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = all cores), got {self.workers}")
        if self.encoding not in SAMPLE_ENCODINGS:
            raise ValueError(f"encoding must be one of {SAMPLE_ENCODINGS}, got {self.encoding!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1 (pixels per source image; the default is "
                             f"{MAX_SOURCE_PIXELS} = 16384x16384), got {self.max_pixels}")
        if self.verify not in ("sha256", "size"):
            raise ValueError(f"verify must be 'sha256' or 'size', got {self.verify!r}")

    def output_config(self) -> dict:
        """The options that determine the shard bytes (hashed; a mismatch blocks resuming)."""
        return {
            "src": self.src,
            "name": self.name,
            "crop": asdict(self.crop),
            "multiscale": self.multiscale,
            "variants": {**asdict(self.variants), "scales": list(self.variants.scales)},
            "shard_size": self.shard_size,
            "png_level": self.png_level,
            # Only when not PNG, so manifests made before encodings existed still match (absent = png).
            **({"encoding": self.encoding} if self.encoding != "png" else {}),
            # Which sources are used (and so the shard bytes) depends on it; absent = the default, as above.
            **({"max_pixels": self.max_pixels} if self.max_pixels != MAX_SOURCE_PIXELS else {}),
        }


@dataclass(frozen=True)
class Progress:
    """A progress snapshot passed to the progress callback after each source image (each pair in `degrade`)."""

    images_done: int
    images_total: int  # 0: not known (degrade without a manifest to count the input with)
    images_this_run: int
    samples: int
    shards: int
    skipped: int
    elapsed_s: float


@dataclass(frozen=True)
class PrepareReport:
    """What the job did; `manifest` is the final manifest dict."""

    out: Path
    manifest: dict
    already_complete: bool
    resumed: bool
    shards_written: int
    images_processed: int
    elapsed_s: float
    retried_tasks: int | None = None  # Dask tasks rerun after their worker died (None: not on Dask)


def sample_key(ordinal: int, meta: dict) -> str:
    """A unique, webdataset-safe key: global patch index, source stem, variant, patch index."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(meta["source"]).stem)[:40]
    return f"{ordinal:09d}_{stem}_{meta['variant']}_{meta['patch']:04d}"


def shard_name(name: str, index: int) -> str:
    return f"{name}-{index:06d}.tar"


@dataclass
class _State:
    """Progress of the job as saved in the manifest after each shard."""

    shards: list[dict] = field(default_factory=list)
    cursor: tuple[int, int] = (0, 0)  # (next source image, next patch of it)
    skipped: list[dict] = field(default_factory=list)
    skip_counts: Counter = field(default_factory=Counter)
    note_counts: Counter = field(default_factory=Counter)
    used: int = 0
    variants: int = 0
    dropped_variants: int = 0

    def account(self, src: SourceFile, result: ImageResult) -> None:
        self.note_counts.update(result.notes)
        if result.skip is not None:
            kind, detail = result.skip
            self.skip_counts[kind] += 1
            self.skipped.append({"path": src.rel, "dataset": src.dataset, "reason": kind, "detail": detail})
            return
        self.used += 1
        self.variants += result.variants
        self.dropped_variants += result.dropped_variants


def _manifest(cfg: ShardConfig, state: _State, inputs: dict, sources: list[dict], ignored: list[str],
              complete: bool) -> dict:
    config = cfg.output_config()
    samples = sum(s["samples"] for s in state.shards)
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": complete,
        "config": config,
        "config_hash": digest(config),
        "inputs": inputs,
        "sources": sources,
        "shards": state.shards,
        "totals": {
            "shards": len(state.shards),
            "samples": samples,
            "bytes": sum(s["bytes"] for s in state.shards),
            "sources": inputs["files"],
            "used": state.used,
            "skipped": len(state.skipped),
            "ignored": len(ignored),
            "variants": state.variants,
            "dropped_variants": state.dropped_variants,
        },
        "counts": {"skipped": dict(sorted(state.skip_counts.items())),
                   "converted": dict(sorted(state.note_counts.items()))},
        "skipped": state.skipped,
        "ignored": ignored,
        "cursor": {"image": state.cursor[0], "patch": state.cursor[1]},
    }


def _state_from(manifest: dict) -> _State:
    counts = manifest.get("counts", {})
    totals = manifest.get("totals", {})
    return _State(
        shards=list(manifest["shards"]),
        cursor=(int(manifest["cursor"]["image"]), int(manifest["cursor"]["patch"])),
        skipped=list(manifest.get("skipped", [])),
        skip_counts=Counter(counts.get("skipped", {})),
        note_counts=Counter(counts.get("converted", {})),
        used=int(totals.get("used", 0)),
        variants=int(totals.get("variants", 0)),
        dropped_variants=int(totals.get("dropped_variants", 0)),
    )


def _our_files(out: Path, name: str) -> list[Path]:
    pattern = re.compile(rf"^{re.escape(name)}-\d{{6}}\.tar(\.tmp)?$")
    return sorted(p for p in out.iterdir() if pattern.match(p.name))


def _clear_output(out: Path, cfg: ShardConfig, old: dict | None) -> None:
    """Delete our previous shards and manifest (for overwrite); nothing else in the folder."""
    names = {e["name"] for e in (old or {}).get("shards", [])}
    victims = [out / n for n in names] + _our_files(out, cfg.name)
    victims += [out / MANIFEST_NAME, out / (MANIFEST_NAME + ".tmp")]
    for path in victims:
        path.unlink(missing_ok=True)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"  {prefix}{key}: {a!r} -> {b!r}")
    return lines


def _load_state(out: Path, cfg: ShardConfig, inputs: dict) -> tuple[_State, dict | None]:
    """The state to continue from (empty for a fresh start) and the existing manifest, if any.

    Raises:
        ShardJobError: the folder holds shards made otherwise, or damaged/unlisted shards.
    """
    path = out / MANIFEST_NAME
    if not path.exists():
        stray = [p.name for p in _our_files(out, cfg.name) if not p.name.endswith(".tmp")]
        if stray and not cfg.overwrite:
            raise ShardJobError(f"{out} holds {len(stray)} shard(s) such as {stray[0]} but no {MANIFEST_NAME}; "
                                "pass --overwrite to replace them, or choose another --out")
        if cfg.overwrite:
            _clear_output(out, cfg, None)
        return _State(), None
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        if not cfg.overwrite:
            raise ShardJobError(f"{exc}; pass --overwrite to start over") from exc
        _clear_output(out, cfg, None)
        return _State(), None
    if cfg.overwrite:
        _clear_output(out, cfg, manifest)
        return _State(), None
    changes = _diff(manifest["config"], cfg.output_config())
    if changes:
        raise ShardJobError(f"{path} was made with a different configuration:\n" + "\n".join(changes)
                            + "\npass --overwrite to replace those shards, or choose another --out")
    if manifest.get("inputs") != inputs:
        raise ShardJobError(f"{path}: the source files changed since these shards were made "
                            f"({manifest.get('inputs', {}).get('files')} -> {inputs['files']} files, or sizes "
                            "or modification times differ); pass --overwrite to rebuild")
    for entry in manifest["shards"]:
        problem = verify_shard(out, entry, check_hash=cfg.verify == "sha256")
        if problem:
            raise ShardJobError(f"finished shard damaged: {problem}; pass --overwrite to rebuild")
    return _state_from(manifest), manifest


def _file_stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns) of a source file; (-1, -1) when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _results(files: list[SourceFile], start: tuple[int, int], plan: PatchPlan, workers: int,
             duplicates: dict[int, str], spool_dir: Path) -> Iterator[tuple[int, ImageResult, Iterator]]:
    """(index, result, its patches from the cursor on) for files[start[0]:], in order.

    At most 2 x workers images are in flight, each as a small result plus a spool file its worker
    streamed the encoded patches to (shards.patches), so neither the main process nor a worker ever
    holds all patches of an image. A sliding window over loky futures (joblib's process executor)
    rather than `Parallel` on the whole list: `Parallel` dispatches new tasks as workers finish, not
    as results are consumed, so its buffered results would grow with the dataset.
    """
    def duplicate(i: int) -> ImageResult:
        return ImageResult(skip=(decode.DUPLICATE, f"same file as {duplicates[i]}"))

    def first(i: int) -> int:
        return start[1] if i == start[0] else 0

    todo = range(start[0], len(files))
    if workers == 1:
        for i in todo:
            if i in duplicates:
                yield i, duplicate(i), iter(())
                continue
            result, opened = open_image(files[i], plan)
            yield i, result, iter_patches(opened, plan, first(i)) if opened else iter(())
        return
    executor = get_reusable_executor(max_workers=workers)
    pending: deque = deque()
    try:
        for i in todo:
            fut = None if i in duplicates else executor.submit(process_image, files[i], plan,
                                                                spool_dir / f"{i:09d}.spool", first(i))
            pending.append((i, fut))
            while len(pending) >= 2 * workers or (i == todo[-1] and pending):
                j, fut = pending.popleft()
                result = fut.result() if fut is not None else duplicate(j)
                yield j, result, read_spool(Path(result.spool)) if result.spool else iter(())
    finally:
        for _, fut in pending:
            if fut is not None:
                fut.cancel()
        executor.shutdown(wait=True)


def _duplicates(files: list[SourceFile]) -> dict[int, str]:
    """Index -> rel path of the first occurrence, for files reached twice (e.g. DF2K+DIV2K)."""
    first: dict[str, str] = {}
    dup: dict[int, str] = {}
    for i, f in enumerate(files):
        real = os.path.realpath(f.path)
        if real in first:
            dup[i] = first[real]
        else:
            first[real] = f.rel
    return dup


def prepare_shards(cfg: ShardConfig, progress: Callable[[Progress], None] | None = None) -> PrepareReport:
    """Run (or resume) the shard job described by cfg; see the module docstring.

    Raises:
        SourceNotFound: a named dataset or folder was not found (the message lists the paths tried).
        ShardJobError: the output folder holds other shards and `overwrite` is off.
    """
    t0 = time.monotonic()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = resolve_sources(cfg.src, Path(cfg.root), cfg.multiscale)
    files, ignored = list_source_files(dirs, Path(cfg.root))
    if not files:
        raise SourceNotFound("no image files (" + ", ".join(sorted(decode.IMAGE_SUFFIXES)) + ") in "
                             + ", ".join(str(d.path) for d in dirs))
    # Size and modification time: a source edited in place with the same size is noticed on resume.
    inputs = {"files": len(files), "digest": digest([[f.rel, *_file_stamp(f.path)] for f in files])}
    sources = [{"dataset": d.dataset, "path": str(d.path), "multiscale": d.multiscale} for d in dirs]
    state, old = _load_state(out, cfg, inputs)
    if old is not None and old["complete"]:
        return PrepareReport(out, old, True, False, 0, 0, time.monotonic() - t0)
    for stale in out.glob(f"{cfg.name}-*.tar.tmp"):
        stale.unlink()
    resumed = old is not None

    def save(complete: bool) -> dict:
        manifest = _manifest(cfg, state, inputs, sources, ignored, complete)
        write_manifest(out, manifest)
        return manifest

    save(False)

    if cfg.scheduler:
        from shards.cluster import prepare_on_cluster

        return prepare_on_cluster(cfg, files, state, old, save, t0)
    plan = PatchPlan(cfg.crop, cfg.variants, cfg.png_level, cfg.encoding, cfg.max_pixels)
    workers = cfg.workers or joblib.cpu_count()
    writer: ShardWriter | None = None
    start_image, start_patch = state.cursor
    done = 0
    spool_dir = out / f".{cfg.name}.spool"
    shutil.rmtree(spool_dir, ignore_errors=True)  # left by a killed run
    spool_dir.mkdir()
    try:
        for i, result, patches in _results(files, state.cursor, plan, workers, _duplicates(files), spool_dir):
            partial = i == start_image and start_patch > 0
            if not partial:
                state.account(files[i], result)
            first = start_patch if partial else 0
            if first > result.count:
                raise ShardJobError(f"{files[i].path}: now gives {result.count} patches, fewer than "
                                    f"the {first} already written; the source changed, pass --overwrite")
            for j, (meta, png) in enumerate(patches, start=first):
                if writer is None:
                    writer = ShardWriter(out / shard_name(cfg.name, len(state.shards)))
                ordinal = len(state.shards) * cfg.shard_size + writer.samples
                key = sample_key(ordinal, meta)
                writer.add(key, {"json": encode_json({**meta, "key": key, "index": ordinal}), cfg.encoding: png})
                if writer.samples == cfg.shard_size:
                    state.shards.append(publish_shard(writer))
                    writer = None
                    state.cursor = (i, j + 1) if j + 1 < result.count else (i + 1, 0)
                    save(False)
            done += 1
            if progress is not None:
                progress(Progress(i + 1, len(files), done, sum(s["samples"] for s in state.shards)
                                  + (writer.samples if writer else 0), len(state.shards), len(state.skipped),
                                  time.monotonic() - t0))
        if writer is not None:
            state.shards.append(publish_shard(writer))
            writer = None
    finally:
        if writer is not None:
            writer.abort()
        shutil.rmtree(spool_dir, ignore_errors=True)
    state.cursor = (len(files), 0)
    manifest = save(True)
    new_shards = len(state.shards) - (len(old["shards"]) if old else 0)
    return PrepareReport(out, manifest, False, resumed, new_shards, done, time.monotonic() - t0)


def publish_shard(writer: ShardWriter) -> dict:
    """Finish a full shard (rename into place) and return its manifest entry."""
    return writer.finish().as_dict()

