"""``cli.py upscale``: files and folders through ``pipelines.inference.enhance``, with the reference's naming.

Reference: Real-ESRGAN ``inference_realesrgan.py`` (IMREAD_UNCHANGED, ``<name>_<suffix>.<ext>``, RGBA saved
as PNG). The flow is read -> ``enhance`` (split channels, tiled model call, merge) -> write. Deliberate
differences from the reference (the image-kind ones are in ``pipelines.inference.enhance``):

* 16-bit results asked for as JPEG / WebP (8-bit formats) are written as PNG, as RGBA ones are.
* Outputs are written atomically (temporary file + ``os.replace``); one unreadable input is reported
  and skipped instead of stopping the run.
* An existing output is kept, not overwritten, unless ``--overwrite`` (the input is counted as kept);
  an output that would be the input itself is an error even with ``--overwrite``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import cv2
import numpy as np
import torch
from torch import nn

from pipelines.common import is_terminal, progress_bar, write_image_atomic
from pipelines.inference import backends
from pipelines.inference.enhance import AlphaUpsampler, TileState, build_model, enhance, image_mode, resolve_device
from pipelines.inference.tiling import default_overlap

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SIXTEEN_BIT_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass(frozen=True)
class UpscaleConfig:
    """Everything ``upscale_files`` needs; defaults follow ``inference_realesrgan.py`` where it has one.

    ``tile`` / ``tile_overlap`` / ``tile_batch`` are in LR pixels (see ``pipelines.inference.tiling``); the
    reference's CLI defaults are tile 0 and pre_pad 0. Our tile default bounds memory on big photos.
    """

    inputs: tuple[Path, ...]
    out: Path
    weights: str
    suffix: str = "out"
    ext: Literal["auto", "png", "jpg", "webp"] = "auto"
    outscale: float | None = None  # None: the model's scale
    alpha_upsampler: AlphaUpsampler = "realesrgan"
    tile: int = 512
    tile_overlap: int | None = None  # None: max(12 x the unshuffle factor, tile // 8)
    tile_batch: int = 0  # 0: auto
    pre_pad: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    half: bool = False  # alias of precision="fp16"
    precision: backends.Precision = "auto"  # see pipelines.inference.backends
    backend: backends.Backend = "auto"
    recursive: bool = False
    threads: int = 0  # 0: torch's default (the physical cores)
    progress: bool = True
    overwrite: bool = False  # replace existing outputs (an output is never the input itself, even then)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("no inputs given")
        if self.tile < 0 or (self.tile_overlap is not None and self.tile_overlap < 0) or self.pre_pad < 0:
            raise ValueError("--tile, --tile-overlap and --pre-pad must be >= 0")
        if self.tile_batch < 0 or self.threads < 0:
            raise ValueError("--tile-batch and --threads must be >= 0")
        if self.outscale is not None and not self.outscale > 0:
            raise ValueError(f"--outscale must be > 0 (got {self.outscale})")
        if os.sep in self.suffix or (os.altsep and os.altsep in self.suffix):
            raise ValueError(f"--suffix must not contain a path separator (got {self.suffix!r})")
        backends.parse_precision(self.precision, self.half)
        if self.backend not in backends.BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(backends.BACKENDS)} (got {self.backend!r})")


@dataclass
class UpscaleSummary:
    """What a run did: (input, output) pairs written and (input, reason) pairs that failed."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    kept: list[tuple[Path, Path]] = field(default_factory=list)  # outputs that existed: not overwritten

    def line(self) -> str:
        kept = f", {len(self.kept)} kept (output exists; --overwrite replaces)" if self.kept else ""
        total = len(self.written) + len(self.failed) + len(self.kept)
        return f"{len(self.written)} written, {len(self.failed)} failed{kept} ({total} inputs, {self.seconds:.1f} s)"


# ---------------------------------------------------------------- files


