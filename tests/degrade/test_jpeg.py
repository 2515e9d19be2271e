"""Tests for degrade.jpeg: bit-exactness against OpenCV's libjpeg-turbo, invariants, properties.

The independent reference is ``cv2.imencode`` / ``cv2.imdecode``, called here directly, not
through the module. Our torch backend re-implements libjpeg-turbo's integer pipeline, so the
expected agreement is exact equality, not a PSNR floor. Measured on the bundled photos at
qualities 30/50/75/95 (crops, odd sizes, full photos, noise, quality 1..100): 0 differing
pixels, i.e. PSNR(ours, OpenCV) = inf.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.jpeg import _QTABLES, _device_constants, _idct, _reciprocals
from degrade.jpeg import jpeg_compress as _jpeg_compress
from tests.conftest import SAMPLE_FILES, cuda_or_skip, load_sample_rgb, to_batch


def jpeg_compress(images, quality, *, backend="torch", sampling="4:2:0"):
    """These tests exercise the torch emulation: the library's default "auto" picks OpenCV on CPU."""
    return _jpeg_compress(images, quality, backend=backend, sampling=sampling)


def test_auto_backend_is_opencv_on_cpu_and_equals_the_torch_emulation(sample_batch):
    quality = torch.tensor([30.0, 50.0, 75.0, 95.0])
    auto = _jpeg_compress(sample_batch, quality)
    assert torch.equal(auto, _jpeg_compress(sample_batch, quality, backend="opencv"))
    assert torch.equal(auto, _jpeg_compress(sample_batch, quality, backend="torch"))

QUALITIES = (30, 50, 75, 95)
# libjpeg's zig-zag order: entry k of a DQT segment is natural (row-major) index _ZIGZAG[k].
_ZIGZAG = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
    7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
    39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]


