"""``cli.py upscale``: run an RRDBNet over image files: RGB, gray, RGBA and 16-bit, tiled without seams.

Reference: Real-ESRGAN ``realesrgan/utils.py`` ``RealESRGANer.enhance`` (image kinds, alpha upsampler,
outscale with LANCZOS4) and ``inference_realesrgan.py`` (IMREAD_UNCHANGED, ``<name>_<suffix>.<ext>``,
RGBA saved as PNG). The flow is read -> split channels -> tiled model call -> merge -> write; the
tiling itself is ``pipelines.inference.tiling``. Deliberate differences from the reference:

* 8 / 16 bit is decided by the dtype (uint8 / uint16), not by the reference's ``max > 256`` test,
  which divides a dark 16-bit image (all values <= 256) by 255 and writes it back as 8-bit.
* A constant alpha channel (e.g. fully opaque) is copied, not sent through the network: the exact
  upscaling of a constant is that constant, and it halves the work for such files.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import cv2
import numpy as np
import torch
from torch import nn

from models.weights import describe_spec, load_generator
from pipelines.common import is_terminal, progress_bar, write_image_atomic
from pipelines.inference import backends
from pipelines.inference.tiling import default_overlap, upscale_rows, upscale_tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SIXTEEN_BIT_SUFFIXES = (".png", ".tif", ".tiff")
MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
AlphaUpsampler = Literal["realesrgan", "linear"]


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


# ---------------------------------------------------------------- model


def resolve_device(device: str, half: bool) -> torch.device:
    """``auto`` -> CUDA when available; ``--half`` needs CUDA (fp16 convolutions on CPU are slow or missing)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    resolved = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    if half and resolved.type != "cuda":
        raise ValueError("--half needs a CUDA device (this run is on the CPU); drop --half")
    return resolved


def build_model(weights: str, device: torch.device, half: bool = False) -> tuple[nn.Module, str]:
    """Load ``--weights`` (builtin name, ncnn .param or .pth), detect RRDBNet / compact, move it to ``device``."""
    model, resolved = load_generator(weights)  # its errors name the file
    spec = resolved.spec
    if spec.num_in_ch != 3 or spec.num_out_ch != 3:
        raise ValueError(f"{weights}: upscale needs an RGB model (3 in, 3 out channels), got {spec}")
    check_finite_weights(model.state_dict(), weights)
    return prepare_model(model, device, half), f"{resolved.description}: {describe_spec(spec, resolved.out_scale)}"


def check_finite_weights(state_dict: dict[str, torch.Tensor], weights: str) -> None:
    """ValueError naming the first tensor holding NaN or infinity (a diverged run or a corrupt file)."""
    for key, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{weights}: tensor {key} holds {bad} NaN/infinite values; the weights come from a "
                             f"diverged run or a corrupt file: use an earlier checkpoint's weights")


def prepare_model(model: nn.Module, device: torch.device, half: bool = False) -> nn.Module:
    """eval, no grads, channels_last (oneDNN / cuDNN run NHWC convolutions without reorders), fp16 if asked."""
    model = model.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    return model.half() if half else model


# ---------------------------------------------------------------- image kinds


@dataclass(frozen=True)
class SplitImage:
    """An input image as the network sees it: RGB float32 HWC in [0, 1], plus what to restore."""

    rgb: np.ndarray
    alpha: np.ndarray | None  # HW float32 in [0, 1]
    mode: Literal["RGB", "L", "RGBA"]
    dtype: np.dtype


def image_mode(image: np.ndarray) -> Literal["RGB", "L", "RGBA"]:
    """'L' for HxW or HxWx1, 'RGB' for HxWx3 (BGR), 'RGBA' for HxWx4 (BGRA); ValueError otherwise."""
    if image.dtype not in MAX_VALUE:
        raise ValueError(f"unsupported pixel type {image.dtype} (8-bit and 16-bit integer images only)")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    modes: dict[int, Literal["RGB", "L", "RGBA"]] = {1: "L", 3: "RGB", 4: "RGBA"}
    if channels not in modes or min(image.shape[:2]) < 1:
        raise ValueError(f"unsupported image shape {image.shape} (gray, BGR or BGRA expected)")
    return modes[channels]


