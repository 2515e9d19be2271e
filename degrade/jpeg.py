"""Batched JPEG round trip that reproduces libjpeg-turbo (OpenCV's imencode/imdecode) bit for bit.

Real-ESRGAN compresses every degraded batch with BasicSR's ``DiffJPEG``. That module is a
float approximation of JPEG. It differs from what libjpeg writes and reads in several ways:
the quant tables are scaled in float, without rounding and without the [1, 255] clamp; the
luminance table is transposed; the borders are zero-padded to multiples of 16; pixels are never
rounded; and the chroma is upsampled nearest. This module follows libjpeg-turbo's default
baseline path step by step instead: 4:2:0 sampling (4:2:2 and 4:4:4 on request, `degrade.jpeg_chroma`),
the ISLOW integer DCT, the Annex K tables, and fancy upsampling.

1. Quantize the pixels to uint8 and convert RGB to YCbCr with jccolor.c's 16-bit fixed-point tables.
2. Replicate the right and bottom edges to whole blocks (jcprepct.c ``expand_bottom_edge``,
   jcsample.c ``expand_right_edge``).
3. Downsample h2v2 as jcsample.c does: a 2x2 sum plus a bias that alternates 1, 2 along the row,
   then ``>> 2``.
4. Run jfdctint.c's two-pass fixed-point DCT and quantize as jcdctmgr.c does, with the
   reciprocal, correction and shift of ``compute_reciprocal``. The tables come from jcparam.c
   ``jpeg_set_quality(q, force_baseline=TRUE)``.
5. Dequantize and run jidctint.c's two-pass fixed-point IDCT, including the wrap-around range
   limit table of jdmaster.c.
6. Upsample with jdsample.c ``h2v2_fancy_upsample`` (9/16, 3/16, 3/16, 1/16 with biases 8 and 7),
   or plain 2x2 replication when the chroma width is at most 2, as libjpeg does. Then convert
   YCbCr to RGB with jdcolor.c's fixed-point tables.

Each 1-D DCT pass is linear with integer coefficients up to its final ``DESCALE``. So each pass
is an 8x8 integer matrix product plus libjpeg's rounding shift. It runs as one float64 GEMM
followed by a floor, which is exact because every partial sum is a dyadic number well within
float64's 53 bits. Colour conversion and resampling run in float32, where every value that
occurs fits in 24 significant bits. The result therefore equals libjpeg-turbo exactly. The tests
check this against ``cv2.imencode`` / ``cv2.imdecode`` on the bundled photos at several qualities
and odd sizes. Because every step is exact, the output is the same whatever the batch size or
device.

Deliberate differences:
    * From the reference DiffJPEG: everything listed above. This is a real JPEG, not a smooth
      proxy, and it is not differentiable. The quality is rounded to an integer with
      ``torch.round`` (half to even) and clamped to [1, 100], because libjpeg only accepts
      integers. The reference pipeline samples continuous qualities in [30, 95].
    * From libjpeg: nothing is entropy-coded. Huffman coding is lossless, so skipping it does not
      change any pixel.
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from degrade.codecs import JPEG_SAMPLINGS, encode_params, opencv_roundtrip
from degrade.jpeg_chroma import decode_chroma_into, encode_chroma, pad_replicate, round_up

__all__ = ["jpeg_compress"]

# JPEG Annex K.1 base tables in libjpeg's natural (row = vertical frequency) order (jcparam.c).
_LUMA_BASE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_BASE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)


def _fix(x: float, bits: int) -> int:
    """libjpeg's ``FIX(x)``: ``x`` in fixed point with ``bits`` fractional bits, rounded."""
    return int(x * (1 << bits) + 0.5)


