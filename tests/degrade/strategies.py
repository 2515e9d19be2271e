"""Hypothesis strategies for valid degradation configs."""

from __future__ import annotations

from hypothesis import strategies as st

from degrade.config import DegradationConfig, StageConfig

_ranges = st.tuples(st.floats(0.05, 2.0), st.floats(0.0, 2.0)).map(lambda t: (t[0], t[0] + t[1]))


@st.composite
def stage_configs(draw):
    weights = draw(st.lists(st.integers(1, 9), min_size=6, max_size=6))
    probs = tuple(w / sum(weights) for w in weights)
    probs = probs[:-1] + (1.0 - sum(probs[:-1]),)
    resize = draw(st.lists(st.integers(0, 5), min_size=3, max_size=3).filter(lambda v: sum(v) > 0))
    lo_scale, hi_scale = draw(st.floats(0.1, 1.0)), draw(st.floats(1.0, 2.0))
    return StageConfig(
        kernel_prob=probs,
        kernel_sizes=tuple(sorted(draw(st.sets(st.sampled_from([3, 5, 7, 9, 11, 13, 21]), min_size=1)))),
        sinc_prob=draw(st.floats(0, 1)),
        blur_sigma=draw(_ranges),
        blur_prob=draw(st.floats(0, 1)),
        resize_prob=(resize[0] / sum(resize), resize[1] / sum(resize), 1 - (resize[0] + resize[1]) / sum(resize)),
        resize_range=(lo_scale, hi_scale),
        noise_range=draw(_ranges),
        poisson_scale_range=draw(_ranges),
        gray_noise_prob=draw(st.floats(0, 1)),
        jpeg_range=tuple(sorted(draw(st.tuples(st.floats(1, 100), st.floats(1, 100))))),
        resize_relative_to=draw(st.sampled_from(["input", "target"])),
    )


@st.composite
def degradation_configs(draw):
    return DegradationConfig(stages=tuple(draw(st.lists(stage_configs(), min_size=1, max_size=3))),
                             scale=draw(st.sampled_from([1, 2, 4])), per_sample=draw(st.booleans()),
                             final_sinc_prob=draw(st.floats(0, 1)))
