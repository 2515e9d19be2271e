"""Training: config validation, smoke runs of both stages, exact resume, interruption, NaN guard, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from cli import main
from pipelines.training import step as step_module
from pipelines.training.checkpoint import latest_checkpoint, load_checkpoint
from pipelines.training.train import TrainingDiverged, learning_rate, train
from pipelines.training.train_config import ConfigError, load_train_config
from tests.conftest import REPO_ROOT

TINY = [
    "data.batch_size=2", "data.patch_size=64", "data.gt_size=32", "data.num_workers=0", "data.shuffle_buffer=8",
    "network.num_feat=8", "network.num_block=1", "network.num_grow_ch=4", "network.disc_num_feat=8",
    "queue_size=4", "total_iter=3", "log_every=1", "checkpoint_every=100", "loss.perceptual_weights=random",
]


def _config(stage, shards, run_dir, *extra):
    return load_train_config(stage, None, [*TINY, f"data.shards='{shards}'", f"run_dir='{run_dir}'", *extra])


def _quiet(*_):
    pass


def test_learning_rate_schedule_is_multistep_with_optional_warmup():
    assert learning_rate(2e-4, 1, (), 0.5, 0) == 2e-4
    assert learning_rate(2e-4, 1_000_000, (1_000_000,), 0.5, 0) == 2e-4  # the reference's milestone is never passed
    assert learning_rate(1.0, 11, (10, 20), 0.5, 0) == 0.5 and learning_rate(1.0, 21, (10, 20), 0.5, 0) == 0.25
    assert learning_rate(1.0, 5, (), 0.5, 10) == 0.5


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["degradation.scale=2"], "degradation.scale"),
        (["data.gt_size=512"], "cannot exceed data.patch_size"),
        (["queue_size=7"], "multiple of the per-process batch size"),
        (["total_iter=0"], "total_iter"),
        (["data.gt_size=30"], "divisible by scale"),
        (["scale=3"], "scale must be 1, 2 or 4"),
        (["data.bach_size=3"], "unknown key 'bach_size'"),
    ],
)
def test_config_validation_says_how_to_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("net", None, overrides)


def test_paper_defaults_per_stage():
    net, gan = load_train_config("net"), load_train_config("gan")
    assert (net.optim.lr_g, net.total_iter, net.data.batch_size, net.data.gt_size, net.queue_size) == (
        2e-4, 1_000_000, 12, 256, 180)
    assert (gan.optim.lr_g, gan.optim.lr_d, gan.total_iter, gan.loss.gan_weight) == (1e-4, 1e-4, 400_000, 0.1)
    assert gan.loss.perceptual_layer_weights == (0.1, 0.1, 1.0, 1.0, 1.0) and gan.ema_decay == 0.999


def test_stage_mismatch_between_file_and_flag(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('stage = "gan"\n')
    with pytest.raises(ConfigError, match="stage 'gan' but --stage net"):
        load_train_config("net", path)


def test_missing_shards_and_weights_stop_before_training(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match="nothing does not exist; make shards"):
        train(_config("net", tmp_path / "nothing", tmp_path / "run"), device="cpu", log=_quiet)
    with pytest.raises(FileNotFoundError, match="vgg19"):
        train(_config("gan", shards, tmp_path / "run", "loss.perceptual_weights=''"), device="cpu", log=_quiet)


@pytest.mark.parametrize("stage", ["net", "gan"])
def test_smoke_run_writes_checkpoint_weights_and_metrics(tmp_path, shards, stage):
    lines = []
    result = train(_config(stage, shards, tmp_path / "run"), device="cpu", log=lines.append)
    assert result.iteration == 3 and not result.interrupted
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert ckpt["iter"] == 3 and ckpt["config"]["stage"] == stage
    assert ("net_d" in ckpt) == (stage == "gan")
    exported = torch.load(tmp_path / "run" / "models" / "net_g_latest.pth", weights_only=True)
    assert set(exported) == {"params", "params_ema"}
    assert (tmp_path / "run" / "config.toml").read_text().startswith("stage = ")
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3 and '"data_wait_share"' in metrics[0]
    expected = {"l_g_pix"} if stage == "net" else {"l_g_pix", "l_g_percep", "l_g_gan", "l_d_real", "l_d_fake"}
    assert expected <= set(result.last_logs)
    assert any("it/s" in line and "data-wait" in line and "eta" in line for line in lines)


@pytest.mark.parametrize("stage,workers", [("net", 2), ("gan", 0)])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, shards, stage, workers):
    extra = ["total_iter=5", f"data.num_workers={workers}"]
    straight = train(_config(stage, shards, tmp_path / "a", *extra), device="cpu", log=_quiet)
    first = train(_config(stage, shards, tmp_path / "b", *extra), device="cpu", stop_at=2, log=_quiet)
    assert first.iteration == 2
    resumed = train(_config(stage, shards, tmp_path / "b", *extra), device="cpu", resume=True, log=_quiet)
    assert resumed.iteration == 5
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for name in ["net_g", "net_g_ema"] + (["net_d"] if stage == "gan" else []):
        for key, tensor in a[name].items():
            assert torch.equal(tensor, b[name][key]), f"{name}.{key} differs after resume"


def test_resume_refuses_a_changed_config(tmp_path, shards):
    train(_config("net", shards, tmp_path / "run"), device="cpu", log=_quiet)
    with pytest.raises(ConfigError, match="optim"):
        train(_config("net", shards, tmp_path / "run", "optim.lr_g=1e-3"), device="cpu", resume=True, log=_quiet)


def test_sigterm_writes_a_checkpoint_before_exiting(tmp_path, shards):
    def log(line):
        if line.startswith("iter 2/"):
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(_config("net", shards, tmp_path / "run", "total_iter=50"), device="cpu", log=log)
    assert result.interrupted and result.iteration == 2
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["iter"] == 2


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, shards, monkeypatch):
    real_step = step_module.generator_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        logs, output, loss = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            logs["l_g_total"] = float("nan")
        return logs, output, loss

    monkeypatch.setattr(step_module, "generator_step", poisoned)
    with pytest.raises(TrainingDiverged, match="not finite at iteration 3"):
        train(_config("net", shards, tmp_path / "run", "total_iter=5", "checkpoint_every=2"), device="cpu", log=_quiet)
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["iter"] == 2


def test_cli_train_runs_and_reports(tmp_path, shards):
    args = ["train", "--stage", "net", "--device", "cpu"]
    for item in [*TINY, f"data.shards='{shards}'", f"run_dir='{tmp_path / 'run'}'", "total_iter=2"]:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "finished at iteration 2" in result.output
    bad = CliRunner().invoke(main, ["train", "--stage", "net", "--set", "queue_size=5"])
    assert bad.exit_code != 0 and "queue_size" in bad.output


@pytest.mark.slow
def test_two_process_torchrun_on_gloo_keeps_ranks_identical_and_splits_data(tmp_path, shards):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO_ROOT / "cli.py"), "train", "--stage", "net", "--device", "cpu"]
    for item in [*TINY, f"data.shards='{shards}'", f"run_dir='{tmp_path / 'run'}'", "total_iter=4"]:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generator weights identical on 2 ranks" in result.stdout
    assert "samples seen per rank [8, 8], seen by every rank 0" in result.stdout
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["iter"] == 4
