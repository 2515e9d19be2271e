"""Seam-free tiled super-resolution: equal-size overlapping windows, batched, blended with cosine ramps.

Reference: Real-ESRGAN ``realesrgan/utils.py`` ``RealESRGANer.pre_process / tile_process / post_process``
(reflect mod-pad for pixel-unshuffle models, tiles extended by ``tile_pad``). The reference then *crops*
each tile's output, so a seam sits where two tiles that saw different context meet; here the overlaps
are cross-faded instead (the idea of overlap-add / feathered mosaicking).

Geometry, per axis (length ``L`` in LR pixels, already a multiple of the unshuffle factor ``f``):

* ``n = max(2, ceil((L - 2 * overlap) / tile))`` windows (one if ``L <= tile``), all of the same size
  ``S`` (so they stack into one batch), evenly spaced from 0 to ``L - S``; ``S`` is the smallest
  multiple of ``f`` for which every two neighbours overlap by at least ``2 * overlap`` pixels, about
  ``(L + 2 * overlap * (n - 1)) / n <= tile + 2 * overlap``. The work per axis, ``n * S``, is then
  the same as clipping windows at the border would cost, and ``n`` is the fewest for that size bound.
* Window starts are multiples of ``f`` and the mod pad is applied once to the whole image, so no
  window needs its own padding and a window that touches the image border sees exactly the padding
  the whole image sees.

Blending: in an overlap of width ``w`` (>= 2 * overlap) the right window's weight is 0 for the first
``w / 4`` pixels, rises as a raised cosine over the middle ``w / 2`` and is 1 for the last ``w / 4``;
the left window gets the complement. Weights are evaluated at HR pixel centres, product-separable,
and normalised per axis, so they sum to exactly 1 at every output pixel.

Guarantee: every output pixel is a convex combination of window outputs, each taken at least
``overlap / 2`` LR pixels from that window's cut edges (edges on the image border are not cuts).
If the model's output changes by at most ``e(d)`` when the input is cut ``d`` pixels away, the tiled
result differs from the untiled one by at most ``max_{d >= overlap / 2} e(d)`` everywhere, the image
border included (stated border distance: 0).

Default overlap: ``max(12 * f, tile // 8)`` input pixels, so the extra work stays about the same share
of a window at every tile size (at most ``(1 + 2 / 8) ** 2`` = 1.56x the pixels of an untiled run, 1.27x for
256x256 at tile 128) while large tiles, which have room for it, get the context trained weights need.
``bench/upscale.py --seams`` measures ``e(d)`` in 1/255 on a 256x256 photo crop (tile 128,
bench/results/seams_x4plus.json). The seeded random nets of the tests have ``e(d) <= 0.6`` from d = 4
(x4, 23 blocks) up to d = 11 (tiny x1), so 12 x f is within 1/255 for them. Trained weights reach much
further: realesrgan-x4plus has e(8) = 34, e(32) = 8.7, e(56) = 1.1, e(64) = 0.35, e(96) = 0.02, and
tiled-vs-untiled maximum errors of 27.2 (overlap 12), 19.1 (16), 10.6 (32), 1.9 (48), 1.8 (64) and 0.11
(96) against 38.1 for the reference's crop-only tiles (tile_pad 10); 99.9th percentiles 9.0, 6.5, 3.2,
0.50, 0.39, 0.03 (reference 11.3). So at the default tile 512 (overlap 64) x4plus stays within about 2/255
of its untiled output, and ``--tile-overlap 96`` brings it within 1/255 (tested with the real weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_OVERLAP = 12  # LR pixels at the network's internal resolution; times f for x2 / x1 models
TILE_OVERLAP_DIVISOR = 8  # ... or tile / 8 when that is larger
# Auto batch: as many windows per forward pass as fit in this many LR pixels. On the CPU the budget keeps
# a pass's dense-block activations (192 channels x 4 bytes x pixels = 25 MB) about L3-sized: batching four
# 144x144 windows measured 10% slower per pixel than one at a time on one thread, while batching small
# windows (<= 90x90) cost nothing and saves per-operation overhead. GPUs want larger passes.
TILE_BATCH_PIXELS = {"cpu": 2**15, "cuda": 2**17}
MIN_TILE = 16  # the OOM retry stops halving here


def unshuffle_factor(model: nn.Module) -> int:
    """Pixel-unshuffle factor of an RRDBNet-like model (``model.spec.unshuffle_factor``; 1 if absent)."""
    spec = getattr(model, "spec", None)
    return int(getattr(spec, "unshuffle_factor", 1))


def default_overlap(model: nn.Module, tile: int = 0) -> int:
    """``max(DEFAULT_OVERLAP * f, tile // TILE_OVERLAP_DIVISOR)`` input pixels (f: the unshuffle factor).

    The floor is 12 for x4, 24 for x2 and 48 for x1 models: an x1 model runs its trunk at 1/4 resolution,
    so its receptive field in input pixels is 4x wider. Above it the overlap grows with the tile (64 at
    tile 512), which keeps its cost a fixed share of the work; see the module docstring for the errors.
    """
    return max(DEFAULT_OVERLAP * unshuffle_factor(model), tile // TILE_OVERLAP_DIVISOR)


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def axis_windows(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[list[int], int]:
    """Starts and common size of the windows along one axis.

    Args:
        length: axis length in LR pixels (a multiple of ``multiple``).
        tile: target core size; 0 or >= length means one window covering the axis.
        overlap: each neighbour pair overlaps by at least ``2 * overlap`` pixels.
        multiple: starts and size are multiples of this (the pixel-unshuffle factor).

    Returns:
        (starts, size): ``starts[0] == 0``, ``starts[-1] + size == length``, strictly increasing.
    """
    if length % multiple:
        raise ValueError(f"axis length {length} is not a multiple of {multiple}; mod-pad the image first")
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile and overlap must be >= 0 (got tile={tile}, overlap={overlap})")
    if tile == 0 or length <= tile:
        return [0], length
    # Fewest windows whose size (L + 2P(n-1)) / n stays <= tile + 2P: the least work for that memory bound.
    n = max(2, math.ceil((length - 2 * overlap) / _ceil_to(tile, multiple)))
    size = _ceil_to(math.ceil((length + 2 * overlap * (n - 1)) / n), multiple)
    while size < length:
        span = (length - size) // multiple  # in units of `multiple`
        starts = sorted({multiple * round(i * span / (n - 1)) for i in range(n)})
        if all(size - (b - a) >= 2 * overlap for a, b in zip(starts, starts[1:], strict=False)):
            return starts, size
        size += multiple  # rounding the starts cost a pixel of overlap somewhere: widen and retry
    return [0], length


def _ramp(positions: torch.Tensor, begin: float, width: float) -> torch.Tensor:
    """0 before ``begin + width / 4``, raised cosine up to ``begin + 3 * width / 4``, then 1."""
    t = ((positions - begin - width / 4) / (width / 2)).clamp(0.0, 1.0)
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def axis_weights(starts: Sequence[int], size: int, scale: int) -> list[torch.Tensor]:
    """Per-window blending weights along one axis at HR resolution, normalised to sum to 1.

    Returns:
        One float64 vector of length ``size * scale`` per window.
    """
    weights = []
    centres = (torch.arange(size * scale, dtype=torch.float64) + 0.5) / scale  # LR units, window-local
    for i, start in enumerate(starts):
        w = torch.ones(size * scale, dtype=torch.float64)
        if i > 0 and (width := starts[i - 1] + size - start) > 0:
            w = w * _ramp(centres, 0.0, width)
        if i + 1 < len(starts) and (width := start + size - starts[i + 1]) > 0:
            w = w * (1.0 - _ramp(centres, starts[i + 1] - start, width))
        weights.append(w)
    total = torch.zeros((starts[-1] + size) * scale, dtype=torch.float64)
    for start, w in zip(starts, weights, strict=True):
        total[start * scale : (start + size) * scale] += w
    # total > 0 everywhere: neighbours' non-zero parts overlap by half of their overlap.
    return [w / total[s * scale : (s + size) * scale] for s, w in zip(starts, weights, strict=True)]


def auto_tile_batch(window_pixels: int, device_type: str = "cpu") -> int:
    """How many windows go through the network together when ``--tile-batch 0``."""
    budget = TILE_BATCH_PIXELS.get(device_type, TILE_BATCH_PIXELS["cuda"])
    return max(1, budget // max(1, window_pixels))


RowSink = Callable[[int, torch.Tensor], None]


def tiled_forward(
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    batch: int = 0,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``image`` window by window and blend the outputs.

    Args:
        model: maps (B, C, h, w) to (B, C, h * s, w * s); ``model.scale`` and ``model.spec`` are read.
            Its parameters' device and dtype decide where and in what precision it runs.
        image: (1, C, H, W) float32 on the CPU, H and W multiples of the unshuffle factor.
        tile: target window core size in LR pixels (0: the whole image at once).
        overlap: LR pixels of context on each side of a cut (see the module docstring).
        batch: windows per forward pass (0: ``auto_tile_batch``).
        on_tile: called with (windows done, total) after every forward pass.

    Returns:
        (1, C, H * s, W * s) float32 on the CPU, not clamped.
    """
    parts: list[torch.Tensor] = []
    tiled_forward_rows(model, image, tile, overlap, batch, on_tile, lambda _top, rows: parts.append(rows))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)


