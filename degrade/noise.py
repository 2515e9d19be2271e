"""Additive Gaussian and Poisson noise, colour or gray, with one noise seed per sample.

Formulas follow BasicSR `random_add_gaussian_noise_pt` / `random_add_poisson_noise_pt` (reference
§2.8-2.9), with one deliberate difference: the reference draws a single gray noise field for the
whole batch and scales it per sample, so a sample's noise depends on its batch. Here every sample
draws its noise from its own generator seeded with its own seed, so a sample degraded alone, or
replayed from its record, gets exactly the noise it got inside any batch.

Noise is drawn by a generator on the images' device (a generator must live on the device of the
tensor it fills, pytorch/pytorch#47022), so CPU and CUDA draw different noise from the same seed.

Poisson counts are drawn by Walker's alias method instead of `torch.poisson` (a scalar rejection loop,
~200 ns per pixel on CPU): the rate of a pixel is code/255·levels with an 8-bit code and a power-of-two
level count, so a sample needs at most 256 distinct Poisson distributions, whose alias tables are
built once per level count. One float64 uniform per pixel then gives an exact Poisson draw (to the
float64 rounding of the table) with two table look-ups, on any device.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.special
import torch
from torch import Tensor

from degrade.checks import check_dtype
from degrade.filter import _check_images

__all__ = ["add_gaussian_noise", "add_poisson_noise", "draw_noise_seeds", "rgb_to_gray", "poisson_levels",
           "poisson_alias_table", "sample_poisson_codes"]

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
    out = torch.empty_like(images)
    on_cpu = images.device.type == "cpu"
    source, target = (images.detach().contiguous().numpy(), out.numpy()) if on_cpu else (images, out)
    for i in range(b):
        g = _sample_generator(int(seeds[i]), images.device)
        channels = 1 if bool(gray[i]) else c
        field = torch.randn((channels, h, w), generator=g, device=images.device, dtype=images.dtype)
        field = field.numpy() if on_cpu else field
        field *= float(sigma[i]) / 255.0
        _add_and_clip(source[i], field, target[i], clip)
    return out


def _add_and_clip(image, noise, out, clip: bool) -> None:
    """out = image + noise, clamped to [0, 1] if ``clip``; numpy arrays (CPU) or tensors, in place.

    CPU samples go through numpy one at a time: the same IEEE operations as torch's, without a
    thread-pool round trip per operation (which costs milliseconds each when the cores are busy).
    """
    if isinstance(out, np.ndarray):
        np.add(image, noise, out=out)
        if clip:
            np.clip(out, 0, 1, out=out)
        return
    torch.add(image, noise, out=out)
    if clip:
        out.clamp_(0, 1)


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


@functools.lru_cache(maxsize=32)
def _alias_table_cpu(levels: int) -> tuple[Tensor, Tensor]:
    """`poisson_alias_table` on CPU, cached per level count (at most 9 distinct ones: 1, 2, 4, ..., 256)."""
    size = int(math.ceil(levels + 10 * math.sqrt(levels) + 30))  # P(X ≥ size) < 1e-24 for every rate ≤ levels
    rates = np.arange(256, dtype=np.float64) / 255 * levels
    k = np.arange(size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = k * np.log(rates[:, None]) - rates[:, None] - scipy.special.gammaln(k + 1)
    pmf = np.exp(np.where(rates[:, None] == 0, np.where(k == 0, 0.0, -np.inf), log_pmf))
    pmf /= pmf.sum(axis=1, keepdims=True)  # the truncated tail (< 1e-24) goes to the kept support
    probability = np.ones_like(pmf)
    alias = np.tile(np.arange(size, dtype=np.int64), (256, 1))
    for row in range(256):  # Vose's construction, once per table
        scaled = (pmf[row] * size).tolist()
        small = [j for j, v in enumerate(scaled) if v < 1.0]
        large = [j for j, v in enumerate(scaled) if v >= 1.0]
        while small and large:
            low, high = small.pop(), large.pop()
            probability[row, low] = scaled[low]
            alias[row, low] = high
            scaled[high] = scaled[high] + scaled[low] - 1.0
            (small if scaled[high] < 1.0 else large).append(high)
        # Whatever is left has scaled value 1 up to rounding: always keep itself (probability 1).
    return torch.from_numpy(probability), torch.from_numpy(alias)


def poisson_alias_table(levels: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Alias tables of Poisson(code/255·levels) for every 8-bit code: (probability, alias), each (256, K).

    Drawing j uniform in [0, K) and keeping j with ``probability[code, j]``, else taking
    ``alias[code, j]``, gives a Poisson(code/255·levels) count (Walker's alias method).
    """
    if levels < 1 or levels > 256 or levels & (levels - 1):
        raise ValueError(f"levels must be a power of two between 1 and 256, got {levels}")
    probability, alias = _alias_table_cpu(int(levels))
    return probability.to(device), alias.to(device)