# jccolor.c / jdcolor.c use 16 fractional bits (SCALEBITS); the DCTs use 13 (CONST_BITS).
_ONE_HALF = 1 << 15
_ENC_Y = (_fix(0.299, 16), _fix(0.587, 16), _fix(0.114, 16))
_ENC_CB = (-_fix(0.16874, 16), -_fix(0.33126, 16), _fix(0.5, 16))
_ENC_CR = (_fix(0.5, 16), -_fix(0.41869, 16), -_fix(0.08131, 16))
# 128 << 16 is the Cb/Cr offset; ONE_HALF - 1 rounds with 0.5 - epsilon so 255 cannot overflow.
_ENC_CBCR_BIAS = (128 << 16) + _ONE_HALF - 1
_DEC_CR_R, _DEC_CB_B = _fix(1.402, 16), _fix(1.772, 16)
_DEC_CB_G, _DEC_CR_G = -_fix(0.34414, 16), -_fix(0.71414, 16)

_C = {name: _fix(value, 13) for name, value in {
    "0.298": 0.298631336, "0.390": 0.390180644, "0.541": 0.541196100, "0.765": 0.765366865,
    "0.899": 0.899976223, "1.175": 1.175875602, "1.501": 1.501321110, "1.847": 1.847759065,
    "1.961": 1.961570560, "2.053": 2.053119869, "2.562": 2.562915447, "3.072": 3.072711026,
}.items()}


def _odd_part(t4: int, t5: int, t6: int, t7: int) -> tuple[int, int, int, int]:
    """The shared odd-part rotation of jfdctint.c / jidctint.c (LL&M figure 8), pre-descale."""
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * _C["1.175"]
    z1, z2 = z1 * -_C["0.899"], z2 * -_C["2.562"]
    z3, z4 = z3 * -_C["1.961"] + z5, z4 * -_C["0.390"] + z5
    return (t4 * _C["0.298"] + z1 + z3, t5 * _C["2.053"] + z2 + z4,
            t6 * _C["3.072"] + z2 + z3, t7 * _C["1.501"] + z1 + z4)


def _fdct_1d(d: list[int]) -> list[int]:
    """One jfdctint.c pass on 8 integers, before DESCALE; DC/4 terms carry no CONST_BITS scale."""
    t0, t1, t2, t3 = d[0] + d[7], d[1] + d[6], d[2] + d[5], d[3] + d[4]
    t7, t6, t5, t4 = d[0] - d[7], d[1] - d[6], d[2] - d[5], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * _C["0.541"]
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    return [t10 + t11, o1, z1 + t13 * _C["0.765"], o3, t10 - t11, o5, z1 - t12 * _C["1.847"], o7]


def _idct_1d(c: list[int]) -> list[int]:
    """One jidctint.c pass on 8 (dequantized) integers, before DESCALE."""
    z1 = (c[2] + c[6]) * _C["0.541"]
    t2, t3 = z1 - c[6] * _C["1.847"], z1 + c[2] * _C["0.765"]
    t0, t1 = (c[0] + c[4]) << 13, (c[0] - c[4]) << 13
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


def _matrix(transform) -> np.ndarray:
    """The integer 8x8 matrix of a linear 1-D pass, found by applying it to unit vectors."""
    return np.array([transform([int(i == j) for i in range(8)]) for j in range(8)], np.float64).T


# The right shift (DESCALE) that ends each pass, per output index (PASS1_BITS = 2, CONST_BITS = 13).
# The fdct's first pass shifts outputs 0 and 4 *up* by PASS1_BITS instead, hence the scale of 4.
_FDCT_PASS1 = _matrix(_fdct_1d) * np.array([4, 1, 1, 1, 4, 1, 1, 1], np.float64)[:, None]
_FDCT_PASS1_SHIFT = np.array([0, 11, 11, 11, 0, 11, 11, 11])
_FDCT_PASS2 = _matrix(_fdct_1d)
_FDCT_PASS2_SHIFT = np.array([2, 15, 15, 15, 2, 15, 15, 15])
_IDCT_MATRIX = _matrix(_idct_1d)
_IDCT_PASS1_SHIFT, _IDCT_PASS2_SHIFT = 11, 18  # CONST_BITS - PASS1_BITS, CONST_BITS + PASS1_BITS + 3


