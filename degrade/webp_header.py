"""What a WebP file says: lossy or lossless, the VP8 quantizer indices, and its libwebp quality by re-encoding.

Only the RIFF chunk headers and the first bytes of the VP8 key frame's first partition are parsed (RFC 6386
§9.2-9.6, read with its boolean decoder §7.3), each declared length checked against the data, so a truncated
or hostile file gives ``None``. The quality is found by simulation: libwebp (cwebp, OpenCV, Pillow) picks each
of its 4 segments' quantizer index from the quality and the segment's content statistics
(src/enc/quant_enc.c ``VP8SetSegmentParams``), so re-encoding the decoded image — nearly the same content — at
the file's own quality gives (nearly) the file's indices. The indices fall with the quality: a bisection on the
most quantized segment's index, then the qualities around it compared on all four indices; the nearest is
reported with the remaining mean index difference (0 when some quality reproduces the file's indices exactly;
other encoders or settings give the nearest libwebp quality and usually a positive error). Tested against
OpenCV-written files at qualities 5-95 (tests/degrade/test_webp_header.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["WebpFileInfo", "parse_vp8_header", "webp_quality", "webp_quality_from_file"]

_HEADER_LIMIT = 1 << 20  # chunk headers and the frame header come first


@dataclass(frozen=True)
class WebpFileInfo:
    """lossless: VP8L (no quality); quality: nearest libwebp quality 1-100 (None when lossless);
    quant_error: mean |file index − re-encoded index| over the segments at that quality (0 = exact);
    segment_quants: the VP8 quantizer index (0-127) per segment; width, height: from the frame header."""

    lossless: bool
    quality: int | None
    quant_error: float
    segment_quants: tuple[int, ...]
    width: int
    height: int


class _BoolDecoder:
    """RFC 6386 §7.3 boolean entropy decoder (the reference ``bool_decoder``), reading past the end as zeros."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 2
        self.value = (data[0] << 8 | data[1]) if len(data) >= 2 else 0
        self.range, self.bit_count = 255, 0

    def bool(self, prob: int = 128) -> int:
        split = 1 + (((self.range - 1) * prob) >> 8)
        big_split = split << 8
        if self.value >= big_split:
            bit, self.range, self.value = 1, self.range - split, self.value - big_split
        else:
            bit, self.range = 0, split
        while self.range < 128:
            self.value, self.range = self.value << 1, self.range << 1
            self.bit_count += 1
            if self.bit_count == 8:
                self.bit_count = 0
                if self.pos < len(self.data):
                    self.value |= self.data[self.pos]
                self.pos += 1
        return bit

    def literal(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            value = value << 1 | self.bool()
        return value

    def signed(self, bits: int) -> int:
        value = self.literal(bits)
        return -value if self.bool() else value

    def optional_signed(self, bits: int) -> int | None:
        return self.signed(bits) if self.bool() else None


def parse_vp8_header(frame: bytes) -> tuple[int, int, tuple[int, ...]] | None:
    """(width, height, per-segment quantizer indices) of a VP8 key frame; None if it is not one."""
    if len(frame) < 10 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    first_partition = (frame[0] | frame[1] << 8 | frame[2] << 16) >> 5
    if 10 + first_partition > len(frame):
        return None
    width, height = (frame[6] | frame[7] << 8) & 0x3FFF, (frame[8] | frame[9] << 8) & 0x3FFF
    bits = _BoolDecoder(frame[10 : 10 + first_partition])
    bits.literal(2)  # colour space, clamping type
    segment_quants: list[int | None] = []
    absolute = False
    if bits.bool():  # segmentation enabled
        update_map = bits.bool()
        if bits.bool():  # update segment feature data
            absolute = bool(bits.bool())
            segment_quants = [bits.optional_signed(7) for _ in range(4)]
            for _ in range(4):
                bits.optional_signed(6)  # loop filter level per segment
        if update_map:
            for _ in range(3):
                if bits.bool():
                    bits.literal(8)
    bits.literal(1 + 6 + 3)  # filter type, loop filter level, sharpness
    if bits.bool() and bits.bool():  # loop filter deltas enabled and updated
        for _ in range(8):
            bits.optional_signed(6)
    bits.literal(2)  # log2 of the DCT partition count
    base = bits.literal(7)  # y_ac_qi
    if not segment_quants:
        return width, height, (base,)
    quants = [(q or 0) if absolute else base + (q or 0) for q in segment_quants]
    return width, height, tuple(int(np.clip(q, 0, 127)) for q in quants)


def _chunks(data: bytes) -> dict[bytes, bytes]:
    """The first chunk of each kind after the RIFF/WEBP header (lengths checked; a truncated one ends the list)."""
    out, pos = {}, 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        out.setdefault(fourcc, body)
        pos += 8 + size + (size & 1)
    return out


def _vp8_quants(data: bytes) -> tuple[int, int, tuple[int, ...]] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    return parse_vp8_header(_chunks(data).get(b"VP8 ", b""))


def _reencoded_quants(bgr: np.ndarray, quality: int) -> tuple[int, ...]:
    import cv2

    ok, encoded = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    parsed = _vp8_quants(encoded.tobytes()) if ok else None
    if parsed is None:
        raise RuntimeError("libwebp (cv2.imencode) did not write a lossy VP8 frame")
    return tuple(sorted(parsed[2]))


def webp_quality(bgr: np.ndarray, quants: tuple[int, ...]) -> tuple[int, float]:
    """The libwebp quality whose re-encoding of ``bgr`` (the decoded file, H×W×3 uint8) gives the quantizer
    indices closest to ``quants``, and the remaining mean index difference; ~10 encodes."""
    target = np.array(sorted(quants))
    cache: dict[int, np.ndarray] = {}

    def at(quality: int) -> np.ndarray:
        if quality not in cache:
            found = np.array(_reencoded_quants(bgr, quality))
            cache[quality] = found if found.size == target.size else np.full(target.size, found.max())
        return cache[quality]

    low, high = 1, 100  # the most quantized index is non-increasing in the quality
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if at(mid).max() > target.max() else (low, mid)
    candidates = range(max(1, low - 2), min(100, high + 2) + 1)
    errors = {q: float(np.abs(at(q) - target).mean()) for q in candidates}
    least = min(errors.values())
    tied = [q for q in candidates if errors[q] == least]
    best = tied[len(tied) // 2]  # neighbouring qualities can share indices: the middle of the run
    return best, errors[best]


def webp_quality_from_file(path: str | Path, max_pixels: int = 100_000_000) -> WebpFileInfo | None:
    """The facts of a WebP file (module docstring); None for other or unreadable files. A lossy file is decoded
    (after checking its declared size against ``max_pixels``: larger is a ValueError) and re-encoded."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks = _chunks(data[:_HEADER_LIMIT])
    if b"VP8L" in chunks and b"VP8 " not in chunks:
        body = chunks[b"VP8L"]
        if len(body) < 5 or body[0] != 0x2F:
            return None
        bits = int.from_bytes(body[1:5], "little")
        return WebpFileInfo(True, None, 0.0, (), (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1)
    parsed = parse_vp8_header(chunks.get(b"VP8 ", b""))
    if parsed is None:
        return None
    width, height, quants = parsed
    if width * height > max_pixels:
        raise ValueError(f"declares {width}x{height} pixels, more than {max_pixels} (not decoded)")
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    quality, error = webp_quality(bgr, quants)
    return WebpFileInfo(False, quality, error, quants, width, height)
