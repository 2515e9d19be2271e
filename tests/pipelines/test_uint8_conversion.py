"""pipelines.common.rgb_to_tensor / tensor_to_rgb: the one uint8 <-> tensor conversion of the jobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.common import rgb_to_tensor, tensor_to_rgb


def test_to_tensor_is_k_over_255_in_float32_nchw():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = rgb_to_tensor(rgb)
    assert tensor.shape == (1, 3, 5, 7) and tensor.dtype == torch.float32
    expected = rgb.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)  # IEEE division, as torch's
    assert np.array_equal(tensor.numpy(), expected)
    flipped = rgb[:, ::-1]  # a negative-stride view (OpenCV BGR->RGB by slicing) is accepted
    assert np.array_equal(rgb_to_tensor(flipped, "cpu").numpy(), flipped.transpose(2, 0, 1)[None] / np.float32(255))


def test_every_code_survives_the_round_trip():
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(tensor_to_rgb(rgb_to_tensor(codes)), codes)


def test_to_rgb_clamps_and_rounds_half_to_even_in_float32():
    # exact halves k + 0.5 (representable in float32 after * 255 for these k) round to the even neighbour
    halves = torch.tensor([0.5, 1.5, 2.5, 253.5, 254.5], dtype=torch.float64) / 255
    x = torch.cat([halves, torch.tensor([-3.0, -1e-6, 1.0 + 1e-6, 7.0, float("inf")], dtype=torch.float64)])
    image = x.reshape(1, 10, 1).expand(3, 10, 1)  # (3, H, W)
    out = tensor_to_rgb(image)
    expected = np.round(np.clip(x.numpy().astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8)
    assert out.shape == (10, 1, 3) and out.flags.c_contiguous
    assert np.array_equal(out[:, 0, 0], expected)
    assert list(out[:5, 0, 0]) == [0, 2, 2, 254, 254] and list(out[5:, 0, 0]) == [0, 0, 255, 255, 255]
    assert np.array_equal(tensor_to_rgb(image[None]), out)  # (1, 3, H, W) is the same image
    with pytest.raises(ValueError, match="one image, got a batch of 2"):
        tensor_to_rgb(torch.zeros(2, 3, 4, 4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.5, 1.5, width=32), min_size=1, max_size=64))
def test_property_clamp_then_round_equals_round_then_clamp(values):
    # pipelines/data_jobs/pairs.py rounded first and clamped to 0..255 after; the shared function clamps first
    x = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1).expand(3, -1, 1)
    old = (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(tensor_to_rgb(x), old)