def tiled_forward_rows(
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    batch: int = 0,
    on_tile: Callable[[int, int], None] | None = None,
    emit: RowSink | None = None,
) -> None:
    """``tiled_forward``, handing the output to ``emit(top, rows)`` band by band, top to bottom.

    Memory follows the tile, not the image: windows are processed in raster order, and once a row of
    windows is done, the HR rows above the next window row are final and are emitted; only one band
    (one window height x the image width, float32) is held. Every output pixel receives the same
    additions in the same order as a whole-image accumulator would, so the result is bit-identical.
    ``rows`` is (1, C, r, W * s) float32 on the CPU and must be consumed (copied) before the next call.
    """
    assert emit is not None
    scale, factor = int(model.scale), unshuffle_factor(model)
    _, channels, height, width = image.shape
    ys, sy = axis_windows(height, tile, overlap, factor)
    xs, sx = axis_windows(width, tile, overlap, factor)
    wy, wx = axis_weights(ys, sy, scale), axis_weights(xs, sx, scale)
    param = next(model.parameters())
    windows = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    batch = batch or auto_tile_batch(sy * sx, param.device.type)
    if len(windows) == 1:
        emit(0, _forward(model, image.to(param.device, param.dtype)).float().cpu())
        return
    band_height = sy * scale
    band = torch.zeros(1, channels, band_height, width * scale)
    base, row = 0, 0  # band[..., 0] is HR row `base`; `row` is the window row being accumulated

    def advance(to_row: int) -> None:
        nonlocal band, base, row
        while row < to_row:
            nxt = ys[row + 1] * scale
            emit(base, band[..., : nxt - base, :])
            carry = band[..., nxt - base :, :]
            fresh = torch.zeros_like(band)
            fresh[..., : carry.shape[-2], :] = carry
            band, base, row = fresh, nxt, row + 1

    for first in range(0, len(windows), batch):
        group = windows[first : first + batch]
        crops = torch.cat([image[..., ys[i] : ys[i] + sy, xs[j] : xs[j] + sx] for i, j in group])
        result = _forward(model, crops.to(param.device, param.dtype)).float().cpu()
        for k, (i, j) in enumerate(group):
            advance(i)
            weight = (wy[i][:, None] * wx[j][None, :]).float()
            top, left = ys[i] * scale - base, xs[j] * scale
            band[..., top : top + sy * scale, left : left + sx * scale] += result[k] * weight
        if on_tile is not None:
            on_tile(min(first + batch, len(windows)), len(windows))
    emit(base, band[..., : height * scale - base, :])


