"""Multi-node training rehearsed on one host: two torchrun agents, elastic restart, world-size change, a stalled rank.

All runs are CPU/gloo on the tiny config of test_train.py; 68 samples in 4 shards of 17, batch 2 per rank,
no loader workers: with 2 ranks an epoch is 17 iterations and every sample is seen exactly once
(4 shards dealt to 2 slots, 34 samples per rank = 17 batches of 2).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import main
from pipelines.training.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint
from pipelines.training.train import train
from pipelines.training.train_config import load_train_config
from shards.manifest import read_manifest
from shards.read import slot_shards
from tests.conftest import REPO_ROOT, SAMPLES_DIR
from tests.pipelines.test_train import TINY

pytestmark = pytest.mark.slow
ITERS = 17  # one epoch on 2 ranks
RUN = [*TINY, f"total_iter={ITERS}", "checkpoint_every=5", "dist_timeout_s=60"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    result = CliRunner().invoke(main, ["shard", "--src", str(SAMPLES_DIR), "--root", str(REPO_ROOT), "--out", str(out),
                                       "--crop-size", "128", "--step", "128", "--min-size", "64",
                                       "--shard-size", "17", "--workers", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    m = read_manifest(out)
    assert [s["samples"] for s in m["shards"]] == [17] * 4  # what the epoch arithmetic above assumes
    return out


def _args(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    args = [str(REPO_ROOT / "cli.py"), "train", "--stage", "net", "--device", "cpu"]
    for item in [*RUN, f"data.shards='{shards}'", f"run_dir='{run_dir}'", *extra]:
        args += ["--set", item]
    return args


def _torchrun(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher]


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run_dir: Path) -> dict:
    ckpt = load_checkpoint(latest_checkpoint(run_dir))
    return {"iter": ckpt["iter"], "net_g": ckpt["net_g"], "net_g_ema": ckpt["net_g_ema"]}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["iter"] == b["iter"]
    for name in ("net_g", "net_g_ema"):
        for key, tensor in a[name].items():
            assert torch.equal(tensor, b[name][key]), f"{name}.{key} differs"


@pytest.fixture(scope="module")
def standalone(shards, tmp_path_factory) -> tuple[Path, str]:
    """The reference: one agent, two processes (`--standalone --nproc_per_node 2`), uninterrupted."""
    run_dir = tmp_path_factory.mktemp("standalone") / "run"
    result = subprocess.run(_torchrun("--standalone", "--nproc_per_node=2", *_args(shards, run_dir)), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir, result.stdout


def test_two_agents_match_standalone_and_split_the_data(shards, standalone, tmp_path):
    run_dir = tmp_path / "run"
    port = _free_port()
    agents = [subprocess.Popen(_torchrun("--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1",
                                         "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                                         "--rdzv_id=h13-rehearsal", *_args(shards, run_dir)),
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
              for node in (0, 1)]
    outputs = []
    try:
        for agent in agents:
            outputs.append(agent.communicate(timeout=600)[0])
    finally:
        for agent in agents:
            agent.kill()
    text = "\n".join(outputs)
    assert [a.returncode for a in agents] == [0, 0], text
    assert "generator weights identical on 2 ranks" in text
    # One epoch on 2 ranks: 34 distinct samples each, none shared, so all 68 seen exactly once.
    assert "samples seen per rank [34, 34], seen by every rank 0" in text
    assert "samples seen per rank [34, 34], seen by every rank 0" in standalone[1]
    _assert_same_weights(_weights(run_dir), _weights(standalone[0]))


def _workers_of(agent_pid: int) -> list[int]:
    """PIDs of the training processes torchrun started (children of the agent running cli.py)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == agent_pid and b"cli.py" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's worker processes through /proc")
def test_elastic_restart_after_kill_9_resumes_by_itself_bit_exact(shards, standalone, tmp_path):
    run_dir = tmp_path / "run"
    agent = subprocess.Popen(_torchrun("--standalone", "--nproc_per_node=2", "--max-restarts=1",
                                       *_args(shards, run_dir)),
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=_env(TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1"))  # see pipelines.training.elastic
    try:
        deadline = time.monotonic() + 400
        while not checkpoint_path(run_dir, 5).exists():  # the first checkpoint
            assert agent.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.05)
        workers = _workers_of(agent.pid)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        output = agent.communicate(timeout=600)[0]
    finally:
        agent.kill()
    assert agent.returncode == 0, output
    resumed = re.findall(r"resuming from \S+ \(iteration (\d+)\)", output)
    assert resumed and int(resumed[0]) in (5, 10, 15), output  # the restarted group continued by itself
    _assert_same_weights(_weights(run_dir), _weights(standalone[0]))


def test_world_size_change_2_to_1_continues_with_the_samples_consumed(shards, standalone, tmp_path):
    run_dir = standalone[0]  # resumed in place (run_dir is part of the config); restored afterwards
    backup = tmp_path / "backup"
    shutil.copytree(run_dir, backup)
    try:
        for later in (15, ITERS):
            checkpoint_path(run_dir, later).unlink()
        assert load_checkpoint(latest_checkpoint(run_dir))["data"] == {
            "epoch": 0, "batch": 10, "seed": 0, "world_size": 2, "batch_size": 2, "num_workers": 0,
            "total_samples": 68}
        lines: list[str] = []
        cfg = load_train_config("net", None, [*RUN, f"data.shards='{shards}'", f"run_dir='{run_dir}'"])
        result = train(cfg, resume=True, device="cpu", log=lines.append)
        assert result.iteration == ITERS and not result.interrupted
        text = "\n".join(lines)
        assert "(iteration 10)" in text and "checkpoint of 2 processes with 1" in text
        assert min(int(m) for m in re.findall(r"^iter (\d+)/", text, re.M)) == 11  # never from iteration 0
        # 10 batches x 2 ranks x 2 = 40 samples consumed -> batch 20 of the 1-rank epoch (34 batches), + 7 more.
        data = load_checkpoint(latest_checkpoint(run_dir))["data"]
        assert (data["epoch"], data["batch"], data["world_size"]) == (0, 27, 1)
    finally:
        shutil.rmtree(run_dir)
        shutil.copytree(backup, run_dir)


def test_a_rank_that_stops_yielding_data_ends_the_run_naming_it(shards, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("uses a FIFO as a shard that never delivers data (POSIX)")
    stalled = tmp_path / "shards"
    shutil.copytree(shards, stalled)
    manifest = read_manifest(stalled)
    names = [s["name"] for s in manifest["shards"]]
    victim = names[1]
    (stalled / victim).unlink()
    os.mkfifo(stalled / victim)  # opening it for reading blocks forever: that rank stops yielding data
    urls = [str(stalled / n) for n in names]
    rank = next(r for r in range(2) if str(stalled / victim) in slot_shards(urls, 0, 0, r, 2, 0, 1))
    result = subprocess.run(_torchrun("--standalone", "--nproc_per_node=2",
                                      *_args(stalled, tmp_path / "run", "dist_timeout_s=10")),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=_env())
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert re.search(rf"rank {rank} (stopped after iteration \d+|never started an iteration)", text), text
    assert f"while rank {1 - rank} reached iteration" in text and "dist_timeout_s" in text
