"""Library misuse fails at the entry point with the fix in the message (issue 14 item 5)."""

from __future__ import annotations

import math

import pytest
import torch

import degrade
from degrade import kernels

CFG = degrade.DegradationConfig()


def _gt(seed=0, size=64):
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_uint8_input_is_a_type_error_that_says_how_to_convert():
    gt = (_gt() * 255).round().to(torch.uint8)
    for call in (lambda: degrade.degrade(gt, CFG, torch.Generator().manual_seed(0)),
                 lambda: degrade.usm_sharpen(gt),
                 lambda: degrade.filter2d(gt, kernels.gaussian_kernel(7, 1.0, 1.0, 0.0)),
                 lambda: degrade.resize(gt, 32),
                 lambda: degrade.jpeg_compress(gt, 50),
                 lambda: degrade.add_gaussian_noise(gt, 5.0, False, torch.Generator().manual_seed(0))):
        with pytest.raises(TypeError, match=r"torch.uint8.*images?.float\(\) / 255"):
            call()


def test_0_255_floats_are_refused_instead_of_clamped_to_garbage():
    with pytest.raises(ValueError, match=r"span \[0\.\d+, 25\d.*\[0, 1\].*divide by 255"):
        degrade.degrade(_gt() * 255, CFG, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="clamp"):
        degrade.usm_sharpen(_gt() * 1.01)


def test_a_nan_pixel_is_reported_not_silently_dropped():
    gt = _gt()
    gt[1, 2, 10, 20] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/infinite values"):
        degrade.degrade(gt, CFG, torch.Generator().manual_seed(0))
    params = degrade.sample_params(CFG, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="NaN"):
        degrade.apply(gt, params, CFG)


@pytest.mark.parametrize("build", [
    lambda: kernels.gaussian_kernel(7, 0.0, 1.0, 0.0),
    lambda: kernels.gaussian_kernel(7, 1.0, torch.tensor([1.0, 0.0]), 0.0),
    lambda: kernels.generalized_gaussian_kernel(7, 0.0, 0.0, 0.0, 1.0),
    lambda: kernels.plateau_kernel(7, 1.0, 0.0, 0.0, 1.0),
    lambda: kernels.sinc_kernel(7, 0.0),
    lambda: kernels.mixed_kernels(torch.tensor([0, 6]), torch.tensor([7, 7]), torch.tensor([1.0, 1.0]),
                                  torch.tensor([1.0, 1.0]), torch.zeros(2), torch.ones(2),
                                  torch.tensor([math.pi, 0.0]), 7),  # the sinc sample has cutoff 0
])
def test_zero_sigma_or_cutoff_is_an_error_not_an_all_nan_kernel(build):
    with pytest.raises(ValueError, match="must be finite and > 0"):
        build()


def test_valid_edge_values_still_work():
    assert torch.isfinite(kernels.sinc_kernel(7, math.pi)).all()
    # placeholder sigmas of sinc samples (0) are allowed: only the sinc cutoff is used there
    k = kernels.mixed_kernels(torch.tensor([6]), torch.tensor([7]), torch.zeros(1), torch.zeros(1), torch.zeros(1),
                              torch.ones(1), torch.tensor([math.pi / 2]), 7)
    assert torch.isfinite(k).all() and abs(float(k.sum()) - 1) < 1e-6
    lq, _ = degrade.degrade(torch.zeros(1, 3, 64, 64), CFG, torch.Generator().manual_seed(0))  # exactly 0 and 1
    lq1, _ = degrade.degrade(torch.ones(1, 3, 64, 64), CFG, torch.Generator().manual_seed(0))
    assert lq.shape == lq1.shape == (1, 3, 16, 16)


def test_float16_on_the_cpu_is_refused_with_the_fix():
    gt = _gt().half()
    with pytest.raises(ValueError, match=r"float16 on the CPU.*images.float\(\)"):
        degrade.filter2d(gt, kernels.gaussian_kernel(15, 2.0, 2.0, 0.0))
    with pytest.raises(ValueError, match="float16 on the CPU"):
        degrade.degrade(gt, CFG, torch.Generator().manual_seed(0))
