"""filter2d, USM sharpening and resize against OpenCV and independent numpy computations."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.filter import filter2d, reflect_pad, separable_filter_plane
from degrade.kernels import gaussian_kernel
from degrade.resize import resize
from degrade.sharpen import USMSharpen, gaussian_blur_separable, gaussian_taps, usm_sharpen


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_filter2d_matches_cv2_filter2d_per_sample():
    images = _rand(3, 3, 37, 41)
    kernels = _rand(3, 7, 7, seed=1)  # arbitrary, asymmetric: checks correlation vs convolution
    out = filter2d(images, kernels)
    for b in range(3):
        for c in range(3):
            expected = cv2.filter2D(images[b, c].numpy(), -1, kernels[b].numpy(), borderType=cv2.BORDER_REFLECT_101)
            np.testing.assert_allclose(out[b, c].numpy(), expected, rtol=0, atol=1e-12)


def test_filter2d_shared_kernel_equals_repeated_kernel():
    images = _rand(4, 3, 20, 20)
    kernel = gaussian_kernel(5, 1.0, 2.0, 0.3, dtype=torch.float64)
    torch.testing.assert_close(filter2d(images, kernel), filter2d(images, kernel.expand(4, 5, 5)))


def test_filter2d_delta_is_identity_and_output_keeps_size(device):
    images = _rand(2, 3, 9, 13).to(device)
    delta = torch.zeros(2, 21, 21, dtype=torch.float64)
    delta[:, 10, 10] = 1
    out = filter2d(images, delta)
    assert out.shape == images.shape and torch.equal(out, images)


@given(h=st.integers(1, 12), w=st.integers(1, 12), pad=st.integers(0, 25))
def test_property_reflect_pad_equals_opencv_reflect101_for_any_pad(h, w, pad):
    image = np.arange(h * w, dtype=np.float64).reshape(h, w)
    if h == 1 or w == 1:
        return  # OpenCV's REFLECT_101 is undefined on a 1-pixel axis; we replicate it (tested below)
    expected = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(reflect_pad(torch.from_numpy(image)[None, None], pad)[0, 0].numpy(), expected)


def test_reflect_pad_of_single_pixel_axis_replicates():
    out = reflect_pad(torch.tensor([[[[5.0]]]]), 3)
    assert out.shape == (1, 1, 7, 7) and torch.all(out == 5)


def test_filter2d_errors_name_the_problem():
    with pytest.raises(ValueError, match="odd"):
        filter2d(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="one per sample"):
        filter2d(torch.zeros(2, 3, 8, 8), torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        filter2d(torch.zeros(3, 8, 8), torch.zeros(1, 3, 3))


@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("shape", [(40, 57), (57, 40), (23, 23)])
def test_separable_filter_plane_equals_the_2d_correlation(dtype, atol, shape):
    # Asymmetric factors of different lengths: a transposed pass that swapped the axes, flipped a kernel or
    # padded the wrong border would differ by far more than rounding.
    rng = np.random.default_rng(4)
    image = rng.random(shape).astype(dtype)
    column, row = rng.random(9).astype(dtype), rng.random(5).astype(dtype)
    out = np.empty_like(image)
    separable_filter_plane(image, column, row, out)
    expected = cv2.filter2D(image.astype(np.float64), -1, np.outer(column, row).astype(np.float64),
                            borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)


def test_gaussian_taps_equal_opencv_default_sigma():
    np.testing.assert_allclose(gaussian_taps(51).numpy(), cv2.getGaussianKernel(51, 0, ktype=cv2.CV_64F)[:, 0],
                               rtol=0, atol=1e-16)
    # cv2's rule for sigma <= 0: 0.3·((51 − 1)/2 − 1) + 0.8 = 8.
    x = np.arange(51) - 25
    np.testing.assert_allclose(gaussian_taps(51).numpy(), np.exp(-(x**2) / 128) / np.exp(-(x**2) / 128).sum())


def test_separable_blur_equals_2d_reflect_filter():
    images = _rand(2, 3, 40, 57)
    taps = gaussian_taps(51)
    kernel2d = taps.outer(taps).numpy()
    out = gaussian_blur_separable(images, taps)
    for b in range(2):
        for c in range(3):
            expected = cv2.filter2D(images[b, c].numpy(), -1, kernel2d, borderType=cv2.BORDER_REFLECT_101)
            np.testing.assert_allclose(out[b, c].numpy(), expected, rtol=0, atol=1e-12)


def _usm_reference(image: np.ndarray, weight=0.5, threshold=10) -> np.ndarray:
    """BasicSR USMSharp written with cv2.filter2D and the 51×51 2-D kernel (reference §2.11)."""
    taps = cv2.getGaussianKernel(51, 0)
    kernel = taps @ taps.T
    blur = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    residual = image - blur
    mask = (np.abs(residual) * 255 > threshold).astype(np.float64)
    soft = cv2.filter2D(mask, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    sharp = np.clip(image + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * image


def test_usm_matches_2d_reference_on_a_photo(sample_batch):
    images = sample_batch[:2].double()
    out = usm_sharpen(images)
    for b in range(2):
        expected = np.stack([_usm_reference(images[b, c].numpy()) for c in range(3)])
        np.testing.assert_allclose(out[b].numpy(), expected, rtol=0, atol=1e-10)


def test_usm_invariants(sample_batch):
    flat = torch.full((1, 3, 60, 60), 0.3)
    assert torch.allclose(usm_sharpen(flat), flat)
    out = usm_sharpen(sample_batch)
    assert out.min() >= 0 and out.max() <= 1
    # Sharpening raises the high-frequency energy (mean absolute Laplacian) of real photos.
    lap = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=torch.float32)[None]
    assert filter2d(out, lap).abs().mean() > filter2d(sample_batch, lap).abs().mean()
    torch.testing.assert_close(USMSharpen()(sample_batch), out)


def test_area_downscale_by_integer_factor_is_block_mean():
    images = _rand(1, 3, 40, 60)
    expected = images.reshape(1, 3, 10, 4, 15, 4).mean(dim=(3, 5))
    torch.testing.assert_close(resize(images, (10, 15), "area"), expected)
    np.testing.assert_allclose(resize(images, (10, 15), "area")[0, 0].numpy(),
                               cv2.resize(images[0, 0].numpy(), (15, 10), interpolation=cv2.INTER_AREA), atol=1e-12)


@pytest.mark.parametrize("mode,flag", [("bilinear", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC)])
def test_upscale_matches_opencv_in_the_interior(mode, flag):
    # Both use half-pixel centres (align_corners=False) and a = -0.75 for cubic; borders differ
    # (torch clamps indices, OpenCV reflects), so compare away from the border.
    image = _rand(1, 1, 30, 34, dtype=torch.float32)
    ours = resize(image, (60, 68), mode)[0, 0].numpy()
    theirs = cv2.resize(image[0, 0].numpy(), (68, 60), interpolation=flag)
    np.testing.assert_allclose(ours[4:-4, 4:-4], theirs[4:-4, 4:-4], atol=2e-5)


def test_scale_factor_semantics_match_interpolate():
    images = _rand(2, 3, 50, 70)
    out = resize(images, mode="bicubic", scale_factor=0.37)
    assert out.shape[-2:] == (int(50 * 0.37), int(70 * 0.37))
    torch.testing.assert_close(out, torch.nn.functional.interpolate(images, scale_factor=0.37, mode="bicubic"))


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_resize_to_same_size_is_identity(mode):
    images = _rand(2, 3, 17, 23)
    torch.testing.assert_close(resize(images, (17, 23), mode), images)
    torch.testing.assert_close(resize(images, mode=mode, scale_factor=1.0), images)


def test_resize_errors():
    with pytest.raises(ValueError, match="unknown resize mode"):
        resize(torch.zeros(1, 3, 8, 8), (4, 4), "nearest")
    with pytest.raises(ValueError, match="exactly one"):
        resize(torch.zeros(1, 3, 8, 8), (4, 4), "area", scale_factor=0.5)
