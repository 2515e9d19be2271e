"""Gaussian and Poisson noise: statistics with tolerances from theory, per-sample seeding, gray noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.noise import (
    _sample_poisson_numpy,
    _sample_poisson_torch,
    _shot_noise_numpy,
    _shot_noise_torch,
    add_gaussian_noise,
    add_poisson_noise,
    poisson_alias_table,
    poisson_levels,
    rgb_to_gray,
    sample_poisson_codes,
)

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
    codes = (q * 255).round().long()
    levels = int(poisson_levels(codes)[0])
    shot = sample_poisson_codes(codes, levels, torch.Generator().manual_seed(9)) / levels
    torch.testing.assert_close(noise[0, 0], (shot - q)[0, 0])


@pytest.mark.parametrize("levels", [1, 8, 256])
def test_alias_tables_hold_exactly_the_poisson_distribution(levels):
    # The distribution an alias table draws from: P(j) = (prob[j] + Σ_{i: alias[i] = j} (1 − prob[i])) / K.
    probability, alias = poisson_alias_table(levels)
    size = probability.shape[1]
    for code in (0, 1, 77, 128, 255):
        implied = probability[code].clone()
        implied.index_add_(0, alias[code], 1 - probability[code])
        implied -= torch.where(alias[code] == torch.arange(size), 1 - probability[code], 0.0)  # self-aliases add 0
        expected = scipy.stats.poisson.pmf(np.arange(size), code / 255 * levels)
        np.testing.assert_allclose(implied.numpy() / size, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("code,levels", [(3, 256), (128, 256), (255, 256), (200, 16), (255, 1)])
def test_poisson_draws_follow_the_pmf(code, levels):
    # Pearson χ² over the bins with ≥ 5 expected counts (tails pooled): mean = df, sd = sqrt(2·df); allow 6 sd.
    n = 200_000
    counts = sample_poisson_codes(torch.full((n,), code), levels, _gen(code + levels)).numpy()
    rate = code / 255 * levels
    lo, hi = int(scipy.stats.poisson.ppf(1e-4, rate)), int(scipy.stats.poisson.ppf(1 - 1e-4, rate))
    edges = np.arange(lo, hi + 2)
    observed = np.array([np.sum(counts < lo), *np.histogram(counts, bins=edges)[0], np.sum(counts > hi)])
    expected = n * np.array([scipy.stats.poisson.cdf(lo - 1, rate), *scipy.stats.poisson.pmf(edges[:-1], rate),
                             scipy.stats.poisson.sf(hi, rate)])
    keep = expected >= 5
    chi2 = float(np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep]))
    rest_observed, rest_expected = observed[~keep].sum(), expected[~keep].sum()  # bins too rare for χ²
    assert rest_observed <= rest_expected + 5 * math.sqrt(rest_expected) + 3
    df = int(keep.sum()) - 1
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)
    assert abs(counts.mean() - rate) < 5 * math.sqrt(rate / n) + 1e-12


def test_alias_table_rejects_level_counts_that_are_not_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        poisson_alias_table(3)


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


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numpy_cpu_path_equals_the_torch_path_bit_for_bit(gray, dtype):
    # CPU samples run through numpy; other devices through the torch code, which is checked here on CPU.
    images = torch.rand(3, 3, 40, 50, generator=_gen(10), dtype=dtype)
    images[1] = torch.round(images[1] * 8) / 8  # few distinct codes: a small level count
    for i, scale in enumerate((0.05, 1.0, 3.0)):
        ours = _shot_noise_numpy(images[i].numpy(), gray, scale, _gen(20 + i))
        theirs = _shot_noise_torch(images[i], gray, scale, _gen(20 + i))
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_array_equal(ours, theirs.numpy())
    codes = torch.randint(0, 256, (1000,), generator=_gen(11))
    np.testing.assert_array_equal(_sample_poisson_numpy(codes.numpy(), 64, _gen(12)),
                                  _sample_poisson_torch(codes, 64, _gen(12)).numpy())
