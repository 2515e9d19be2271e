"""Training that outlives a lost worker: torchrun restarts, world-size changes, stalled ranks.

Three rules, each a small hook in `pipelines.training.train`:

* **Restart = resume.** When torchrun restarts the worker group (`--max-restarts N`, after a worker
  died), it starts the same command line again with `TORCHELASTIC_RESTART_COUNT` > 0. In that case
  training resumes from the latest checkpoint of `run_dir` by itself, as if `--resume` had been
  given (and starts from the beginning only when no checkpoint was written yet). A first attempt
  (count 0 or unset) is unchanged: it resumes only with `--resume`. torchrun >= 2.4 keeps its
  rendezvous store across restarts and a restarted gloo/NCCL group can then read the dead attempt's
  addresses (pytorch/pytorch#135712): launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 when
  restarts are allowed (`pipelines.training.dist.restart_hint` says so when the group fails to start).
* **World-size change.** A checkpoint written by R processes may be resumed by R' processes. The
  weights, EMA and optimizer states are the same on every rank and carry over. Rank r < min(R, R')
  keeps its own degradation generator and training-pair pool; a rank that did not exist before
  starts with the generator a fresh run gives that rank and an empty pool; the pools of ranks that
  are gone are dropped. The data stream keeps the samples consumed in the current epoch: after k
  batches of B per rank on R ranks it continues at batch k * R // R' of the new layout (see
  `shards.read.ShardStream.load_state_dict`), so the epoch still ends after ≈ T samples in all;
  the rest of that epoch is drawn from the new (rank, worker) layout, so some samples of it may
  be seen twice and others not; from the next epoch on the epoch rule holds exactly for R'.
* **Stalled ranks end the run.** Every rank writes a heartbeat (its iteration and the time) to the
  rendezvous store once per iteration, and collectives time out after `dist_timeout_s`. When one
  times out, the ranks that are still alive read the heartbeats and fail with `RankStalled`,
  naming the rank(s) that fell behind and since when, instead of hanging or printing only a
  transport error; torchrun then stops the group (and restarts it if restarts are left).
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import torch
import torch.distributed as torch_dist

from pipelines.training.checkpoint import latest_checkpoint

__all__ = ["RankStalled", "Heartbeat", "restart_count", "resume_after_restart", "rank_state"]


class RankStalled(RuntimeError):
    """A rank stopped making progress (no data, or hung); the message names it."""


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 outside torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def resume_after_restart(run_dir: Path) -> bool:
    """True when this is a torchrun restart and the run has a checkpoint to continue from."""
    return restart_count() > 0 and latest_checkpoint(Path(run_dir)) is not None


def rank_state(per_rank: list[dict], rank: int, world_size: int, log) -> dict | None:
    """This rank's saved generator/pool state, or None for a rank the checkpoint did not have."""
    if len(per_rank) != world_size and rank == 0:
        log(f"resuming a checkpoint of {len(per_rank)} processes with {world_size}: weights and optimizer carry "
            f"over; ranks {min(len(per_rank), world_size)}..{world_size - 1} start with fresh generators and "
            f"empty pools, the data stream keeps the samples consumed this epoch (see README, Multi-node)")
    return per_rank[rank] if rank < len(per_rank) else None


class Heartbeat:
    """Per-rank progress in the rendezvous store, to name the rank that stalled when a collective times out."""

    def __init__(self, rank: int, world_size: int, timeout_s: float, device: torch.device | None = None) -> None:
        self.rank, self.world_size = rank, world_size
        self.store = None
        if world_size < 2 or "MASTER_ADDR" not in os.environ:
            return
        # A client of the store torchrun (or init_process_group) already serves, under a key space that
        # rank 0 draws and broadcasts, so heartbeats of an earlier attempt (torchrun may keep its store
        # across restarts) are never read as current.
        token = torch.tensor([time.time_ns() if rank == 0 else 0], dtype=torch.int64, device=device)
        if torch_dist.is_initialized():
            torch_dist.broadcast(token, src=0)
        try:
            base = torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                       timeout=datetime.timedelta(seconds=max(timeout_s, 1.0)))
        except (RuntimeError, ValueError, OSError):  # no store to reach: train on, only without the diagnosis
            return
        self.store = torch_dist.PrefixStore(f"esrgan_kit/heartbeat/{int(token.item())}/", base)

    def beat(self, iteration: int) -> None:
        if self.store is not None:
            self.store.set(str(self.rank), f"{iteration} {time.time():.3f}")

    def read(self) -> dict[int, tuple[int, float]]:
        """rank -> (last iteration, unix time of the heartbeat) for the ranks that wrote one."""
        found = {}
        for rank in range(self.world_size):
            try:
                if self.store.check([str(rank)]):
                    it, at = self.store.get(str(rank)).decode().split()
                    found[rank] = (int(it), float(at))
            except Exception:  # noqa: BLE001 - the store may be gone with the agent; report what we have
                continue
        return found

    def diagnose(self, error: BaseException) -> RankStalled | None:
        """A RankStalled naming the laggards, when the heartbeats show some; None when they do not."""
        if self.store is None:
            return None
        beats = self.read()
        if not beats:
            return None
        now = time.time()
        ahead = max(it for it, _ in beats.values())
        behind = {r: beats.get(r) for r in range(self.world_size) if r not in beats or beats[r][0] < ahead}
        if not behind:
            return None
        parts = [f"rank {r} " + (f"stopped after iteration {b[0]} ({now - b[1]:.0f} s ago)" if b else
                                 "never started an iteration") for r, b in sorted(behind.items())]
        return RankStalled(f"{'; '.join(parts)} while rank {self.rank} reached iteration {ahead}: that rank "
                           f"stopped yielding data or hung (a collective timed out: "
                           f"{type(error).__name__}). Check its data source and host; the timeout is "
                           f"dist_timeout_s")
