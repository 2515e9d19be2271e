"""The composed degradation: shapes, grid, determinism, replay of single records, an independent
OpenCV re-composition of a deterministic config, and the library's import isolation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import degrade
from degrade import DegradationConfig, DegradationParams, StageConfig
from tests.conftest import REPO_ROOT, cuda_or_skip


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gt_batch(sample_batch):
    return sample_batch  # (4, 3, 128, 128) crops of the bundled photos


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_output_size_range_and_grid(gt_batch, scale):
    cfg = DegradationConfig(scale=scale)
    lq, params = degrade.degrade(gt_batch, cfg, _gen(scale))
    assert lq.shape == (4, 3, 128 // scale, 128 // scale) and lq.dtype == gt_batch.dtype
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq, torch.round(lq * 255) / 255)
    assert params.batch_size == 4


def test_same_seed_same_output_different_seed_different_output(gt_batch):
    cfg = DegradationConfig()
    a, _ = degrade.degrade(gt_batch, cfg, _gen(0))
    b, _ = degrade.degrade(gt_batch, cfg, _gen(0))
    c, _ = degrade.degrade(gt_batch, cfg, _gen(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replaying_one_record_alone_is_bit_identical(gt_batch, per_sample, seed):
    cfg = DegradationConfig(per_sample=per_sample)
    lq, params = degrade.degrade(gt_batch, cfg, _gen(seed))
    records = json.loads(json.dumps(params.records()))
    for i, record in enumerate(records):
        alone = degrade.apply(gt_batch[i : i + 1], DegradationParams.from_records([record]), cfg)
        assert torch.equal(alone[0], lq[i]), f"sample {i} differs when replayed alone"


def test_high_and_first_order_are_config_changes(gt_batch):
    for order in (1, 3):
        cfg = DegradationConfig().with_order(order)
        lq, params = degrade.degrade(gt_batch[:2], cfg, _gen(order))
        assert lq.shape == (2, 3, 32, 32) and len(params.records()[0]["stages"]) == order


@settings(max_examples=10)
@given(batch=st.integers(1, 3), side=st.sampled_from([32, 48, 64]), scale=st.sampled_from([1, 2, 4]),
       per_sample=st.booleans(), seed=st.integers(0, 2**31))
def test_property_shapes_and_determinism(batch, side, scale, per_sample, seed):
    cfg = DegradationConfig(scale=scale, per_sample=per_sample)
    gt = torch.rand(batch, 3, side, side, generator=_gen(seed))
    lq, params = degrade.degrade(gt, cfg, _gen(seed))
    assert lq.shape == (batch, 3, side // scale, side // scale)
    assert torch.equal(degrade.apply(gt, params, cfg), lq)


def _fixed_stage(**overrides) -> StageConfig:
    """A stage whose every draw is forced: iso Gaussian σ = 1.5, size 7, keep size, no noise."""
    values = dict(kernel_list=("iso",), kernel_prob=(1.0,), kernel_sizes=(7,), sinc_prob=0.0, blur_sigma=(1.5, 1.5),
                  resize_prob=(0.0, 0.0, 1.0), resize_modes=("area",), gaussian_noise_prob=1.0,
                  noise_range=(0.0, 0.0), jpeg_range=(60.0, 60.0))
    values.update(overrides)
    return StageConfig(**values)


def test_composition_order_against_an_independent_opencv_pipeline(gt_batch):
    # Stage 1: blur → keep size → no noise → JPEG 60; stage 2 ("target", keep): blur → resize to 32
    # (area) → no noise; final: [area resize to 32 + no sinc] → JPEG 60 → quantize.
    cfg = DegradationConfig(
        stages=(_fixed_stage(), _fixed_stage(resize_relative_to="target")),
        final_sinc_prob=0.0, final_resize_modes=("area",), final_order_prob=1.0, jpeg_backend="opencv",
    )
    gt = gt_batch[:2].double()
    lq, _ = degrade.degrade(gt, cfg, _gen(0))
    taps = cv2.getGaussianKernel(7, 1.5, ktype=cv2.CV_64F)
    kernel = taps @ taps.T

    def blur(img):
        return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)

    def jpeg(img):
        bgr = np.clip(np.round(img[..., ::-1] * 255), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 60])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float64) / 255

    for b in range(2):
        img = gt[b].permute(1, 2, 0).numpy()
        img = jpeg(blur(img))
        img = cv2.resize(blur(img), (32, 32), interpolation=cv2.INTER_AREA)
        img = jpeg(img)  # the final resize to 32 is the identity here
        np.testing.assert_array_equal(lq[b].permute(1, 2, 0).numpy(), np.round(img * 255) / 255)


def test_errors_name_the_problem(gt_batch):
    cfg = DegradationConfig()
    params = degrade.sample_params(cfg, 4, _gen(0))
    with pytest.raises(ValueError, match="divisible by the scale 4"):
        degrade.apply(gt_batch[:, :, :126, :126], params, cfg)
    with pytest.raises(ValueError, match="params hold 4 samples"):
        degrade.apply(gt_batch[:2], params, cfg)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        degrade.apply(gt_batch[:, :1], params, cfg)
    tiny_params = degrade.sample_params(DegradationConfig(), 1, _gen(0))
    forced_down = DegradationParams(tuple(s.__class__(**{**s.__dict__, "resize_scale": torch.tensor([0.15])})
                                          for s in tiny_params.stages), tiny_params.final)
    with pytest.raises(ValueError, match="too small"):
        degrade.apply(torch.rand(1, 3, 4, 4), forced_down, DegradationConfig())


@pytest.mark.cuda
def test_cpu_and_cuda_agree_on_everything_but_noise(gt_batch):
    device = cuda_or_skip()
    cfg = DegradationConfig(stages=tuple(StageConfig(**{**s.__dict__, "noise_range": (0.0, 0.0),
                                                        "poisson_scale_range": (0.0, 0.0)})
                                         for s in DegradationConfig().stages))
    params = degrade.sample_params(cfg, 4, _gen(3))
    cpu = degrade.apply(gt_batch, params, cfg)
    cuda = degrade.apply(gt_batch.to(device), params, cfg).cpu()
    # Both land on the 1/255 grid; float rounding may move a few values by one step.
    assert (cpu - cuda).abs().max() <= 1 / 255 + 1e-6
    assert (cpu != cuda).float().mean() < 0.01


def test_degrade_imports_with_only_numpy_scipy_torch_and_opencv():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'models', 'pipelines', 'shards', 'webdataset', 'joblib', 'click', 'PIL',"
        " 'cli', 'hypothesis'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, degrade\n"
        "gt = torch.rand(1, 3, 64, 64)\n"
        "lq, p = degrade.degrade(gt, degrade.DegradationConfig(), torch.Generator().manual_seed(0))\n"
        "assert lq.shape == (1, 3, 16, 16)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


LIBRARY_DIRS = ["degrade", "models", "pipelines", "shards"]
GLOBAL_RNG = re.compile(
    r"np\.random\.(rand|randn|randint|uniform|normal|choice|shuffle|seed|permutation)\(|^\s*import random$|"
    r"\brandom\.(random|uniform|choice|randint|shuffle|sample)\(|torch\.(rand|randn|randint|randperm|poisson|normal|"
    r"multinomial|bernoulli)\((?![^)]*generator=)"
)


def test_library_code_never_uses_global_random_state():
    offenders = []
    for folder in LIBRARY_DIRS:
        for path in sorted(Path(REPO_ROOT, folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if GLOBAL_RNG.search(line) and "generator" not in line:
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "global RNG use in library code:\n" + "\n".join(offenders)


def test_degrade_never_imports_the_rest_of_the_toolkit():
    pattern = re.compile(r"^\s*(from|import)\s+(models|pipelines|shards|cli)\b", re.M)
    for path in Path(REPO_ROOT, "degrade").rglob("*.py"):
        assert not pattern.search(path.read_text()), f"{path} imports the rest of the toolkit"
