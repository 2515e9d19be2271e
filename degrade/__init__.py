"""The Real-ESRGAN degradation model as a standalone, batched, seeded and replayable library.

Depends only on numpy, scipy, torch and opencv. All ops take batched float tensors (B, C, H, W), RGB,
values in [0, 1], on any device; parameters are per sample.

Glossary: gt/hr — the high-resolution ground truth; lq/lr — the degraded low-resolution input;
scale — GT size / LQ size (4, 2 or 1); stage 1 "Net" / stage 2 "GAN" are the two *training*
stages, not to be confused with the degradation stages (orders) of `DegradationConfig.stages`.

Example:
    >>> import torch, degrade
    >>> gt = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    >>> lq, params = degrade.degrade(gt, degrade.DegradationConfig(), torch.Generator().manual_seed(1))
    >>> lq.shape, len(params.records())
    (torch.Size([2, 3, 16, 16]), 2)
"""

from __future__ import annotations

from degrade import kernels, noise
from degrade.config import FIRST_STAGE, SECOND_STAGE, DegradationConfig, StageConfig
from degrade.filter import filter2d
from degrade.jpeg import jpeg_compress
from degrade.noise import add_gaussian_noise, add_poisson_noise
from degrade.params import DegradationParams, FinalParams, StageParams
from degrade.pipeline import apply, degrade, quantize
from degrade.resize import resize
from degrade.sample import sample_params
from degrade.sharpen import USMSharpen, usm_sharpen
from degrade.tomlio import ConfigError

__all__ = [
    "kernels",
    "noise",
    "DegradationConfig",
    "StageConfig",
    "FIRST_STAGE",
    "SECOND_STAGE",
    "DegradationParams",
    "StageParams",
    "FinalParams",
    "ConfigError",
    "filter2d",
    "add_gaussian_noise",
    "add_poisson_noise",
    "jpeg_compress",
    "resize",
    "usm_sharpen",
    "USMSharpen",
    "sample_params",
    "apply",
    "degrade",
    "quantize",
]
