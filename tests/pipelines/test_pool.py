"""The training-pair pool: the slot-index implementation against the reference's eager permutation."""

from __future__ import annotations

import pytest
import torch

from pipelines.training.pool import TrainingPairPool


def _eager_exchange(state: dict, lq: torch.Tensor, gt: torch.Tensor, size: int, generator: torch.Generator):
    """RealESRGANModel._dequeue_and_enqueue written out: permute the whole pool, take the first B, swap in."""
    b = lq.shape[0]
    if state["filled"] < size:
        state["lq"][state["filled"] : state["filled"] + b], state["gt"][state["filled"] : state["filled"] + b] = lq, gt
        state["filled"] += b
        return lq, gt
    order = torch.randperm(size, generator=generator)
    state["lq"], state["gt"] = state["lq"][order], state["gt"][order]
    out = state["lq"][:b].clone(), state["gt"][:b].clone()
    state["lq"][:b], state["gt"][:b] = lq, gt
    return out


def test_pool_returns_the_pairs_of_an_eagerly_permuted_pool_and_saves_the_same_state():
    size, batch = 12, 3
    pool = TrainingPairPool(size, torch.Generator().manual_seed(5))
    eager_gen = torch.Generator().manual_seed(5)
    eager = {"lq": torch.zeros(size, 3, 4, 4), "gt": torch.zeros(size, 3, 16, 16), "filled": 0}
    data = torch.Generator().manual_seed(0)
    for step in range(12):
        lq = torch.round(torch.rand(batch, 3, 4, 4, generator=data) * 255) / 255
        gt = torch.round(torch.rand(batch, 3, 16, 16, generator=data) * 255) / 255
        ours = pool.exchange(lq, gt)
        theirs = _eager_exchange(eager, lq, gt, size, eager_gen)
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1]), f"step {step}"
        ordered = pool.ordered()
        assert torch.equal(ordered[0], eager["lq"]) and torch.equal(ordered[1], eager["gt"])
    state = pool.state_dict()
    assert torch.equal(state["lq"], (eager["lq"] * 255).round().to(torch.uint8))
    resumed = TrainingPairPool(size, torch.Generator())
    resumed.load_state_dict(state, torch.device("cpu"))
    lq, gt = torch.zeros(batch, 3, 4, 4), torch.zeros(batch, 3, 16, 16)
    a, b = pool.exchange(lq, gt), resumed.exchange(lq, gt)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_pool_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(ValueError, match="multiple of the batch size"):
        TrainingPairPool(10, torch.Generator()).exchange(torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 16, 16))
