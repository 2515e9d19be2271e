"""One source image -> its patches, streamed: what a `shard` worker does with one file.

`open_image` decodes the file and plans every crop window of every multiscale variant from the
sizes alone (so the patch count is known before any pixel is resized or encoded); `iter_patches`
then renders one variant at a time and yields one PNG-encoded patch at a time. Nothing holds all
patches of an image: a worker process (`process_image` with a spool file) writes them to a spool
file next to the output as it encodes them, and the main process reads that file back one patch at
a time into the shard. Memory per worker is therefore the decoded image plus one resized variant
plus one patch (≈ 6-7 bytes per source pixel at the decode peak), and the main process holds one
patch, whatever the image size; the spool costs disk space (the encoded patches of the images in
flight), not memory.

Spool records are `>II` (meta length, PNG length), the canonical-JSON meta, then the PNG bytes: no
pickle, so a spool file is read exactly like a shard member.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shards import decode
from shards.crop import Box, CropConfig, crop_boxes
from shards.imagesize import MAX_SOURCE_PIXELS
from shards.multiscale import ORIGINAL_ONLY, MultiscaleConfig, Variant, plan_variants, render_variant
from shards.sources import SourceFile, read_regular_file
from shards.write import encode_json, encode_patch

_HEADER = struct.Struct(">II")


@dataclass(frozen=True)
class PatchPlan:
    """What a worker needs to turn one source image into patches."""

    crop: CropConfig
    variants: MultiscaleConfig
    png_level: int
    encoding: str = "png"  # one of shards.write.SAMPLE_ENCODINGS
    max_pixels: int = MAX_SOURCE_PIXELS  # a source declaring more is skipped as too_large, never decoded


@dataclass
class ImageResult:
    """What one source image gives: its patch count (and where they are), or why it was skipped.

    `patches` holds the encoded patches only when they were asked for in memory (`spool=None`);
    `spool` names the spool file a worker wrote them to.
    """

    skip: tuple[str, str] | None = None
    notes: tuple[str, ...] = ()
    patches: list[tuple[dict, bytes]] = field(default_factory=list)
    variants: int = 0
    dropped_variants: int = 0
    count: int = 0  # patches the image gives in all (also those before `start` that were not encoded)
    spool: str | None = None


@dataclass(frozen=True)
class OpenedImage:
    """A decoded source image and its crop windows per variant (sizes only; nothing rendered yet)."""

    src: SourceFile
    img: decode.DecodedImage
    windows: tuple[tuple[Variant, tuple[Box, ...]], ...]


def open_image(src: SourceFile, plan: PatchPlan) -> tuple[ImageResult, OpenedImage | None]:
    """Decode one source and plan its patches; (result with the skip reason, None) when unusable."""
    try:
        img = decode.decode_image(read_regular_file(src.path), plan.max_pixels)
    except decode.ImageSkipped as exc:
        return ImageResult(skip=(exc.kind, exc.detail)), None
    except Exception as exc:  # noqa: BLE001 - a bad input must never stop the job
        return ImageResult(skip=(decode.ERROR, f"{type(exc).__name__}: {exc}")), None
    h, w = img.rgb.shape[:2]
    result = ImageResult(notes=img.notes)
    windows = []
    for variant in plan_variants(w, h, plan.variants if src.multiscale else ORIGINAL_ONLY):
        boxes = tuple(crop_boxes(variant.height, variant.width, plan.crop))
        if not boxes:
            result.dropped_variants += 1
            continue
        result.variants += 1
        result.count += len(boxes)
        windows.append((variant, boxes))
    if not result.count:
        detail = f"{w}x{h} has a side shorter than min_size {plan.crop.min_size}"
        return ImageResult(skip=(decode.TOO_SMALL, detail), notes=img.notes), None
    return result, OpenedImage(src, img, tuple(windows))


def iter_patches(opened: OpenedImage, plan: PatchPlan, start: int = 0) -> Iterator[tuple[dict, bytes]]:
    """(meta, encoded bytes) of patches start, start+1, ... in order; variants wholly before start are not rendered."""
    img, src = opened.img, opened.src
    h, w = img.rgb.shape[:2]
    first = 0
    for variant, boxes in opened.windows:
        if first + len(boxes) <= start:
            first += len(boxes)
            continue
        pixels = render_variant(img.rgb, variant)
        for index, box in enumerate(boxes):
            if first + index < start:
                continue
            patch = pixels[box.top : box.top + box.height, box.left : box.left + box.width]
            meta = {
                "dataset": src.dataset,
                "source": src.rel,
                "source_sha256": img.sha256,
                "source_size": [h, w],
                "conversions": list(img.notes),
                "variant": variant.label,
                "scale": variant.scale,
                "variant_size": [variant.height, variant.width],
                "crop": box.as_dict(),
                "patch": index,
            }
            yield meta, encode_patch(patch, plan.encoding, plan.png_level)
        del pixels  # one variant at a time
        first += len(boxes)


def process_image(src: SourceFile, plan: PatchPlan, spool: Path | None = None, start: int = 0) -> ImageResult:
    """Decode, multiscale, crop and PNG-encode one source image (runs in a worker; never raises).

    With `spool`, patches start, start+1, ... are streamed to that file (see the module docstring)
    and `result.spool` names it; without, they are returned in `result.patches`.
    """
    result, opened = open_image(src, plan)
    if opened is None:
        return result
    patches = iter_patches(opened, plan, start)
    if spool is None:
        result.patches = list(patches)
        return result
    with open(spool, "wb") as f:
        for meta, png in patches:
            blob = encode_json(meta)
            f.write(_HEADER.pack(len(blob), len(png)))
            f.write(blob)
            f.write(png)
    result.spool = str(spool)
    return result


def read_spool(path: Path) -> Iterator[tuple[dict, bytes]]:
    """The (meta, PNG bytes) records of a spool file, one at a time; the file is deleted when done."""
    try:
        with open(path, "rb") as f:
            while header := f.read(_HEADER.size):
                if len(header) != _HEADER.size:
                    raise OSError(f"spool file {path} is truncated")
                meta_len, png_len = _HEADER.unpack(header)
                meta = json.loads(f.read(meta_len))
                png = f.read(png_len)
                if len(png) != png_len:
                    raise OSError(f"spool file {path} is truncated")
                yield meta, png
    finally:
        Path(path).unlink(missing_ok=True)
