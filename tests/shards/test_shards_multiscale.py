"""Multiscale variants (Real-ESRGAN scripts/generate_multiscale_DF2K.py, ref. §5.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from shards.multiscale import (
    ORIGINAL_ONLY,
    MultiscaleConfig,
    parse_scales,
    plan_variants,
    render_variant,
    scale_label,
)


def reference_sizes(w: int, h: int) -> list[tuple[int, int]]:
    """Sizes the reference script writes for one image: T0..T2 by int(w*s), T3 by the shortest-edge rule."""
    sizes = [(int(w * s), int(h * s)) for s in [0.75, 0.5, 1 / 3]]
    sizes.append((400, int(400 * h / w)) if w < h else (int(400 * w / h), 400))
    return sizes


@given(w=st.integers(401, 3000), h=st.integers(401, 3000))
def test_sizes_match_reference_script(w, h):
    variants = plan_variants(w, h, MultiscaleConfig())
    assert (variants[0].label, variants[0].width, variants[0].height) == ("orig", w, h)
    assert [(v.width, v.height) for v in variants[1:]] == reference_sizes(w, h)


def test_literal_div2k_sizes():
    # DIV2K 0001.png is 2040x1356: int(2040*0.75)=1530, int(1356*0.75)=1017, int(2040/3)=680, int(1356/3)=452,
    # shortest edge 400: int(400*2040/1356)=int(601.77)=601.
    sizes = [(v.label, v.width, v.height) for v in plan_variants(2040, 1356, MultiscaleConfig())]
    assert sizes == [("orig", 2040, 1356), ("s0750", 1530, 1017), ("s0500", 1020, 678), ("s0333", 680, 452),
                     ("e400", 601, 400)]
    # Portrait image: w < h branch.
    assert plan_variants(1356, 2040, MultiscaleConfig())[-1].width == 400
    assert plan_variants(1356, 2040, MultiscaleConfig())[-1].height == 601


def test_no_upscaling_shortest_edge_and_options():
    assert [v.label for v in plan_variants(600, 400, MultiscaleConfig())] == ["orig", "s0750", "s0500", "s0333"]
    assert [v.label for v in plan_variants(600, 401, MultiscaleConfig())][-1] == "e400"
    assert [v.label for v in plan_variants(900, 800, ORIGINAL_ONLY)] == ["orig"]
    no_orig = MultiscaleConfig(scales=(1.0, 0.5), shortest_edge=0, keep_original=False)
    assert [v.label for v in plan_variants(900, 800, no_orig)] == ["s1000", "s0500"]
    dup = MultiscaleConfig(scales=(1.0, 0.5), shortest_edge=0, keep_original=True)
    assert [v.label for v in plan_variants(900, 800, dup)] == ["orig", "s0500"]
    # 600x400: the shortest-edge-200 copy is 300x200, the size of the 0.5 copy: made once.
    same = MultiscaleConfig(scales=(0.5,), shortest_edge=200)
    assert [(v.label, v.width, v.height) for v in plan_variants(600, 400, same)] == [("orig", 600, 400),
                                                                                  ("s0500", 300, 200)]


def test_render_is_pil_lanczos(synth):
    rgb = synth.synthetic_rgb(123, 157, seed=3)
    for variant in plan_variants(157, 123, MultiscaleConfig(shortest_edge=100)):
        out = render_variant(rgb, variant)
        assert out.shape == (variant.height, variant.width, 3) and out.dtype == np.uint8
        expected = np.asarray(Image.fromarray(rgb).resize((variant.width, variant.height), Image.LANCZOS))
        np.testing.assert_array_equal(out, expected)
    assert render_variant(rgb, plan_variants(157, 123, ORIGINAL_ONLY)[0]) is rgb


def test_parse_scales_and_labels():
    assert parse_scales("0.75,0.5,1/3") == (0.75, 0.5, 1 / 3)
    assert parse_scales(" 0.5 , ") == (0.5,)
    assert parse_scales("") == ()
    assert [scale_label(s) for s in (0.75, 0.5, 1 / 3, 1.0)] == ["s0750", "s0500", "s0333", "s1000"]
    with pytest.raises(ValueError, match="cannot read scale factors"):
        parse_scales("0.5,half")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MultiscaleConfig(scales=(1.5,))
