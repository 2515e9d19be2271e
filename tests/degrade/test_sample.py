"""Samplers: ranges (hypothesis), frequencies against the configured probabilities, granularity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.config import DegradationConfig
from degrade.kernels import KERNEL_FAMILIES
from degrade.params import DegradationParams
from degrade.resize import RESIZE_MODES
from degrade.sample import sample_params
from tests.degrade.strategies import degradation_configs

N = 20000


def _params(cfg, batch, seed=0):
    return sample_params(cfg, batch, torch.Generator().manual_seed(seed))


def _within(tensor, low, high):
    return bool(torch.all((tensor >= low) & (tensor <= high)))


def _assert_frequency(observed: torch.Tensor, p: float) -> None:
    """Empirical frequency within 5 binomial standard errors of p."""
    n = observed.numel()
    tolerance = 5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12
    assert abs(observed.double().mean().item() - p) <= tolerance, (observed.double().mean().item(), p)


@given(degradation_configs(), st.integers(1, 6), st.integers(0, 2**31))
def test_property_every_draw_is_inside_its_configured_range(cfg, batch, seed):
    params = _params(cfg, batch, seed)
    assert params.batch_size == batch and len(params.stages) == cfg.order
    for stage_cfg, p in zip(cfg.stages, params.stages, strict=True):
        mixture = p.kernel_family != KERNEL_FAMILIES.index("sinc")
        allowed = torch.tensor([KERNEL_FAMILIES.index(k) for k in stage_cfg.kernel_list])
        assert bool(torch.isin(p.kernel_family[mixture], allowed).all())
        assert bool(torch.isin(p.kernel_size, torch.tensor(stage_cfg.kernel_sizes)).all())
        assert _within(p.sigma_x[mixture], *stage_cfg.blur_sigma) and _within(p.sigma_y[mixture], *stage_cfg.blur_sigma)
        assert _within(p.theta, *stage_cfg.rotation_range)
        sinc = ~mixture
        assert _within(p.sinc_cutoff[sinc], stage_cfg.sinc_cutoff_large[0], math.pi)
        up, down, keep = (p.resize_type == 0), (p.resize_type == 1), (p.resize_type == 2)
        assert _within(p.resize_scale[up], 1.0, stage_cfg.resize_range[1])
        assert _within(p.resize_scale[down], stage_cfg.resize_range[0], 1.0)
        assert bool(torch.all(p.resize_scale[keep] == 1.0))
        modes = torch.tensor([RESIZE_MODES.index(m) for m in stage_cfg.resize_modes])
        assert bool(torch.isin(p.resize_mode, modes).all())
        gaussian = p.noise_type == 0
        assert _within(p.noise_level[gaussian], *stage_cfg.noise_range)
        assert _within(p.noise_level[~gaussian], *stage_cfg.poisson_scale_range)
        assert _within(p.jpeg_quality, *stage_cfg.jpeg_range)
    f = params.final
    assert _within(f.sinc_cutoff[f.sinc_applied], *cfg.final_sinc_cutoff)
    assert bool(torch.isin(f.sinc_size[f.sinc_applied], torch.tensor(cfg.final_sinc_sizes)).all())


@given(degradation_configs(), st.integers(0, 2**31))
def test_property_sampling_is_deterministic_per_seed(cfg, seed):
    assert _params(cfg, 3, seed).records() == _params(cfg, 3, seed).records()


def test_different_seeds_draw_different_parameters():
    cfg = DegradationConfig()
    assert _params(cfg, 4, 0).records() != _params(cfg, 4, 1).records()


def test_kernel_family_frequencies_match_probabilities():
    cfg = DegradationConfig()
    params = _params(cfg, N, 1)
    for stage_cfg, p in zip(cfg.stages, params.stages, strict=True):
        _assert_frequency(p.kernel_family == KERNEL_FAMILIES.index("sinc"), stage_cfg.sinc_prob)
        for name, prob in zip(stage_cfg.kernel_list, stage_cfg.kernel_prob, strict=True):
            _assert_frequency(p.kernel_family == KERNEL_FAMILIES.index(name), (1 - stage_cfg.sinc_prob) * prob)
        _assert_frequency(p.noise_gray, stage_cfg.gray_noise_prob)
        _assert_frequency(torch.isin(p.kernel_size, torch.tensor([7, 9])), 2 / 8)
    _assert_frequency(params.final.sinc_applied, cfg.final_sinc_prob)


def test_per_batch_choices_follow_their_probabilities_across_batches():
    cfg = DegradationConfig()
    batches = [_params(cfg, 2, seed) for seed in range(1500)]
    for k, stage_cfg in enumerate(cfg.stages):
        resize_types = torch.stack([b.stages[k].resize_type[0] for b in batches])
        for t, prob in enumerate(stage_cfg.resize_prob):
            _assert_frequency(resize_types == t, prob)
        _assert_frequency(torch.stack([b.stages[k].noise_type[0] == 0 for b in batches]), stage_cfg.gaussian_noise_prob)
        _assert_frequency(torch.stack([b.stages[k].blur_applied[0] for b in batches]), stage_cfg.blur_prob)
        modes = torch.stack([b.stages[k].resize_mode[0] for b in batches])
        _assert_frequency(modes == RESIZE_MODES.index("area"), 1 / 3)
    _assert_frequency(torch.stack([b.final.order[0] == 0 for b in batches]), cfg.final_order_prob)


def test_per_sample_switch_draws_choices_per_sample_with_the_same_probabilities():
    cfg = DegradationConfig(per_sample=True)
    p = _params(cfg, N, 2)
    for k, stage_cfg in enumerate(cfg.stages):
        for t, prob in enumerate(stage_cfg.resize_prob):
            _assert_frequency(p.stages[k].resize_type == t, prob)
        _assert_frequency(p.stages[k].noise_type == 0, stage_cfg.gaussian_noise_prob)
        _assert_frequency(p.stages[k].blur_applied, stage_cfg.blur_prob)
    _assert_frequency(p.final.order == 0, cfg.final_order_prob)


def test_reference_granularity_shares_batch_choices_and_keeps_per_sample_ones():
    p = _params(DegradationConfig(), 64, 3)
    for s in p.stages:
        for field in (s.resize_type, s.resize_scale, s.resize_mode, s.noise_type, s.blur_applied):
            assert bool(torch.all(field == field[0]))
        for field in (s.jpeg_quality, s.noise_level, s.noise_seed, s.sigma_x):
            assert field.unique().numel() > 1
    assert bool(torch.all(p.final.order == p.final.order[0]))


def test_beta_draws_follow_the_reference_split():
    # Reference §2.5: β ~ U(low, 1) or U(1, high) with p = 0.5; for betap [1, 2] half are exactly 1.
    p = _params(DegradationConfig(), N, 4).stages[0]
    plateau = torch.isin(p.kernel_family, torch.tensor([KERNEL_FAMILIES.index("plateau_iso"),
                                                       KERNEL_FAMILIES.index("plateau_aniso")]))
    _assert_frequency(p.beta[plateau] == 1.0, 0.5)
    generalized = torch.isin(p.kernel_family, torch.tensor([KERNEL_FAMILIES.index("generalized_iso"),
                                                           KERNEL_FAMILIES.index("generalized_aniso")]))
    _assert_frequency(p.beta[generalized] < 1.0, 0.5)
    assert _within(p.beta[generalized], 0.5, 4.0)


def test_sinc_cutoff_depends_on_kernel_size_as_in_the_reference():
    p = _params(DegradationConfig(), N, 5).stages[0]
    sinc = p.kernel_family == KERNEL_FAMILIES.index("sinc")
    small = sinc & (p.kernel_size < 13)
    assert _within(p.sinc_cutoff[small], math.pi / 3, math.pi)
    large = p.sinc_cutoff[sinc & (p.kernel_size >= 13)]
    assert large.min() < math.pi / 3  # U(π/5, π) reaches below π/3 in 20000 draws
    _assert_frequency(large < math.pi / 3, (math.pi / 3 - math.pi / 5) / (math.pi - math.pi / 5))


def test_records_round_trip_through_json():
    import json

    p = _params(DegradationConfig(per_sample=True).with_order(3), 8, 6)
    again = DegradationParams.from_records(json.loads(json.dumps(p.records())))
    assert again.records() == p.records()


def test_sampling_requires_a_cpu_generator_and_a_positive_batch():
    with pytest.raises(ValueError, match="at least 1"):
        _params(DegradationConfig(), 0)
