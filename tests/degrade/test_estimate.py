"""Estimators against synthetic images with known parameters: JPEG headers written by libjpeg (cv2),
noise added with degrade.noise, JPEG by cv2, Gaussian blur by cv2, on the bundled photos.

Tolerances: the photos carry their own noise, blur and (rocket, and the skimage originals) earlier
JPEG compression, so the reference values are the photo's own reading combined with the added
degradation (noise adds in quadrature; blur variances add); the tolerances are the goals of issue 10,
and the measured errors in README "Estimating degradations" are well inside them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from degrade import estimate
from degrade.jpeg_header import ijg_tables
from degrade.noise import add_gaussian_noise, add_poisson_noise
from degrade.pipeline import quantize
from tests.conftest import SAMPLE_FILES, load_sample_rgb, to_batch

NAMES = [p.name for p in SAMPLE_FILES]


def _centre(rgb: np.ndarray, side: int = 256) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = (h - side) // 16 * 8, (w - side) // 16 * 8  # multiples of 8 keep any JPEG grid
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return [_centre(load_sample_rgb(name)) for name in NAMES]


def _write_jpeg(path, rgb, quality, sampling=None):
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if sampling is not None:
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1] if rgb.ndim == 3 else rgb, params)
    assert ok
    path.write_bytes(data.tobytes())
    return data.tobytes()


# --- file headers ------------------------------------------------------------------------------------------------

def test_quality_from_file_is_exact_for_libjpeg_at_every_quality(tmp_path, crops):
    path = tmp_path / "q.jpg"
    for quality in range(1, 101):
        _write_jpeg(path, crops[0][:64, :64], quality)
        info = estimate.jpeg_quality_from_file(path)
        assert (info.quality, info.table_error) == (quality, 0.0), quality


def test_ijg_tables_are_distinct_for_all_qualities():
    assert len({ijg_tables(q).tobytes() for q in range(1, 101)}) == 100


@pytest.mark.parametrize(("flag", "name"), [("IMWRITE_JPEG_SAMPLING_FACTOR_444", "4:4:4"),
                                             ("IMWRITE_JPEG_SAMPLING_FACTOR_422", "4:2:2"),
                                             ("IMWRITE_JPEG_SAMPLING_FACTOR_420", "4:2:0")])
def test_chroma_subsampling_is_read_from_the_frame_header(tmp_path, crops, flag, name):
    path = tmp_path / "s.jpg"
    _write_jpeg(path, crops[1], 77, getattr(cv2, flag))
    info = estimate.jpeg_quality_from_file(path)
    assert (info.quality, info.subsampling, info.width, info.height, info.progressive) == (77, name, 256, 256, False)


def test_gray_jpeg_and_other_formats(tmp_path, crops):
    gray = tmp_path / "g.jpg"
    _write_jpeg(gray, cv2.cvtColor(crops[0], cv2.COLOR_RGB2GRAY), 42)
    assert (estimate.jpeg_quality_from_file(gray).quality, estimate.jpeg_quality_from_file(gray).subsampling) == (
        42, "gray")
    png, webp = tmp_path / "a.png", tmp_path / "a.webp"
    png.write_bytes(cv2.imencode(".png", crops[0])[1].tobytes())
    webp.write_bytes(cv2.imencode(".webp", crops[0], [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes())
    assert estimate.jpeg_quality_from_file(png) is None and estimate.jpeg_quality_from_file(webp) is None
    assert [estimate.file_format(p) for p in (gray, png, webp)] == ["jpeg", "png", "webp"]


def test_custom_table_reports_its_distance_to_the_nearest_ijg_table(tmp_path, crops):
    data = bytearray(_write_jpeg(tmp_path / "c.jpg", crops[0], 60))
    dqt = data.index(b"\xff\xdb")
    data[dqt + 5 + 10] += 3  # one luma entry (zigzag 10) off by 3: mean |difference| over 2 x 64 entries
    (tmp_path / "c.jpg").write_bytes(bytes(data))
    info = estimate.jpeg_quality_from_file(tmp_path / "c.jpg")
    assert info.quality == 60 and info.table_error == pytest.approx(3 / 128)


def test_truncated_header_is_a_one_line_error_naming_the_file(tmp_path, crops):
    data = _write_jpeg(tmp_path / "t.jpg", crops[0], 50)
    (tmp_path / "t.jpg").write_bytes(data[: data.index(b"\xff\xdb") + 30])
    with pytest.raises(ValueError, match=r"t\.jpg: corrupt JPEG"):
        estimate.jpeg_quality_from_file(tmp_path / "t.jpg")


# --- noise -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_noise(crops) -> torch.Tensor:
    return estimate.noise_sigma(torch.cat([to_batch(c) for c in crops]))


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [5.0, 10.0, 20.0, 30.0])
def test_noise_sigma_recovers_added_gaussian_noise(crops, own_noise, sigma):
    """Unclipped noise: the estimate equals √(σ² + σ₀²) (σ₀: the photo's own reading) within ±1."""
    batch = torch.cat([to_batch(c) for c in crops])
    noisy = add_gaussian_noise(batch, sigma, False, torch.arange(len(crops)), clip=False)
    expected = torch.sqrt(sigma**2 + own_noise**2)
    assert torch.all((estimate.noise_sigma(noisy) - expected).abs() <= 1.0)


@pytest.mark.slow
def test_channel_correlation_and_signal_dependence_separate_noise_kinds(crops):
    batch = torch.cat([to_batch(c) for c in crops])
    seeds = torch.arange(len(crops))
    colour = estimate.noise_estimate(quantize(add_gaussian_noise(batch, 15.0, False, seeds)))
    gray = estimate.noise_estimate(quantize(add_gaussian_noise(batch, 15.0, True, seeds)))
    poisson = estimate.noise_estimate(quantize(add_poisson_noise(batch, 1.5, False, seeds)))
    assert torch.all(colour.channel_correlation < 0.3) and torch.all(gray.channel_correlation > 0.85)
    assert torch.all(colour.signal_dependence.abs() < 0.35) and torch.all(gray.signal_dependence.abs() < 0.35)
    assert torch.all(poisson.signal_dependence > 0.6)


@pytest.mark.slow
def test_noise_estimate_is_per_image_and_batch_independent(crops):
    batch = torch.cat([to_batch(c[:64, :64]) for c in crops])
    together = estimate.noise_estimate(batch, chunk=3)
    alone = [estimate.noise_estimate(batch[i : i + 1]) for i in range(len(crops))]
    assert torch.allclose(together.sigma, torch.cat([a.sigma for a in alone]), atol=1e-6)


def test_flat_image_has_zero_noise_and_small_images_are_rejected():
    flat = torch.full((1, 3, 32, 32), 0.5)
    assert float(estimate.noise_sigma(flat)) == 0.0
    with pytest.raises(ValueError, match="at least 14x14"):
        estimate.noise_sigma(torch.zeros(1, 3, 10, 40))


# --- JPEG from pixels --------------------------------------------------------------------------------------------

def _decode(rgb: np.ndarray, quality: int) -> torch.Tensor:
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return to_batch(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy())


@pytest.mark.parametrize("quality", [30, 47, 62, 78, 90])
def test_jpeg_quality_of_decoded_images_within_5(crops, quality):
    found = estimate.jpeg_quality(torch.cat([_decode(c, quality) for c in crops]))
    assert torch.all(found.jpeg_like) and torch.all((found.quality - quality).abs() <= 5)


def _small_jpeg_tiles(quality: int, side: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """Every bundled photo reduced 4x (area; sides multiples of 16), compressed at ``quality`` and cut into
    side x side tiles on the grid: (tiles, share of each tile's pixels with a channel at 0 or 255)."""
    tiles, clipped = [], []
    for name in NAMES:
        rgb = load_sample_rgb(name)
        small = cv2.resize(rgb, (rgb.shape[1] // 64 * 16, rgb.shape[0] // 64 * 16), interpolation=cv2.INTER_AREA)
        decoded = _decode_np(small, quality)
        for top in range(0, decoded.shape[0] - side + 1, side):
            for left in range(0, decoded.shape[1] - side + 1, side):
                tile = np.ascontiguousarray(decoded[top : top + side, left : left + side])
                tiles.append(to_batch(tile))
                clipped.append(((tile == 0) | (tile == 255)).any(axis=2).mean())
    return torch.cat(tiles), np.array(clipped)


def test_jpeg_quality_reads_small_tiles_with_clipped_pixels():
    """A messenger's low qualities clip dark and bright tiles (the decoder clamps the IDCT's ringing); their
    blocks without clipped pixels are still fixed points. Measured (32x32 tiles, q 31 / 40 / 48, the tiles with
    >= 20 % clipped pixels): 16 of 19 read within ±5, all tiles 143 of 147 (1 wrong); with the error over all
    pixels (every block) 8 of 19 and 133 of 147 did."""
    right, wrong, clipped_right, clipped_count = 0, 0, 0, 0
    for quality in (31, 40, 48):
        tiles, clipped = _small_jpeg_tiles(quality)
        found = estimate.jpeg_quality(tiles)
        near = (found.jpeg_like & ((found.quality - quality).abs() <= 5)).numpy()
        right, wrong = right + int(near.sum()), wrong + int((found.jpeg_like.numpy() & ~near).sum())
        heavy = clipped >= 0.2
        clipped_right, clipped_count = clipped_right + int(near[heavy].sum()), clipped_count + int(heavy.sum())
        total = len(near)
    assert clipped_count >= 15 and clipped_right >= 0.75 * clipped_count, (clipped_right, clipped_count)
    assert right >= 0.9 * 3 * total and wrong <= 3, (right, wrong)


def test_jpeg_quality_of_64px_tiles_has_no_false_fixed_points():
    """bench/estimate.py's 64x64 tiles (every 128 px of every photo): with the error over unclipped blocks only, a
    tile with few of them had a relative dip at q 13 (clean, and compressed at 60 / 80); the near-least rule
    removes it (measured: clean 0 of 54 JPEG-like, q 60 / 80 all within ±2)."""
    photos = [load_sample_rgb(name) for name in NAMES]
    tiles = torch.cat([to_batch(p)[..., i : i + 64, j : j + 64] for p in photos
                       for i in range(0, p.shape[0] - 63, 128) for j in range(0, p.shape[1] - 63, 128)])
    assert not bool(estimate.jpeg_quality(tiles).jpeg_like.any())
    for quality in (60, 80):
        found = estimate.jpeg_quality(torch.cat([_decode(t, quality) for t in _uint8_tiles(tiles)]))
        assert torch.all(found.jpeg_like) and torch.all((found.quality - quality).abs() <= 5), quality


def _uint8_tiles(tiles: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray((t.permute(1, 2, 0) * 255).round().byte().numpy()) for t in tiles]


def test_jpeg_quality_does_not_depend_on_its_worker_threads():
    tiles, _ = _small_jpeg_tiles(40)
    one, three = estimate.jpeg_quality(tiles[:12], workers=1), estimate.jpeg_quality(tiles[:12], workers=3)
    assert torch.equal(one.quality.nan_to_num(-1.0), three.quality.nan_to_num(-1.0))  # NaN: not JPEG-like
    assert torch.equal(one.dip, three.dip)


def test_unclipped_blocks_marks_blocks_without_0_or_255():
    rgb = np.full((32, 24, 3), 128, dtype=np.uint8)
    rgb[3, 9, 1], rgb[20, 20, 2] = 255, 0  # blocks (0, 1) and (2, 2)
    mask = estimate.unclipped_blocks(rgb)
    blocks = mask.reshape(4, 8, 3, 8).all(axis=(1, 3))
    assert blocks.sum() == 10 and not blocks[0, 1] and not blocks[2, 2]
    assert (mask.reshape(4, 8, 3, 8).any(axis=(1, 3)) == blocks).all()  # whole blocks
    rgb[::8, ::8] = 0  # every block clipped: too little evidence (None: every pixel counts)
    assert estimate.unclipped_blocks(rgb) is None


def test_clean_and_resized_images_are_not_jpeg_like(crops):
    """Photos never compressed on this grid: PNG originals shifted off the grid, and JPEGs resized after."""
    shifted = torch.cat([to_batch(np.ascontiguousarray(c[3:-5, 3:-5])) for c in crops])
    resized = torch.cat([to_batch(cv2.resize(_decode_np(c, 50), (200, 200), interpolation=cv2.INTER_AREA))
                         for c in crops])
    for batch in (shifted, resized):
        found = estimate.jpeg_quality(batch)
        assert not bool(found.jpeg_like.any()) and bool(found.quality.isnan().all())


def _decode_np(rgb, quality):
    return (_decode(rgb, quality)[0].permute(1, 2, 0) * 255).round().byte().numpy()


def test_blockiness_grows_as_quality_drops(crops):
    values = [float(estimate.blockiness(_decode(crops[2], q)).item()) for q in (90, 50, 20)]
    assert values == sorted(values) and values[-1] > estimate.BLOCKINESS_THRESHOLD


# --- blur --------------------------------------------------------------------------------------------------------

def _blur(rgb: np.ndarray, sigma: float) -> torch.Tensor:
    blurred = cv2.GaussianBlur(rgb.astype(np.float64), (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return to_batch(np.clip(np.round(blurred), 0, 255).astype(np.uint8))


@pytest.mark.slow
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.0])
def test_blur_sigma_recovers_gaussian_blur_within_25_percent(sigma):
    """Whole photos, each with its own unblurred sharpness as s₀ (what 'applied to a sharp photo' means)."""
    photos = [load_sample_rgb(name) for name in NAMES]
    own = [float(estimate.sharpness(to_batch(p)).item()) for p in photos]
    found = torch.cat([estimate.blur_sigma(_blur(p, sigma), s0) for p, s0 in zip(photos, own, strict=True)])
    assert torch.all((found - sigma).abs() <= 0.25 * sigma), found


def test_sharpness_is_monotone_in_blur(crops):
    values = [float(estimate.sharpness(_blur(crops[0], s)).item()) for s in (0.5, 1.0, 1.5, 2.5)]
    assert values == sorted(values)
