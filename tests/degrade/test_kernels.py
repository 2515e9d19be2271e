"""Blur kernels against the formulas evaluated independently in float64 numpy, OpenCV and scipy."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.kernels import (
    KERNEL_FAMILIES,
    gaussian_kernel,
    generalized_gaussian_kernel,
    mixed_kernels,
    pad_kernel,
    plateau_kernel,
    sinc_kernel,
)


def _reference_quadratic(size, sx, sy, theta):
    """pᵀΣ⁻¹p with Σ = R diag(σx², σy²) Rᵀ built and inverted explicitly (BasicSR sigma_matrix2/pdf2)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    sigma = rot @ np.diag([sx**2, sy**2]) @ rot.T
    inv = np.linalg.inv(sigma)
    ax = np.arange(-(size - 1) / 2, (size - 1) / 2 + 1)
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns
    grid = np.stack([xx, yy], axis=-1)
    return np.einsum("ijk,kl,ijl->ij", grid, inv, grid)


def _normalized(k):
    return k / k.sum()


def _reference_sinc(size, omega):
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    r = np.hypot(i - c, j - c)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega * scipy.special.j1(omega * r) / (2 * np.pi * r)
    k[int(c), int(c)] = omega**2 / (4 * np.pi)
    return _normalized(k)


CASES = [(21, 2.5, 0.7, 0.6), (7, 0.2, 3.0, -2.9), (15, 1.3, 1.3, 0.0), (9, 3.0, 0.5, math.pi / 2)]


@pytest.mark.parametrize("size,sx,sy,theta", CASES)
def test_gaussian_matches_formula(size, sx, sy, theta):
    expected = _normalized(np.exp(-0.5 * _reference_quadratic(size, sx, sy, theta)))
    got = gaussian_kernel(size, sx, sy, theta, dtype=torch.float64)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("size,sx,sy,theta", CASES)
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.7, 4.0])
def test_generalized_and_plateau_match_formula(size, sx, sy, theta, beta):
    q = _reference_quadratic(size, sx, sy, theta)
    np.testing.assert_allclose(generalized_gaussian_kernel(size, sx, sy, theta, beta, dtype=torch.float64)[0].numpy(),
                               _normalized(np.exp(-0.5 * q**beta)), rtol=0, atol=1e-14)
    np.testing.assert_allclose(plateau_kernel(size, sx, sy, theta, beta, dtype=torch.float64)[0].numpy(),
                               _normalized(1 / (q**beta + 1)), rtol=0, atol=1e-14)


@pytest.mark.parametrize("size,sigma", [(7, 1.0), (21, 3.0), (13, 0.4)])
def test_isotropic_gaussian_equals_opencv_separable_kernel(size, sigma):
    taps = cv2.getGaussianKernel(size, sigma, ktype=cv2.CV_64F)
    np.testing.assert_allclose(gaussian_kernel(size, sigma, sigma, 0.0, dtype=torch.float64)[0].numpy(),
                               taps @ taps.T, rtol=0, atol=1e-15)


@pytest.mark.parametrize("size,omega", [(21, math.pi / 3), (7, math.pi), (13, math.pi / 5), (11, 2.0)])
def test_sinc_matches_scipy_bessel(size, omega):
    # CPU kernels use scipy's J1 (torch.special.bessel_j1 is off by up to 4.6e-7), so they agree to float64 rounding.
    np.testing.assert_allclose(sinc_kernel(size, omega, dtype=torch.float64)[0].numpy(), _reference_sinc(size, omega),
                               rtol=0, atol=1e-15)


def test_sinc_side_lobe_literal():
    # Reference §2.6: "min ≈ −0.0116 for ω_c = π/3, k = 21".
    assert sinc_kernel(21, math.pi / 3)[0].min().item() == pytest.approx(-0.0116, abs=5e-5)


def test_sinc_pad_to_centres_kernel():
    small = sinc_kernel(7, 1.5)
    padded = sinc_kernel(7, 1.5, pad_to=21)
    assert padded.shape == (1, 21, 21)
    assert torch.equal(padded[0, 7:14, 7:14], small[0])
    assert padded.abs().sum() == pytest.approx(small.abs().sum().item())


def test_isotropic_is_symmetric_and_rotation_by_pi_is_invariant():
    iso = gaussian_kernel(15, 2.0, 2.0, 0.0)[0]
    assert torch.allclose(iso, iso.T) and torch.allclose(iso, iso.flip(0)) and torch.allclose(iso, iso.flip(1))
    for builder in (gaussian_kernel, lambda *a: plateau_kernel(*a, 1.5), lambda *a: generalized_gaussian_kernel(*a, 2)):
        a = builder(21, 2.5, 0.8, 0.4)
        b = builder(21, 2.5, 0.8, 0.4 + math.pi)
        assert torch.allclose(a, b, atol=1e-7)
        # Rotating the covariance by π/2 swaps σx and σy.
        c = builder(21, 0.8, 2.5, 0.4 + math.pi / 2)
        assert torch.allclose(a, c, atol=1e-7)


