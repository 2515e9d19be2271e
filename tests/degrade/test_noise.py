"""Gaussian and Poisson noise: statistics with tolerances from theory, per-sample seeding, gray noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.noise import add_gaussian_noise, add_poisson_noise, poisson_levels, rgb_to_gray

N_SIDE = 256


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_standard_deviation_matches_sigma():
    images = torch.full((2, 3, N_SIDE, N_SIDE), 0.5, dtype=torch.float64)
    sigma = torch.tensor([5.0, 25.0])
    noise = add_gaussian_noise(images, sigma, False, _gen(0), clip=False) - images
    n = noise[0].numel()
    for b in range(2):
        expected = sigma[b].item() / 255
        # The sample std of n normals has relative standard error ≈ 1/sqrt(2n); allow 5 of them.
        assert noise[b].std().item() == pytest.approx(expected, rel=5 / math.sqrt(2 * n))
        assert abs(noise[b].mean().item()) < 5 * expected / math.sqrt(n)


def test_gray_noise_is_shared_by_channels_and_colour_noise_is_not():
    images = torch.full((2, 3, 64, 64), 0.5)
    noisy = add_gaussian_noise(images, 10.0, torch.tensor([True, False]), _gen(1), clip=False)
    assert torch.equal(noisy[0, 0], noisy[0, 1]) and torch.equal(noisy[0, 1], noisy[0, 2])
    assert not torch.equal(noisy[1, 0], noisy[1, 1])


def test_noise_of_a_sample_does_not_depend_on_its_batch():
    g = _gen(2)
    images = torch.rand(4, 3, 32, 32, generator=g)
    seeds = torch.tensor([11, 22, 33, 44])
    sigma, gray = torch.tensor([3.0, 9.0, 20.0, 30.0]), torch.tensor([True, False, True, False])
    batch = add_gaussian_noise(images, sigma, gray, seeds)
    shot = add_poisson_noise(images, sigma / 10, gray, seeds)
    for i in range(4):
        assert torch.equal(add_gaussian_noise(images[i : i + 1], sigma[i], gray[i], seeds[i : i + 1])[0], batch[i])
        assert torch.equal(add_poisson_noise(images[i : i + 1], sigma[i] / 10, gray[i], seeds[i : i + 1])[0], shot[i])


def test_same_seed_same_noise_and_different_seed_different_noise():
    images = torch.rand(1, 3, 16, 16, generator=_gen(3))
    a = add_gaussian_noise(images, 10.0, False, torch.tensor([7]))
    assert torch.equal(a, add_gaussian_noise(images, 10.0, False, torch.tensor([7])))
    assert not torch.equal(a, add_gaussian_noise(images, 10.0, False, torch.tensor([8])))


def test_zero_level_is_identity_and_clip_keeps_range():
    images = torch.rand(2, 3, 16, 16, generator=_gen(4))
    assert torch.equal(add_gaussian_noise(images, 0.0, False, _gen(0)), images)
    assert torch.equal(add_poisson_noise(images, 0.0, True, _gen(0)), images)
    loud = add_gaussian_noise(images, 200.0, False, _gen(0))
    assert loud.min() >= 0 and loud.max() <= 1


def test_poisson_levels_equal_unique_count_rounded_to_power_of_two():
    g = _gen(5)
    codes = torch.stack([torch.randint(0, k, (3, 20, 20), generator=g) for k in (1, 2, 3, 100, 256)])
    levels = poisson_levels(codes)
    for b in range(codes.shape[0]):
        distinct = torch.unique(codes[b]).numel()
        assert levels[b].item() == 2 ** math.ceil(math.log2(distinct))


def test_poisson_noise_mean_and_variance_match_theory():
    # Every 8-bit code present → 256 levels; Poisson(q·256)/256 − q has mean 0 and variance q/256.
    g = _gen(6)
    codes = torch.randint(0, 256, (1, 3, N_SIDE, N_SIDE), generator=g)
    codes[0, 0, 0, :256] = torch.arange(256)
    images = codes.double() / 255
    scale = 2.0
    noise = (add_poisson_noise(images, scale, False, _gen(7), clip=False) - images) / scale
    n = noise.numel()
    expected_var = (images.mean() / 256).item()
    assert abs(noise.mean().item()) < 5 * math.sqrt(expected_var / n)
    # Var of the sample variance of a (nearly normal, λ ≥ ~1) variable ≈ 2σ⁴/n; allow 6 standard errors
    # plus the excess-kurtosis term of the Poisson (1/λ ≥ 1/256 relative).
    assert noise.var().item() == pytest.approx(expected_var, rel=6 * math.sqrt(2 / n) + 0.01)


def test_gray_poisson_noise_is_computed_on_luma_and_shared():
    images = torch.rand(1, 3, 64, 64, generator=_gen(8), dtype=torch.float64)
    noisy = add_poisson_noise(images, 1.0, True, torch.tensor([9]), clip=False)
    noise = noisy - images
    assert torch.allclose(noise[0, 0], noise[0, 1]) and torch.allclose(noise[0, 1], noise[0, 2])
    # The same draw, rebuilt by hand from the luma with the sample's generator.
    gray = rgb_to_gray(images)
    q = torch.clamp(torch.round(gray * 255), 0, 255) / 255
    levels = float(poisson_levels((q * 255).round().long())[0])
    shot = torch.poisson(q * levels, generator=torch.Generator().manual_seed(9)) / levels
    torch.testing.assert_close(noise[0, 0], (shot - q)[0, 0])


def test_rgb_to_gray_weights():
    rgb = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert rgb_to_gray(rgb).item() == pytest.approx(0.2989)


@given(batch=st.integers(1, 3), side=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_property_shapes_and_range(batch, side, seed):
    images = torch.rand(batch, 3, side, side, generator=_gen(seed))
    for add in (add_gaussian_noise, add_poisson_noise):
        out = add(images, torch.full((batch,), 2.0), torch.zeros(batch, dtype=torch.bool), _gen(seed))
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


def test_errors():
    with pytest.raises(ValueError, match="noise seeds"):
        add_gaussian_noise(torch.zeros(2, 3, 4, 4), 1.0, False, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="one value per sample"):
        add_gaussian_noise(torch.zeros(2, 3, 4, 4), torch.ones(3), False, _gen(0))
    with pytest.raises(ValueError, match="Generator"):
        add_poisson_noise(torch.zeros(1, 3, 4, 4), 1.0, False, None)


def test_noise_runs_on_the_images_device(device):
    images = torch.rand(2, 3, 8, 8, generator=_gen(0)).to(device)
    noisy = add_gaussian_noise(images, 5.0, False, torch.tensor([1, 2]))
    out = add_poisson_noise(noisy, 1.0, True, torch.tensor([3, 4]))
    assert out.device.type == device.type