def _forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    # channels_last lets oneDNN / cuDNN skip a layout reorder around every convolution.
    return model(batch.contiguous(memory_format=torch.channels_last))


def pad_right_bottom(image: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect-pad the bottom and right edges (replicate where the image is too small to reflect)."""
    if pad_h == 0 and pad_w == 0:
        return image
    mode = "reflect" if pad_h < image.shape[-2] and pad_w < image.shape[-1] else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def upscale_rows(
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    emit: RowSink,
    batch: int = 0,
    pre_pad: int = 0,
    on_tile: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[int, int]:
    """``upscale_tensor`` handing the clamped output to ``emit(top, rows)`` band by band (bounded memory).

    ``rows`` is (1, C, r, W * s), already cropped to the image and clamped to [0, 1]; after an
    out-of-memory retry the bands are emitted again from the top. Returns the (tile, batch) that succeeded.
    """
    scale, factor = int(model.scale), unshuffle_factor(model)
    height, width = image.shape[-2:]
    padded = pad_right_bottom(image, pre_pad, pre_pad)
    h_pad, w_pad = padded.shape[-2:]
    padded = pad_right_bottom(padded, _ceil_to(h_pad, factor) - h_pad, _ceil_to(w_pad, factor) - w_pad)

    def crop(top: int, rows: torch.Tensor) -> None:
        keep = min(rows.shape[-2], height * scale - top)
        if keep > 0:
            emit(top, rows[..., :keep, : width * scale].clamp(0.0, 1.0))

    _, tile, batch = _retry_on_cuda_oom(lambda t, b: tiled_forward_rows(model, padded, t, overlap, b, on_tile, crop),
                                        padded, tile, batch, factor, log)
    return tile, batch


def upscale_tensor(
    model: nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    batch: int = 0,
    pre_pad: int = 0,
    on_tile: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[torch.Tensor, int, int]:
    """Pre-pad, mod-pad, tiled forward, crop back, clamp to [0, 1]; halve the tile on CUDA OOM.

    Reference: RealESRGANer pre_process (pre_pad, then mod pad, both reflect, right/bottom),
    tile_process, post_process (crop the pads x scale). Here both pads are whole-image operations.

    Args:
        image: (1, C, H, W) float32 CPU in [0, 1].
        tile, overlap, batch, on_tile: see ``tiled_forward``.
        pre_pad: extra reflect padding on the right and bottom, cropped off afterwards.
        log: receives the "retrying with a smaller tile" messages.

    Returns:
        ((1, C, H * s, W * s) clamped output, tile, batch): the tile and batch that succeeded, so a
        caller can keep using the reduced ones after an out-of-memory retry.
    """
    scale, factor = int(model.scale), unshuffle_factor(model)
    height, width = image.shape[-2:]
    padded = pad_right_bottom(image, pre_pad, pre_pad)
    h_pad, w_pad = padded.shape[-2:]
    padded = pad_right_bottom(padded, _ceil_to(h_pad, factor) - h_pad, _ceil_to(w_pad, factor) - w_pad)
    out, tile, batch = _retry_on_cuda_oom(lambda t, b: tiled_forward(model, padded, t, overlap, b, on_tile),
                                          padded, tile, batch, factor, log)
    return out[..., : height * scale, : width * scale].clamp(0.0, 1.0), tile, batch  # a normal tensor again


def _retry_on_cuda_oom(run: Callable[[int, int], object], padded: torch.Tensor, tile: int, batch: int, factor: int,
                       log: Callable[[str], None]) -> tuple[object, int, int]:
    """``run(tile, batch)`` in inference mode; on CUDA OOM halve the tile (one window per pass) and run again."""
    while True:
        try:
            with torch.inference_mode():
                return run(tile, batch), tile, batch
        except torch.cuda.OutOfMemoryError as error:
            current = tile or max(padded.shape[-2:])
            if current // 2 < MIN_TILE:
                raise RuntimeError(f"CUDA out of memory even with tile {current}: {error}") from error
            # The auto batch would fill the same pixel budget with more small windows: one per pass.
            tile, batch = _ceil_to(current // 2, factor), 1
            log(f"CUDA out of memory with tile {current}; retrying with tile {tile}, one window per pass")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
