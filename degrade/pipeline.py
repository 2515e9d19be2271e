"""The deterministic high-order degradation: `apply(gt, params, config)` and the one-call `degrade`.

Order per stage (reference §1.2): blur → resize → noise → [clamp → JPEG]; after the last stage's
noise comes the final step, [resize to GT/scale + sinc] and [clamp → JPEG] in the drawn order, then
quantization to the 1/255 grid. Given the parameters nothing here is random: per-pixel noise comes
from each sample's recorded seed.

Samples whose draws give different intermediate sizes (different resize scales, modes or final
orders, which happens only with ``per_sample=True``) cannot share a tensor; `apply` runs each group
of samples with equal sizes as one batch. With the reference's per-batch draws there is one group.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from degrade.checks import check_dtype, check_values
from degrade.compress import compress
from degrade.config import DegradationConfig, StageConfig
from degrade.filter import filter2d
from degrade.jpeg import jpeg_compress
from degrade.kernels import KERNEL_FAMILIES, mixed_kernels
from degrade.noise import add_gaussian_noise, add_poisson_noise
from degrade.params import DegradationParams, FinalParams, StageParams
from degrade.resize import RESIZE_MODES, resize
from degrade.sample import sample_params

__all__ = ["apply", "degrade", "quantize", "stage_output_size"]


def quantize(images: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 1/255 grid, as the reference does to its final LQ."""
    return torch.clamp(torch.round(images * 255.0), 0, 255) / 255.0


def stage_output_size(cfg: StageConfig, scale_factor: float, current: tuple[int, int],
                      gt_size: tuple[int, int], sr_scale: int) -> tuple[int, int]:
    """Spatial size after a stage's resize (floor(side·scale), or int(GT/scale·factor) for "target")."""
    if cfg.resize_relative_to == "input":
        return int(current[0] * scale_factor), int(current[1] * scale_factor)
    return int(gt_size[0] / sr_scale * scale_factor), int(gt_size[1] / sr_scale * scale_factor)


def _blur(images: Tensor, p: StageParams, pad_to: int) -> Tensor:
    kernels = mixed_kernels(p.kernel_family, p.kernel_size, p.sigma_x, p.sigma_y, p.theta, p.beta, p.sinc_cutoff,
                            pad_to, dtype=images.dtype)
    return filter2d(images, _identity_where(~p.blur_applied, kernels))


