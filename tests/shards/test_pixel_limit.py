"""Declared sizes are checked before decoding (issue 14 items 7 and 9)."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from shards import decode, stages
from shards.imagesize import MAX_SAMPLE_PIXELS, MAX_SOURCE_PIXELS, PixelLimitExceeded, declared_size
from shards.read import LoaderConfig, ShardStream


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR declares width x height (8-bit gray), with the given compressed data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat or zlib.compress(b"\0")) + \
        _chunk(b"IEND", b"")


def zero_png(width: int, height: int) -> bytes:
    """A valid all-black gray PNG, compressed row by row (a few hundred KB for 10^8 pixels)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return png_declaring(width, height, data)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp", ".tiff", ".ppm", ".pgm"])
@pytest.mark.parametrize("size", [(37, 21), (1, 300), (640, 427)])
def test_declared_size_matches_what_opencv_decodes(ext, size):
    rng = np.random.default_rng(size[0])
    channels = () if ext == ".pgm" else (3,)
    img = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" and size[0] == 37 else []  # lossless (VP8L) too
    data = cv2.imencode(ext, img, params)[1].tobytes()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert declared_size(data) == (decoded.shape[1], decoded.shape[0]) == size


def test_declared_size_of_gif_bmp_core_and_extended_webp_against_pil():
    img = Image.new("RGB", (45, 17))
    for fmt, kwargs in (("GIF", {}), ("WEBP", {"exif": Image.Exif().tobytes()}), ("TIFF", {"compression": "tiff_lzw"})):
        buffer = io.BytesIO()
        img.save(buffer, fmt, **kwargs)
        assert declared_size(buffer.getvalue()) == (45, 17), fmt
    assert declared_size(b"not an image") is None and declared_size(b"\x89PNG\r\n\x1a\n") is None


def test_a_decompression_bomb_source_is_skipped_as_too_large_without_decoding(monkeypatch):
    bomb = png_declaring(20000, 20000)
    monkeypatch.setattr(decode.cv2, "imdecode", lambda *a: pytest.fail("decoded a bomb"))
    with pytest.raises(decode.ImageSkipped) as info:
        decode.decode_image(bomb)
    assert info.value.kind == decode.TOO_LARGE and "20000x20000 = 400.0 Mpx" in info.value.detail
    assert "max_pixels" in info.value.detail and MAX_SOURCE_PIXELS < 20000 * 20000


def test_the_source_limit_is_configurable():
    small = cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    assert decode.decode_image(small).rgb.shape == (30, 40, 3)
    with pytest.raises(decode.ImageSkipped, match="too_large"):
        decode.decode_image(small, max_pixels=1000)
    assert decode.decode_image(small, max_pixels=0).rgb.shape == (30, 40, 3)  # 0: no limit


def test_shard_max_pixels_skips_larger_sources_as_too_large_and_a_higher_limit_admits_them(make_tree, tmp_path):
    from click.testing import CliRunner

    from cli import main
    from shards.crop import CropConfig, crop_boxes
    from shards.manifest import read_manifest

    root = make_tree({"photos/a.png": (120, 160), "photos/b.png": (200, 240), "photos/c.png": (128, 128)})
    base = ["shard", "--src", "photos", "--root", str(root), "--no-multiscale", "--crop-size", "64", "--step", "64",
            "--min-size", "32", "--workers", "1"]
    b_pixels = 200 * 240  # the largest source

    def run(out: str, *extra: str):
        result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / out), *extra], catch_exceptions=False)
        return result, (read_manifest(tmp_path / out) if result.exit_code == 0 else None)

    result, low = run("low", "--max-pixels", str(b_pixels - 1))
    assert result.exit_code == 0, result.output
    assert low["counts"]["skipped"] == {"too_large": 1} and low["totals"]["used"] == 2
    [skipped] = low["skipped"]
    assert skipped["path"].endswith("b.png") and skipped["reason"] == "too_large"
    assert "is 240x200 = 48,000 pixels, above the limit of 47,999 pixels" in skipped["detail"]
    assert "declared in its png header" in skipped["detail"]  # refused from the header, before decoding
    assert "too_large 1" in result.stdout and low["config"]["max_pixels"] == b_pixels - 1

    result, high = run("high", "--max-pixels", str(b_pixels))  # the limit is inclusive
    assert result.exit_code == 0, result.output
    assert high["counts"]["skipped"] == {} and high["totals"]["used"] == 3
    assert high["totals"]["samples"] == low["totals"]["samples"] + len(crop_boxes(200, 240, CropConfig(64, 64, 0, 32)))

    result, default = run("default")
    assert default["totals"]["used"] == 3 and "max_pixels" not in default["config"]  # older manifests still resume
    result, _ = run("high", "--max-pixels", str(b_pixels - 1))  # another limit is another configuration
    assert result.exit_code != 0 and "--overwrite" in result.output


