"""One image array in, one out: the model ``upscale`` runs and the image kinds it handles (RGB, gray, RGBA, 16-bit).

Reference: Real-ESRGAN ``realesrgan/utils.py`` ``RealESRGANer.enhance`` (image kinds, alpha upsampler,
outscale with LANCZOS4). The flow is split channels -> tiled model call -> merge, the output assembled in
place band by band; the tiling itself is ``pipelines.inference.tiling``, files and folders are
``pipelines.inference.upscale``. Deliberate differences from the reference:

* 8 / 16 bit is decided by the dtype (uint8 / uint16), not by the reference's ``max > 256`` test,
  which divides a dark 16-bit image (all values <= 256) by 255 and writes it back as 8-bit.
* A constant alpha channel (e.g. fully opaque) is copied, not sent through the network: the exact
  upscaling of a constant is that constant, and it halves the work for such files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from torch import nn

from models.weights import describe_spec, load_generator
from pipelines.inference.tiling import upscale_rows, upscale_tensor

MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
AlphaUpsampler = Literal["realesrgan", "linear"]


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
