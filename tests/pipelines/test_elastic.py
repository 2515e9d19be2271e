"""Elastic rules without torchrun: restart = resume, per-rank state on a world-size change, a stalled rank named."""

from __future__ import annotations

import socket
import time

import torch.distributed as torch_dist

from pipelines.training.checkpoint import checkpoint_path, save_atomic
from pipelines.training.dist import restart_hint
from pipelines.training.elastic import Heartbeat, rank_state, restart_count, resume_after_restart


def test_restart_resumes_only_with_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    save_atomic({"iter": 5}, checkpoint_path(tmp_path, 5))
    assert restart_count() == 0 and not resume_after_restart(tmp_path)  # a first attempt: only --resume resumes
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert resume_after_restart(tmp_path)
    assert not resume_after_restart(tmp_path / "fresh")  # restarted before the first checkpoint: start over


def test_rank_state_on_world_size_changes():
    per_rank = [{"generator": "g0"}, {"generator": "g1"}]
    lines: list[str] = []
    assert rank_state(per_rank, 0, 1, lines.append) == {"generator": "g0"}  # 2 -> 1: rank 0 keeps its own
    assert "checkpoint of 2 processes with 1" in lines[0]
    assert rank_state(per_rank, 2, 3, lines.append) is None and len(lines) == 1  # a new rank starts fresh, rank 0 logs
    assert rank_state(per_rank, 1, 2, lines.append) == {"generator": "g1"} and len(lines) == 1  # unchanged: silent


def test_restart_hint_names_the_fix_only_for_a_shared_store_restart(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in restart_hint("connect failed")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert restart_hint("connect failed") == "connect failed"


def test_heartbeats_name_the_rank_that_fell_behind(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = torch_dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    hb = Heartbeat(0, 3, timeout_s=5)  # no process group: one client stands in for all ranks
    assert hb.diagnose(RuntimeError("x")) is None  # no heartbeat yet: nothing to say
    for rank, it in ((0, 7), (1, 7)):
        hb.rank = rank
        hb.beat(it)
    hb.rank = 0
    stalled = hb.diagnose(RuntimeError("timed out"))
    assert str(stalled).startswith("rank 2 never started an iteration while rank 0 reached iteration 7")
    hb.rank = 2
    hb.beat(6)
    time.sleep(0.01)
    hb.rank = 0
    assert "rank 2 stopped after iteration 6" in str(hb.diagnose(RuntimeError("timed out")))
    hb.rank = 2
    hb.beat(7)
    assert hb.diagnose(RuntimeError("timed out")) is None  # all at the same iteration: no rank to blame
    del server
    assert Heartbeat(0, 1, 5).store is None  # one process: no store at all
