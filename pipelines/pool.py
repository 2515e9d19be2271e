"""The training-pair pool ("queue") of Real-ESRNet/Real-ESRGAN (reference §1.4).

The reference draws resize, noise type and order once per batch; mixing pairs from 15 earlier
batches through a pool of 180 gives each training batch more diversity. Until the pool is full the
current batch is used unchanged; afterwards the pool is permuted with one random permutation, the first
B pairs are trained on, and the current batch takes their slots. Pairs are stored on the 1/255 grid
(LQ is quantized, GT comes from 8-bit files) so the pool saves to checkpoints as uint8, exactly.
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
        self.lq, self.gt = self.lq[order], self.gt[order]
        out_lq, out_gt = self.lq[:batch].clone(), self.gt[:batch].clone()
        self.lq[:batch], self.gt[:batch] = lq, gt
        return out_lq, out_gt

    def state_dict(self) -> dict:
        state: dict = {"filled": self.filled, "generator": self.generator.get_state()}
        if self.lq is not None:
            state["lq"] = (self.lq * 255).round().to(torch.uint8).cpu()
            state["gt"] = (self.gt * 255).round().to(torch.uint8).cpu()
        return state

    def load_state_dict(self, state: dict, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.filled = int(state["filled"])
        self.generator.set_state(state["generator"])
        if "lq" in state:
            self.lq = state["lq"].to(device=device, dtype=dtype) / 255
            self.gt = state["gt"].to(device=device, dtype=dtype) / 255
