"""Ranges and probabilities of the randomized high-order degradation model.

Defaults are the paper's, from Real-ESRGAN `options/train_realesrnet_x4plus.yml` and
`train_realesrgan_x4plus.yml` (reference §1.1-1.2 tables); both stages use one `StageConfig` type.
A stage is blur → resize → noise → JPEG; in the last stage the JPEG takes part in the final step,
whose order with [resize to the target size + sinc filter] is drawn at random (reference §1.2 step 8).
Third- or higher-order degradation is a longer `stages` tuple, not new code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from degrade.compress import COMPRESSION_TYPES, JPEG_SAMPLINGS
from degrade.kernels import KERNEL_FAMILIES
from degrade.resize import RESIZE_MODES
from degrade.tomlio import ConfigError, from_dict, from_toml, to_dict, to_toml

__all__ = ["StageConfig", "DegradationConfig", "FIRST_STAGE", "SECOND_STAGE", "SUPPORTED_SCALES"]

SUPPORTED_SCALES = (1, 2, 4)
_MIXTURE_FAMILIES = KERNEL_FAMILIES[:-1]  # "sinc" is chosen by sinc_prob, not by the mixture
_ODD_SIZES_7_TO_21 = (7, 9, 11, 13, 15, 17, 19, 21)
_MAX_KERNEL_SIZE = 41


def _check_range(name: str, bounds: tuple[float, float], low: float | None = None, high: float | None = None,
                 strictly_positive: bool = False) -> None:
    lo, hi = bounds
    if not lo <= hi:
        raise ConfigError(f"{name} must be an ordered range [low, high], got [{lo}, {hi}]")
    if strictly_positive and lo <= 0:
        raise ConfigError(f"{name} must be positive, got [{lo}, {hi}]")
    if low is not None and lo < low:
        raise ConfigError(f"{name} must not go below {low}, got [{lo}, {hi}]")
    if high is not None and hi > high:
        raise ConfigError(f"{name} must not go above {high}, got [{lo}, {hi}]")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")


def _check_distribution(name: str, probs: tuple[float, ...], expected_len: int) -> None:
    if len(probs) != expected_len:
        raise ConfigError(f"{name} must have {expected_len} probabilities, got {len(probs)}")
    if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise ConfigError(f"{name} must be non-negative and sum to 1, got {list(probs)} (sum {sum(probs):.6g})")


def _check_sizes(name: str, sizes: tuple[int, ...]) -> None:
    if not sizes:
        raise ConfigError(f"{name} must list at least one kernel size")
    bad = [s for s in sizes if s % 2 == 0 or not 1 <= s <= _MAX_KERNEL_SIZE]
    if bad:
        raise ConfigError(f"{name} must hold odd sizes between 1 and {_MAX_KERNEL_SIZE}, got {bad}")


def _check_names(name: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    unknown = [v for v in values if v not in allowed]
    if not values or unknown or len(set(values)) != len(values):
        raise ConfigError(f"{name} must list distinct values from {list(allowed)}, got {list(values)}")


def _check_modes(name: str, modes: tuple[str, ...]) -> None:
    unknown = [m for m in modes if m not in RESIZE_MODES]
    if not modes or unknown:
        raise ConfigError(f"{name} must be a non-empty subset of {list(RESIZE_MODES)}, got {list(modes)}")


@dataclass(frozen=True)
class StageConfig:
    """One degradation stage: blur, resize, noise, JPEG (the paper's first-stage values)."""

    # Blur (reference §1.1 kernel table). The sinc filter replaces the mixture with sinc_prob.
    kernel_list: tuple[str, ...] = _MIXTURE_FAMILIES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    kernel_sizes: tuple[int, ...] = _ODD_SIZES_7_TO_21  # hard-coded 7..21 in the reference dataset
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    sinc_cutoff_small: tuple[float, float] = (math.pi / 3, math.pi)  # kernel sizes < sinc_large_size
    sinc_cutoff_large: tuple[float, float] = (math.pi / 5, math.pi)
    sinc_large_size: int = 13
    blur_prob: float = 1.0  # the paper's `second_blur_prob` (0.8) for the second stage
    # Resize: up/down/keep, then a scale and a mode.
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_modes: tuple[str, ...] = RESIZE_MODES
    # "input": scale the current image (stage 1); "target": size = (GT size / scale) · factor,
    # independent of earlier stages (stage 2 in the reference, quirk §9.6).
    resize_relative_to: Literal["input", "target"] = "input"
    # Noise: Gaussian with gaussian_noise_prob, else Poisson; gray with gray_noise_prob.
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    # JPEG quality (rounded to an integer by the encoder, as libjpeg takes integers).
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # Compression mixture (per sample): which codec, JPEG chroma sampling, WebP quality. The defaults are the
    # paper's (JPEG 4:2:0 only) and draw nothing extra, so default records and replays stay as they were.
    compression_types: tuple[str, ...] = ("jpeg",)
    compression_prob: tuple[float, ...] = (1.0,)
    jpeg_sampling: tuple[str, ...] = ("4:2:0",)
    jpeg_sampling_prob: tuple[float, ...] = (1.0,)
    webp_range: tuple[float, float] = (30.0, 95.0)
    video_crf_range: tuple[float, float] = (20.0, 32.0)  # H.264/HEVC constant rate factor (rounded), 0-51

    def __post_init__(self) -> None:
        unknown = [k for k in self.kernel_list if k not in _MIXTURE_FAMILIES]
        if not self.kernel_list or unknown or len(set(self.kernel_list)) != len(self.kernel_list):
            raise ConfigError(f"kernel_list must name distinct families from {list(_MIXTURE_FAMILIES)}, "
                              f"got {list(self.kernel_list)}")
        _check_distribution("kernel_prob", self.kernel_prob, len(self.kernel_list))
        _check_sizes("kernel_sizes", self.kernel_sizes)
        _check_probability("sinc_prob", self.sinc_prob)
        _check_probability("blur_prob", self.blur_prob)
        _check_range("blur_sigma", self.blur_sigma, strictly_positive=True)
        _check_range("betag_range", self.betag_range, strictly_positive=True)
        _check_range("betap_range", self.betap_range, strictly_positive=True)
        _check_range("rotation_range", self.rotation_range)
        _check_range("sinc_cutoff_small", self.sinc_cutoff_small, strictly_positive=True, high=math.pi)
        _check_range("sinc_cutoff_large", self.sinc_cutoff_large, strictly_positive=True, high=math.pi)
        # β is drawn from [β_low, 1] or [1, β_high] with p = 0.5 each (reference §2.5).
        for name, (lo, hi) in (("betag_range", self.betag_range), ("betap_range", self.betap_range)):
            if not lo <= 1.0 <= hi:
                raise ConfigError(f"{name} must contain 1 (β is drawn from [low, 1] or [1, high]), got [{lo}, {hi}]")
        _check_distribution("resize_prob (up, down, keep)", self.resize_prob, 3)
        lo, hi = self.resize_range
        _check_range("resize_range", self.resize_range, strictly_positive=True)
        if not lo <= 1.0 <= hi:
            raise ConfigError(f"resize_range must contain 1 (down from [low, 1], up from [1, high]), got [{lo}, {hi}]")
        _check_modes("resize_modes", self.resize_modes)
        _check_probability("gaussian_noise_prob", self.gaussian_noise_prob)
        _check_range("noise_range", self.noise_range, low=0.0)
        _check_range("poisson_scale_range", self.poisson_scale_range, low=0.0)
        _check_probability("gray_noise_prob", self.gray_noise_prob)
        _check_range("jpeg_range", self.jpeg_range, low=1.0, high=100.0)
        _check_names("compression_types", self.compression_types, COMPRESSION_TYPES)
        _check_distribution("compression_prob", self.compression_prob, len(self.compression_types))
        _check_names("jpeg_sampling", self.jpeg_sampling, JPEG_SAMPLINGS)
        _check_distribution("jpeg_sampling_prob", self.jpeg_sampling_prob, len(self.jpeg_sampling))
        _check_range("webp_range", self.webp_range, low=1.0, high=100.0)
        _check_range("video_crf_range", self.video_crf_range, low=0.0, high=51.0)

    @property
    def extended_compression(self) -> bool:
        """Whether this stage draws from the compression mixture (anything but JPEG 4:2:0 only)."""
        return self.compression_types != ("jpeg",) or self.jpeg_sampling != ("4:2:0",)

    @property
    def max_kernel_size(self) -> int:
        return max(self.kernel_sizes)


FIRST_STAGE = StageConfig()
SECOND_STAGE = StageConfig(
    blur_sigma=(0.2, 1.5),
    blur_prob=0.8,
    resize_prob=(0.3, 0.4, 0.3),
    resize_range=(0.3, 1.2),
    resize_relative_to="target",
    noise_range=(1.0, 25.0),
    poisson_scale_range=(0.05, 2.5),
)


@dataclass(frozen=True)
class DegradationConfig:
    """The whole degradation model: stages, final step, target scale and sampling granularity.

    Attributes:
        stages: one `StageConfig` per order; the paper uses two (`FIRST_STAGE`, `SECOND_STAGE`).
        scale: GT size / LQ size; 4 (default), 2 or 1.
        final_sinc_prob: probability of the final sinc filter (else the identity "pulse").
        final_sinc_sizes / final_sinc_cutoff: its size and cutoff ranges (ω_c ~ U(π/3, π) at any size).
        final_resize_modes: modes for the resize back to the target size.
        final_order_prob: probability of [resize + sinc] → JPEG; otherwise JPEG → [resize + sinc].
        per_sample: False draws resize, noise type, blur-skip and final order once per batch as the
            reference does (quirk §9.5); True draws every choice per sample (more diversity per batch).
        jpeg_backend: "torch" (batched, any device), "opencv" (libjpeg itself, CPU round trip) or "auto"
            (opencv for CPU tensors, torch otherwise); both give bit-identical results.
    """

    stages: tuple[StageConfig, ...] = (FIRST_STAGE, SECOND_STAGE)
    scale: int = 4
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, ...] = _ODD_SIZES_7_TO_21
    final_sinc_cutoff: tuple[float, float] = (math.pi / 3, math.pi)
    final_resize_modes: tuple[str, ...] = RESIZE_MODES
    final_order_prob: float = 0.5
    per_sample: bool = False
    jpeg_backend: Literal["auto", "torch", "opencv"] = "auto"
    kernel_pad_to: int = field(default=21)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("stages must hold at least one StageConfig")
        if self.scale not in SUPPORTED_SCALES:
            raise ConfigError(f"scale must be one of {SUPPORTED_SCALES}, got {self.scale}")
        _check_probability("final_sinc_prob", self.final_sinc_prob)
        _check_probability("final_order_prob", self.final_order_prob)
        _check_sizes("final_sinc_sizes", self.final_sinc_sizes)
        _check_range("final_sinc_cutoff", self.final_sinc_cutoff, strictly_positive=True, high=math.pi)
        _check_modes("final_resize_modes", self.final_resize_modes)
        largest = max([*self.final_sinc_sizes, *(s.max_kernel_size for s in self.stages)])
        if self.kernel_pad_to % 2 == 0 or self.kernel_pad_to < largest:
            raise ConfigError(f"kernel_pad_to must be odd and at least the largest kernel size ({largest}), "
                              f"got {self.kernel_pad_to}")

    @property
    def order(self) -> int:
        """Number of degradation stages (2 for the paper's second-order model)."""
        return len(self.stages)

    def with_order(self, order: int) -> DegradationConfig:
        """This config with ``order`` stages: extra stages repeat the last one, fewer keep the first."""
        if order < 1:
            raise ConfigError(f"order must be at least 1, got {order}")
        stages = self.stages[:order] + (self.stages[-1],) * max(0, order - len(self.stages))
        return replace(self, stages=stages)

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_toml(self) -> str:
        return to_toml(self)

    @classmethod
    def from_dict(cls, data: dict) -> DegradationConfig:
        return from_dict(cls, data)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> DegradationConfig:
        return from_toml(cls, text, source=source)

    @classmethod
    def load(cls, path: str | Path) -> DegradationConfig:
        """Read a TOML file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read degradation config {path}: {error.strerror}") from error
        try:
            return cls.from_toml(text, source=str(path))
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error
