"""Gradient accumulation (``accumulate``): k micro-batches give the whole batch's update.

Independent reference: the same step with accumulate = 1 on the same batch, degradation and pool. The
gradients of G and D after one iteration (learning rate 0, so nothing moves), the spectral-norm vectors u, v
(one power iteration per pass, not k) and the logged losses must agree. The exactness checks run in float64,
where the only difference is the summation order (measured gap ~1e-15 relative): in float32 the GAN stage's
G gradients differ by up to 3e-4 relative at k = 4 from rounding alone (float64 shows it is rounding), amplified
by cancellation in the perceptual and GAN terms, which would leave a tolerance too loose to mean much. A
missing 1/k doubles every gradient; an extra power iteration moves u far beyond 1e-9.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from models.discriminator import UNetDiscriminatorSN
from models.losses import PerceptualLoss
from models.rrdbnet import RRDBNet
from models.vgg import VGGFeatureExtractor
from pipelines.training.checkpoint import latest_checkpoint, load_checkpoint
from pipelines.training.pool import TrainingPairPool
from pipelines.training.step import TrainStep
from pipelines.training.train import PERCEPTUAL_LAYERS, train
from pipelines.training.train_config import ConfigError, load_train_config
from tests.conftest import REPO_ROOT, cuda_or_skip
from tests.pipelines.test_train import TINY  # the tiny training config of the trainer's own tests

BATCH = 4
CPU = torch.device("cpu")


def _step(stage: str, accumulate: int, dtype: torch.dtype, device: torch.device) -> TrainStep:
    cfg = load_train_config(stage, values={
        "data.batch_size": BATCH, "data.patch_size": 48, "data.gt_size": 32, "queue_size": 0, "precision": "fp32",
        "network.num_feat": 8, "network.num_block": 1, "network.num_grow_ch": 4, "network.disc_num_feat": 8,
        "loss.perceptual_weights": "random", "accumulate": accumulate})
    g = torch.Generator().manual_seed(0)
    net_g = RRDBNet(3, 3, 4, 8, 1, 4, generator=g).to(dtype)
    net_d = perceptual = None
    if stage == "gan":
        net_d = UNetDiscriminatorSN(3, 8, True, generator=g).to(dtype)
        extractor = VGGFeatureExtractor("random", PERCEPTUAL_LAYERS, generator=torch.Generator().manual_seed(0))
        perceptual = PerceptualLoss(extractor, dict(zip(PERCEPTUAL_LAYERS, cfg.loss.perceptual_layer_weights,
                                                        strict=True))).to(dtype)
    return TrainStep(cfg, net_g, net_d, perceptual, device)


def _run(stage: str, accumulate: int, iterations: int, lr: float, dtype: torch.dtype = torch.float64,
         device: torch.device = CPU) -> tuple[TrainStep, list[dict[str, float]]]:
    step = _step(stage, accumulate, dtype, device)
    photos = torch.rand(BATCH, 3, 48, 48, generator=torch.Generator().manual_seed(5), dtype=dtype)
    generator, pool = torch.Generator().manual_seed(1), TrainingPairPool(0, torch.Generator().manual_seed(2))
    logs = [step(photos, iteration=i, pool=pool, generator=generator, lr_g=lr, lr_d=lr)
            for i in range(1, iterations + 1)]
    return step, logs


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("stage,accumulate,device", [
    ("net", 2, "cpu"), ("gan", 4, "cpu"),  # gan 4: micro-batches of one image
    pytest.param("gan", 4, "cuda", marks=pytest.mark.cuda),  # run by bench/gpu_check.sh
])
def test_micro_batches_give_the_whole_batch_gradients(stage, accumulate, device):
    dev = cuda_or_skip() if device == "cuda" else CPU
    whole, whole_logs = _run(stage, 1, 1, lr=0.0, device=dev)
    parts, parts_logs = _run(stage, accumulate, 1, lr=0.0, device=dev)
    nets = [("G", whole.net_g, parts.net_g)] + ([("D", whole.net_d, parts.net_d)] if stage == "gan" else [])
    for label, a, b in nets:
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None, f"{label}.{name} has no gradient"
            assert q.grad.dtype == torch.float64
            assert _relative_gap(q.grad, p.grad) < 1e-11, f"{label}.{name}: gradient differs"
        for (name, buffer), other in zip(a.named_buffers(), b.buffers(), strict=True):
            assert _relative_gap(other, buffer) < 1e-11, f"{label}.{name} differs (power iterations?)"
    for key, value in whole_logs[0].items():  # logged as float32 (one device-to-host copy): its rounding
        assert parts_logs[0][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_accumulated_float32_training_follows_the_whole_batch_run():
    # The trainer's precision: three Adam steps stay within float32 rounding of the whole-batch run.
    whole, _ = _run("gan", 1, 3, lr=1e-3, dtype=torch.float32)
    parts, _ = _run("gan", 2, 3, lr=1e-3, dtype=torch.float32)
    for a, b in ((whole.net_g, parts.net_g), (whole.net_d, parts.net_d), (whole.ema.module, parts.ema.module)):
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_accumulate_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"accumulate \(5\) must divide data.batch_size \(12\).*1, 2, 3, 4, 6, 12"):
        load_train_config("net", values={"accumulate": 5})
    with pytest.raises(ConfigError, match="accumulate"):
        load_train_config("net", values={"accumulate": 0})


def test_the_trainer_runs_accumulated_steps_and_says_so(tmp_path, shards):
    cfg = load_train_config("gan", None, [*TINY, f"data.shards='{shards}'", f"run_dir='{tmp_path / 'run'}'",
                                          "total_iter=2", "accumulate=2"])
    lines: list[str] = []
    result = train(cfg, device="cpu", log=lines.append)
    assert result.iteration == 2 and not result.interrupted
    assert any(line.startswith("precision") and line.endswith("2 micro-batches of 1 per update") for line in lines)


def _torchrun_gan(shards, run_dir, accumulate: int) -> dict:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO_ROOT / "cli.py"), "train", "--stage", "gan", "--device", "cpu"]
    for item in [*TINY, f"data.shards='{shards}'", f"run_dir='{run_dir}'", "total_iter=2",
                 f"accumulate={accumulate}"]:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generator weights identical on 2 ranks" in result.stdout
    return load_checkpoint(latest_checkpoint(run_dir))


@pytest.mark.slow
def test_accumulation_under_ddp_follows_the_whole_batch_run(tmp_path, shards):
    # Two ranks on gloo: G and D reduce their gradients once per update (no_sync on the earlier micro-batches),
    # D runs its later micro-batches in eval mode inside DDP; the result follows the run without accumulation.
    whole = _torchrun_gan(shards, tmp_path / "whole", 1)
    parts = _torchrun_gan(shards, tmp_path / "parts", 2)
    for name in ("net_g", "net_d", "net_g_ema"):
        for key, tensor in whole[name].items():
            torch.testing.assert_close(parts[name][key], tensor, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