def _identity_where(skip: Tensor, kernels: Tensor) -> Tensor:
    """Replace the kernels of skipped samples by the pulse (delta) kernel, which filters exactly to the input."""
    if not bool(skip.any()):
        return kernels
    pulse = torch.zeros_like(kernels[:1])
    pulse[0, kernels.shape[-2] // 2, kernels.shape[-1] // 2] = 1
    return torch.where(skip.to(kernels.device)[:, None, None], pulse, kernels)


def _add_noise(images: Tensor, p: StageParams) -> Tensor:
    for noise_type, add in ((0, add_gaussian_noise), (1, add_poisson_noise)):
        if bool((p.noise_type == noise_type).all()):  # one type for the batch (the default): no gather/scatter
            return add(images, p.noise_level, p.noise_gray, p.noise_seed)
    out = images.clone()
    for noise_type, add in ((0, add_gaussian_noise), (1, add_poisson_noise)):
        index = torch.nonzero(p.noise_type == noise_type).flatten()
        if index.numel():
            dev_index = index.to(images.device)
            out[dev_index] = add(images[dev_index], p.noise_level[index], p.noise_gray[index], p.noise_seed[index])
    return out


def _jpeg(images: Tensor, p: StageParams, backend: str) -> Tensor:
    if bool(((p.compression == 0) & (p.jpeg_sampling == 0)).all()):  # the paper's JPEG 4:2:0
        # No clamp to [0, 1] first: jpeg_compress clamps the 8-bit codes to [0, 255], which gives the same codes.
        return jpeg_compress(images, p.jpeg_quality.to(images.device), backend=backend)
    return compress(images, p.compression, p.jpeg_sampling, p.jpeg_quality, p.webp_quality, backend, p.video_crf)


def _resize_back_and_sinc(images: Tensor, final: FinalParams, size: tuple[int, int], pad_to: int) -> Tensor:
    out = resize(images, size, RESIZE_MODES[int(final.resize_mode[0])])
    sinc_family = torch.full_like(final.sinc_size, KERNEL_FAMILIES.index("sinc"))
    ones = torch.ones_like(final.sinc_cutoff)
    kernels = mixed_kernels(sinc_family, final.sinc_size, ones, ones, ones * 0, ones, final.sinc_cutoff, pad_to,
                            dtype=out.dtype)
    return filter2d(out, _identity_where(~final.sinc_applied, kernels))


def _apply_group(gt: Tensor, params: DegradationParams, config: DegradationConfig,
                 trace: list[tuple[str, Tensor]] | None = None) -> Tensor:
    """Degrade samples that share every resize size, resize mode and final order."""

    def step(name: str, images: Tensor) -> Tensor:
        if trace is not None:
            trace.append((name, images))
        return images

    device = gt.device
    params = DegradationParams(tuple(_to(s, device) for s in params.stages), _to(params.final, device))
    gt_size = (gt.shape[-2], gt.shape[-1])
    target = (gt_size[0] // config.scale, gt_size[1] // config.scale)
    out = gt
    last = len(config.stages) - 1
    for k, (cfg, p) in enumerate(zip(config.stages, params.stages, strict=True)):
        out = step(f"blur {k + 1}", _blur(out, p, config.kernel_pad_to))
        mode = RESIZE_MODES[int(p.resize_mode[0])]
        if cfg.resize_relative_to == "input":
            out = resize(out, mode=mode, scale_factor=float(p.resize_scale[0]))
        else:
            out = resize(out, stage_output_size(cfg, float(p.resize_scale[0]), out.shape[-2:], gt_size, config.scale),
                         mode)
        out = step(f"resize {k + 1}", out)
        out = step(f"noise {k + 1}", _add_noise(out, p))
        if k != last:
            out = step(f"jpeg {k + 1}", _jpeg(out, p, config.jpeg_backend))
    final_compression = params.stages[last]  # the last stage's compression takes part in the final step
    if int(params.final.order[0]) == 0:
        out = step("resize+sinc", _resize_back_and_sinc(out, params.final, target, config.kernel_pad_to))
        out = step(f"jpeg {last + 1}", _jpeg(out, final_compression, config.jpeg_backend))
    else:
        out = step(f"jpeg {last + 1}", _jpeg(out, final_compression, config.jpeg_backend))
        out = step("resize+sinc", _resize_back_and_sinc(out, params.final, target, config.kernel_pad_to))
    return step("final", quantize(out))


def _to(p, device: torch.device):
    """Move the tensors the pixel ops consume to ``device``; int/bool bookkeeping stays comparable."""
    return dataclasses.replace(p, **{f.name: getattr(p, f.name).to(device) for f in dataclasses.fields(p)})


def _group_keys(params: DegradationParams) -> list[tuple]:
    """Per sample: everything that fixes intermediate tensor sizes or is applied to a whole group at once."""
    keys = []
    for i in range(params.batch_size):
        key = tuple((int(s.resize_mode[i]), float(s.resize_scale[i])) for s in params.stages)
        keys.append(key + ((int(params.final.order[i]), int(params.final.resize_mode[i])),))
    return keys


def _check_sizes(gt_size: tuple[int, int], params: DegradationParams, config: DegradationConfig) -> None:
    current = gt_size
    for k, (cfg, p) in enumerate(zip(config.stages, params.stages, strict=True)):
        smallest = float(p.resize_scale.min())
        current = stage_output_size(cfg, smallest, current, gt_size, config.scale)
        if min(current) < 1:
            raise ValueError(f"a {gt_size[0]}x{gt_size[1]} GT is too small for this config: stage {k + 1} would "
                             f"resize it to {current[0]}x{current[1]} (scale {smallest:.3f}); use larger GT patches "
                             f"(the reference uses 400x400) or narrower resize ranges")


def apply(gt: Tensor, params: DegradationParams, config: DegradationConfig, *,
          trace: list[tuple[str, Tensor]] | None = None) -> Tensor:
    """Degrade a GT batch with pre-drawn parameters (deterministic).

    Args:
        gt: (B, 3, H, W) RGB in [0, 1]; H and W divisible by ``config.scale``. Apply USM sharpening
            first if you want the paper's sharpened-GT input (`degrade.usm_sharpen`).
        params: `sample_params(config, B, ...)` output or `DegradationParams.from_records(...)`.
        config: the config the parameters were drawn from (stage count, scale, resize semantics).
        trace: if given, receives (step name, images) after every step — for previews; needs a
            batch whose samples share their sizes (always true with the default granularity).

    Returns:
        (B, 3, H/scale, W/scale) LQ on the 1/255 grid, on gt's device and dtype.

    Example:
        >>> cfg = DegradationConfig()
        >>> gt = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> apply(gt, sample_params(cfg, 2, torch.Generator().manual_seed(1)), cfg).shape
        torch.Size([2, 3, 16, 16])
    """
    check_dtype(gt, "gt")
    if gt.ndim != 4 or gt.shape[1] != 3:
        raise ValueError(f"gt must have shape (B, 3, H, W), got {tuple(gt.shape)}")
    check_values(gt, "gt")
    b, _, h, w = gt.shape
    if h % config.scale or w % config.scale:
        raise ValueError(f"GT size {h}x{w} must be divisible by the scale {config.scale}")
    if params.batch_size != b:
        raise ValueError(f"params hold {params.batch_size} samples but the GT batch has {b}")
    if len(params.stages) != len(config.stages):
        raise ValueError(f"params have {len(params.stages)} stages but the config has {len(config.stages)}")
    _check_sizes((h, w), params, config)
    keys = _group_keys(params)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    if len(groups) == 1:
        return _apply_group(gt, params, config, trace)
    if trace is not None:
        raise ValueError("trace needs samples with equal intermediate sizes: trace one sample at a time")
    out = gt.new_empty((b, 3, h // config.scale, w // config.scale))
    for index in groups.values():
        rows = torch.tensor(index, dtype=torch.int64)
        out[rows.to(gt.device)] = _apply_group(gt[rows.to(gt.device)], params.select(rows), config)
    return out


def degrade(gt: Tensor, config: DegradationConfig | None = None,
            generator: torch.Generator | None = None) -> tuple[Tensor, DegradationParams]:
    """Draw parameters and apply them: ``lq, params = degrade(gt, config, generator)``.

    Args:
        gt: (B, 3, H, W) RGB in [0, 1].
        config: defaults to the paper's second-order x4 model.
        generator: a CPU `torch.Generator`; a fresh unseeded one if omitted (not reproducible).

    Returns:
        The LQ batch and the parameters (``params.records()`` gives per-sample replay records).
    """
    config = config or DegradationConfig()
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    params = sample_params(config, gt.shape[0], generator)
    return apply(gt, params, config), params