def sample_poisson_codes(codes: Tensor, levels: int, generator: torch.Generator) -> Tensor:
    """Poisson(code/255·levels) counts (int64) for int64 ``codes`` in [0, 255], one uniform per element.

    ``generator`` must be on the codes' device; the result depends only on the codes, the level count
    and the generator state.
    """
    if codes.device.type == "cpu":
        return torch.from_numpy(_sample_poisson_numpy(codes.numpy(), levels, generator))
    return _sample_poisson_torch(codes, levels, generator)


def _sample_poisson_torch(codes: Tensor, levels: int, generator: torch.Generator) -> Tensor:
    probability, alias = poisson_alias_table(levels, codes.device)
    size = probability.shape[1]
    scaled = torch.rand(codes.shape, generator=generator, device=codes.device, dtype=torch.float64).mul_(size)
    column = scaled.to(torch.int64)  # floor: scaled ≥ 0
    index = (codes * size).add_(column).reshape(-1)
    keep = scaled.sub_(column) < probability.reshape(-1).index_select(0, index).reshape(codes.shape)
    return torch.where(keep, column, alias.reshape(-1).index_select(0, index).reshape(codes.shape))


def _sample_poisson_numpy(codes: np.ndarray, levels: int, generator: torch.Generator) -> np.ndarray:
    """`_sample_poisson_torch` step for step in numpy (same uniforms, same operations, same counts)."""
    probability, alias = (t.numpy() for t in poisson_alias_table(levels))
    size = probability.shape[1]
    scaled = torch.rand(codes.shape, generator=generator, dtype=torch.float64).numpy()
    scaled *= size
    column = scaled.astype(np.int64)
    index = codes * size
    index += column
    scaled -= column
    keep = scaled < np.take(probability, index)
    return np.where(keep, column, np.take(alias, index))


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
    The Poisson counts come from `sample_poisson_codes` (alias method, see the module docstring).

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
    out = torch.empty_like(images)
    on_cpu = images.device.type == "cpu"
    source, target = (images.detach().contiguous().numpy(), out.numpy()) if on_cpu else (images, out)
    for i in range(b):
        g = _sample_generator(int(seeds[i]), images.device)
        shot_noise = _shot_noise_numpy if on_cpu else _shot_noise_torch
        _add_and_clip(source[i], shot_noise(source[i], bool(gray[i]), float(scale[i]), g), target[i], clip)
    return out


def _shot_noise_torch(image: Tensor, gray: bool, scale: float, generator: torch.Generator) -> Tensor:
    """(Poisson(q·v)/v − q)·scale for one (3, H, W) image; (1, H, W) for gray samples."""
    source = rgb_to_gray(image[None])[0] if gray else image
    codes = torch.clamp(torch.round(source * 255), 0, 255)
    integer_codes = codes.to(torch.int64)
    levels = int(poisson_levels(integer_codes[None])[0])
    shot = _sample_poisson_torch(integer_codes, levels, generator).to(image.dtype).div_(levels)
    return shot.sub_(codes.div_(255)).mul_(scale)


def _shot_noise_numpy(image: np.ndarray, gray: bool, scale: float, generator: torch.Generator) -> np.ndarray:
    """`_shot_noise_torch` step for step in numpy (CPU): the same noise, bit for bit."""
    source = (0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None] if gray else image
    codes = np.multiply(source, 255)
    np.rint(codes, out=codes)  # round half to even, as torch.round
    np.clip(codes, 0, 255, out=codes)
    integer_codes = codes.astype(np.int64)
    distinct = np.count_nonzero(np.bincount(integer_codes.reshape(-1), minlength=256))
    levels = int(2 ** math.ceil(math.log2(distinct)))
    shot = _sample_poisson_numpy(integer_codes, levels, generator).astype(image.dtype)
    shot /= levels
    codes /= 255
    shot -= codes
    shot *= scale
    return shot
