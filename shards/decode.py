"""Decoding source images for dataset preparation: bit depth, channels, EXIF orientation, bad files.

Pixels are decoded with OpenCV `IMREAD_UNCHANGED`, which keeps 16-bit samples and alpha (the
reference's `extract_subimages.py` reads the same way, ref. §5.2) but ignores EXIF orientation; the
orientation tag is read with PIL (header only) and applied with exact numpy flips/rotations, the
transforms PIL's `ImageOps.exif_transpose` uses. `IMREAD_COLOR` would apply the orientation but drop
16-bit precision (it truncates to 8 bits), which is why it is not used.

Conversions to the 8-bit RGB the shards store (each is counted in the job summary):

* 16-bit -> 8-bit by rounding x * 255 / 65535 (= x / 257), not by dropping the low byte;
* grayscale (and gray + alpha) -> RGB by repeating the channel;
* alpha is dropped: the stored colour channels are kept as they are, without compositing onto a
  background (a transparent pixel keeps whatever colour the file stores under it);
* EXIF orientation 2-8 is applied, so patches are upright as a viewer shows them.

Files that cannot be used raise `ImageSkipped` with one of `SKIP_KINDS` and a readable detail.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from shards.imagesize import MAX_SOURCE_PIXELS, PixelLimitExceeded, check_pixels, declared_size

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})

# Why a source was not used. Every kind is counted in the manifest.
UNREADABLE = "unreadable"  # the file could not be read (permissions, broken link, I/O error)
NOT_AN_IMAGE = "not_an_image"  # no known image signature and OpenCV cannot decode it
TRUNCATED = "truncated"  # a PNG/JPEG whose data ends before the end marker
CORRUPT = "corrupt"  # a known image format that OpenCV fails to decode
UNSUPPORTED = "unsupported"  # decodes, but to a pixel type we do not convert (float, 32-bit int)
TOO_SMALL = "too_small"  # a side shorter than the minimum patch size
TOO_LARGE = "too_large"  # declares more pixels than max_pixels (checked from the header, before decoding)
DUPLICATE = "duplicate"  # the same file reached through two sources
ERROR = "error"  # any other exception while processing the image
SKIP_KINDS = (UNREADABLE, NOT_AN_IMAGE, TRUNCATED, CORRUPT, UNSUPPORTED, TOO_SMALL, DUPLICATE, ERROR, TOO_LARGE)

# Conversions applied to a used image.
CONVERTED_16BIT = "converted_16bit"
GRAY_EXPANDED = "gray_expanded"
ALPHA_DROPPED = "alpha_dropped"
EXIF_ORIENTED = "exif_oriented"
NOTE_KINDS = (CONVERTED_16BIT, GRAY_EXPANDED, ALPHA_DROPPED, EXIF_ORIENTED)

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"GIF8", "gif"),
    (b"P5", "pnm"),
    (b"P6", "pnm"),
)


class ImageSkipped(Exception):
    """A source image that cannot be used; `kind` is one of SKIP_KINDS."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """An upright HWC uint8 RGB image, the SHA-256 of its file, and the conversions applied."""

    rgb: np.ndarray
    sha256: str
    notes: tuple[str, ...]
    orientation: int


def sniff_format(data: bytes) -> str | None:
    """The image format named by the file's magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def jpeg_is_truncated(data: bytes) -> bool:
    """True when no end-of-image marker follows the first start-of-scan segment.

    Header segments are skipped by their lengths, so an EOI inside an embedded EXIF thumbnail does
    not count; inside entropy-coded data 0xFF is byte-stuffed, so 0xFFD9 can only be the real EOI.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return True  # malformed header; OpenCV decides whether it is usable
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos) < 0
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return True


def png_is_truncated(data: bytes) -> bool:
    """True when the PNG lacks its IEND chunk (IEND is always the last chunk)."""
    return data.rfind(b"IEND") < 0


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) read by PIL from the header, 1 when absent or unreadable.

    PIL's decompression-bomb check is off for this header-only read: the pixels are decoded by
    OpenCV, and the size was already checked against ``max_pixels`` (a valid 14000x14000 photo
    would otherwise be lost to ``DecompressionBombError``). The shard job runs it in processes,
    so the module-level switch is not shared between threads.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as img:
            value = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Make an HW[C] array upright for EXIF orientation 1-8 (the transforms of PIL exif_transpose)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirror horizontally
        3: lambda a: a[::-1, ::-1],  # rotate 180
        4: lambda a: a[::-1],  # mirror vertically
        5: lambda a: a.swapaxes(0, 1),  # transpose
        6: lambda a: np.rot90(a, k=-1),  # rotate 90 clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transverse
        8: lambda a: np.rot90(a, k=1),  # rotate 90 counter-clockwise
    }
    return np.ascontiguousarray(ops[orientation](img))


def to_rgb8(img: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Convert an OpenCV IMREAD_UNCHANGED array (BGR order) to HWC uint8 RGB, listing the conversions.

    16-bit values map to round(x * 255 / 65535); since 65535 = 255 * 257 this is (x + 128) // 257
    in exact integer arithmetic (257 is odd, so there is never a tie).
    """
    notes: list[str] = []
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
        notes.append(CONVERTED_16BIT)
    elif img.dtype != np.uint8:
        raise ImageSkipped(UNSUPPORTED, f"pixel type {img.dtype} is not converted (8 or 16-bit only)")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels in (2, 4):
        img = img[:, :, : channels - 1]
        notes.append(ALPHA_DROPPED)
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2)), (*notes, GRAY_EXPANDED)
    if img.shape[2] != 3:
        raise ImageSkipped(UNSUPPORTED, f"{channels} channels")
    return np.ascontiguousarray(img[:, :, ::-1]), tuple(notes)