SAMPLINGS = {"4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
             "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444}


def cv2_round_trip(images: torch.Tensor, quality: int, sampling: str = "4:2:0") -> torch.Tensor:
    """The reference: each sample through cv2.imencode/imdecode at an integer quality and chroma sampling."""
    out = []
    flags = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLINGS[sampling]]
    for image in images:
        rgb = image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
        assert ok
        decoded = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append(torch.from_numpy(decoded).permute(2, 0, 1).float().div(255))
    return torch.stack(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def photo(name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A bundled photo as (1, 3, H, W), optionally a centre crop of ``size``."""
    batch = to_batch(load_sample_rgb(name))
    if size is None:
        return batch
    h, w = batch.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return batch[..., top : top + size[0], left : left + size[1]]


def noise(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- against OpenCV ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in SAMPLE_FILES])
@pytest.mark.parametrize("size,sampling", [((256, 256), "4:2:0"), ((255, 251), "4:2:0"), ((255, 251), "4:2:2"),
                                           ((255, 251), "4:4:4")])
def test_matches_opencv_on_photo_crops(name: str, size: tuple[int, int], sampling: str) -> None:
    images = photo(name, size)
    for quality in QUALITIES:
        ours, ref = jpeg_compress(images, quality, sampling=sampling), cv2_round_trip(images, quality, sampling)
        assert torch.equal(ours, ref), f"{name} {size} q={quality}: PSNR vs OpenCV {psnr(ours, ref):.2f} dB"


def test_matches_opencv_on_a_full_photo_batch_with_per_sample_quality() -> None:
    images = photo("coffee.png")  # 400 x 600: neither dimension a multiple of 16
    batch = images.expand(len(QUALITIES), -1, -1, -1)
    ours = jpeg_compress(batch, torch.tensor(QUALITIES, dtype=torch.float32))
    for i, quality in enumerate(QUALITIES):
        assert torch.equal(ours[i : i + 1], cv2_round_trip(images, quality)), f"q={quality}"


@pytest.mark.parametrize("sampling", list(SAMPLINGS))
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (2, 2), (3, 5), (4, 9), (7, 9), (9, 4), (16, 16), (17, 33)])
def test_matches_opencv_on_odd_sizes(size: tuple[int, int], sampling: str) -> None:
    # Widths <= 4 take libjpeg's plain (non-fancy) upsampling path; odd sizes exercise edge padding.
    images = torch.cat([photo("astronaut.png", size), noise(1, *size, seed=sum(size))])
    for quality in (1, 30, 50, 75, 95, 100):
        assert torch.equal(jpeg_compress(images, quality, sampling=sampling),
                           cv2_round_trip(images, quality, sampling)), f"q={quality}"


def test_matches_opencv_on_extreme_content() -> None:
    # Saturated binary noise at quality 1 drives the IDCT output past [-512, 511], where
    # libjpeg's range-limit table wraps around instead of clamping.
    gen = torch.Generator().manual_seed(3)
    binary = (torch.rand(2, 3, 40, 56, generator=gen) > 0.5).float()
    flat = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 40, 56)
    images = torch.cat([binary, flat])
    for sampling in SAMPLINGS:
        for quality in (1, 2, 5, 100):
            assert torch.equal(jpeg_compress(images, quality, sampling=sampling),
                               cv2_round_trip(images, quality, sampling)), f"{sampling} q={quality}"


def test_opencv_backend_equals_cv2() -> None:
    images = torch.cat([photo(p.name, (64, 72)) for p in SAMPLE_FILES])
    for sampling in SAMPLINGS:
        for quality in QUALITIES:
            assert torch.equal(jpeg_compress(images, quality, backend="opencv", sampling=sampling),
                               cv2_round_trip(images, quality, sampling))


def test_quality_tables_match_the_dqt_segments_written_by_opencv() -> None:
    for quality in range(1, 101):
        ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        data = buf.tobytes()
        tables, pos = {}, 2
        while data[pos : pos + 2] != b"\xff\xda":  # walk the markers up to start-of-scan
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if data[pos : pos + 2] == b"\xff\xdb":  # DQT: one or more (Pq/Tq byte, 64 bytes) tables
                seg = data[pos + 4 : pos + 2 + length]
                for k in range(0, len(seg), 65):
                    natural = np.zeros(64, np.int64)
                    natural[_ZIGZAG] = np.frombuffer(seg[k + 1 : k + 65], np.uint8)
                    tables[seg[k] & 0x0F] = natural.reshape(8, 8)
            pos += 2 + length
        assert np.array_equal(_QTABLES[quality - 1, 0], tables[0]), f"luma table at quality {quality}"
        assert np.array_equal(_QTABLES[quality - 1, 1], tables[1]), f"chroma table at quality {quality}"


def test_reciprocal_quantization_equals_rounded_division() -> None:
    # jcdctmgr.c documents its reciprocal trick as computing (|x| + d/2) / d in integers.
    divisors = np.unique(_QTABLES) * 8
    recip, corr, shift = _reciprocals(divisors)
    x = np.arange(0, 1 << 15)[:, None]  # every 16-bit DCT magnitude
    assert np.array_equal(((x + corr) * recip) >> shift, (x + divisors // 2) // divisors)


def test_idct_range_limit_wraps_like_libjpegs_table() -> None:
    # jdmaster.c prepare_range_limit_table, rebuilt here: the IDCT indexes it with x & 1023, where
    # x is the output before +128. Entries 0..127 -> x + 128, 128..511 -> 255, 512..895 -> 0,
    # 896..1023 -> (x + 1024) + 128 - 1024. A DC-only block decodes to x = DC / 8 in every pixel.
    simple = np.concatenate([np.zeros(256), np.arange(256), np.full(384, 255), np.zeros(384), np.arange(128)])
    table = simple[256 + 128 :]  # the post-IDCT table starts at sample_range_limit + CENTERJSAMPLE
    x = np.arange(-1100, 1100)
    coef = torch.zeros(len(x), 1, 8, 8, dtype=torch.float64)
    coef[:, 0, 0, 0] = torch.from_numpy(x * 8.0)
    out = _idct(coef, _device_constants(torch.device("cpu")))
    assert torch.equal(out[:, 0, 0, 0], torch.from_numpy(table[x & 1023]))
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))


# --- invariants -------------------------------------------------------------------------------


def test_shape_dtype_device_and_grid(device: torch.device, sample_batch: torch.Tensor) -> None:
    images = sample_batch[..., :45, :61].to(device)
    out = jpeg_compress(images, torch.tensor([30.0, 50.0, 75.0, 95.0], device=device))
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert out.min() >= 0 and out.max() <= 1
    scaled = out.double() * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-4, rtol=0)


def test_device_matches_cpu_result(device: torch.device, sample_batch: torch.Tensor) -> None:
    quality = torch.tensor([30.0, 50.0, 75.0, 95.0])
    cpu = jpeg_compress(sample_batch, quality)
    assert torch.equal(jpeg_compress(sample_batch.to(device), quality.to(device)).cpu(), cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("sampling", list(SAMPLINGS))
def test_cuda_agrees_with_cpu_bit_exactly(sampling: str) -> None:
    cuda = cuda_or_skip()
    images = torch.cat([photo(p.name, (131, 197)) for p in SAMPLE_FILES])
    quality = torch.tensor([30.0, 47.4, 75.0, 95.0])
    assert torch.equal(jpeg_compress(images.to(cuda), quality.to(cuda), sampling=sampling).cpu(),
                       jpeg_compress(images, quality, sampling=sampling))


def test_quality_100_stays_close_to_the_input() -> None:
    # Measured PSNR vs input at q=100: astronaut 40.28, chelsea 46.19, coffee 39.63, rocket 35.11 dB
    # (4:2:0 chroma subsampling is the main loss). On a smooth ramp the error stays within a few levels.
    for path in SAMPLE_FILES:
        images = photo(path.name)
        assert psnr(jpeg_compress(images, 100), images) > 34.5, path.name
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([cols, rows, (rows + cols) / 2])[None].mul(255).round().div(255)
    error = (jpeg_compress(smooth, 100) - smooth).abs() * 255  # measured: max 3, mean 0.44 levels
    assert error.max() <= 4 and error.mean() <= 0.6


def test_lower_quality_gives_lower_psnr_on_average() -> None:
    # Measured mean PSNR vs input over the four full photos: q10 27.08, q30 30.39, q50 31.75,
    # q75 33.60, q95 37.92 dB. Crops keep the test fast; the order must hold.
    images = [photo(p.name, (128, 160)) for p in SAMPLE_FILES]
    means = [np.mean([psnr(jpeg_compress(x, q), x) for x in images]) for q in (10, 30, 50, 75, 95)]
    assert all(a < b for a, b in zip(means, means[1:], strict=False)), means


def test_per_sample_quality_equals_separate_calls() -> None:
    images = torch.cat([photo("chelsea.png", (96, 80)), photo("rocket.jpg", (96, 80))])
    together = jpeg_compress(images, torch.tensor([30.0, 95.0]))
    assert torch.equal(together[:1], jpeg_compress(images[:1], 30))
    assert torch.equal(together[1:], jpeg_compress(images[1:], 95))
    assert not torch.equal(together[0], jpeg_compress(images[:1], 95)[0])


@pytest.mark.parametrize("batch", [1, 3, 12])
def test_batch_invariance_is_bit_exact_on_cpu(batch: int) -> None:
    probe = photo("astronaut.png", (100, 100))
    images = torch.cat([noise(batch, 100, 100, seed=batch), probe])
    quality = torch.linspace(30, 95, batch + 1)
    together = jpeg_compress(images, quality)
    alone = jpeg_compress(probe, quality[-1:])
    assert torch.equal(together[-1:], alone)


def test_float64_and_half_inputs_give_the_float32_result_in_their_dtype() -> None:
    images = photo("coffee.png", (50, 70))
    out64 = jpeg_compress(images.double(), 60)
    assert out64.dtype == torch.float64
    assert torch.equal(out64.float(), jpeg_compress(images, 60))
    half = images.half()  # lower precisions are computed from float32 and cast back
    assert torch.equal(jpeg_compress(half, 60), jpeg_compress(half.float(), 60).half())


def test_quality_is_rounded_and_clamped() -> None:
    images = photo("chelsea.png", (32, 48))
    assert torch.equal(jpeg_compress(images, 49.6), jpeg_compress(images, 50))
    assert torch.equal(jpeg_compress(images, 30.5), jpeg_compress(images, 30))  # half to even
    assert torch.equal(jpeg_compress(images, -5), jpeg_compress(images, 1))
    assert torch.equal(jpeg_compress(images, 250.0), jpeg_compress(images, 100))


def test_input_outside_unit_range_is_clamped_like_an_8_bit_encoder() -> None:
    images = photo("rocket.jpg", (24, 24))
    shifted = images * 1.4 - 0.2
    assert torch.equal(jpeg_compress(shifted, 75), jpeg_compress(shifted.clamp(0, 1), 75))


@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    quality=st.floats(1, 100),
    seed=st.integers(0, 2**16),
    sampling=st.sampled_from(list(SAMPLINGS)),
)
def test_property_random_inputs_match_opencv(batch: int, height: int, width: int, quality: float, seed: int,
                                             sampling: str) -> None:
    images = noise(batch, height, width, seed) ** 2  # skewed towards dark, like real photos
    out = jpeg_compress(images, quality, sampling=sampling)
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out.mul(255).round().div(255), out)
    assert torch.equal(out, cv2_round_trip(images, int(round(quality)), sampling))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 1, 8, 8), (2, 4, 8, 8), (1, 3, 0, 8), (1, 3, 8, 8, 1)])
def test_bad_shape_raises_value_error_naming_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        jpeg_compress(torch.zeros(shape), 50)


def test_bad_dtype_backend_and_quality_raise() -> None:
    images = torch.zeros(2, 3, 8, 8)
    with pytest.raises(TypeError, match="floating-point"):
        jpeg_compress(images.to(torch.uint8), 50)
    with pytest.raises(ValueError, match="unknown JPEG backend 'pil'; expected 'auto'"):
        jpeg_compress(images, 50, backend="pil")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown JPEG chroma sampling '4:1:1'; expected one of 4:2:0, 4:2:2"):
        jpeg_compress(images, 50, sampling="4:1:1")
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        jpeg_compress(images, torch.tensor([50.0, 60.0, 70.0]))
    with pytest.raises(ValueError, match="finite"):
        jpeg_compress(images, torch.tensor([50.0, float("nan")]))
