"""Sub-image crop rule (Real-ESRGAN scripts/extract_subimages.py, ref. §5.2) and our small-image rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shards.crop import CropConfig, crop_boxes, crop_starts, crop_windows


def expected_count(length: int, crop: int, step: int, thresh: int, min_size: int) -> int:
    """Windows along one axis, by closed form (not by enumerating starts like the library does).

    The regular starts are 0, s, ..., floor((L-c)/s)*s; the margin left after the last one is
    (L-c) mod s, and one border-aligned crop is added when that margin exceeds thresh.
    """
    if length < crop:
        return 1 if length >= min_size else 0
    return (length - crop) // step + 1 + (1 if (length - crop) % step > thresh else 0)


def test_reference_examples():
    # DIV2K 0001.png is 2040x1356; docs/Training.md crops DF2K_multiscale with 400/200, thresh 0.
    # Columns: 0..1600 step 200, then 2040-2000 = 40 > 0 adds 1640. Rows: 0..800, then 1356-1200 = 156 > 0 adds 956.
    assert crop_starts(2040, 400, 200, 0) == [0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1640]
    assert crop_starts(1356, 400, 200, 0) == [0, 200, 400, 600, 800, 956]
    assert len(crop_boxes(1356, 2040, CropConfig(400, 200, 0, 256))) == 60
    # The script's own defaults (480/240, thresh 0) on the same image.
    assert crop_starts(2040, 480, 240, 0) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    # A margin not above thresh adds no border crop.
    assert crop_starts(1050, 400, 200, 50) == [0, 200, 400, 600]
    assert crop_starts(1050, 400, 200, 49) == [0, 200, 400, 600, 650]
    assert crop_starts(400, 400, 200, 0) == [0]
    assert crop_starts(399, 400, 200, 0) == []


def test_small_image_rule():
    cfg = CropConfig(400, 200, 0, 256)
    assert crop_boxes(300, 300, cfg) == crop_boxes(300, 300, cfg)[:1]  # kept whole: one box
    (box,) = crop_boxes(300, 350, cfg)
    assert (box.top, box.left, box.height, box.width) == (0, 0, 300, 350)
    # One side long, one short: crops along the long side, whole along the short one.
    boxes = crop_boxes(300, 900, cfg)
    assert [(b.left, b.width, b.height) for b in boxes] == [(0, 400, 300), (200, 400, 300), (400, 400, 300),
                                                          (500, 400, 300)]
    assert crop_boxes(255, 900, cfg) == []
    assert crop_boxes(900, 255, cfg) == []
    assert crop_windows(256, cfg) == [(0, 256)]


@given(length=st.integers(1, 3000), crop=st.integers(1, 600), step=st.integers(1, 600),
       thresh=st.integers(0, 300), min_frac=st.floats(0.01, 1.0))
def test_count_matches_closed_form(length, crop, step, thresh, min_frac):
    min_size = max(1, int(crop * min_frac))
    cfg = CropConfig(crop, step, thresh, min_size)
    assert len(crop_windows(length, cfg)) == expected_count(length, crop, step, thresh, min_size)


@given(length=st.integers(1, 2000), crop=st.integers(1, 500), step=st.integers(1, 500))
def test_windows_are_in_bounds_sorted_and_cover_with_thresh_zero(length, crop, step):
    starts = crop_starts(length, crop, step, 0)
    if length < crop:
        assert starts == []
        return
    assert starts == sorted(set(starts))
    assert all(0 <= s <= length - crop for s in starts)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + crop] = True
    if step <= crop:
        assert covered.all()  # thresh 0: the border-aligned crop closes every gap at the end
    assert starts[-1] + crop == length  # thresh 0: the last crop is aligned with the border


@given(h=st.integers(1, 700), w=st.integers(1, 700))
def test_boxes_are_row_major_product(h, w):
    cfg = CropConfig(200, 150, 0, 100)
    boxes = crop_boxes(h, w, cfg)
    rows, cols = crop_windows(h, cfg), crop_windows(w, cfg)
    assert len(boxes) == len(rows) * len(cols)
    assert [(b.top, b.left) for b in boxes] == [(r, c) for r, _ in rows for c, _ in cols]
    assert all(b.top + b.height <= h and b.left + b.width <= w for b in boxes)


@pytest.mark.parametrize("kwargs, message", [
    ({"crop_size": 0}, "crop_size and step"),
    ({"step": 0}, "crop_size and step"),
    ({"thresh": -1}, "thresh"),
    ({"min_size": 500}, "min_size"),
    ({"min_size": 0}, "min_size"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CropConfig(**kwargs)
