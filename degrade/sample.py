"""Samplers: draw every random choice of the degradation model up front, never touching pixels.

Draws are made on a CPU `torch.Generator` (small tensors; the same seed then gives the same
parameters on any machine) in a fixed order and a fixed number per call, whatever the outcomes, so
the draws of one field never shift those of another. Granularity follows the reference by default
(reference §1.2 "Granularity"): per sample — kernels, noise level, gray flag, JPEG quality, final
sinc; per batch — resize type/scale/mode, Gaussian-vs-Poisson, whether the second blur runs and the
final order. `DegradationConfig.per_sample = True` draws those per sample too.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from degrade.compress import COMPRESSION_TYPES, JPEG_SAMPLINGS
from degrade.config import DegradationConfig, StageConfig
from degrade.kernels import KERNEL_FAMILIES
from degrade.noise import draw_noise_seeds
from degrade.params import DegradationParams, FinalParams, StageParams
from degrade.resize import RESIZE_MODES

__all__ = ["sample_params", "sample_stage", "sample_final", "sample_compression"]


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def _choice(options: int, count: int, generator: torch.Generator, probs: tuple[float, ...] | None = None) -> Tensor:
    """``count`` indices in [0, options), uniform or with ``probs``."""
    weights = torch.ones(options, dtype=torch.float64) if probs is None else torch.tensor(probs, dtype=torch.float64)
    return torch.multinomial(weights, count, replacement=True, generator=generator)


def _bernoulli(prob: float, count: int, generator: torch.Generator) -> Tensor:
    return torch.rand(count, generator=generator, dtype=torch.float64) < prob


def _shared(values: Tensor, batch: int, per_sample: bool) -> Tensor:
    """Per-batch draws are made for one sample and repeated; per-sample draws are kept."""
    return values if per_sample else values[:1].expand(batch).clone()


def _sample_beta(low: float, high: float, count: int, generator: torch.Generator) -> Tensor:
    """β ~ U(low, 1) or U(1, high) with p = 0.5 each (reference §2.5; for betap [1, 2] half are exactly 1)."""
    below = _bernoulli(0.5, count, generator)
    return torch.where(below, _uniform(low, 1.0, count, generator), _uniform(1.0, high, count, generator))


def sample_stage(cfg: StageConfig, batch: int, generator: torch.Generator, per_sample: bool = False) -> StageParams:
    """Draw one stage's parameters for ``batch`` samples."""
    n_batch = batch if per_sample else 1
    sizes = torch.tensor(cfg.kernel_sizes, dtype=torch.int64)[_choice(len(cfg.kernel_sizes), batch, generator)]
    is_sinc = _bernoulli(cfg.sinc_prob, batch, generator)
    mixture = _choice(len(cfg.kernel_list), batch, generator, cfg.kernel_prob)
    mixture_family = torch.tensor([KERNEL_FAMILIES.index(k) for k in cfg.kernel_list], dtype=torch.int64)[mixture]
    family = torch.where(is_sinc, torch.full_like(mixture_family, KERNEL_FAMILIES.index("sinc")), mixture_family)
    sigma_x = _uniform(*cfg.blur_sigma, batch, generator)
    sigma_y = _uniform(*cfg.blur_sigma, batch, generator)
    theta = _uniform(*cfg.rotation_range, batch, generator)
    beta_generalized = _sample_beta(*cfg.betag_range, batch, generator)
    beta_plateau = _sample_beta(*cfg.betap_range, batch, generator)
    is_plateau = (family == KERNEL_FAMILIES.index("plateau_iso")) | (family == KERNEL_FAMILIES.index("plateau_aniso"))
    beta = torch.where(is_plateau, beta_plateau, beta_generalized)
    cutoff = torch.where(sizes < cfg.sinc_large_size, _uniform(*cfg.sinc_cutoff_small, batch, generator),
                         _uniform(*cfg.sinc_cutoff_large, batch, generator))
    blur_applied = _shared(_bernoulli(cfg.blur_prob, n_batch, generator), batch, per_sample)

    resize_type = _shared(_choice(3, n_batch, generator, cfg.resize_prob), batch, per_sample)
    up = _uniform(1.0, cfg.resize_range[1], n_batch, generator)
    down = _uniform(cfg.resize_range[0], 1.0, n_batch, generator)
    scale = torch.where(resize_type[:n_batch] == 0, up, torch.where(resize_type[:n_batch] == 1, down, 1.0))
    mode_index = torch.tensor([RESIZE_MODES.index(m) for m in cfg.resize_modes], dtype=torch.int64)
    resize_mode = _shared(mode_index[_choice(len(cfg.resize_modes), n_batch, generator)], batch, per_sample)

    noise_type = _shared((~_bernoulli(cfg.gaussian_noise_prob, n_batch, generator)).long(), batch, per_sample)
    sigma = _uniform(*cfg.noise_range, batch, generator)
    poisson_scale = _uniform(*cfg.poisson_scale_range, batch, generator)
    gray = _bernoulli(cfg.gray_noise_prob, batch, generator)
    seeds = draw_noise_seeds(batch, generator)
    quality = _uniform(*cfg.jpeg_range, batch, generator)

    return StageParams(
        blur_applied=blur_applied,
        kernel_family=family,
        kernel_size=sizes,
        sigma_x=torch.where(is_sinc, torch.ones_like(sigma_x), sigma_x),
        sigma_y=torch.where(is_sinc, torch.ones_like(sigma_y), sigma_y),
        theta=theta,
        beta=beta,
        sinc_cutoff=torch.where(is_sinc, cutoff, torch.full_like(cutoff, math.pi)),
        resize_type=resize_type,
        resize_scale=_shared(scale, batch, per_sample),
        resize_mode=resize_mode,
        noise_type=noise_type,
        noise_level=torch.where(noise_type == 0, sigma, poisson_scale),
        noise_gray=gray,
        noise_seed=seeds,
        jpeg_quality=quality,
        compression=torch.zeros(batch, dtype=torch.int64),  # JPEG 4:2:0; `sample_compression` draws the mixture
        jpeg_sampling=torch.zeros(batch, dtype=torch.int64),
        webp_quality=torch.zeros(batch, dtype=torch.float64),
        video_crf=torch.zeros(batch, dtype=torch.float64),
    )


