"""Hardening of training (issue 14): nothing lost, nothing silently wrong, one-line errors."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from click.testing import CliRunner

from cli import main
from models.rrdbnet import RRDBNet
from models.weights import export_generator
from pipelines.training import safety
from pipelines.training.checkpoint import checkpoint_iterations, latest_checkpoint, load_checkpoint, save_atomic
from pipelines.training.train import train
from pipelines.training.train_config import ConfigError, load_train_config
from tests.conftest import REPO_ROOT

TINY = [
    "data.batch_size=2", "data.patch_size=64", "data.gt_size=32", "data.num_workers=0", "data.shuffle_buffer=8",
    "network.num_feat=8", "network.num_block=1", "network.num_grow_ch=4", "network.disc_num_feat=8",
    "queue_size=4", "total_iter=3", "log_every=1", "checkpoint_every=100", "loss.perceptual_weights=random",
]


def _config(shards, run_dir, *extra, stage="net"):
    return load_train_config(stage, None, [*TINY, f"data.shards='{shards}'", f"run_dir='{run_dir}'", *extra])


def _quiet(*_):
    pass


def _cli_train(shards, run_dir, *extra):
    args = ["train", "--stage", "net", "--device", "cpu"]
    for item in [*TINY, f"data.shards='{shards}'", f"run_dir='{run_dir}'"]:
        args += ["--set", item]
    return CliRunner().invoke(main, [*args, *extra])


# ---------------------------------------------------------------- item 1: a fresh run never overwrites a run


def test_fresh_run_into_an_existing_run_dir_is_refused_and_loses_nothing(tmp_path, shards):
    run = tmp_path / "run"
    train(_config(shards, run), device="cpu", log=_quiet)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds a run \(1 checkpoint.*--resume.*new run_dir.*--overwrite"):
        train(_config(shards, run, "total_iter=2", "optim.lr_g=1e-3"), device="cpu", log=_quiet)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # the refused attempt did not break --resume of the original run
    resumed = train(_config(shards, run, "total_iter=4"), device="cpu", resume=True, log=_quiet)
    assert resumed.iteration == 4


def test_overwrite_replaces_the_previous_run_entirely(tmp_path, shards):
    run = tmp_path / "run"
    train(_config(shards, run, "total_iter=3"), device="cpu", log=_quiet)
    (run / "notes.txt").write_text("mine")  # not the run's: never removed
    lines = []
    train(_config(shards, run, "total_iter=2"), device="cpu", overwrite=True, log=lines.append)
    assert [it for it, _ in checkpoint_iterations(run)] == [2]  # the old iteration-3 checkpoint is gone
    assert load_checkpoint(latest_checkpoint(run))["iter"] == 2
    assert [json.loads(line)["iter"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "notes.txt").read_text() == "mine"
    assert any("--overwrite: removed" in line for line in lines)


def test_cli_refuses_with_one_line_and_exit_2_then_overwrite_works(tmp_path, shards):
    run = tmp_path / "run"
    assert _cli_train(shards, run, "--set", "total_iter=1").exit_code == 0
    again = _cli_train(shards, run, "--set", "total_iter=1")
    assert again.exit_code == 2, again.output
    assert "already holds a run" in again.output and "Traceback" not in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert _cli_train(shards, run, "--set", "total_iter=1", "--overwrite").exit_code == 0


def test_an_empty_run_dir_is_a_fresh_run(tmp_path, shards):
    (tmp_path / "run").mkdir()
    assert train(_config(shards, tmp_path / "run", "total_iter=1"), device="cpu", log=_quiet).iteration == 1


# ---------------------------------------------------------------- item 3: --init-from that does not fit


def _tiny_net(scale=4, blocks=1):
    return RRDBNet(3, 3, scale, 8, blocks, 4, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["compact", "random_keys", "bigger_model"])
def test_init_from_weights_of_another_architecture_stops_before_training(tmp_path, shards, kind):
    path = tmp_path / "w.pth"
    if kind == "compact":  # SRVGGNetCompact's key layout: body.N.weight / body.N.bias
        state = {f"body.{i}.weight": torch.randn(8, 8, 3, 3) for i in range(0, 10, 2)}
        state.update({f"body.{i}.bias": torch.randn(8) for i in range(0, 10, 2)})
        torch.save({"params": state}, path)
    elif kind == "random_keys":
        torch.save({"params": {"a.weight": torch.ones(3), "b.bias": torch.zeros(2)}}, path)
    else:  # an RRDBNet with 6 blocks into the 1-block model: the file is mostly unused
        export_generator(path, _tiny_net(blocks=6))
    # A compact file is recognised as such (models.weights.check_same_arch); anything else by the load report.
    with pytest.raises((ConfigError, ValueError),
                       match=r"init_from .*w\.pth.*(tensors loaded.*another architecture|SRVGGNetCompact)"):
        train(_config(shards, tmp_path / "run", f"init_from='{path}'"), device="cpu", log=_quiet)
    assert not (tmp_path / "run").exists()


def test_init_from_x4_weights_into_x2_still_loads_everything_but_conv_first(tmp_path, shards):
    path = tmp_path / "x4.pth"
    export_generator(path, _tiny_net(scale=4))
    lines = []
    train(_config(shards, tmp_path / "run", f"init_from='{path}'", "total_iter=1", "scale=2", "degradation.scale=2"),
          device="cpu", log=lines.append)
    assert any("initialised G from" in line and "skipped (shape differs): conv_first.weight" in line
               for line in lines)


def test_check_init_report_thresholds():
    from models.weights import LoadReport

    ok = LoadReport(loaded=tuple(f"k{i}" for i in range(41)), skipped={"conv_first.weight": ((8, 3), (8, 12))})
    safety.check_init_report(ok, "x")  # 41 of 42: fine
    with pytest.raises(ConfigError, match="only 0 of the model's 42 tensors"):
        safety.check_init_report(LoadReport(loaded=(), missing=tuple(f"k{i}" for i in range(42))), "x")


# ---------------------------------------------------------------- item 13: checkpoints and weights files


def test_checkpoint_and_weights_files_keep_the_umask_mode_and_leave_no_tmp_on_failure(tmp_path, monkeypatch):
    previous = os.umask(0o022)
    try:
        export_generator(tmp_path / "models" / "net_g_latest.pth", _tiny_net())
        save_atomic({"iter": 1}, tmp_path / "checkpoints" / "iter_00000001.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "models" / "net_g_latest.pth").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "checkpoints" / "iter_00000001.pt").stat().st_mode) == 0o644

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"iter": 2}, tmp_path / "checkpoints" / "iter_00000002.pt")
    with pytest.raises(OSError, match="No space left"):
        export_generator(tmp_path / "models" / "net_g_latest.pth", _tiny_net())
    leftovers = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert leftovers == ["iter_00000001.pt", "net_g_latest.pth"]


# ---------------------------------------------------------------- item 4: validation sets that are not pairs


def _pair_shard(path, n=3):
    import io
    import tarfile

    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            for kind, size in (("gt", 32), ("lq", 8)):
                data = cv2.imencode(".png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))[1].tobytes()
                info = tarfile.TarInfo(f"{i:04d}.{kind}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_val_shards_of_plain_gt_shards_is_an_error_not_a_silent_skip(tmp_path, shards):
    from pipelines.training.validate import read_pairs

    with pytest.raises(ValueError, match=r"no KEY\.gt\.png \+ KEY\.lq\.png pairs, found \d+ plain images.*degrade"):
        read_pairs(str(shards))
    with pytest.raises(ValueError, match="no KEY.gt.png"):
        train(_config(shards, tmp_path / "run", f"val_shards='{shards}'"), device="cpu", log=_quiet)
    assert not (tmp_path / "run").exists()


def test_a_truncated_pair_shard_is_named(tmp_path):
    from pipelines.training.validate import read_pairs

    _pair_shard(tmp_path / "pairs-000000.tar")
    assert len(read_pairs(str(tmp_path))) == 3
    data = (tmp_path / "pairs-000000.tar").read_bytes()
    (tmp_path / "pairs-000000.tar").write_bytes(data[: 512 + 50])  # cut inside the first member
    with pytest.raises(ValueError, match=r"validation shard .*pairs-000000\.tar is corrupt or truncated"):
        read_pairs(str(tmp_path))


# ---------------------------------------------------------------- item 12: accepted but invalid values


@pytest.mark.parametrize("override,message", [
    ("optim.lr_g=-1e-4", "optim.lr_g must be > 0"),
    ("optim.lr_d=0.0", "optim.lr_d must be > 0"),
    ("optim.betas=[0.9, 1.5]", "optim.betas must be two numbers in"),
    ("optim.betas=[-0.1, 0.99]", "optim.betas must be two numbers in"),
    ("optim.weight_decay=-0.01", "optim.weight_decay must be >= 0"),
    ("optim.gamma=-1.0", r"optim.gamma must be in \(0, 1\]"),
    ("loss.pixel_weight=-1.0", "loss.pixel_weight must be >= 0"),
    ("loss.gan_weight=-0.1", "loss.gan_weight must be >= 0"),
    ("data.num_workers=1000", r"data.num_workers = 1000 must be in \[0, 64\]"),
    ("data.num_workers=-1", r"data.num_workers = -1 must be in \[0, 64\]"),
    ("keep_checkpoints=-1", "keep_checkpoints must be >= 0"),
])
def test_invalid_values_are_refused_at_config_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("net", None, [override])


def test_cli_config_errors_are_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["train", "--stage", "net", "--set", "optim.lr_g=-1e-4"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: optim.lr_g must be > 0, got -0.0001 (the paper: 2e-4 net, 1e-4 gan)"]


def test_truncated_init_from_is_one_line_naming_the_file(tmp_path, shards):
    export_generator(tmp_path / "w.pth", _tiny_net())
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "w.pth").write_bytes(data[: len(data) // 2])
    result = _cli_train(shards, tmp_path / "run", "--init-from", str(tmp_path / "w.pth"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "w.pth" in result.output


def test_corrupt_latest_checkpoint_names_the_previous_one(tmp_path, shards):
    run = tmp_path / "run"
    train(_config(shards, run, "total_iter=4", "checkpoint_every=2"), device="cpu", log=_quiet)
    latest = latest_checkpoint(run)
    latest.write_bytes(latest.read_bytes()[:1000])
    result = _cli_train(shards, run, "--set", "total_iter=6", "--set", "checkpoint_every=2", "--resume")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "iter_00000004.pt is corrupt" in result.output and "continues from" in result.output
    assert "iter_00000002.pt" in result.output
    latest.rename(latest.with_name(latest.name + ".bad"))  # the way out the message gives
    assert train(_config(shards, run, "total_iter=6", "checkpoint_every=2"), device="cpu", resume=True,
                 log=_quiet).iteration == 6


def test_disk_full_is_one_line_with_the_fix(tmp_path, monkeypatch):
    import errno

    from cli import one_line

    error = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.tar"))
    text = one_line(error)
    assert text.startswith("No space left on device writing ") and "x.tar" in text and "free disk space" in text


# ---------------------------------------------------------------- item 13: resume leftovers, checkpoint retention


def test_resume_does_not_log_iterations_twice(tmp_path, shards):
    run = tmp_path / "run"
    train(_config(shards, run, "total_iter=3", "checkpoint_every=2"), device="cpu", log=_quiet)
    latest_checkpoint(run).unlink()  # as after kill -9 between the log line of 3 and its checkpoint
    train(_config(shards, run, "total_iter=5", "checkpoint_every=2"), device="cpu", resume=True, log=_quiet)
    iters = [json.loads(line)["iter"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4, 5]


def test_keep_checkpoints_keeps_the_newest_and_the_best(tmp_path, shards):
    run = tmp_path / "run"
    train(_config(shards, run, "total_iter=6", "checkpoint_every=1", "keep_checkpoints=2"), device="cpu", log=_quiet)
    assert [it for it, _ in checkpoint_iterations(run)] == [5, 6]
    # the best validated iteration survives pruning (scores written as validation would)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iter": i, "val": {"psnr": p}}) + "\n"
                                               for i, p in [(2, 30.0), (4, 31.5), (6, 29.0)]))
    for it in (2, 3, 4):
        save_atomic({"iter": it}, run / "checkpoints" / f"iter_{it:08d}.pt")
    deleted = safety.prune_checkpoints(run, 2, safety.best_validated_iteration(run / "metrics.jsonl"))
    assert sorted(p.name for p in deleted) == ["iter_00000002.pt", "iter_00000003.pt"]
    assert [it for it, _ in checkpoint_iterations(run)] == [4, 5, 6]
    assert safety.prune_checkpoints(run, 0) == []  # 0 keeps everything
    assert [it for it, _ in checkpoint_iterations(run)] == [4, 5, 6]
    assert load_train_config("net").keep_checkpoints == 5


# ---------------------------------------------------------------- item 6b: shutdown order and exit codes


def test_cleanup_distributed_barriers_then_destroys_the_group(tmp_path):
    import torch.distributed as torch_dist

    from pipelines.training.dist import cleanup_distributed

    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    calls = []
    real_barrier = torch_dist.barrier
    torch_dist.barrier = lambda *a, **k: (calls.append("barrier"), real_barrier(*a, **k))[1]
    try:
        cleanup_distributed(log=calls.append)
    finally:
        torch_dist.barrier = real_barrier
    assert calls == ["barrier"] and not torch_dist.is_initialized()
    cleanup_distributed()  # nothing to do: no error


@pytest.mark.parametrize("outcome,code", [("interrupted", 75), ("diverged", 3), ("finished", 0)])
def test_train_exit_code_says_what_happened(tmp_path, monkeypatch, outcome, code):
    from pipelines.training import train as train_module
    from pipelines.training.train import TrainingDiverged, TrainResult

    def fake(cfg, **_):
        if outcome == "diverged":
            raise TrainingDiverged("loss is not finite at iteration 3")
        return TrainResult(3, tmp_path, None, outcome == "interrupted", {})

    monkeypatch.setattr(train_module, "train", fake)
    result = CliRunner().invoke(main, ["train", "--stage", "net", "--device", "cpu"])
    assert result.exit_code == code, result.output


@pytest.mark.slow
def test_torchrun_with_a_truncated_shard_finishes_with_exit_0(tmp_path, shards):
    import shutil
    import subprocess
    import sys

    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    victim = sorted(data.glob("*.tar"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(REPO_ROOT / "cli.py"), "train", "--stage", "net", "--device", "cpu"]
    for item in [*TINY, f"data.shards='{data}'", f"run_dir='{tmp_path / 'run'}'", "total_iter=12", "log_every=4"]:
        args += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "generator weights identical on 2 ranks" in result.stdout and "terminate called" not in result.stderr
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["iter"] == 12


_PROGRESS = ("iter ", "precision ")  # the run's normal log lines (progress, the precision it resolved)


def test_disk_full_during_a_checkpoint_is_one_line_exit_2_and_leaves_no_tmp(tmp_path, shards, monkeypatch):
    import errno

    def full(obj, handle, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    result = _cli_train(shards, tmp_path / "run", "--set", "total_iter=1")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if not line.startswith(_PROGRESS)] == [
        "error: No space left on device: free disk space (or choose an output on another disk) and rerun; "
        "finished work is kept"]
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]


def test_strict_mode_shard_error_is_one_line_naming_the_shard(tmp_path, shards):
    import shutil

    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    for victim in data.glob("*.tar"):  # every shard, so the first one read is broken whatever the order
        victim.write_bytes(victim.read_bytes()[:1000])
    result = _cli_train(data, tmp_path / "run", "--set", "total_iter=2", "--set", "data.strict=true")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len([line for line in result.output.strip().splitlines() if not line.startswith(_PROGRESS)]) == 1
    assert "shard problem in shard" in result.output and ".tar" in result.output