def decode_image(data: bytes, max_pixels: int = MAX_SOURCE_PIXELS) -> DecodedImage:
    """Decode file bytes into an upright 8-bit RGB image, or raise ImageSkipped with the reason.

    The size the header declares is checked against ``max_pixels`` before anything is decoded
    (``shards.imagesize``; 0 disables the limit), and the decoded size again for unknown headers.
    """
    fmt = sniff_format(data)
    try:
        if (size := declared_size(data)) is not None:
            check_pixels(*size, max_pixels, f"the image (declared in its {fmt} header)")
    except PixelLimitExceeded as exc:
        raise ImageSkipped(TOO_LARGE, str(exc)) from exc
    if fmt == "png" and png_is_truncated(data):
        raise ImageSkipped(TRUNCATED, "PNG data ends before the IEND chunk")
    if fmt == "jpeg" and jpeg_is_truncated(data):
        raise ImageSkipped(TRUNCATED, "JPEG data ends before the end-of-image marker")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        if fmt is None:
            raise ImageSkipped(NOT_AN_IMAGE, "no image signature and OpenCV cannot decode it")
        raise ImageSkipped(CORRUPT, f"{fmt} data that OpenCV cannot decode")
    try:
        check_pixels(img.shape[1], img.shape[0], max_pixels, "the decoded image")
    except PixelLimitExceeded as exc:
        raise ImageSkipped(TOO_LARGE, str(exc)) from exc
    rgb, notes = to_rgb8(img)
    orientation = exif_orientation(data)
    if orientation != 1:
        rgb = apply_orientation(rgb, orientation)
        notes = (*notes, EXIF_ORIENTED)
    return DecodedImage(rgb, hashlib.sha256(data).hexdigest(), notes, orientation)


def load_image(path: Path, max_pixels: int = MAX_SOURCE_PIXELS) -> DecodedImage:
    """Read and decode one source file (see decode_image); read errors become UNREADABLE."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageSkipped(UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    return decode_image(data, max_pixels)