@pytest.mark.parametrize("value", ["0", "-5"])
def test_shard_max_pixels_below_one_is_a_one_line_error(tmp_path, value):
    from click.testing import CliRunner

    from cli import main

    result = CliRunner().invoke(main, ["shard", "--src", str(tmp_path), "--out", str(tmp_path / "out"),
                                       "--max-pixels", value])
    assert result.exit_code == 2
    [line] = [x for x in result.output.splitlines() if x.startswith("Error")]
    assert f"max_pixels must be >= 1 (pixels per source image; the default is {MAX_SOURCE_PIXELS}" in line
    assert line.endswith(f"got {value}") and not (tmp_path / "out").exists()
    help_text = " ".join(CliRunner().invoke(main, ["shard", "--help"]).output.split())
    assert f"[default: {MAX_SOURCE_PIXELS} = 16384x16384]" in help_text


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_loader_counts_a_bomb_as_a_bad_sample_and_never_decodes_it(tmp_path, monkeypatch):
    patch = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    members = {f"{i:04d}.png": patch for i in range(4)}
    members["0002.png"] = png_declaring(20000, 20000)  # 1 sample of 4 is a bomb
    _tar(tmp_path / "train-000000.tar", members)
    decoded_sizes = []
    real = cv2.imdecode

    def spy(buf, flags):
        decoded_sizes.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(stages.cv2, "imdecode", spy)
    cfg = LoaderConfig([str(tmp_path / "train-000000.tar")], batch_size=3, patch_size=16, num_workers=0,
                       shuffle_buffer=0, epoch_samples=3)
    stream = ShardStream(cfg)
    batch = next(iter(stream))
    assert batch.gt.shape == (3, 3, 16, 16) and "0002" not in batch.keys
    assert sum(stream.bad_samples.values()) == 1
    assert all(size == len(patch) for size in decoded_sizes)  # the bomb's bytes never reached the decoder
    assert cfg.max_pixels == MAX_SAMPLE_PIXELS


def test_loader_limit_is_configurable_and_strict_mode_raises(tmp_path):
    patch = cv2.imencode(".png", np.full((16, 16, 3), 7, np.uint8))[1].tobytes()
    big = cv2.imencode(".png", np.full((40, 40, 3), 7, np.uint8))[1].tobytes()
    _tar(tmp_path / "a.tar", {"0000.png": patch, "0001.png": big, "0002.png": patch})
    cfg = LoaderConfig([str(tmp_path / "a.tar")], batch_size=2, patch_size=16, num_workers=0, shuffle_buffer=0,
                       epoch_samples=2, max_pixels=1000)
    stream = ShardStream(cfg)
    assert next(iter(stream)).keys == ["0000", "0002"] and sum(stream.bad_samples.values()) == 1
    strict = ShardStream(LoaderConfig(**{**cfg.__dict__, "strict": True}))
    with pytest.raises(stages.ShardReadError, match=r"40x40 .* above the limit"):
        next(iter(strict))


def test_exif_orientation_of_a_huge_png_header_is_read_not_a_bomb_error():
    # PIL's own check raises DecompressionBombError above 2 x 89.5 Mpx; 14000^2 = 196 Mpx is a real photo size.
    assert 2 * Image.MAX_IMAGE_PIXELS < 14000 * 14000
    assert decode.exif_orientation(png_declaring(14000, 14000)) == 1
    assert Image.MAX_IMAGE_PIXELS is not None  # the switch is restored


@pytest.mark.slow
def test_a_valid_14000_square_png_decodes():
    data = zero_png(14000, 14000)
    result = decode.decode_image(data)
    assert result.rgb.shape == (14000, 14000, 3) and result.notes == (decode.GRAY_EXPANDED,)
    with pytest.raises(PixelLimitExceeded):
        stages.decode_sample(stages.Sample("u", "k", data))  # far above a training sample's limit