def test_generalized_with_beta_one_is_gaussian():
    assert torch.allclose(generalized_gaussian_kernel(11, 1.5, 0.9, 0.3, 1.0), gaussian_kernel(11, 1.5, 0.9, 0.3))


def test_batched_parameters_give_one_kernel_per_sample():
    sx = torch.tensor([0.5, 1.0, 2.0])
    kernels = gaussian_kernel(9, sx, sx, 0.0)
    assert kernels.shape == (3, 9, 9)
    for i in range(3):
        assert torch.allclose(kernels[i], gaussian_kernel(9, float(sx[i]), float(sx[i]), 0.0)[0])


def _single(family: str, size: int, sx: float, sy: float, theta: float, beta: float, cutoff: float) -> torch.Tensor:
    if family == "sinc":
        return sinc_kernel(size, cutoff, dtype=torch.float64)
    if family.endswith("iso") and not family.endswith("aniso"):
        sy, theta = sx, 0.0
    if family in ("iso", "aniso"):
        return gaussian_kernel(size, sx, sy, theta, dtype=torch.float64)
    builder = generalized_gaussian_kernel if family.startswith("generalized") else plateau_kernel
    return builder(size, sx, sy, theta, beta, dtype=torch.float64)


def test_mixed_kernels_equal_single_builders_padded():
    g = torch.Generator().manual_seed(0)
    n = 3 * len(KERNEL_FAMILIES)
    family = torch.arange(n) % len(KERNEL_FAMILIES)
    size = torch.tensor([7, 9, 11, 13, 15, 17, 19, 21])[torch.randint(0, 8, (n,), generator=g)]
    sx, sy = 0.2 + 2.8 * torch.rand(n, generator=g, dtype=torch.float64), 0.2 + 2.8 * torch.rand(n, generator=g,
                                                                                                   dtype=torch.float64)
    theta = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    beta = 0.5 + 3.5 * torch.rand(n, generator=g, dtype=torch.float64)
    cutoff = math.pi / 5 + (math.pi - math.pi / 5) * torch.rand(n, generator=g, dtype=torch.float64)
    mixed = mixed_kernels(family, size, sx, sy, theta, beta, cutoff, 21, dtype=torch.float64)
    for i in range(n):
        expected = pad_kernel(_single(KERNEL_FAMILIES[int(family[i])], int(size[i]), float(sx[i]), float(sy[i]),
                                      float(theta[i]), float(beta[i]), float(cutoff[i])), 21)
        torch.testing.assert_close(mixed[i : i + 1], expected, rtol=0, atol=1e-14)


@given(
    family=st.integers(0, len(KERNEL_FAMILIES) - 1),
    half=st.integers(3, 10),
    sx=st.floats(0.2, 3.0),
    sy=st.floats(0.2, 3.0),
    theta=st.floats(-math.pi, math.pi),
    beta=st.floats(0.5, 4.0),
    cutoff=st.floats(math.pi / 5, math.pi),
)
def test_property_every_kernel_sums_to_one_and_is_zero_outside_its_size(family, half, sx, sy, theta, beta, cutoff):
    t = lambda v, dtype=torch.float64: torch.tensor([v], dtype=dtype)  # noqa: E731
    k = mixed_kernels(t(family, torch.int64), t(2 * half + 1, torch.int64), t(sx), t(sy), t(theta), t(beta),
                      t(cutoff), 21)
    assert k.shape == (1, 21, 21)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-5)
    outside = torch.ones(21, 21, dtype=torch.bool)
    outside[10 - half : 11 + half, 10 - half : 11 + half] = False
    assert torch.all(k[0][outside] == 0)
    if KERNEL_FAMILIES[family] != "sinc":
        assert torch.all(k >= 0)


@pytest.mark.parametrize("bad", [0, 4, 20, -3])
def test_even_or_invalid_size_is_rejected(bad):
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(bad, 1.0, 1.0, 0.0)


def test_mismatched_batch_sizes_are_rejected():
    with pytest.raises(ValueError, match="batch size"):
        gaussian_kernel(7, torch.ones(2), torch.ones(3), 0.0)


def test_kernels_follow_parameter_device(device):
    k = mixed_kernels(torch.tensor([1, 6], device=device), torch.tensor([9, 21], device=device),
                      torch.tensor([1.0, 1.0], device=device), torch.tensor([2.0, 1.0], device=device),
                      torch.tensor([0.3, 0.0], device=device), torch.tensor([1.0, 1.0], device=device),
                      torch.tensor([math.pi, 1.2], device=device), 21)
    assert k.device.type == device.type
    cpu = mixed_kernels(torch.tensor([1, 6]), torch.tensor([9, 21]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0]),
                        torch.tensor([0.3, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([math.pi, 1.2]), 21)
    # Off CPU the sinc uses torch.special.bessel_j1 (up to 4.6e-7 off J1; CPU uses scipy's), hence 5e-7.
    torch.testing.assert_close(k.cpu(), cpu, rtol=0, atol=5e-7)