def _quality_scaled_tables() -> np.ndarray:
    """Quant tables for quality 1..100 as (100, 2, 8, 8) int64 (jcparam.c, force_baseline)."""
    base = np.array([_LUMA_BASE, _CHROMA_BASE], np.int64)
    quality = np.arange(1, 101, dtype=np.int64)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    return np.clip((base[None] * scale[:, None, None, None] + 50) // 100, 1, 255)


def _reciprocals(divisor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jcdctmgr.c ``compute_reciprocal`` (16-bit DCTELEM): q = ((|x| + corr) * recip) >> shift."""
    bits = np.floor(np.log2(divisor)).astype(np.int64)
    shift = 16 + bits
    recip, rem = np.divmod(np.left_shift(1, shift), divisor)
    corr = divisor // 2
    power_of_two = rem == 0
    recip = np.where(power_of_two, recip >> 1, np.where(rem > divisor // 2, recip + 1, recip))
    shift = np.where(power_of_two, shift - 1, shift)
    corr = np.where(~power_of_two & (rem <= divisor // 2), corr + 1, corr)
    return recip, corr, shift


_QTABLES = _quality_scaled_tables()
_RECIP, _CORR, _SHIFT = _reciprocals(_QTABLES * 8)  # ISLOW output is scaled by 8 (jcdctmgr.c)
_RECIP_SCALE = _RECIP * np.exp2(-_SHIFT)  # recip / 2**shift, exact: a power-of-two rescale


def _pass_constants(matrix: np.ndarray, shift: np.ndarray | int, offset: float) -> tuple[np.ndarray, ...]:
    """Fold DESCALE into a pass: ``floor(x @ w + b)`` equals ``(matrix @ (x + offset) + round) >> shift``.

    The weights are the integer matrix times 2**-shift and the rounding term is folded into the
    bias. Both are exact dyadic numbers, so the float64 products and sums stay exact.
    """
    shift = np.broadcast_to(np.asarray(shift, np.float64), (8,))
    half = np.where(shift > 0, np.exp2(shift - 1), 0.0)
    scale = np.exp2(-shift)[:, None]
    return matrix * scale, (half + offset * matrix.sum(axis=1)) * scale[:, 0]


@functools.lru_cache(maxsize=8)
def _device_constants(device: torch.device) -> dict[str, Tensor]:
    """The float64 matrices, biases and per-quality tables on ``device``, built once per device."""
    fdct_rows, fdct_rows_bias = _pass_constants(_FDCT_PASS1, _FDCT_PASS1_SHIFT, -128.0)  # level shift
    fdct_cols, fdct_cols_bias = _pass_constants(_FDCT_PASS2, _FDCT_PASS2_SHIFT, 0.0)
    idct_cols, idct_cols_bias = _pass_constants(_IDCT_MATRIX, _IDCT_PASS1_SHIFT, 0.0)
    idct_rows, idct_rows_bias = _pass_constants(_IDCT_MATRIX, _IDCT_PASS2_SHIFT, 0.0)
    arrays = {
        # Row passes multiply on the right (x @ m.T), column passes on the left (m @ x).
        "fdct_rows": fdct_rows.T, "fdct_rows_bias": fdct_rows_bias,
        "fdct_cols": fdct_cols, "fdct_cols_bias": fdct_cols_bias[:, None],
        "idct_cols": idct_cols, "idct_cols_bias": idct_cols_bias[:, None],
        # +512 starts the range limit (see _idct).
        "idct_rows": idct_rows.T, "idct_rows_bias": idct_rows_bias + 512,
        "qtable": _QTABLES, "corr_scaled": _CORR * _RECIP_SCALE, "recip_scaled": _RECIP_SCALE,
    }
    return {k: torch.tensor(np.ascontiguousarray(v), dtype=torch.float64, device=device)
            for k, v in arrays.items()}


def _left_matmul(matrix: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    """``floor(matrix @ x + bias)`` for x (N, k, M) and matrix (n, k): a batched left product."""
    return torch.baddbmm(bias, matrix.expand(x.shape[0], *matrix.shape), x).floor_()


def _right_matmul(x: Tensor, matrix: Tensor, bias: Tensor) -> Tensor:
    """``floor(x @ matrix + bias)`` over the last dim of x (..., k)."""
    return torch.addmm(bias, x.reshape(-1, matrix.shape[0]), matrix).floor_().reshape(*x.shape[:-1], -1)


def _rgb_to_ycc(pixels: Tensor) -> Tensor:
    """jccolor.c rgb_ycc_convert on integer-valued float32 RGB (B, 3, H, W) -> YCbCr, same shape.

    The 16-bit fixed-point tables become k / 2**16 weights. Every product has at most 24
    significant bits, and so do the partial sums, which stay below 256. So float32 is exact here.
    These are elementwise ops on purpose: a float32 matmul or conv could run in TF32 on CUDA
    (``allow_tf32``) and would then lose the exactness.
    """
    r, g, b = pixels.unbind(1)
    out = torch.empty_like(pixels)
    for channel, (wr, wg, wb), bias in ((0, _ENC_Y, _ONE_HALF), (1, _ENC_CB, _ENC_CBCR_BIAS),
                                        (2, _ENC_CR, _ENC_CBCR_BIAS)):
        acc = torch.mul(r, wr / 65536, out=out[:, channel])  # in place: no temporaries
        acc.add_(g, alpha=wg / 65536).add_(b, alpha=wb / 65536).add_(bias / 65536).floor_()
    return out


def _ycc_to_rgb(ycc: Tensor) -> Tensor:
    """jdcolor.c ycc_rgb_convert on float32 (B, 3, H, W) whose chroma is already centred (Cb - 128).

    ``y + ((k * c + ONE_HALF) >> 16)`` is computed as ``y + floor(c * k / 2**16 + 1/2)``. The
    chroma terms fit in 24 bits, so this is exact in float32. Returns RGB clamped to [0, 255].
    """
    y, cb, cr = ycc.unbind(1)
    out = torch.empty_like(ycc)
    torch.mul(cr, _DEC_CR_R / 65536, out=out[:, 0])
    torch.mul(cb, _DEC_CB_G / 65536, out=out[:, 1]).add_(cr, alpha=_DEC_CR_G / 65536)
    torch.mul(cb, _DEC_CB_B / 65536, out=out[:, 2])
    return out.add_(0.5).floor_().add_(y.unsqueeze(1)).clamp_(0, 255)


def _fdct_quantize_dequantize(samples: Tensor, table_idx: Tensor, consts: dict[str, Tensor]) -> Tensor:
    """Samples 0..255 (B, C, H, W), H and W multiples of 8 -> dequantized ISLOW coefficients.

    The coefficients stay in place: block (i, j) of the result holds the 8x8 coefficients of the
    same pixel block, row = vertical frequency. ``table_idx`` (B,) indexes the quality tables
    flattened as (quality - 1) * 2 + component.
    """
    b, c, h, w = samples.shape
    # jfdctint.c: pass 1 on each block's rows (level shift folded into the bias), pass 2 on columns.
    rows = _right_matmul(samples.reshape(-1, 8), consts["fdct_rows"], consts["fdct_rows_bias"])
    coef = _left_matmul(consts["fdct_cols"], consts["fdct_cols_bias"], rows.reshape(-1, 8, w))
    coef = coef.reshape(b, c, h // 8, 8, w // 8, 8)

    def table(name: str) -> Tensor:
        return consts[name].reshape(-1, 8, 8)[table_idx].reshape(b, 1, 1, 8, 1, 8)

    # jcdctmgr.c quantize(): level = ((|x| + corr) * recip) >> shift with the sign of x. Written
    # as trunc((x + copysign(corr, x)) * recip / 2**shift), every product exact. Then dequantize.
    level = torch.copysign(table("corr_scaled"), coef).addcmul_(coef, table("recip_scaled")).trunc_()
    return level.mul_(table("qtable")).reshape(b, c, h, w)


def _idct(coef: Tensor, consts: dict[str, Tensor]) -> Tensor:
    """jidctint.c on dequantized coefficients (B, C, H, W) -> range-limited samples 0..255."""
    shape = coef.shape
    cols = _left_matmul(consts["idct_cols"], consts["idct_cols_bias"], coef.reshape(-1, 8, shape[-1]))
    rows = _right_matmul(cols.reshape(-1, 8), consts["idct_rows"], consts["idct_rows_bias"])
    # jdmaster.c's range-limit table is indexed by x & 1023 and clamps x + 128 to [0, 255] for
    # x in [-512, 511]; outside it wraps around, as libjpeg does. The bias already added 512.
    return rows.remainder_(1024).sub_(384).clamp_(0, 255).reshape(shape)


def _jpeg_torch(pixels: Tensor, quality: Tensor, sampling: str = "4:2:0") -> Tensor:
    """The libjpeg-turbo round trip on integer-valued float32 RGB (B, 3, H, W), quality (B,) int.

    Colour conversion and resampling run in float32 and the DCTs in float64. Both are exact
    for the integers that occur at each step. Chroma sampling: `degrade.jpeg_chroma`.
    """
    consts = _device_constants(pixels.device)
    b, _, h, w = pixels.shape
    ycc = _rgb_to_ycc(pixels)
    # Luma is padded to whole 8x8 blocks. A whole MCU (16 wide for 4:2:x) would add only "dummy" blocks,
    # which the decoder crops away.
    luma = pad_replicate(ycc[:, :1], round_up(h, 8), round_up(w, 8), torch.float64)
    chroma = encode_chroma(ycc[:, 1:], sampling)
    table = (quality - 1) * 2  # row of the flattened (quality, component) tables
    luma = _idct(_fdct_quantize_dequantize(luma, table, consts), consts)
    chroma = _idct(_fdct_quantize_dequantize(chroma, table + 1, consts), consts)
    ycc[:, 0] = luma[:, 0, :h, :w]
    decode_chroma_into(ycc[:, 1:], chroma, sampling)
    return _ycc_to_rgb(ycc)


def _jpeg_opencv(pixels: Tensor, quality: Tensor, sampling: str = "4:2:0") -> Tensor:
    """cv2.imencode / cv2.imdecode per sample on CPU; integer-valued (B, 3, H, W) in, same out."""
    out = []
    for image, q in zip(pixels.to("cpu", torch.uint8), quality.tolist(), strict=True):
        bgr = np.ascontiguousarray(image.permute(1, 2, 0).numpy()[..., ::-1])
        extension, params = encode_params("jpeg", int(q), sampling)
        ok, encoded = cv2.imencode(extension, bgr, params)
        if not ok:
            raise RuntimeError(f"cv2.imencode failed on an image of shape {tuple(bgr.shape)}")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        out.append(torch.from_numpy(np.ascontiguousarray(decoded[..., ::-1])).permute(2, 0, 1))
    return torch.stack(out).to(pixels.device, pixels.dtype)


def _quality_per_sample(quality: Tensor | float | int, batch: int, device: torch.device) -> Tensor:
    """Scalar or (B,) quality -> (B,) int64 on ``device``, rounded (half to even), clamped to [1, 100]."""
    q = torch.as_tensor(quality, dtype=torch.float64).to(device)
    if q.ndim == 0:
        q = q.expand(batch)
    elif q.shape != (batch,):
        raise ValueError(f"quality must be a scalar or have shape ({batch},), got {tuple(q.shape)}")
    if not bool(torch.isfinite(q).all()):
        raise ValueError(f"quality must be finite, got {q.tolist()}")
    return torch.round(q).clamp(1, 100).to(torch.int64)


def jpeg_compress(
    images: Tensor,
    quality: Tensor | float | int,
    *,
    backend: Literal["auto", "torch", "opencv"] = "auto",
    sampling: str = "4:2:0",
) -> Tensor:
    """Compress and decompress a batch as baseline JPEG, exactly as OpenCV's libjpeg-turbo does.

    The encoder settings are OpenCV's defaults: 4:2:0 chroma subsampling (or ``sampling``), the ISLOW
    integer DCT, the Annex K tables scaled by ``jpeg_set_quality``, and a decoder with fancy upsampling.
    The input is first quantized to 8 bits (``round(x * 255)``, clamped), as a real encoder needs.
    Source: libjpeg-turbo jccolor.c, jcsample.c, jfdctint.c, jcdctmgr.c, jcparam.c, jidctint.c,
    jdsample.c, jdcolor.c. Stands in for BasicSR ``DiffJPEG`` in Real-ESRGAN's degradation.

    Args:
        images: RGB batch in [0, 1], any floating dtype, any H, W >= 1, on any device.
        quality: JPEG quality, a scalar or one per sample. Rounded to the nearest integer (half to
            even) and clamped to [1, 100], because libjpeg only takes integers.
        backend: ``"torch"`` runs batched on the images' device. ``"opencv"`` runs
            ``cv2.imencode``/``cv2.imdecode`` one sample at a time on CPU. The two give
            identical results. ``"auto"`` (default) picks opencv for CPU tensors (about 2x faster
            there) and torch for any other device (no round trip through host memory).
        sampling: chroma sampling, ``"4:2:0"`` (OpenCV's default), ``"4:2:2"`` or ``"4:4:4"``
            (OpenCV's ``IMWRITE_JPEG_SAMPLING_FACTOR``); every backend follows it bit for bit.

    Returns:
        The decoded batch, same shape, dtype and device as ``images``, with values on the 1/255 grid.
        It carries no gradient: like libjpeg, this is not differentiable.

    Shape:
        - images: (B, 3, H, W)
        - quality: () or (B,)
        - output: (B, 3, H, W)

    Raises:
        ValueError: if ``images`` is not (B, 3, H, W) with B, H, W >= 1, if ``quality`` has the
            wrong shape or is not finite, or if ``backend`` is unknown.
        TypeError: if ``images`` is not a floating-point tensor.

    Example:
        >>> images = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(0))
        >>> out = jpeg_compress(images, torch.tensor([30.0, 95.0]))
        >>> out.shape
        torch.Size([2, 3, 37, 50])
        >>> bool(torch.equal(out, jpeg_compress(images, torch.tensor([30, 95]), backend="opencv")))
        True
    """
    if images.ndim != 4 or images.shape[1] != 3 or min(images.shape) < 1:
        raise ValueError(f"images must have shape (B, 3, H, W) with B, H, W >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}: pass images.float() / 255")
    if backend not in ("auto", "torch", "opencv"):
        raise ValueError(f"unknown JPEG backend {backend!r}; expected 'auto', 'torch' or 'opencv'")
    if sampling not in JPEG_SAMPLINGS:
        raise ValueError(f"unknown JPEG chroma sampling {sampling!r}; expected one of {', '.join(JPEG_SAMPLINGS)}")
    if backend == "auto":
        backend = "opencv" if images.device.type == "cpu" else "torch"
    if backend == "opencv" and images.device.type == "cpu" and images.dtype in (torch.float32, torch.float64):
        b = images.shape[0]  # per sample in numpy (no whole-batch temporaries), same operations as below
        return opencv_roundtrip(images, ["jpeg"] * b, _quality_per_sample(quality, b, images.device), [sampling] * b)
    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    pixels = images.detach().to(work_dtype).mul(255).round_().clamp_(0, 255).to(torch.float32)
    q = _quality_per_sample(quality, images.shape[0], pixels.device)
    out = _jpeg_torch(pixels, q, sampling) if backend == "torch" else _jpeg_opencv(pixels, q, sampling)
    return out.to(images.dtype).div_(255)
