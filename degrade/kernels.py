"""Blur kernels of the Real-ESRGAN degradation model, built batched on any device.

Every builder takes scalars (one kernel) or 1-D tensors (one kernel per sample) and returns a
float tensor of shape (B, size, size) normalized to sum 1. The formulas are those of BasicSR
`basicsr/data/degradations.py` (reference §2.1-2.6):

* grid: ax = [-(k-1)/2, ..., (k-1)/2]; x varies along columns, y along rows;
* Σ = R·diag(σx², σy²)·Rᵀ with R the rotation by θ, and q(p) = pᵀΣ⁻¹p;
* Gaussian exp(-q/2); generalized Gaussian exp(-q^β/2); plateau 1/(q^β + 1);
* circular low-pass (sinc) ω_c·J1(ω_c·r)/(2π·r), centre ω_c²/(4π).

Kernels are evaluated in float64 (as the reference's numpy code does) and cast at the end, so
float32 kernels agree with the reference to float32 rounding. Because every sample's kernel is
evaluated on the same grid, a batch with mixed families and sizes is built without a per-sample
Python loop: `mixed_kernels` evaluates each family on the largest grid and zeroes the cells that
lie outside each sample's own size, which equals building the small kernel and zero-padding it
(the reference pads every kernel to 21×21 the same way).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import scipy.special
import torch
from torch import Tensor

from degrade.checks import check_positive

__all__ = [
    "KERNEL_FAMILIES",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "plateau_kernel",
    "sinc_kernel",
    "pad_kernel",
    "mixed_kernels",
]

# Index order used to encode the family of each sample in `DegradationParams`. The first six are
# the names of the reference's `kernel_list`; "sinc" is the circular low-pass filter.
KERNEL_FAMILIES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
    "sinc",
)

ScalarOrTensor = float | Sequence[float] | Tensor


def _as_batch(value: ScalarOrTensor, device: torch.device | None) -> Tensor:
    """A scalar or 1-D sequence as a float64 tensor of shape (B,)."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device)
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    if tensor.ndim != 1:
        raise ValueError(f"kernel parameters must be scalars or 1-D tensors, got shape {tuple(tensor.shape)}")
    return tensor


def _broadcast(*values: ScalarOrTensor, device: torch.device | None = None) -> list[Tensor]:
    tensors = [_as_batch(v, device) for v in values]
    batch = max(t.shape[0] for t in tensors)
    for t in tensors:
        if t.shape[0] not in (1, batch):
            raise ValueError(f"per-sample kernel parameters disagree on the batch size: {t.shape[0]} vs {batch}")
    return [t.expand(batch) for t in tensors]


def _check_size(size: int) -> None:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")


def _device_of(*values: ScalarOrTensor) -> torch.device | None:
    for value in values:
        if isinstance(value, Tensor):
            return value.device
    return None


