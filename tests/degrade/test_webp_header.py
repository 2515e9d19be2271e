"""degrade.webp_header: the VP8 frame header parsed with RFC 6386's boolean decoder, and the libwebp quality of
a file found by re-encoding, checked against files libwebp itself wrote (cv2.imencode) at known qualities."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from degrade.estimate import file_format, webp_quality_from_file
from tests.conftest import load_sample_rgb


def _write_webp(path, rgb, quality):
    ok, data = cv2.imencode(".webp", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_WEBP_QUALITY, quality])
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _photo(name, size):
    rgb = load_sample_rgb(name)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


# Measured over every quality 1-100 on astronaut and coffee at 256/300 px and 64x48 (400 files): |error| 0 for
# 38 %, 1 for 25 %, 2 for 27 %, 3 for 10 %, 4 for 0.5 %; re-encoding the decoded image moves libwebp's segment
# statistics a little, so the indices of a neighbouring quality can fit better. The tolerance is that maximum.
_TOLERANCE = 4


@pytest.mark.parametrize("name,size", [("astronaut.png", (256, 256)), ("coffee.png", (300, 200)),
                                       ("coffee.png", (64, 48))])
def test_quality_of_libwebp_files_is_recovered(tmp_path, name, size):
    rgb = _photo(name, size)
    errors = []
    for quality in range(5, 100, 10):
        path = _write_webp(tmp_path / f"q{quality}.webp", rgb, quality)
        info = webp_quality_from_file(path)
        assert file_format(path) == "webp" and not info.lossless
        assert (info.width, info.height) == size  # from the VP8 frame header
        assert len(info.segment_quants) in (1, 4) and all(0 <= q <= 127 for q in info.segment_quants)
        errors.append(info.quality - quality)
    assert max(abs(e) for e in errors) <= _TOLERANCE, errors


def test_segment_quantizers_fall_with_the_quality(tmp_path):
    rgb = _photo("astronaut.png", (128, 128))
    quants = [max(webp_quality_from_file(_write_webp(tmp_path / f"{q}.webp", rgb, q)).segment_quants)
              for q in (10, 40, 70, 95)]
    assert quants == sorted(quants, reverse=True) and quants[0] > quants[-1] + 40


def test_lossless_truncated_and_other_files(tmp_path):
    rgb = _photo("coffee.png", (40, 30))
    lossless = webp_quality_from_file(_write_webp(tmp_path / "l.webp", rgb, 101))  # OpenCV: > 100 is lossless
    assert lossless.lossless and lossless.quality is None and (lossless.width, lossless.height) == (40, 30)
    data = _write_webp(tmp_path / "ok.webp", rgb, 50).read_bytes()
    (tmp_path / "cut.webp").write_bytes(data[:30])  # the frame header is cut off
    assert webp_quality_from_file(tmp_path / "cut.webp") is None
    ok, png = cv2.imencode(".png", rgb)
    (tmp_path / "p.webp").write_bytes(png.tobytes())
    assert webp_quality_from_file(tmp_path / "p.webp") is None
    with pytest.raises(ValueError, match="declares 40x30 pixels"):
        webp_quality_from_file(tmp_path / "ok.webp", max_pixels=1000)
