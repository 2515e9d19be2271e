"""Source image decoding: bit depth, channels, EXIF orientation and every kind of bad file."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from shards import decode


def asymmetric_rgb(h: int = 60, w: int = 100) -> np.ndarray:
    """Gradients plus an off-centre block: every flip/rotation changes it."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 2, y * 3, x + y], axis=2).astype(np.uint8)
    rgb[5:15, 5:30] = 255
    return rgb


def encode_with_exif(rgb: np.ndarray, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_16bit_is_rounded_not_truncated(tmp_path: Path):
    values = np.arange(0, 65536, dtype=np.int64)
    img16 = np.stack([values, values[::-1], (values * 7) % 65536], axis=1).reshape(256, 256, 3).astype(np.uint16)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), img16[:, :, ::-1])  # stored as BGR
    out = decode.load_image(path)
    expected = np.round(img16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)  # float64 reference
    np.testing.assert_array_equal(out.rgb, expected)
    assert decode.CONVERTED_16BIT in out.notes
    # The test can tell rounding from truncation (x >> 8): they disagree on many values, e.g. 511 -> 2 vs 1.
    assert (expected != (img16 >> 8)).any() and expected.reshape(-1, 3)[511, 0] == 2


def test_gray_8_and_16_bit_expand_to_rgb(tmp_path: Path):
    gray = asymmetric_rgb()[:, :, 0]
    assert cv2.imwrite(str(tmp_path / "g8.png"), gray)
    out = decode.load_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(out.rgb, np.repeat(gray[:, :, None], 3, axis=2))
    assert out.notes == (decode.GRAY_EXPANDED,)
    gray16 = gray.astype(np.uint16) * 257 + 100
    assert cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    out = decode.load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out.rgb[:, :, 1], np.round(gray16 / 257.0).astype(np.uint8))
    assert set(out.notes) == {decode.CONVERTED_16BIT, decode.GRAY_EXPANDED}


def test_alpha_is_dropped_without_compositing(tmp_path: Path):
    rgb = asymmetric_rgb()
    alpha = np.zeros(rgb.shape[:2], np.uint8)  # fully transparent: colours must survive unchanged
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    out = decode.load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.notes == (decode.ALPHA_DROPPED,)
    Image.fromarray(np.dstack([rgb[:, :, 0], alpha]), "LA").save(tmp_path / "la.png")
    out = decode.load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out.rgb, np.repeat(rgb[:, :, :1], 3, axis=2))
    assert decode.ALPHA_DROPPED in out.notes


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path: Path, orientation: int):
    data = encode_with_exif(asymmetric_rgb(), orientation, "JPEG")
    (tmp_path / "o.jpg").write_bytes(data)
    out = decode.load_image(tmp_path / "o.jpg")
    # Independent references: OpenCV's IMREAD_COLOR applies EXIF itself (same JPEG decoder: exact);
    # PIL's exif_transpose uses its own decoder.
    cv_upright = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(out.rgb, cv_upright)
    pil_upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.abs(out.rgb.astype(int) - pil_upright).max() <= 2
    assert out.orientation == orientation
    assert (decode.EXIF_ORIENTED in out.notes) == (orientation != 1)
    assert out.sha256 == hashlib.sha256(data).hexdigest()


def test_exif_orientation_png_lossless(tmp_path: Path):
    rgb = asymmetric_rgb()
    for orientation in (2, 5, 6, 7, 8):
        data = encode_with_exif(rgb, orientation, "PNG")
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        np.testing.assert_array_equal(decode.decode_image(data).rgb, expected)


def _jpeg_with_comment_eoi(rgb: np.ndarray) -> bytes:
    """A JPEG whose header holds a comment containing the bytes FF D9 (as EXIF thumbnails do)."""
    ok, buf = cv2.imencode(".jpg", rgb)
    data = buf.tobytes()
    payload = b"thumb\xff\xd9end"
    comment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + comment + data[2:]


def test_truncation_detection():
    rgb = asymmetric_rgb(120, 160)
    jpeg = _jpeg_with_comment_eoi(rgb)
    assert not decode.jpeg_is_truncated(jpeg)
    assert decode.decode_image(jpeg).rgb.shape == (120, 160, 3)
    for cut in (len(jpeg) // 2, len(jpeg) - 2):
        with pytest.raises(decode.ImageSkipped) as info:
            decode.decode_image(jpeg[:cut])
        assert info.value.kind == decode.TRUNCATED
    png = cv2.imencode(".png", rgb)[1].tobytes()
    with pytest.raises(decode.ImageSkipped) as info:
        decode.decode_image(png[: len(png) * 2 // 3])
    assert info.value.kind == decode.TRUNCATED


@pytest.mark.parametrize("data, kind", [
    (b"hello, I am a text file", decode.NOT_AN_IMAGE),
    (b"", decode.NOT_AN_IMAGE),
    (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20 + b"IEND\xaeB`\x82", decode.CORRUPT),
    (b"\xff\xd8\xff\xe0\x00\x04ab\xff\xda\x00\x02garbage\xff\xd9", decode.CORRUPT),
])
def test_bad_bytes(data: bytes, kind: str):
    with pytest.raises(decode.ImageSkipped) as info:
        decode.decode_image(data)
    assert info.value.kind == kind


def test_unsupported_and_unreadable(tmp_path: Path):
    floats = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tiff"), floats)
    with pytest.raises(decode.ImageSkipped) as info:
        decode.load_image(tmp_path / "f.tiff")
    assert info.value.kind == decode.UNSUPPORTED and "float32" in info.value.detail
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(decode.ImageSkipped) as info:
        decode.load_image(tmp_path / "broken.png")
    assert info.value.kind == decode.UNREADABLE and "FileNotFoundError" in info.value.detail


def test_apply_orientation_matches_pil_transposes():
    rgb = asymmetric_rgb(7, 11)
    pil = Image.fromarray(rgb)
    methods = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}  # PIL ImageOps.exif_transpose table
    for orientation, method in methods.items():
        np.testing.assert_array_equal(decode.apply_orientation(rgb, orientation), np.asarray(pil.transpose(method)))
