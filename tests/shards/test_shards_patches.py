"""Streaming one image's patches: planned from sizes, rendered lazily, spooled without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shards import decode
from shards.crop import CropConfig, crop_boxes
from shards.multiscale import MultiscaleConfig, plan_variants, render_variant
from shards.patches import PatchPlan, open_image, process_image, read_spool
from shards.sources import SourceFile

PLAN = PatchPlan(CropConfig(160, 96, 10, 100), MultiscaleConfig((0.75, 0.5), 150, True), 3)


@pytest.fixture
def source(tmp_path: Path, synth) -> tuple[SourceFile, np.ndarray]:
    rgb = synth.synthetic_rgb(330, 410, 7)
    path = synth.write_rgb(tmp_path / "a.png", rgb)
    return SourceFile("mine", path, "mine/a.png", True), rgb


def expected_patches(rgb: np.ndarray) -> list[np.ndarray]:
    """Every crop of every variant, computed directly from crop_boxes/render_variant."""
    out = []
    for variant in plan_variants(rgb.shape[1], rgb.shape[0], PLAN.variants):
        pixels = render_variant(rgb, variant)
        out += [pixels[b.top : b.top + b.height, b.left : b.left + b.width]
                for b in crop_boxes(variant.height, variant.width, PLAN.crop)]
    return out


def test_in_memory_spooled_and_partial_agree(source, tmp_path: Path):
    src, rgb = source
    expected = expected_patches(rgb)
    whole = process_image(src, PLAN)
    assert whole.count == len(whole.patches) == len(expected) > 10 and whole.spool is None
    for (meta, png), want in zip(whole.patches, expected, strict=True):
        np.testing.assert_array_equal(decode.decode_image(png).rgb, want)
        assert meta["source"] == "mine/a.png"
    spooled = process_image(src, PLAN, tmp_path / "s.spool")
    assert spooled.patches == [] and spooled.count == whole.count
    assert list(read_spool(Path(spooled.spool))) == whole.patches  # same metadata and bytes after the JSON trip
    assert not (tmp_path / "s.spool").exists()  # deleted once read
    start = whole.count - 3  # resuming inside the last variant: only its tail is encoded
    tail = process_image(src, PLAN, tmp_path / "t.spool", start=start)
    assert tail.count == whole.count and list(read_spool(Path(tail.spool))) == whole.patches[start:]


def test_count_is_known_before_rendering(source, monkeypatch):
    src, rgb = source
    import shards.patches as patches

    monkeypatch.setattr(patches, "render_variant", lambda *a: pytest.fail("rendered while planning"))
    result, opened = open_image(src, PLAN)
    assert opened is not None and result.count == len(expected_patches(rgb))


def test_truncated_spool_is_an_error(source, tmp_path: Path):
    src, _ = source
    result = process_image(src, PLAN, tmp_path / "s.spool")
    data = Path(result.spool).read_bytes()
    Path(result.spool).write_bytes(data[:-5])
    with pytest.raises(OSError, match="truncated"):
        list(read_spool(Path(result.spool)))
