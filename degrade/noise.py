"""Additive Gaussian and Poisson noise, colour or gray, with one noise seed per sample.

Formulas follow BasicSR `random_add_gaussian_noise_pt` / `random_add_poisson_noise_pt` (reference
§2.8-2.9), with one deliberate difference: the reference draws a single gray noise field for the
whole batch and scales it per sample, so a sample's noise depends on its batch. Here every sample
draws its noise from its own generator seeded with its own seed, so a sample degraded alone, or
replayed from its record, gets exactly the noise it got inside any batch.

Noise is drawn by a generator on the images' device (a generator must live on the device of the
tensor it fills, pytorch/pytorch#47022), so CPU and CUDA draw different noise from the same seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from degrade.checks import check_dtype
from degrade.filter import _check_images

__all__ = ["add_gaussian_noise", "add_poisson_noise", "draw_noise_seeds", "rgb_to_gray", "poisson_levels"]

_SEED_LIMIT = 2**62


def draw_noise_seeds(batch: int, generator: torch.Generator) -> Tensor:
    """(B,) int64 seeds for per-sample noise, drawn from ``generator`` (any device); returned on CPU."""
    return torch.randint(0, _SEED_LIMIT, (batch,), generator=generator, device=generator.device).cpu()


def _resolve_seeds(batch: int, generator: torch.Generator | Tensor | None) -> Tensor:
    if generator is None:
        raise ValueError("pass a torch.Generator or a (B,) tensor of per-sample noise seeds")
    if isinstance(generator, torch.Generator):
        return draw_noise_seeds(batch, generator)
    seeds = torch.as_tensor(generator, dtype=torch.int64).reshape(-1).cpu()
    if seeds.numel() != batch:
        raise ValueError(f"got {seeds.numel()} noise seeds for a batch of {batch}")
    return seeds


def _per_sample(values: Tensor | float | bool, batch: int, dtype: torch.dtype, name: str) -> Tensor:
    tensor = torch.as_tensor(values, dtype=dtype).reshape(-1).cpu()
    if tensor.numel() == 1:
        tensor = tensor.expand(batch)
    if tensor.numel() != batch:
        raise ValueError(f"{name} must be a scalar or have one value per sample ({batch}), got {tensor.numel()}")
    return tensor


def _sample_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


def rgb_to_gray(images: Tensor) -> Tensor:
    """(B, 3, H, W) → (B, 1, H, W) with the weights torchvision's `rgb_to_grayscale` uses."""
    r, g, b = images.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def add_gaussian_noise(
    images: Tensor,
    sigma: Tensor | float,
    gray: Tensor | bool,
    generator: torch.Generator | Tensor | None,
    *,
    clip: bool = True,
) -> Tensor:
    """Add N(0, (σ/255)²) noise per pixel; gray samples share one field across their channels.

    Args:
        images: (B, C, H, W) in [0, 1].
        sigma: noise standard deviation in 1/255 units, scalar or (B,).
        gray: whether each sample gets gray (channel-shared) noise, scalar or (B,).
        generator: a `torch.Generator` to draw one noise seed per sample from, or the (B,) int64 seeds
            themselves (as recorded in `DegradationParams`).
        clip: clamp the result to [0, 1] (the reference's training path does).

    Returns:
        (B, C, H, W) noisy images.

    Example:
        >>> x = torch.full((2, 3, 8, 8), 0.5)
        >>> y = add_gaussian_noise(x, torch.tensor([0.0, 10.0]), False, torch.tensor([1, 2]))
        >>> bool(torch.equal(y[0], x[0]))
        True
    """
    check_dtype(images)
    _check_images(images)
    b, c, h, w = images.shape
    seeds = _resolve_seeds(b, generator)
    sigma = _per_sample(sigma, b, torch.float64, "sigma")
    gray = _per_sample(gray, b, torch.bool, "gray")
    noisy = []
    for i in range(b):
        g = _sample_generator(int(seeds[i]), images.device)
        channels = 1 if bool(gray[i]) else c
        field = torch.randn((channels, h, w), generator=g, device=images.device, dtype=images.dtype)
        noisy.append(images[i] + field * (float(sigma[i]) / 255.0))
    out = torch.stack(noisy)
    return out.clamp(0, 1) if clip else out


def poisson_levels(quantized_codes: Tensor) -> Tensor:
    """Number of intensity levels per sample: distinct 8-bit codes, rounded up to a power of 2.

    ``quantized_codes`` is (B, ...) int64 in [0, 255]. Counting with a histogram instead of
    ``torch.unique`` per sample gives the same count (reference §2.9) at a fraction of the cost.
    """
    b = quantized_codes.shape[0]
    offsets = torch.arange(b, device=quantized_codes.device)[:, None] * 256
    histogram = torch.bincount((quantized_codes.reshape(b, -1) + offsets).reshape(-1), minlength=256 * b)
    distinct = (histogram.reshape(b, 256) > 0).sum(dim=1).to(torch.float64)
    return torch.exp2(torch.ceil(torch.log2(distinct)))


def add_poisson_noise(
    images: Tensor,
    scale: Tensor | float,
    gray: Tensor | bool,
    generator: torch.Generator | Tensor | None,
    *,
    clip: bool = True,
) -> Tensor:
    """Add scaled Poisson (shot) noise, colour or gray (reference §2.9).

    For each sample: q = round(x·255)/255 (of the gray image for gray samples), v = distinct levels
    of q rounded up to a power of 2, noise = (Poisson(q·v)/v − q)·scale, added to the unrounded x.

    Args:
        images: (B, 3, H, W) in [0, 1].
        scale: noise scale, scalar or (B,).
        gray: whether each sample gets gray noise (computed on the luma, shared by the channels).
        generator: a `torch.Generator` or the (B,) per-sample noise seeds.
        clip: clamp the result to [0, 1].

    Returns:
        (B, 3, H, W) noisy images.

    Example:
        >>> x = torch.full((1, 3, 8, 8), 0.5)
        >>> bool(torch.equal(add_poisson_noise(x, 0.0, False, torch.tensor([3])), x))
        True
    """
    check_dtype(images)
    _check_images(images)
    b = images.shape[0]
    seeds = _resolve_seeds(b, generator)
    scale = _per_sample(scale, b, torch.float64, "scale")
    gray = _per_sample(gray, b, torch.bool, "gray")
    noisy = []
    for i in range(b):
        source = rgb_to_gray(images[i : i + 1]) if bool(gray[i]) else images[i : i + 1]
        codes = torch.clamp(torch.round(source * 255), 0, 255)
        levels = float(poisson_levels(codes.to(torch.int64))[0])
        quantized = codes / 255
        g = _sample_generator(int(seeds[i]), images.device)
        shot = torch.poisson(quantized * levels, generator=g) / levels
        noisy.append(images[i] + (shot - quantized)[0] * float(scale[i]))
    out = torch.stack(noisy)
    return out.clamp(0, 1) if clip else out
