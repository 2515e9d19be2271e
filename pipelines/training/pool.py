"""The training-pair pool ("queue") of Real-ESRNet/Real-ESRGAN (reference §1.4).

The reference draws resize, noise type and order once per batch; mixing pairs from 15 earlier
batches through a pool of 180 gives each training batch more diversity. Until the pool is full the
current batch is used unchanged; afterwards the pool is permuted with one random permutation, the first
B pairs are trained on, and the current batch takes their slots. Pairs are stored on the 1/255 grid
(LQ is quantized, GT comes from 8-bit files) so the pool saves to checkpoints as uint8, exactly.

The permutation is applied to a slot index, not to the stored pairs: ``slots[i]`` is where the pair at
pool position i is stored. Permuting 180 indices and copying B pairs in and out gives the same pairs
as permuting the whole pool (≈150 MB of 256² GT per iteration for the paper's pool) and then swapping.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["TrainingPairPool"]


class TrainingPairPool:
    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size = size
        self.generator = generator  # a CPU generator: the permutation is small and machine-independent
        self.lq: Tensor | None = None
        self.gt: Tensor | None = None
        self.filled = 0
        self.slots: Tensor | None = None  # pool position → storage row (see the module docstring)

    def exchange(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        """Put (lq, gt) in the pool and return the pairs to train on this iteration."""
        if self.size == 0:
            return lq, gt
        batch = lq.shape[0]
        if self.size % batch:
            raise ValueError(f"pool size {self.size} is not a multiple of the batch size {batch}")
        if self.lq is None:
            self.lq = lq.new_zeros((self.size, *lq.shape[1:]))
            self.gt = gt.new_zeros((self.size, *gt.shape[1:]))
        if self.filled < self.size:
            self.lq[self.filled : self.filled + batch] = lq
            self.gt[self.filled : self.filled + batch] = gt
            self.filled += batch
            return lq, gt
        order = torch.randperm(self.size, generator=self.generator).to(self.lq.device)
        if self.slots is None:
            self.slots = torch.arange(self.size, device=self.lq.device)
        self.slots = self.slots[order]
        rows = self.slots[:batch].tolist()
        # Whole-row copies (one memcpy each), not index_select/index_put, which gather element by element.
        out_lq = torch.stack([self.lq[r] for r in rows])
        out_gt = torch.stack([self.gt[r] for r in rows])
        for j, r in enumerate(rows):
            self.lq[r].copy_(lq[j])
            self.gt[r].copy_(gt[j])
        return out_lq, out_gt

    def ordered(self) -> tuple[Tensor, Tensor]:
        """The stored (lq, gt) pairs in pool order (what a pool that permutes its storage would hold)."""
        if self.lq is None or self.slots is None:
            return self.lq, self.gt
        return self.lq[self.slots], self.gt[self.slots]

    def state_dict(self) -> dict:
        state: dict = {"filled": self.filled, "generator": self.generator.get_state()}
        if self.lq is not None:
            lq, gt = self.ordered()
            # Whole NCHW batches on the 1/255 grid, kept in their layout (not pipelines.common.tensor_to_rgb,
            # which makes one HWC image): no clamp needed, and the round trip below is exact.
            state["lq"] = (lq * 255).round().to(torch.uint8).cpu()
            state["gt"] = (gt * 255).round().to(torch.uint8).cpu()
        return state

    def load_state_dict(self, state: dict, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.filled = int(state["filled"])
        self.generator.set_state(state["generator"])
        self.slots = None
        if "lq" in state:
            self.lq = state["lq"].to(device=device, dtype=dtype) / 255
            self.gt = state["gt"].to(device=device, dtype=dtype) / 255
