"""Declared image sizes read from file headers, so a decompression bomb is refused before decoding.

A 1 MB PNG can declare 20000x20000 pixels (1.2 GB decoded as RGB); OpenCV would allocate it all.
``declared_size`` reads width and height from the header of PNG (IHDR), JPEG (the SOFn segment),
WebP (VP8 / VP8L / VP8X), BMP, GIF, TIFF (IFD0) and PNM (P1-P6), touching only the first bytes;
``check_pixels`` compares them with a limit. Formats it does not know return None (the caller then
checks the decoded size instead).
"""

from __future__ import annotations

import re

__all__ = ["declared_size", "check_pixels", "MAX_SOURCE_PIXELS", "MAX_SAMPLE_PIXELS", "PixelLimitExceeded"]

# Source photos for `shard`: 16384^2 = 268 Mpx (0.8 GB as 8-bit RGB) lets a 14000x14000 photo through.
MAX_SOURCE_PIXELS = 16384 * 16384
# Training samples in shards are patches (400x400 by default): 4096^2 leaves room for larger crops.
MAX_SAMPLE_PIXELS = 4096 * 4096

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
_PNM = re.compile(rb"^P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)")


class PixelLimitExceeded(ValueError):
    """An image whose declared (or decoded) size exceeds the pixel limit."""


def _u16be(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF:
            return _u16be(data, pos + 7), _u16be(data, pos + 5)  # (width, height)
        if marker == 0xDA or marker == 0xD9:  # scan data or end before any frame header
            return None
        pos += 2 + _u16be(data, pos + 2)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "little" if data[:2] == b"II" else "big"
    if len(data) < 8:
        return None
    ifd = int.from_bytes(data[4:8], order)
    if ifd + 2 > len(data):
        return None
    count = int.from_bytes(data[ifd : ifd + 2], order)
    found: dict[int, int] = {}
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(data):
            break
        tag, kind = int.from_bytes(data[entry : entry + 2], order), int.from_bytes(data[entry + 2 : entry + 4], order)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            size = 2 if kind == 3 else 4
            found[tag] = int.from_bytes(data[entry + 8 : entry + 8 + size], order)
    return (found[256], found[257]) if len(found) == 2 else None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file header declares it, or None for an unknown or cut header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":  # not a PNG header: the decoder calls it corrupt
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sizes
            return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        return (abs(int.from_bytes(data[18:22], "little", signed=True)),
                abs(int.from_bytes(data[22:26], "little", signed=True)))  # negative height: top-down rows
    if data[:4] in (b"GIF8",) and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if (match := _PNM.match(data[:512])) is not None:
        return int(match.group(1)), int(match.group(2))
    return None


def check_pixels(width: int, height: int, limit: int, what: str = "image") -> None:
    """PixelLimitExceeded when width * height exceeds ``limit`` (0 or less: no limit)."""
    if limit > 0 and width * height > limit:
        raise PixelLimitExceeded(f"{what} is {width}x{height} = {_amount(width * height)}, above the "
                                 f"limit of {_amount(limit)} (max_pixels); raise the limit if it is genuine")


def _amount(pixels: int) -> str:
    """Mpx with one decimal where that is exact enough, the count itself for small limits (a test's, a user's)."""
    return f"{pixels / 1e6:.1f} Mpx" if pixels >= 10**6 else f"{pixels:,} pixels"