def _grid(size: int, device: torch.device | None) -> tuple[Tensor, Tensor]:
    """(xx, yy) of shape (size, size): xx varies along columns, yy along rows (BasicSR `mesh_grid`)."""
    ax = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _quadratic_form(size: int, sigma_x: Tensor, sigma_y: Tensor, theta: Tensor) -> Tensor:
    """q(p) = pᵀΣ⁻¹p for every grid point and sample, shape (B, size, size).

    With Σ = R·diag(σx², σy²)·Rᵀ, pᵀΣ⁻¹p = |diag(1/σx, 1/σy)·Rᵀp|², i.e. the squared coordinates
    in the rotated frame divided by the variances.
    """
    xx, yy = _grid(size, sigma_x.device)
    cos = torch.cos(theta)[:, None, None]
    sin = torch.sin(theta)[:, None, None]
    u = cos * xx + sin * yy
    v = -sin * xx + cos * yy
    return (u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2


def _check_sigmas(sigma_x: Tensor, sigma_y: Tensor) -> None:
    check_positive("sigma_x", sigma_x)
    check_positive("sigma_y", sigma_y)


def _normalize(kernels: Tensor, dtype: torch.dtype) -> Tensor:
    return (kernels / kernels.sum(dim=(-2, -1), keepdim=True)).to(dtype)


def gaussian_kernel(
    size: int,
    sigma_x: ScalarOrTensor,
    sigma_y: ScalarOrTensor,
    theta: ScalarOrTensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Bivariate (anisotropic) Gaussian kernel, exp(-½ pᵀΣ⁻¹p), normalized to sum 1.

    Isotropic kernels use ``sigma_y = sigma_x`` and ``theta = 0``. Source: BasicSR
    `bivariate_Gaussian` (reference §2.2).

    Args:
        size: odd kernel side.
        sigma_x: standard deviation along the (rotated) x axis, scalar or (B,).
        sigma_y: standard deviation along the (rotated) y axis, scalar or (B,).
        theta: rotation angle in radians, scalar or (B,).
        dtype: dtype of the result (evaluation is in float64).

    Returns:
        Tensor of shape (B, size, size), B = 1 for scalar parameters, on the parameters' device.

    Example:
        >>> gaussian_kernel(21, 2.0, 2.0, 0.0).shape
        torch.Size([1, 21, 21])
    """
    _check_size(size)
    sx, sy, th = _broadcast(sigma_x, sigma_y, theta, device=_device_of(sigma_x, sigma_y, theta))
    _check_sigmas(sx, sy)
    return _normalize(torch.exp(-0.5 * _quadratic_form(size, sx, sy, th)), dtype)


def generalized_gaussian_kernel(
    size: int,
    sigma_x: ScalarOrTensor,
    sigma_y: ScalarOrTensor,
    theta: ScalarOrTensor,
    beta: ScalarOrTensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Generalized Gaussian kernel, exp(-½ (pᵀΣ⁻¹p)^β), normalized to sum 1.

    Source: BasicSR `bivariate_generalized_Gaussian` (reference §2.3). β = 1 is the Gaussian.

    Example:
        >>> generalized_gaussian_kernel(7, 1.0, 1.0, 0.0, 2.0).sum().item()  # doctest: +ELLIPSIS
        1.0...
    """
    _check_size(size)
    sx, sy, th, b = _broadcast(sigma_x, sigma_y, theta, beta, device=_device_of(sigma_x, sigma_y, theta, beta))
    _check_sigmas(sx, sy)
    q = _quadratic_form(size, sx, sy, th)
    return _normalize(torch.exp(-0.5 * q.pow(b[:, None, None])), dtype)


def plateau_kernel(
    size: int,
    sigma_x: ScalarOrTensor,
    sigma_y: ScalarOrTensor,
    theta: ScalarOrTensor,
    beta: ScalarOrTensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Plateau-shaped kernel, 1 / ((pᵀΣ⁻¹p)^β + 1), normalized to sum 1.

    Source: BasicSR `bivariate_plateau` (reference §2.4).

    Example:
        >>> plateau_kernel(9, 1.5, 0.8, 0.3, 1.5).shape
        torch.Size([1, 9, 9])
    """
    _check_size(size)
    sx, sy, th, b = _broadcast(sigma_x, sigma_y, theta, beta, device=_device_of(sigma_x, sigma_y, theta, beta))
    _check_sigmas(sx, sy)
    q = _quadratic_form(size, sx, sy, th)
    return _normalize(1.0 / (q.pow(b[:, None, None]) + 1.0), dtype)


def _bessel_j1(x: Tensor) -> Tensor:
    """J1 of a float64 tensor: scipy's on CPU, torch's elsewhere.

    torch's `special.bessel_j1` is off by up to 4.6e-7 (measured against mpmath on [0, 45]; scipy's
    is within 3e-16), so CPU kernels use scipy's, which is also what the reference uses.
    """
    if x.device.type == "cpu":
        return torch.from_numpy(scipy.special.j1(x.numpy()))
    return torch.special.bessel_j1(x)


def _sinc_values(size: int, cutoff: Tensor) -> Tensor:
    """Unnormalized circular low-pass kernel ω·J1(ω·r)/(2π·r), centre ω²/(4π)."""
    xx, yy = _grid(size, cutoff.device)
    radius = torch.sqrt(xx**2 + yy**2)
    omega = cutoff[:, None, None]
    safe_radius = torch.where(radius == 0, torch.ones_like(radius), radius)
    values = omega * _bessel_j1(omega * safe_radius) / (2 * math.pi * safe_radius)
    # lim_{r→0} ω·J1(ωr)/(2πr) = ω²/(4π); the reference sets the centre explicitly too.
    return torch.where(radius == 0, omega**2 / (4 * math.pi), values)


def sinc_kernel(
    size: int,
    cutoff: ScalarOrTensor,
    pad_to: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """2-D circular low-pass (sinc) kernel, normalized to sum 1 (it has negative side lobes).

    Source: BasicSR `circular_lowpass_kernel` (reference §2.6).

    Args:
        size: odd kernel side.
        cutoff: cutoff frequency ω_c in radians per pixel, scalar or (B,).
        pad_to: if larger than ``size``, zero-pad symmetrically to this odd side.
        dtype: dtype of the result.

    Example:
        >>> sinc_kernel(7, math.pi / 3, pad_to=21).shape
        torch.Size([1, 21, 21])
    """
    _check_size(size)
    (omega,) = _broadcast(cutoff, device=_device_of(cutoff))
    check_positive("sinc cutoff", omega)
    kernels = _normalize(_sinc_values(size, omega), dtype)
    if pad_to is not None and pad_to > size:
        kernels = pad_kernel(kernels, pad_to)
    return kernels


def pad_kernel(kernels: Tensor, size: int) -> Tensor:
    """Zero-pad (B, k, k) kernels symmetrically to (B, size, size); both sides odd."""
    _check_size(size)
    k = kernels.shape[-1]
    _check_size(k)
    if size < k:
        raise ValueError(f"cannot pad a {k}x{k} kernel to the smaller size {size}")
    pad = (size - k) // 2
    return torch.nn.functional.pad(kernels, (pad, pad, pad, pad))


class _ArrayOps(NamedTuple):
    """The array functions the kernel formulas use, from torch or from numpy/scipy (same semantics)."""

    exp: Callable
    sqrt: Callable
    cos: Callable
    sin: Callable
    abs: Callable
    where: Callable
    j1: Callable


_TORCH_OPS = _ArrayOps(torch.exp, torch.sqrt, torch.cos, torch.sin, torch.abs, torch.where, _bessel_j1)
_NUMPY_OPS = _ArrayOps(np.exp, np.sqrt, np.cos, np.sin, np.abs, np.where, scipy.special.j1)


def _mixed_values(ops: _ArrayOps, xx, yy, family, size, sigma_x, sigma_y, theta, beta, cutoff):
    """Unnormalized (B, k, k) values of `mixed_kernels`, written once for torch tensors and numpy arrays.

    ``xx``/``yy`` are the (k, k) grid, the parameters (B,) float64 (``family``/``size`` int64).
    """
    names = {name: i for i, name in enumerate(KERNEL_FAMILIES)}
    isotropic = (family == names["iso"]) | (family == names["generalized_iso"]) | (family == names["plateau_iso"])
    sinc_family = family == names["sinc"]
    sigma_y = ops.where(isotropic, sigma_x, sigma_y)
    theta = ops.where(isotropic, 0.0 * theta, theta)
    # Parameters of unused families may be placeholders (e.g. σ = 0 for a sinc sample); replace
    # them by harmless values so no NaN from another branch leaks through `where`.
    sx = ops.where(sinc_family, 1.0 + 0.0 * sigma_x, sigma_x)[:, None, None]
    sy = ops.where(sinc_family, 1.0 + 0.0 * sigma_y, sigma_y)[:, None, None]
    # q = pᵀΣ⁻¹p with Σ = R·diag(σx², σy²)·Rᵀ: the squared rotated coordinates over the variances.
    cos, sin = ops.cos(theta)[:, None, None], ops.sin(theta)[:, None, None]
    q = ((cos * xx + sin * yy) / sx) ** 2 + ((-sin * xx + cos * yy) / sy) ** 2
    b = beta[:, None, None]
    gaussian = ops.exp(-0.5 * q)
    generalized = ops.exp(-0.5 * q**b)
    plateau = 1.0 / (q**b + 1.0)
    # Circular low-pass ω·J1(ω·r)/(2π·r); lim_{r→0} = ω²/(4π), which the reference sets explicitly too.
    radius = ops.sqrt(xx**2 + yy**2)
    omega = cutoff[:, None, None]
    safe_radius = ops.where(radius == 0, 1.0 + 0.0 * radius, radius)
    sinc = ops.where(radius == 0, omega**2 / (4 * math.pi),
                     omega * ops.j1(omega * safe_radius) / (2 * math.pi * safe_radius))
    fam = family[:, None, None]
    values = ops.where((fam == names["iso"]) | (fam == names["aniso"]), gaussian, sinc)
    values = ops.where((fam == names["generalized_iso"]) | (fam == names["generalized_aniso"]), generalized, values)
    values = ops.where((fam == names["plateau_iso"]) | (fam == names["plateau_aniso"]), plateau, values)
    half = ((size - 1) // 2)[:, None, None]
    inside = (ops.abs(xx) <= half) & (ops.abs(yy) <= half)
    return ops.where(inside, values, 0.0 * values)


def mixed_kernels(
    family: Tensor,
    size: Tensor,
    sigma_x: Tensor,
    sigma_y: Tensor,
    theta: Tensor,
    beta: Tensor,
    cutoff: Tensor,
    pad_to: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """One kernel per sample, each of its own family and odd size, zero-padded to ``pad_to``.

    Equal to building each sample's kernel with the builders above and padding it with
    `pad_kernel`, but done for the whole batch at once on ``family.device``. Isotropic families
    ignore ``sigma_y``/``theta`` (σy = σx, θ = 0); Gaussian families ignore ``beta``; only "sinc"
    uses ``cutoff``. CPU parameters are evaluated with numpy/scipy: on (B, 21, 21) arrays torch's
    per-op dispatch (and, with 2+ threads on a busy machine, its thread wake-ups) cost more than the
    arithmetic; other devices stay batched in torch. Both evaluate the same formulas in float64.

    Args:
        family: (B,) int64 indices into `KERNEL_FAMILIES`.
        size: (B,) odd kernel sizes, each ≤ ``pad_to``.
        sigma_x, sigma_y, theta, beta, cutoff: (B,) float parameters.
        pad_to: odd side of the returned kernels.
        dtype: dtype of the result.

    Returns:
        (B, pad_to, pad_to) kernels, each summing to 1.
    """
    _check_size(pad_to)
    if bool(((size % 2) == 0).any()) or bool((size > pad_to).any()) or bool((size < 1).any()):
        raise ValueError(f"kernel sizes must be odd and at most {pad_to}, got {size.tolist()}")
    params = [t.to(torch.float64) for t in (sigma_x, sigma_y, theta, beta, cutoff)]
    names = {name: i for i, name in enumerate(KERNEL_FAMILIES)}
    is_sinc = family == names["sinc"]
    isotropic = (family == names["iso"]) | (family == names["generalized_iso"]) | (family == names["plateau_iso"])
    check_positive("sinc cutoff", params[4][is_sinc])
    check_positive("sigma_x", params[0][~is_sinc])
    check_positive("sigma_y", torch.where(isotropic, params[0], params[1])[~is_sinc])
    if family.device.type != "cpu":
        xx, yy = _grid(pad_to, family.device)
        values = _mixed_values(_TORCH_OPS, xx, yy, family, size, *params)
        return _normalize(values, dtype)
    ax = np.arange(pad_to, dtype=np.float64) - (pad_to - 1) / 2
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    values = _mixed_values(_NUMPY_OPS, xx, yy, family.numpy(), size.numpy(), *(t.numpy() for t in params))
    return torch.from_numpy(values / values.sum(axis=(-2, -1), keepdims=True)).to(dtype)
