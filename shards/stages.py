"""Streaming stages of the shard loader: each is a function from an iterator to an iterator.

    urls -> tar_samples (tar_members) -> shuffle -> (skip) -> gt_batches

(`tar_members` is also how validation reads its GT + LQ pairs: pipelines/training/validate.py.)

Only image members are read (`png`, `jpg`, ..., and raw uint8 `npy`); images are decoded with
OpenCV and `.npy` members by parsing their header (uint8, C order, H x W x 3 only; never
`allow_pickle`, never an object array), and no other member (json, pickle, ...) is decoded at all.
Problems (a missing or corrupt shard, an undecodable sample) go to a `Problems` collector:
recorded with the shard's name, or raised at once when it is strict.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
import torch

from shards.imagesize import MAX_SAMPLE_PIXELS, PixelLimitExceeded, check_pixels, declared_size

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp", "npy")
_BASE_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key/extension split


class ShardReadError(RuntimeError):
    """A shard or sample that could not be read, raised in strict mode."""


class Sample(NamedTuple):
    """One raw training sample: where it came from and its encoded image."""

    url: str
    key: str
    image: bytes


class GTBatch(NamedTuple):
    """A batch of GT patches, the sample keys, and the problems met since the previous batch.

    `gt` is (B, 3, P, P) RGB, float32 in [0, 1] (or uint8 in [0, 255] when asked), on CPU.
    `problems` holds (kind, shard, detail) tuples, kind "shard" or "sample".
    """

    gt: torch.Tensor
    keys: list[str]
    problems: list[tuple[str, str, str]]


@dataclass
class Problems:
    """Collects read problems in a worker; strict mode raises the first one instead."""

    strict: bool = False
    pending: list[tuple[str, str, str]] = field(default_factory=list)

    def report(self, kind: str, url: str, detail: str) -> None:
        if self.strict:
            raise ShardReadError(f"{kind} problem in shard {url}: {detail}")
        self.pending.append((kind, url, detail))

    def take(self) -> list[tuple[str, str, str]]:
        out, self.pending = self.pending, []
        return out


def open_url(url: str):
    """A binary stream for a local path or any URL webdataset's gopen accepts (pipe:, http, ...)."""
    from webdataset.gopen import gopen  # lazy: webdataset imports a lot at module level

    return gopen(url, "rb")


Members = dict[str, "bytes | None"]  # extension -> bytes read, or None for a member that was not asked for


def tar_members(url: str, problems: Problems, keep: Callable[[str, Members], bool],
                opener: Callable[[str], object] = open_url) -> Iterator[tuple[str, Members]]:
    """The regular members of one tar shard, read as a stream and grouped by key (webdataset convention:
    consecutive members with one base name): ``(key, {ext: bytes or None})``.

    A member's bytes are read only when ``keep(ext, members_so_far)`` says so (a later kept member of the same
    extension replaces an earlier one); the others are listed with None, so a reader pays only for what it uses.
    A shard that cannot be opened, or whose tar stream breaks, is reported once; the groups read before the
    break are still yielded.
    """
    try:
        stream = opener(url)
    except Exception as exc:  # noqa: BLE001 - any open failure is a missing/unreachable shard
        problems.report("shard", url, f"cannot open: {type(exc).__name__}: {exc}")
        return
    key, found = None, {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                match = _BASE_EXT.match(member.name) if member.isreg() else None
                if match is None:
                    continue
                base, ext = match.group(1), match.group(2).lower()
                if base != key:
                    if key is not None:
                        yield key, found
                    key, found = base, {}
                if keep(ext, found):
                    found[ext] = tar.extractfile(member).read()
                else:
                    found.setdefault(ext, None)
                tar.members = []  # stream mode would otherwise keep every header for the whole shard
        if key is not None:
            yield key, found
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        problems.report("shard", url, f"unreadable tar data after key {key!r}: {type(exc).__name__}: {exc}")
    finally:
        # Closing can fail, e.g. a pipe whose command died because we stopped reading early.
        with contextlib.suppress(Exception):
            stream.close()


def _first_image(ext: str, found: Members) -> bool:
    if ext not in IMAGE_EXTS:
        return False
    return all(data is None for data in found.values())


def tar_samples(url: str, problems: Problems, opener: Callable[[str], object] = open_url) -> Iterator[Sample]:
    """Samples of one tar shard (`tar_members`): the first image member of each key; keys without one are skipped."""
    groups = tar_members(url, problems, _first_image, opener)
    with contextlib.closing(groups):  # stopping early closes the shard now, not when the generator is collected
        for key, found in groups:
            for data in found.values():
                if data is not None:  # the only bytes read: the key's first image
                    yield Sample(url, key, data)
                    break


def shard_samples(urls: Iterable[str], problems: Problems) -> Iterator[Sample]:
    """Concatenated samples of several shards, in order."""
    for url in urls:
        yield from tar_samples(url, problems)


def shuffle(samples: Iterable[Sample], size: int, rng: np.random.Generator) -> Iterator[Sample]:
    """Buffer shuffle (webdataset's `shuffle` stage, with an explicit generator).

    Fills a buffer of `size` items; then each incoming item replaces a uniformly drawn buffered one,
    which is emitted; at the end the rest is emitted in random order. size <= 1 keeps the order.
    The draws depend only on the number of items, never on their content.
    """
    if size <= 1:
        yield from samples
        return
    buffer: list[Sample] = []
    for item in samples:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[int(j)]


_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB


_NPY_MAGIC = b"\x93NUMPY"


def decode_npy(data: bytes) -> np.ndarray | None:
    """HWC uint8 RGB pixels of a `.npy` member, or None unless it is exactly that (no pickle, ever).

    The header is parsed with numpy's format reader (a literal dict, no code) and must declare
    uint8, C order and shape (H, W, 3) whose size matches the data, so the declared size cannot
    exceed the bytes actually present.
    """
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            return None
        shape, fortran, dtype = readers[version](stream, max_header_size=10_000)
    except (ValueError, SyntaxError, EOFError):
        return None
    offset = stream.tell()
    if (dtype != np.uint8 or fortran or len(shape) != 3 or shape[2] != 3 or min(shape) < 1
            or len(data) - offset != shape[0] * shape[1] * 3):
        return None
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape).copy()  # writable, like OpenCV's


