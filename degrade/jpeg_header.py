"""What a compressed file's headers say: the JPEG quality (IJG scale) and chroma subsampling, WebP by magic.

Only marker segments before the first scan are read, and only their declared lengths are trusted
after checking them against the data, so a truncated or hostile file gives ``None`` or a clear error,
never a decode. The quality is found the way Kornblum (2008) describes: libjpeg writes
``clip((base · S + 50) // 100, 1, 255)`` with ``S = 5000 / q`` below 50 and ``200 − 2q`` above, from the
Annex K base tables (jcparam.c ``jpeg_set_quality`` with force_baseline); the quality whose tables are
closest to the file's is reported with the remaining mean absolute table difference (0 for any
libjpeg-written file, positive for custom tables such as many cameras' and Photoshop's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from degrade.jpeg import _CHROMA_BASE, _LUMA_BASE

__all__ = ["JpegFileInfo", "ijg_tables", "jpeg_quality_from_file", "parse_jpeg_header", "file_format"]

# Zigzag position k holds natural-order coefficient _ZIGZAG[k] (row * 8 + column), ITU T.81 figure A.6.
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
    21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53,
    60, 61, 54, 47, 55, 62, 63])
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_HEADER_LIMIT = 1 << 20  # tables and frame header come first; a megabyte is plenty even with big EXIF blocks


@dataclass(frozen=True)
class JpegFileInfo:
    """quality: best IJG quality 1-100; table_error: mean |file table − IJG table| at that quality (0 = exact);
    subsampling: "4:4:4", "4:2:2", "4:2:0", "4:4:0", "4:1:1", "gray" or "HxV" of the first component."""

    quality: int
    table_error: float
    subsampling: str
    width: int
    height: int
    progressive: bool


def ijg_tables(quality: int) -> np.ndarray:
    """(2, 8, 8) luma and chroma tables libjpeg writes at ``quality`` (natural order)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = np.array([_LUMA_BASE, _CHROMA_BASE], np.int64)
    return np.clip((base * scale + 50) // 100, 1, 255)


_ALL_TABLES = np.stack([ijg_tables(q) for q in range(1, 101)]).reshape(100, 2, 64)


def file_format(path: str | Path) -> str:
    """"jpeg", "webp", "png" or "other" from the first bytes (the suffix is not trusted)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "other"


def parse_jpeg_header(data: bytes) -> tuple[dict[int, np.ndarray], dict]:
    """Quantization tables (id → natural-order (64,) array) and the frame header of a JPEG's first bytes.

    Raises ValueError naming what is wrong when the markers are malformed.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    tables: dict[int, np.ndarray] = {}
    frame: dict = {}
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            raise ValueError(f"corrupt JPEG: segment 0x{marker:02X} at byte {pos} runs past the data")
        if marker == 0xDB:
            _read_dqt(segment, tables)
        elif marker in _SOF_MARKERS:
            frame = _read_sof(segment, marker)
        elif marker in (0xDA, 0xD9):  # start of scan / end of image: headers are over
            break
        pos += 2 + length
    return tables, frame


def _read_dqt(segment: bytes, tables: dict[int, np.ndarray]) -> None:
    i = 0
    while i < len(segment):
        precision, table_id = segment[i] >> 4, segment[i] & 15
        size = 128 if precision else 64
        raw = segment[i + 1 : i + 1 + size]
        if len(raw) != size:
            raise ValueError("corrupt JPEG: truncated quantization table")
        values = np.frombuffer(raw, dtype=">u2" if precision else np.uint8).astype(np.int64)
        natural = np.empty(64, np.int64)
        natural[_ZIGZAG] = values
        tables[table_id] = natural
        i += 1 + size


def _read_sof(segment: bytes, marker: int) -> dict:
    if len(segment) < 6:
        raise ValueError("corrupt JPEG: truncated frame header")
    height, width, count = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
    if len(segment) < 6 + 3 * count:
        raise ValueError("corrupt JPEG: truncated frame header components")
    components = [(segment[6 + 3 * k + 1] >> 4, segment[6 + 3 * k + 1] & 15, segment[6 + 3 * k + 2])
                  for k in range(count)]
    return {"width": width, "height": height, "components": components, "progressive": marker in (0xC2, 0xC6,
                                                                                                    0xCA, 0xCE)}


def _subsampling(components: list[tuple[int, int, int]]) -> str:
    if len(components) == 1:
        return "gray"
    h, v = components[0][0], components[0][1]
    if any(c[:2] != (1, 1) for c in components[1:]):
        return f"{h}x{v}+custom"
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1"}.get((h, v),
                                                                                                   f"{h}x{v}")


def jpeg_quality_from_file(path: str | Path) -> JpegFileInfo | None:
    """The IJG quality and chroma subsampling of a JPEG file; ``None`` for any other format.

    The luma table (the first component's) is always compared; the chroma table too when the file
    has colour components. Ties (identical tables at two qualities cannot happen for 1-100 with
    8-bit tables, see the tests) would resolve to the lower quality.

    Raises:
        ValueError: the file starts like a JPEG but its headers are malformed (message names the file).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(_HEADER_LIMIT)
    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        tables, frame = parse_jpeg_header(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if not frame or not tables:
        raise ValueError(f"{path}: JPEG headers lack {'a frame header' if not frame else 'quantization tables'}")
    components = frame["components"]
    wanted = [components[0][2]] + ([components[1][2]] if len(components) > 1 else [])
    missing = [t for t in wanted if t not in tables]
    if missing:
        raise ValueError(f"{path}: frame header refers to missing quantization table {missing[0]}")
    file_tables = np.stack([tables[t] for t in wanted])
    errors = np.abs(_ALL_TABLES[:, : len(wanted)] - file_tables[None]).mean(axis=(1, 2))
    best = int(np.argmin(errors))
    return JpegFileInfo(quality=best + 1, table_error=float(errors[best]), subsampling=_subsampling(components),
                        width=frame["width"], height=frame["height"], progressive=frame["progressive"])
