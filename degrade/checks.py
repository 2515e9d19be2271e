"""Input checks at the library's public entry points: misuse fails at once with the fix in the message.

Found by calling the library the way a newcomer does: uint8 images failed deep inside torch, 0..255
floats were clamped to garbage, a NaN pixel vanished from the output, sigma or cutoff 0 built all-NaN
kernels, and float16 on the CPU made a 15x15 filter take minutes (no vectorised fp16 convolution).

* ``check_dtype``: O(1), for every public op (also called inside the pipeline, so it must stay free);
* ``check_values``: one min/max pass, at the batch entry points (``apply`` / ``degrade``, ``usm_sharpen``);
* ``check_positive``: kernel parameters (tiny tensors).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_dtype", "check_values", "check_images", "check_positive", "VALUE_TOLERANCE"]

# Rounding slack: a convex blend of values in [0, 1] (USM's soft mask) can land an ulp outside.
VALUE_TOLERANCE = 1e-5


def check_dtype(images: Tensor, name: str = "images") -> None:
    """TypeError for non-float images; ValueError for float16 / bfloat16 on the CPU."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W), got {type(images).__name__}; "
                        f"convert with torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255")
    if not images.is_floating_point():
        raise TypeError(f"{name} are {images.dtype}; the degradation works on floats in [0, 1]: "
                        f"pass images.float() / 255 (uint8) or images.float() / 65535 (uint16)")
    if images.device.type == "cpu" and images.dtype in (torch.float16, torch.bfloat16):
        raise ValueError(f"{name} are {images.dtype} on the CPU, where convolutions have no fast half-precision "
                         f"path (a 15x15 filter takes minutes): use images.float() on the CPU, float16 on CUDA")


def check_values(images: Tensor, name: str = "images") -> None:
    """ValueError for NaN / infinite pixels or values outside [0, 1] (one min/max pass)."""
    if images.numel() == 0:
        return
    low, high = torch.aminmax(images.detach())
    low, high = float(low), float(high)
    if low >= -VALUE_TOLERANCE and high <= 1.0 + VALUE_TOLERANCE:
        return
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"{name} hold {bad} NaN/infinite values; fix the source (torch.nan_to_num(images) "
                         f"replaces them) -- they would vanish silently in the clamp and the 8-bit rounding")
    hint = ("values look like 0..255: divide by 255" if high > 1.5 else
            "clamp them with images.clamp(0, 1) (e.g. after a bicubic resize)")
    raise ValueError(f"{name} span [{low:.4g}, {high:.4g}], but the degradation expects RGB in [0, 1]: {hint}")


def check_images(images: Tensor, name: str = "images") -> None:
    """``check_dtype`` and ``check_values``."""
    check_dtype(images, name)
    check_values(images, name)


def check_positive(name: str, value) -> None:
    """ValueError unless every value is finite and > 0 (a sigma or a sinc cutoff)."""
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if not bool(torch.isfinite(tensor).all()) or bool((tensor <= 0).any()):
        shown = tensor.flatten()[:6].tolist()
        raise ValueError(f"{name} must be finite and > 0, got {shown}: a zero width gives an all-NaN kernel "
                         f"(to skip blurring, don't filter, or set blur_prob = 0 / sinc_prob = 0 in the config)")