def sample_compression(cfg: StageConfig, params: StageParams, generator: torch.Generator) -> StageParams:
    """Draw a stage's compression mixture (codec, JPEG sampling, WebP quality, CRF per sample) into ``params``.

    Called after every other draw of the batch, and only for stages with `StageConfig.extended_compression`,
    so the paper's configs draw exactly what they always drew.
    """
    batch = params.jpeg_quality.shape[0]
    kinds = torch.tensor([COMPRESSION_TYPES.index(k) for k in cfg.compression_types], dtype=torch.int64)
    samplings = torch.tensor([JPEG_SAMPLINGS.index(s) for s in cfg.jpeg_sampling], dtype=torch.int64)
    kind = kinds[_choice(len(kinds), batch, generator, cfg.compression_prob)]
    sampling = samplings[_choice(len(samplings), batch, generator, cfg.jpeg_sampling_prob)]
    webp = _uniform(*cfg.webp_range, batch, generator)
    crf = _uniform(*cfg.video_crf_range, batch, generator)
    return dataclasses.replace(params, compression=kind, jpeg_sampling=sampling, webp_quality=webp, video_crf=crf)


def sample_final(cfg: DegradationConfig, batch: int, generator: torch.Generator) -> FinalParams:
    """Draw the final step's parameters (order, resize mode, final sinc) for ``batch`` samples."""
    n_batch = batch if cfg.per_sample else 1
    order = _shared((~_bernoulli(cfg.final_order_prob, n_batch, generator)).long(), batch, cfg.per_sample)
    mode_index = torch.tensor([RESIZE_MODES.index(m) for m in cfg.final_resize_modes], dtype=torch.int64)
    mode = _shared(mode_index[_choice(len(cfg.final_resize_modes), n_batch, generator)], batch, cfg.per_sample)
    applied = _bernoulli(cfg.final_sinc_prob, batch, generator)
    sizes = torch.tensor(cfg.final_sinc_sizes, dtype=torch.int64)[_choice(len(cfg.final_sinc_sizes), batch, generator)]
    cutoff = _uniform(*cfg.final_sinc_cutoff, batch, generator)
    return FinalParams(order=order, resize_mode=mode, sinc_applied=applied,
                       sinc_size=torch.where(applied, sizes, torch.ones_like(sizes)),
                       sinc_cutoff=torch.where(applied, cutoff, torch.full_like(cutoff, math.pi)))


def sample_params(config: DegradationConfig, batch_size: int, generator: torch.Generator) -> DegradationParams:
    """Draw every random choice for a batch of ``batch_size`` samples.

    Args:
        config: ranges and probabilities.
        batch_size: number of samples.
        generator: a CPU `torch.Generator` (the draws are small; CPU makes them machine-independent).

    Returns:
        `DegradationParams` on CPU; `apply` moves what it needs to the images' device.

    Example:
        >>> params = sample_params(DegradationConfig(), 3, torch.Generator().manual_seed(0))
        >>> params.batch_size, len(params.stages)
        (3, 2)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if generator.device.type != "cpu":
        raise ValueError("sample_params draws on a CPU generator so that a seed means the same on every machine; "
                         "pass torch.Generator() (CPU)")
    stages = tuple(sample_stage(s, batch_size, generator, config.per_sample) for s in config.stages)
    final = sample_final(config, batch_size, generator)
    stages = tuple(sample_compression(cfg, p, generator) if cfg.extended_compression else p
                   for cfg, p in zip(config.stages, stages, strict=True))
    return DegradationParams(stages, final)
