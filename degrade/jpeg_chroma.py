"""Chroma sampling of the batched libjpeg-turbo emulation (`degrade.jpeg`): 4:2:0, 4:2:2 and 4:4:4.

Encoder side (jcprepct.c, jcsample.c): the chroma planes are edge-replicated to whole MCUs and
downsampled — h2v2 (4:2:0: 2x2 sums plus a bias 1, 2, 1, 2 ... along the row, ``>> 2``), h2v1 (4:2:2:
pairs of columns plus a bias 0, 1, 0, 1 ..., ``>> 1``) or not at all (4:4:4, ``fullsize_downsample``) —
then padded to whole 8x8 blocks. Decoder side (jdsample.c, OpenCV's defaults: fancy upsampling, no merged
upsampling): ``h2v2_fancy_upsample`` (9/16, 3/16, 3/16, 1/16, biases 8 and 7), ``h2v1_fancy_upsample``
(3/4 nearer + 1/4 further column, biases 1 and 2 — its first and last column cases are the same formula with
the edge sample repeated), or plain replication when the downsampled chroma is at most 2 wide; 4:4:4 is
used as decoded. Every value here is an integer below 2^12, so float32 arithmetic is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pad_replicate", "round_up", "encode_chroma", "decode_chroma_into"]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_replicate(x: Tensor, height: int, width: int, dtype: torch.dtype) -> Tensor:
    """(B, C, h, w) -> (B, C, height, width) of ``dtype``, the last row and column repeated."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x.to(dtype)
    out = x.new_empty(*x.shape[:-2], height, width, dtype=dtype)
    out[..., :h, :w] = x
    out[..., :h, w:] = out[..., :h, w - 1 : w]
    out[..., h:, :] = out[..., h - 1 : h, :]
    return out


def _downsample_h2v2(chroma: Tensor) -> Tensor:
    """jcsample.c h2v2_downsample: (sum of 2x2 + bias) >> 2, bias 1, 2, 1, 2 ... along a row.

    Expects (B, C, H, W) with H and W even (the caller has replicated the edges already).
    Strided sums rather than avg_pool2d, which is several times slower on CPU.
    """
    rows = chroma[..., 0::2, :] + chroma[..., 1::2, :]
    sums = rows[..., 0::2] + rows[..., 1::2]
    bias = torch.arange(sums.shape[-1], device=chroma.device, dtype=chroma.dtype).remainder_(2).add_(1)
    return sums.add_(bias).mul_(0.25).floor_()


def _downsample_h2v1(chroma: Tensor) -> Tensor:
    """jcsample.c h2v1_downsample: (sum of 2 columns + bias) >> 1, bias 0, 1, 0, 1 ... along a row (W even)."""
    sums = chroma[..., 0::2] + chroma[..., 1::2]
    bias = torch.arange(sums.shape[-1], device=chroma.device, dtype=chroma.dtype).remainder_(2)
    return sums.add_(bias).mul_(0.5).floor_()