def decode_sample(sample: Sample, max_pixels: int = MAX_SAMPLE_PIXELS) -> np.ndarray | None:
    """HWC uint8 RGB pixels of a sample (OpenCV; raw `.npy` by its header), or None if it cannot be decoded.

    Raises PixelLimitExceeded, before decoding, when the header declares more than ``max_pixels``.
    """
    if sample.image[:6] == _NPY_MAGIC:
        pixels = decode_npy(sample.image)  # its declared size must match the bytes present
        if pixels is not None:
            check_pixels(pixels.shape[1], pixels.shape[0], max_pixels, f"sample {sample.key!r}")
        return pixels
    if (size := declared_size(sample.image)) is not None:
        check_pixels(*size, max_pixels, f"sample {sample.key!r}")
    buf = np.frombuffer(sample.image, np.uint8)
    if _RGB is not None:
        return cv2.imdecode(buf, _RGB)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return None if bgr is None else bgr[:, :, ::-1]


def gt_patch(img: np.ndarray, u: np.ndarray, patch: int, hflip: bool, rot: bool) -> np.ndarray:
    """Pad/crop to patch x patch and flip, as RealESRGANDataset does per sample (ref. §1.1).

    Pad bottom/right with BORDER_REFLECT_101 when a side is short; take a uniform random crop when a
    side is long (offsets floor(u * (L - P + 1))); then horizontal flip with p = 0.5 and, when `rot`,
    a vertical flip and a transpose with p = 0.5 each (BasicSR `augment`). The reference flips
    before cropping; flipping after is the same distribution and touches fewer pixels.

    Args:
        img: HWC uint8 image.
        u: five uniforms in [0, 1): hflip, vflip, transpose, crop top, crop left.
    """
    h, w = img.shape[:2]
    if h < patch or w < patch:
        img = cv2.copyMakeBorder(img, 0, max(patch - h, 0), 0, max(patch - w, 0), cv2.BORDER_REFLECT_101)
        h, w = img.shape[:2]
    top = min(int(u[3] * (h - patch + 1)), h - patch)
    left = min(int(u[4] * (w - patch + 1)), w - patch)
    out = img[top : top + patch, left : left + patch]
    if hflip and u[0] < 0.5:
        out = out[:, ::-1]
    if rot and u[1] < 0.5:
        out = out[::-1]
    if rot and u[2] < 0.5:
        out = out.swapaxes(0, 1)
    return out


def gt_batches(samples: Iterator[Sample], n_batches: int, batch_size: int, aug_rng: np.random.Generator,
               patch: int, hflip: bool, rot: bool, uint8: bool, problems: Problems,
               max_pixels: int = MAX_SAMPLE_PIXELS) -> Iterator[GTBatch]:
    """Decode, augment and stack samples into exactly n_batches batches (fewer only if samples run out).

    Every batch draws (batch_size, 5) uniforms from aug_rng, so skipping k batches on resume is
    `aug_rng.random((k, batch_size, 5))`, whatever the images. Undecodable samples are reported
    and replaced by the next sample.
    """
    for _ in range(n_batches):
        u = aug_rng.random((batch_size, 5))
        # Filled in place: one strided pass per patch does HWC->CHW and the uint8->float conversion (the same
        # float32 k / 255 as pipelines.common.rgb_to_tensor, which shards/ may not import, into the batch buffer).
        out = np.empty((batch_size, 3, patch, patch), np.uint8 if uint8 else np.float32)
        keys: list[str] = []
        for sample in samples:
            try:
                img = decode_sample(sample, max_pixels)
            except PixelLimitExceeded as exc:  # a decompression bomb: a bad sample, never decoded
                problems.report("sample", sample.url, str(exc))
                continue
            if img is None:
                problems.report("sample", sample.url, f"cannot decode the image of {sample.key!r}")
                continue
            chw = gt_patch(img, u[len(keys)], patch, hflip, rot).transpose(2, 0, 1)
            if uint8:
                out[len(keys)] = chw
            else:
                np.divide(chw, np.float32(255.0), out=out[len(keys)], dtype=np.float32)
            keys.append(sample.key)
            if len(keys) == batch_size:
                break
        if len(keys) < batch_size:
            return
        yield GTBatch(torch.from_numpy(out), keys, problems.take())
