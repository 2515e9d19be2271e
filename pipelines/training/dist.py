"""torchrun-native distributed setup: read RANK / LOCAL_RANK / WORLD_SIZE, or run as one process.

NCCL on CUDA, gloo on CPU (so CI can run two-process DDP on a laptop). Launch with
``torchrun --standalone --nproc_per_node=N cli.py train ...``; plain ``python cli.py train ...`` is one
process. No ``--local_rank`` argument is ever parsed: torchrun's environment variables are the API.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "mean_over_ranks"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the process group when launched by torchrun; pick the device (CUDA if available)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        try:
            torch_dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
        except RuntimeError as error:
            raise RuntimeError(restart_hint(str(error))) from error
    return DistInfo(rank, local_rank, world_size, dev)


def restart_hint(message: str) -> str:
    """The error of a failed process-group start, with the fix when it is the shared-store restart bug.

    torchrun (>= 2.4) shares its rendezvous TCPStore with the workers and never clears it between
    restarts, so a restarted group can read the previous attempt's addresses and fail to connect
    (pytorch/pytorch#135712). Launching with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives every attempt a
    fresh store.
    """
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    if restarted and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return (f"{message}\nthis is a torchrun restart on the rendezvous store shared with the previous attempt: "
                "launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (pytorch#135712)")
    return message


def cleanup_distributed(*, clean: bool = True, log=None) -> None:
    """Leave the process group in order: a barrier (when every rank got here normally), then destroy it.

    Without the barrier a rank that finishes first tears its gloo/NCCL connections down while a peer
    still uses them, and a group left to C++ static destructors at interpreter exit can abort a finished
    run (``terminate called without an active exception``, SIGABRT). Errors here are reported, not
    raised: the run's result is already on disk, and the exit code must say that it finished.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    try:
        if clean:
            torch_dist.barrier()
    except Exception as error:  # noqa: BLE001 - a peer that died: say so and still destroy the group
        if log is not None:
            log(f"warning: shutdown barrier failed ({type(error).__name__}: {error})")
    finally:
        try:
            torch_dist.destroy_process_group()
        except Exception as error:  # noqa: BLE001
            if log is not None:
                log(f"warning: destroying the process group failed ({type(error).__name__}: {error})")


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over ranks (every rank must call it with the same keys)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    torch_dist.all_reduce(tensor)
    return {k: float(v) / info.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}