def encode_chroma(chroma: Tensor, sampling: str) -> Tensor:
    """(B, 2, h, w) Cb, Cr samples 0..255 (float32) -> the downsampled planes padded to whole 8x8 blocks (float64),
    as the encoder hands them to the DCT."""
    h, w = chroma.shape[-2:]
    if sampling == "4:2:0":  # MCU 16x16: even rows and whole MCU columns before downsampling, then whole blocks
        small = _downsample_h2v2(pad_replicate(chroma, round_up(h, 2), round_up(w, 16), torch.float32))
        return pad_replicate(small, round_up(h, 16) // 2, small.shape[-1], torch.float64)
    if sampling == "4:2:2":  # MCU 16x8
        small = _downsample_h2v1(pad_replicate(chroma, h, round_up(w, 16), torch.float32))
        return pad_replicate(small, round_up(h, 8), small.shape[-1], torch.float64)
    if sampling == "4:4:4":  # MCU 8x8, full size
        return pad_replicate(chroma, round_up(h, 8), round_up(w, 8), torch.float64)
    raise ValueError(f"unknown JPEG chroma sampling {sampling!r}; expected '4:2:0', '4:2:2' or '4:4:4'")


def _upsample_h2v2_into(out: Tensor, chroma: Tensor, offset: float) -> None:
    """jdsample.c h2v2_fancy_upsample of chroma (..., h, w), plus ``offset``, into out (..., H, W).

    A triangle filter: 3/4 of the nearer and 1/4 of the further sample in each direction, exact
    integer vertical sums, then >> 4 with bias 8 on even and 7 on odd output columns. The edges
    repeat the outermost sample, as libjpeg's context rows and first/last-column cases do.
    H <= 2h and W <= 2w: the rows and columns past the image are never computed.
    """
    height, width = out.shape[-2:]
    padded = torch.nn.functional.pad(chroma, (1, 1, 1, 1), mode="replicate").div_(16)
    near = padded[..., 1:-1, :]
    vertical = (torch.add(padded[..., :-2, :], near, alpha=3), torch.add(padded[..., 2:, :], near, alpha=3))
    for row_phase, colsum in enumerate(vertical):
        rows = (height - row_phase + 1) // 2
        for col_phase in (0, 1):
            cols = (width - col_phase + 1) // 2
            mid = colsum[..., :rows, 1 : 1 + cols]
            side = colsum[..., :rows, 2 * col_phase : 2 * col_phase + cols]
            torch.add(side, mid, alpha=3, out=out[..., row_phase::2, col_phase::2])
    # Rounding bias 8/16 on even columns, 7/16 on odd ones; built on the device, no host copy.
    bias = torch.arange(width, dtype=out.dtype, device=out.device).remainder_(2).mul_(-1 / 16)
    out.add_(bias.add_(8 / 16 + offset)).floor_()


def _upsample_h2v1_into(out: Tensor, chroma: Tensor, offset: float) -> None:
    """jdsample.c h2v1_fancy_upsample of chroma (..., H, w), plus ``offset``, into out (..., H, W), W <= 2w:
    even columns (3 near + left + 1) >> 2, odd columns (3 near + right + 2) >> 2, the edge sample repeated."""
    width = out.shape[-1]
    # The edge column replicated (F.pad's replicate mode cannot pad one axis of a 4-D tensor).
    padded = torch.cat((chroma[..., :1], chroma, chroma[..., -1:]), dim=-1)
    near = padded[..., 1:-1] * 3
    even, odd = (width + 1) // 2, width // 2
    torch.add(near[..., :even], padded[..., :even], out=out[..., 0::2]).add_(1)
    torch.add(near[..., :odd], padded[..., 2 : 2 + odd], out=out[..., 1::2]).add_(2)
    out.mul_(0.25).floor_().add_(offset)


def decode_chroma_into(out: Tensor, chroma: Tensor, sampling: str) -> None:
    """Decoded (IDCT) chroma blocks (B, 2, ., .) float64 -> the image's Cb, Cr planes minus 128 into ``out``
    (B, 2, H, W) float32, upsampled as libjpeg-turbo's decoder does."""
    h, w = out.shape[-2:]
    if sampling == "4:4:4":
        out.copy_(chroma[..., :h, :w]).sub_(128)
        return
    rows = (h + 1) // 2 if sampling == "4:2:0" else h
    small = chroma[..., :rows, : (w + 1) // 2].float()
    if small.shape[-1] > 2:  # jdsample.c uses the fancy filters only on chroma wider than 2
        (_upsample_h2v2_into if sampling == "4:2:0" else _upsample_h2v1_into)(out, small, -128)
        return
    if sampling == "4:2:0":
        small = small.repeat_interleave(2, dim=-2)
    out[...] = small.repeat_interleave(2, dim=-1)[..., :h, :w] - 128
