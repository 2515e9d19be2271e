"""NIQE/PSNR/SSIM of pipelines/inference/quality.py against BasicSR, scipy and the MATLAB kernel definitions.

Reference values: BasicSR 1.4.2 (``basicsr.metrics.niqe.calculate_niqe(img_bgr_uint8, 0, input_order='HWC',
convert_to='y')``, numpy 2.4.6, scipy 1.17.1, opencv 5.0.0, torch 2.14.1, Python 3.11.7), produced by
``/opt/refenv/bin/python bench/reference/ref_niqe.py values`` on the images of ``niqe_cases.py`` (the first
field is the image's SHA-256 prefix, so the test fails if this machine builds different pixels).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import gamma

from pipelines.inference import quality
from pipelines.inference.quality import aggd_fit, ggd_fit, matlab_imresize, niqe, niqe_features
from tests.conftest import single_thread_fixture
from tests.pipelines import niqe_cases

REFERENCE = {
    "astronaut": ("f22309ff463ef566", 3.0649476661847754),
    "astronaut-blur2": ("6bd8250eae0af7c4", 7.282219990935196),
    "astronaut-noise15": ("528d04b993d6976a", 7.824037772570788),
    "astronaut-jpeg20": ("db7e4cf4d203fcdc", 4.446647361823172),
    "astronaut-bicubicx4": ("fc34aff8f6c514f0", 7.236824112250496),
    "chelsea": ("2ae870185ec12f23", 2.6255243812915023),
    "chelsea-blur2": ("3f18278824b28f94", 8.421009978646836),
    "chelsea-noise15": ("7761504290258ce3", 7.078825703038889),
    "chelsea-jpeg20": ("084873d81c042658", 4.888711859364466),
    "chelsea-bicubicx4": ("4a6c8b3d55f1cc76", 7.981841716245724),
    "coffee": ("9597942f8acc753a", 4.115241615372862),
    "coffee-blur2": ("386a4a73da2793c2", 8.057027108121309),
    "coffee-noise15": ("cba2587bb7a1da57", 9.085562052117847),
    "coffee-jpeg20": ("e065b73513e8f233", 6.835855831216563),
    "coffee-bicubicx4": ("6ddb7fe00aedc635", 7.552512970785532),
    "rocket": ("8041b9cae11b2b6b", 6.969154974981048),
    "rocket-blur2": ("5485451e20db7d6b", 10.008806323498728),
    "rocket-noise15": ("9aeefc3f8248b413", 10.313574827757025),
    "rocket-jpeg20": ("e4e5c7ca7ea349f7", 10.279597609587386),
    "rocket-bicubicx4": ("ed3966df732f9fb1", 9.014573377421575),
    "astronaut-crop97x193": ("9a18a58784e37556", 6.434077422008213),
    "astronaut-crop250x333": ("9aa21d82062c7185", 5.331906516693786),
    "chelsea-crop299x101": ("5bd3a638857820e4", 4.324900490677364),
    "astronaut-hflip": ("e0830a72bebf5968", 3.0668020750766223),
    "astronaut-480x384": ("6e22905474317df4", 3.0298870284790853),
    "astronaut-480x384-hflip": ("b358f4dd830af4c4", 2.9413938420506325),
    "astronaut-480x384-rot180": ("0a078355a801ceeb", 3.029915670550245),
    "astronaut-crop96x96": ("1f74488eeabe3155", 'error: LinAlgError'),
    "astronaut-crop95x400": ("20c49e478a35d072", 'error: RuntimeError'),
}
REFERENCE_1024 = 4.565534983484923  # ref_niqe.py time --size 1024 (astronaut, cv2.INTER_CUBIC to 1024x1024)


def _rgb(bgr: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).float().div(255).to(device)


_one_thread = single_thread_fixture("module")


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    return niqe_cases.cases()


def test_pristine_params_are_the_shipped_basicsr_file():
    data = quality.PRISTINE_PARAMS_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
    with np.load(quality.PRISTINE_PARAMS_PATH, allow_pickle=False) as params:
        assert params["mu_pris_param"].shape == (1, 36) and params["cov_pris_param"].shape == (36, 36)
        window = params["gaussian_window"]
    # the separable filter relies on the window being an outer product
    taps = quality._separable_taps(window)
    np.testing.assert_allclose(np.outer(taps, taps), window, rtol=0, atol=1e-16)


def test_matches_basicsr_on_photos_clean_degraded_and_odd_sizes(cases):
    diffs = []
    for name, (digest, expected) in REFERENCE.items():
        img = cases[name]
        assert niqe_cases.digest(img) == digest, f"{name}: this machine makes other pixels than the reference run"
        if isinstance(expected, str):  # the reference fails on fewer than two blocks; we raise a clear error
            with pytest.raises(ValueError, match="smaller than two 96x96 blocks"):
                niqe(_rgb(img)[None])
            continue
        ours = float(niqe(_rgb(img)[None])[0])
        assert abs(ours - expected) <= 0.01, (name, ours, expected)
        diffs.append(abs(ours - expected))
    assert np.mean(diffs) <= 0.002, np.mean(diffs)


def test_batch_list_and_single_agree(cases):
    a, b, c = cases["astronaut"], cases["astronaut-jpeg20"], cases["chelsea"]
    single = [float(niqe(_rgb(x)[None])[0]) for x in (a, b, c)]
    batch = niqe(torch.stack([_rgb(a), _rgb(b)]))
    listed = niqe([_rgb(a), _rgb(c), _rgb(b)])
    assert batch.dtype == torch.float64 and batch.shape == (2,)
    np.testing.assert_allclose(batch.numpy(), single[:2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(listed.numpy(), [single[0], single[2], single[1]], rtol=0, atol=1e-9)


def test_runs_on_the_images_device(device, cases):
    img = _rgb(cases["chelsea"], device)
    out = niqe(img[None])
    assert out.device.type == device.type
    assert abs(float(out[0]) - REFERENCE["chelsea"][1]) <= 0.01


def test_crop_border_crops_before_the_blocks(cases):
    img = _rgb(cases["astronaut"])
    np.testing.assert_allclose(niqe(img[None], crop_border=4).numpy(), niqe(img[None, :, 4:-4, 4:-4]).numpy(),
                               atol=1e-12)


def test_too_small_images_raise_a_clear_error():
    with pytest.raises(ValueError, match=r"95x400 px .* smaller than two 96x96 blocks"):
        niqe(torch.rand(1, 3, 95, 400, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="crop_border=10"):
        niqe(torch.rand(1, 3, 200, 110, generator=torch.Generator().manual_seed(0)), crop_border=10)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        niqe(torch.rand(1, 1, 200, 200))


def test_flat_image_is_reported_not_returned_as_nan():
    with pytest.raises(ValueError, match="finite features"):
        niqe(torch.full((1, 3, 192, 192), 0.5))


@pytest.mark.parametrize("kind, levels", [("blur", (1.0, 2.0, 4.0)), ("noise", (5.0, 15.0, 40.0)),
                                          ("jpeg", (60, 25, 8))])
def test_niqe_rises_with_degradation_strength(kind, levels):
    photo = niqe_cases.read_photo("coffee.png")
    scores = [float(niqe(_rgb(photo)[None])[0])]
    scores += [float(niqe(_rgb(niqe_cases.degrade(photo, kind, level))[None])[0]) for level in levels]
    assert all(a < b for a, b in zip(scores, scores[1:], strict=False)), scores


def _swap_diagonals(feats: torch.Tensor) -> torch.Tensor:
    """Per scale, features 10-13 are the (1,1) products and 14-17 the (1,-1) products."""
    out = feats.clone()
    for base in (0, 18):
        out[..., base + 10:base + 14], out[..., base + 14:base + 18] = feats[..., base + 14:base + 18], \
            feats[..., base + 10:base + 14]
    return out


def test_flips_permute_blocks_and_diagonal_features(cases):
    """A horizontal flip mirrors the block grid and turns (1,1) neighbour products into (1,-1) ones.

    So NIQE is NOT flip-invariant (BasicSR: 3.0299 vs 2.9414 on the 480x384 crop), but the flipped image's
    features are the original's with the diagonal groups swapped, and a 180° rotation keeps every feature.
    """
    img = _rgb(cases["astronaut-480x384"])[None]
    nh, nw = 5, 4
    feats = niqe_features(img).reshape(nh, nw, 36)
    flipped = niqe_features(img.flip(-1)).reshape(nh, nw, 36)
    rotated = niqe_features(img.flip(-1, -2)).reshape(nh, nw, 36)
    expected_flip = _swap_diagonals(feats.flip(1))
    alpha = [0, 2, 6, 10, 14]
    alpha = alpha + [a + 18 for a in alpha]
    other = [i for i in range(36) if i not in alpha]
    for got, want in ((flipped, expected_flip), (rotated, feats.flip(0, 1))):
        # float32 sums in another order
        np.testing.assert_allclose(got[..., other].numpy(), want[..., other].numpy(), rtol=1e-4, atol=3e-5)
        # a shape estimate may move by one grid step (0.001) when float32 sums round differently
        assert float((got[..., alpha] - want[..., alpha]).abs().max()) <= 0.001 + 1e-9
    assert abs(float(niqe(img.flip(-1, -2))[0]) - float(niqe(img)[0])) < 1e-3


def _ggd_samples(shape: float, scale: float, n: int, seed: int) -> np.ndarray:
    return stats.gennorm.rvs(shape, scale=scale, size=n, random_state=np.random.default_rng(seed))


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.5])
def test_ggd_fit_recovers_scipy_gennorm_shape_and_scale(shape):
    n = 400_000
    x = torch.from_numpy(_ggd_samples(shape, 1.7, n, seed=int(shape * 10)))
    alpha, beta = ggd_fit(x[None])
    # the moment estimator's relative sampling error is O(1/sqrt(n)) ~ 0.002 with a constant < 5 for these shapes
    assert abs(float(alpha[0]) - shape) <= 0.02 * shape
    assert abs(float(beta[0]) - 1.7) <= 0.01 * 1.7


@pytest.mark.parametrize("shape, left, right", [(0.8, 1.0, 2.5), (2.0, 0.5, 0.5), (1.5, 3.0, 1.0)])
def test_aggd_fit_recovers_an_asymmetric_sample(shape, left, right):
    rng = np.random.default_rng(7)
    n = 400_000
    magnitude = np.abs(stats.gennorm.rvs(shape, size=n, random_state=rng))
    negative = rng.random(n) < left / (left + right)  # AGGD: P(x < 0) = beta_l / (beta_l + beta_r)
    x = np.where(negative, -left * magnitude, right * magnitude)
    alpha, beta_l, beta_r = (float(v[0]) for v in aggd_fit(torch.from_numpy(x)[None]))
    assert abs(alpha - shape) <= 0.03 * shape
    assert abs(beta_l - left) <= 0.015 * left and abs(beta_r - right) <= 0.015 * right


def test_grid_search_equals_the_reference_argmin():
    grid = np.arange(0.2, 10.001, 0.001)
    r = gamma(2 / grid) ** 2 / (gamma(1 / grid) * gamma(3 / grid))
    assert np.all(np.diff(r) > 0)  # the binary search relies on r increasing
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.uniform(r[0] - 0.01, r[-1] + 0.01, 2000), (r[:-1] + r[1:])[::97] / 2,
                             [np.nan, r[0], r[-1]]])
    ours = quality._grid_index(torch.from_numpy(values), torch.from_numpy(r)).numpy()
    expected = [int(np.argmin((r - v) ** 2)) for v in values]
    np.testing.assert_array_equal(ours, expected)


def _cubic(x: float) -> float:
    """Keys cubic with a = -0.5, MATLAB's imresize 'bicubic' kernel."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _imresize_1d(signal: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB imresize along one axis from its definition: u = x/s + (1 - 1/s)/2, kernel widened by 1/s when
    shrinking (antialiasing), symmetric boundary, weights normalised to sum 1."""
    n = signal.shape[0]
    out_len = math.ceil(n * scale)
    k = scale if scale < 1 else 1.0
    out = np.zeros((out_len,) + signal.shape[1:])
    for o in range(1, out_len + 1):
        u = o / scale + 0.5 * (1 - 1 / scale)
        js = range(math.floor(u - 2 / k) - 1, math.ceil(u + 2 / k) + 2)
        weights = np.array([k * _cubic(k * (u - j)) for j in js])
        weights /= weights.sum()
        for w, j in zip(weights, js, strict=True):
            i = j - 1
            i = -i - 1 if i < 0 else (2 * n - 1 - i if i >= n else i)
            out[o - 1] += w * signal[i]
    return out


@pytest.mark.parametrize("scale, size", [(0.5, (20, 14)), (0.5, (21, 17)), (0.25, (24, 16)), (2.0, (7, 5))])
def test_matlab_imresize_matches_its_kernel_definition(scale, size):
    img = np.random.default_rng(1).random(size)
    expected = _imresize_1d(_imresize_1d(img, scale).T, scale).T
    got = matlab_imresize(torch.from_numpy(img).float()[None], scale)[0].double().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)  # float32, as the reference


def test_kernel_values():
    assert [_cubic(v) for v in (0, 0.5, 1, 1.5, 2)] == [1, 0.5625, 0, -0.0625, 0]
    const = torch.full((1, 12, 10), 0.25)
    torch.testing.assert_close(matlab_imresize(const, 0.5), torch.full((1, 6, 5), 0.25))


def test_psnr_ssim_are_the_metrics_module():
    from pipelines.training import metrics
    assert quality.psnr is metrics.psnr and quality.ssim is metrics.ssim


def test_matches_basicsr_at_1024(cases):
    """BasicSR value for astronaut resized to 1024x1024 (cv2 INTER_CUBIC), ``ref_niqe.py time --size 1024``."""
    import cv2
    img = cv2.resize(niqe_cases.read_photo("astronaut.png"), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    assert abs(float(niqe(_rgb(img)[None])[0]) - REFERENCE_1024) <= 0.01
