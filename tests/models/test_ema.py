"""EMA: arithmetic against a float64 hand computation, buffers untouched, wrapped models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from models.ema import EMA_DECAY, ModelEMA, ema_update_, unwrap_model


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # test-side seeding of nn.Linear's default init
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_three_updates_match_hand_computation() -> None:
    decay = 0.9
    model = small_model()
    ema = ModelEMA(model, decay=decay)
    expected = {k: v.detach().double().clone() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        ema.update(model)
        for k, p in model.named_parameters():
            expected[k] = expected[k] * decay + p.detach().double() * (1 - decay)
    for k, p in ema.module.named_parameters():
        torch.testing.assert_close(p.double(), expected[k], rtol=1e-6, atol=1e-7)


def test_buffers_untouched_and_ema_frozen() -> None:
    model = small_model()
    ema = ModelEMA(model)
    assert ema.decay == EMA_DECAY == 0.999
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    before = {k: v.clone() for k, v in ema.module.named_buffers()}
    model.train()
    model(torch.randn(8, 3, generator=torch.Generator().manual_seed(2)))  # moves BN running stats
    assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    ema.update(model)
    for k, v in ema.module.named_buffers():
        assert torch.equal(v, before[k]), k


def test_starts_as_copy_and_is_independent() -> None:
    model = small_model()
    ema = ModelEMA(model)
    for (k, a), (_, b) in zip(model.state_dict().items(), ema.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(model[0].weight, ema.module[0].weight)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch._dynamo's import-time jit warnings
def test_update_through_compile_and_dataparallel_wrappers() -> None:
    model = small_model()
    ema = ModelEMA(torch.compile(model), decay=0.5)  # compilation is lazy; only _orig_mod is read
    with torch.no_grad():
        for p in model.parameters():
            p.add_(2.0)
    ema.update(nn.DataParallel(model))
    ema.update(torch.compile(model))
    original = small_model()
    for (k, p), (_, p0) in zip(ema.module.named_parameters(), original.named_parameters(), strict=True):
        # two steps of decay 0.5 towards p0 + 2: p0 + 2 * (1 - 0.25)
        torch.testing.assert_close(p, p0 + 1.5, msg=k)


def test_update_through_ddp(tmp_path: Path) -> None:
    """A single-process gloo group is enough to wrap a CPU model in DistributedDataParallel."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this test process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = small_model()
        ddp = nn.parallel.DistributedDataParallel(model)
        assert unwrap_model(ddp) is model
        ema = ModelEMA(ddp, decay=0.0)  # decay 0 copies the current parameters
        with torch.no_grad():
            model[2].bias.fill_(3.0)
        ema.update(ddp)
        assert torch.equal(ema.module[2].bias, torch.full((2,), 3.0))
        assert not isinstance(ema.module, nn.parallel.DistributedDataParallel)
    finally:
        dist.destroy_process_group()


def test_mismatched_models_and_bad_decay() -> None:
    with pytest.raises(ValueError, match="parameters differ"):
        ema_update_(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(nn.Linear(2, 2), decay=1.5)