def split_image(image: np.ndarray) -> SplitImage:
    """BGR / BGRA / gray uint8 or uint16 (as cv2.imread IMREAD_UNCHANGED gives) -> network input.

    Reference: RealESRGANer.enhance steps 1-2 (divide by 255 or 65535; gray -> RGB; split alpha).
    """
    mode = image_mode(image)
    scaled = image.astype(np.float32) / MAX_VALUE[image.dtype]
    if mode == "L":
        return SplitImage(cv2.cvtColor(scaled.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB), None, mode, image.dtype)
    rgb = cv2.cvtColor(scaled[:, :, :3], cv2.COLOR_BGR2RGB)
    return SplitImage(rgb, scaled[:, :, 3].copy() if mode == "RGBA" else None, mode, image.dtype)


def merge_image(rgb: np.ndarray, alpha: np.ndarray | None, mode: str, dtype: np.dtype) -> np.ndarray:
    """Network output (RGB float in [0, 1]) -> the input's layout and bit depth, rounded.

    Reference: RealESRGANer.enhance steps 3-5 (RGB -> BGR or gray, attach alpha, x255 / x65535, round).
    """
    if mode == "L":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if mode == "RGBA":
            out = np.dstack([out, alpha])
    return np.clip(np.round(out * MAX_VALUE[dtype]), 0, MAX_VALUE[dtype]).astype(dtype)


@dataclass
class TileState:
    """Tile settings of a run; an out-of-memory retry lowers them for the rest of the run."""

    tile: int
    overlap: int
    batch: int = 0
    pre_pad: int = 0


TileCallback = Callable[[int, int], None] | None
LogCallback = Callable[[str], None]