def read_image(path: Path) -> np.ndarray:
    """cv2 IMREAD_UNCHANGED through ``np.fromfile`` (any path encoding); ValueError naming the file."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from error
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"{path} is not an image OpenCV can decode ({data.size} bytes)")
    return image


def output_suffix(input_path: Path, ext: str, mode: str, dtype: np.dtype) -> str:
    """``--ext`` (auto keeps the input's) with the reference's RGBA -> .png rule and 16-bit -> .png."""
    suffix = input_path.suffix.lower() if ext == "auto" else f".{ext}"
    if suffix not in IMAGE_SUFFIXES or mode == "RGBA":
        return ".png"
    if dtype == np.uint16 and suffix not in SIXTEEN_BIT_SUFFIXES:
        return ".png"
    return suffix


def collect_inputs(inputs: tuple[Path, ...], out: Path, recursive: bool) -> list[tuple[Path, Path]]:
    """(file, its folder relative to OUT) for every input; folders give their image files, sorted.

    Folders are scanned one level deep, or the whole tree with ``recursive`` (subfolders mirrored in
    OUT). Files already inside OUT are skipped so that re-runs do not upscale their own outputs.
    Named files are taken whatever their suffix (and fail later if unreadable).
    """
    found: list[tuple[Path, Path]] = []
    out_resolved = out.resolve()
    for item in inputs:
        if not item.is_dir():
            found.append((item, Path()))
            continue
        pattern = "**/*" if recursive else "*"
        for path in sorted(item.glob(pattern)):
            inside_out = out_resolved in path.resolve().parents
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not inside_out:
                found.append((path, path.parent.relative_to(item)))
    return found


# ---------------------------------------------------------------- progress and the run


class UpscaleProgress:
    """The images bar (`pipelines.common.progress_bar`) with the current image and its tiles after it; one line per
    finished image above it. Off (``enabled`` False): only the lines given with ``always`` (failures, kept)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = is_terminal(stream)  # a log file gets no line per tile
        self.bar = progress_bar(total, "upscale", "image", enabled=enabled, file=stream)
        self.done, self.name = 0, ""

    def start(self, name: str) -> None:
        self.name = name
        self.bar.set_postfix_str(name, refresh=self.tty)

    def tiles(self, done: int, total: int) -> None:
        self.bar.set_postfix_str(f"{self.name} tiles {done}/{total}", refresh=self.tty)

    def finish(self, text: str, always: bool = False) -> None:
        self.done += 1
        self.message(f"[{self.done}/{self.total}] {text}", always)
        self.bar.update(1)
        if self.tty:  # an image takes seconds: show its count now, not at the next tile
            self.bar.refresh()

    def message(self, text: str, always: bool = False) -> None:
        """Print a line above the bar (``always``: even when progress output is off)."""
        if self.enabled or always:
            self.bar.write(text, file=self.stream)

    def close(self) -> None:
        self.bar.close()


def upscale_files(config: UpscaleConfig, stream: TextIO | None = None,
                  model: nn.Module | None = None) -> UpscaleSummary:
    """Upscale every input into ``config.out``; failures are reported on ``stream`` and skipped.

    Args:
        config: the run.
        stream: progress and error messages (default: sys.stderr at call time).
        model: an already built model (tests, benchmarks); default: ``build_model(config.weights)``.

    Raises:
        ValueError / FileNotFoundError: no inputs found, bad weights or device (nothing was processed).
    """
    stream = sys.stderr if stream is None else stream
    if config.threads:
        torch.set_num_threads(config.threads)
    jobs = collect_inputs(config.inputs, config.out, config.recursive)
    if not jobs:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, config.inputs))}"
                         f"{'' if config.recursive else ' (folders are scanned one level deep; -r recurses)'}")
    model = _build_backend(config, stream, model)
    overlap = default_overlap(model, config.tile) if config.tile_overlap is None else config.tile_overlap
    state = TileState(config.tile, overlap, config.tile_batch, config.pre_pad)
    summary, progress, claimed = UpscaleSummary(), UpscaleProgress(len(jobs), stream, config.progress), {}
    started = time.perf_counter()
    for path, subfolder in jobs:
        progress.start(path.name)
        try:
            target = _upscale_one(model, path, subfolder, config, state, claimed, progress)
        except OutputExists as kept:
            summary.kept.append((path, kept.target))
            progress.finish(f"kept {kept.target} (exists; --overwrite replaces it)", True)
            continue
        except (ValueError, OSError, RuntimeError, cv2.error) as error:
            summary.failed.append((path, str(error)))
            progress.finish(f"FAILED: {error}" if str(path) in str(error) else f"FAILED {path}: {error}", True)
            continue
        summary.written.append((path, target))
        progress.finish(f"{path} -> {target}")
    progress.close()
    summary.seconds = time.perf_counter() - started
    return summary


class OutputExists(Exception):
    """An output file exists and ``--overwrite`` was not given: the input is skipped and counted as kept."""

    def __init__(self, target: Path) -> None:
        super().__init__(f"{target} exists")
        self.target = target


def check_target(path: Path, target: Path, overwrite: bool) -> None:
    """Never write over the input itself; write over an existing output only with ``overwrite``."""
    if target.exists() and target.resolve() == path.resolve():
        raise ValueError(f"{path}: the output name is the input itself (-o is its folder and --suffix is empty); "
                         f"choose another -o folder or a non-empty --suffix")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputExists(target)


def _build_backend(config: UpscaleConfig, stream: TextIO, model: nn.Module | None) -> nn.Module:
    """The model (built from ``config.weights`` unless given) run by the configured backend and precision."""
    device = next(model.parameters()).device if model is not None else resolve_device(config.device, False)
    precision = backends.resolve_precision(backends.parse_precision(config.precision, config.half), device,
                                           config.half)
    backend = backends.resolve_backend(config.backend, device, precision, config.threads)
    if model is None:
        model, description = build_model(config.weights, device, half=precision == "fp16")
        if config.progress:
            stream.write(f"weights: {description}\n")
    if config.progress:
        stream.write(f"backend: {backends.describe(backend, precision, device, config.threads)}\n")
    return backends.wrap_model(model, backend, precision, config.threads)


def _upscale_one(model: nn.Module, path: Path, subfolder: Path, config: UpscaleConfig, state: TileState,
                 claimed: dict[Path, Path], progress: UpscaleProgress) -> Path:
    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    image = read_image(path)
    name = f"{path.stem}_{config.suffix}" if config.suffix else path.stem
    target = config.out / subfolder / f"{name}{output_suffix(path, config.ext, image_mode(image), image.dtype)}"
    if target in claimed:  # two inputs that map to one output name: keep the first
        raise ValueError(f"output {target} was already written for {claimed[target]} in this run")
    check_target(path, target, config.overwrite)
    out, _ = enhance(model, image, state, config.alpha_upsampler, config.outscale,
                     on_tile=progress.tiles, log=progress.message)
    write_image_atomic(target, out)
    claimed[target] = path
    return target