def run_model(model: nn.Module, rgb: np.ndarray, state: TileState, on_tile: TileCallback = None,
              log: LogCallback = print) -> np.ndarray:
    """HWC float RGB -> HWC float RGB x scale, clamped to [0, 1], through ``tiling.upscale_tensor``."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    out, state.tile, state.batch = upscale_tensor(model, tensor, state.tile, state.overlap, state.batch,
                                                  state.pre_pad, on_tile, log)
    if not bool(torch.isfinite(out).all()):  # clamp and rounding would turn NaN into a plausible-looking image
        raise ValueError("the model produced NaN/infinite values (NaN weights, or fp16 overflow: drop --half)")
    return out[0].permute(1, 2, 0).numpy()


def upscale_alpha(model: nn.Module, alpha: np.ndarray, how: AlphaUpsampler, state: TileState,
                  log: LogCallback = print) -> np.ndarray:
    """Alpha x scale: through the network as gray -> RGB -> gray (``realesrgan``) or cv2 INTER_LINEAR.

    Reference: RealESRGANer.enhance step 4. A constant alpha stays exactly that constant (our shortcut).
    """
    scale = int(model.scale)
    size = (alpha.shape[1] * scale, alpha.shape[0] * scale)
    if alpha.min() == alpha.max():
        return np.full(size[::-1], alpha.flat[0], dtype=np.float32)
    if how == "linear":
        return cv2.resize(alpha, size, interpolation=cv2.INTER_LINEAR)
    rgb = run_model(model, cv2.cvtColor(alpha, cv2.COLOR_GRAY2RGB), state, log=log)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def enhance(model: nn.Module, image: np.ndarray, state: TileState, alpha_upsampler: AlphaUpsampler = "realesrgan",
            outscale: float | None = None, on_tile: TileCallback = None,
            log: LogCallback = print) -> tuple[np.ndarray, str]:
    """Upscale one image array as cv2 reads it (reference: RealESRGANer.enhance).

    Args:
        model: an RRDBNet-like module (``prepare_model`` / ``build_model``).
        image: HxW / HxWx1 gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16.
        state: tile settings; lowered in place by an out-of-memory retry.
        alpha_upsampler: ``realesrgan`` (alpha through the network) or ``linear`` (cv2 INTER_LINEAR).
        outscale: final scale; when it differs from the model's, the merged result is resized with
            LANCZOS4 to (int(w * outscale), int(h * outscale)).
        on_tile, log: progress callbacks (tiles done / total; retry messages).

    Returns:
        (output in the input's layout and dtype, mode "L" / "RGB" / "RGBA").
    """
    split = split_image(image)
    out = enhance_into(model, split, state, alpha_upsampler, on_tile, log)
    if outscale is not None and outscale != float(model.scale):
        height, width = image.shape[:2]
        out = cv2.resize(out, (int(width * outscale), int(height * outscale)), interpolation=cv2.INTER_LANCZOS4)
    return out, split.mode


BAND_CHUNK_ROWS = 64  # output rows converted to uint8/uint16 at a time


def _band_writer(out: np.ndarray, mode: str, dtype: np.dtype, channel: int | None = None):
    """``emit(top, rows)`` for ``upscale_rows``: merge_image's conversion of one band, written into ``out``."""
    peak = MAX_VALUE[dtype]

    def emit(top: int, rows: torch.Tensor) -> None:
        # In chunks of rows: the float temporaries of the conversion stay small next to the output.
        for start in range(0, rows.shape[-2], BAND_CHUNK_ROWS):
            convert(top + start, rows[0, :, start : start + BAND_CHUNK_ROWS].permute(1, 2, 0).numpy())

    def convert(top: int, band: np.ndarray) -> None:
        if np.isnan(band).any():  # clamp keeps NaN; rounding would turn it into plausible-looking pixels
            raise ValueError("the model produced NaN/infinite values (NaN weights, or fp16 overflow: drop --half)")
        if channel is not None:  # alpha through the network: gray of the RGB output
            converted = cv2.cvtColor(band, cv2.COLOR_RGB2GRAY)
            out[top : top + band.shape[0], :, channel] = np.clip(np.round(converted * peak), 0, peak).astype(dtype)
            return
        converted = cv2.cvtColor(band, cv2.COLOR_RGB2GRAY if mode == "L" else cv2.COLOR_RGB2BGR)
        target = out[top : top + band.shape[0]]
        if mode == "L":
            target[...] = np.clip(np.round(converted * peak), 0, peak).astype(dtype)
        else:
            target[:, :, :3] = np.clip(np.round(converted * peak), 0, peak).astype(dtype)

    return emit


def enhance_into(model: nn.Module, split: SplitImage, state: TileState, alpha_upsampler: AlphaUpsampler = "realesrgan",
                 on_tile: TileCallback = None, log: LogCallback = print) -> np.ndarray:
    """``merge_image(run_model(...), upscale_alpha(...))`` assembled in place, band by band.

    Bit-identical to merging whole-image float results, but the float32 HR image is never held: peak
    memory is the uint8/uint16 output plus one band of tiles (see ``tiling.tiled_forward_rows``).
    """
    scale = int(model.scale)
    height, width = split.rgb.shape[:2]
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[split.mode]
    out = np.empty((height * scale, width * scale, *channels), split.dtype)

    def run(rgb: np.ndarray, emit) -> None:
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
        state.tile, state.batch = upscale_rows(model, tensor, state.tile, state.overlap, emit, state.batch,
                                               state.pre_pad, on_tile, log)

    run(split.rgb, _band_writer(out, split.mode, split.dtype))
    if split.alpha is not None:
        peak = MAX_VALUE[split.dtype]
        if split.alpha.min() == split.alpha.max() or alpha_upsampler == "linear":
            alpha = upscale_alpha(model, split.alpha, alpha_upsampler, state, log)  # constant or one 2-D resize
            out[:, :, 3] = np.clip(np.round(alpha * peak), 0, peak).astype(split.dtype)
        else:
            run(cv2.cvtColor(split.alpha, cv2.COLOR_GRAY2RGB), _band_writer(out, split.mode, split.dtype, channel=3))
    return out


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
