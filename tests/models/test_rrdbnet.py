"""RRDBNet: official state-dict layout, parameter counts, shapes, pixel-unshuffle order, init."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from models.rrdbnet import RRDBNet, RRDBNetSpec, rrdbnet_param_shapes

# Reference doc §3.1 (BasicSR rrdbnet_arch.py attribute names), x4, num_feat 64, num_grow_ch 32.
NON_BODY_X4 = [
    ("conv_first.weight", (64, 3, 3, 3)),
    ("conv_first.bias", (64,)),
    ("conv_body.weight", (64, 64, 3, 3)),
    ("conv_body.bias", (64,)),
    ("conv_up1.weight", (64, 64, 3, 3)),
    ("conv_up1.bias", (64,)),
    ("conv_up2.weight", (64, 64, 3, 3)),
    ("conv_up2.bias", (64,)),
    ("conv_hr.weight", (64, 64, 3, 3)),
    ("conv_hr.bias", (64,)),
    ("conv_last.weight", (3, 64, 3, 3)),
    ("conv_last.bias", (3,)),
]
# The 30 tensors of body.0 (every block has the same layout).
BLOCK0 = [
    ("body.0.rdb1.conv1.weight", (32, 64, 3, 3)),
    ("body.0.rdb1.conv1.bias", (32,)),
    ("body.0.rdb1.conv2.weight", (32, 96, 3, 3)),
    ("body.0.rdb1.conv2.bias", (32,)),
    ("body.0.rdb1.conv3.weight", (32, 128, 3, 3)),
    ("body.0.rdb1.conv3.bias", (32,)),
    ("body.0.rdb1.conv4.weight", (32, 160, 3, 3)),
    ("body.0.rdb1.conv4.bias", (32,)),
    ("body.0.rdb1.conv5.weight", (64, 192, 3, 3)),
    ("body.0.rdb1.conv5.bias", (64,)),
    ("body.0.rdb2.conv1.weight", (32, 64, 3, 3)),
    ("body.0.rdb2.conv1.bias", (32,)),
    ("body.0.rdb2.conv2.weight", (32, 96, 3, 3)),
    ("body.0.rdb2.conv2.bias", (32,)),
    ("body.0.rdb2.conv3.weight", (32, 128, 3, 3)),
    ("body.0.rdb2.conv3.bias", (32,)),
    ("body.0.rdb2.conv4.weight", (32, 160, 3, 3)),
    ("body.0.rdb2.conv4.bias", (32,)),
    ("body.0.rdb2.conv5.weight", (64, 192, 3, 3)),
    ("body.0.rdb2.conv5.bias", (64,)),
    ("body.0.rdb3.conv1.weight", (32, 64, 3, 3)),
    ("body.0.rdb3.conv1.bias", (32,)),
    ("body.0.rdb3.conv2.weight", (32, 96, 3, 3)),
    ("body.0.rdb3.conv2.bias", (32,)),
    ("body.0.rdb3.conv3.weight", (32, 128, 3, 3)),
    ("body.0.rdb3.conv3.bias", (32,)),
    ("body.0.rdb3.conv4.weight", (32, 160, 3, 3)),
    ("body.0.rdb3.conv4.bias", (32,)),
    ("body.0.rdb3.conv5.weight", (64, 192, 3, 3)),
    ("body.0.rdb3.conv5.bias", (64,)),
]
CONV_FIRST_IN = {4: 3, 2: 12, 1: 48}  # doc §3.1: pixel-unshuffle x2 -> 3*4, x4 -> 3*16
# Parameter counts: x4 and x2 from the reference doc §3.1; x1 derived by hand from x4:
# 16,697,987 - 64*3*9 + 64*48*9 = 16,723,907.
PARAM_COUNT = {4: 16_697_987, 2: 16_703_171, 1: 16_723_907}

TINY = dict(num_feat=8, num_block=1, num_grow_ch=4)


def official_layout(scale: int) -> list[tuple[str, tuple[int, ...]]]:
    """Expected (key, shape) list in the official order, from the literal tables above."""
    first = [(k, s if k != "conv_first.weight" else (64, CONV_FIRST_IN[scale], 3, 3)) for k, s in NON_BODY_X4[:2]]
    body = [(k.replace("body.0.", f"body.{b}.", 1), s) for b in range(23) for k, s in BLOCK0]
    return first + body + NON_BODY_X4[2:]


@pytest.fixture(scope="module", params=[4, 2, 1])
def full_net(request) -> RRDBNet:
    return RRDBNet(scale=request.param, generator=torch.Generator().manual_seed(request.param))


def test_official_state_dict_layout(full_net: RRDBNet) -> None:
    state = full_net.state_dict()
    assert len(state) == 702
    assert [(k, tuple(v.shape)) for k, v in state.items()] == official_layout(full_net.scale)


def test_parameter_count(full_net: RRDBNet) -> None:
    assert sum(p.numel() for p in full_net.parameters()) == PARAM_COUNT[full_net.scale]


def test_hparams_recorded(full_net: RRDBNet) -> None:
    assert full_net.hparams == dict(
        scale=full_net.scale, num_block=23, num_feat=64, num_grow_ch=32, num_in_ch=3, num_out_ch=3
    )
    assert RRDBNet.from_spec(RRDBNetSpec(**{**full_net.hparams, "num_block": 1})).spec.num_block == 1


def test_param_shape_table() -> None:
    """The analytic table used by detection / ncnn equals the literal layout and the built module."""
    assert list(rrdbnet_param_shapes(RRDBNetSpec()).items()) == official_layout(4)
    spec = RRDBNetSpec(scale=1, num_block=2, num_feat=8, num_grow_ch=4, num_in_ch=1, num_out_ch=2)
    net = RRDBNet.from_spec(spec, generator=torch.Generator().manual_seed(0))
    assert rrdbnet_param_shapes(spec) == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 2, 8, 8)


@pytest.mark.parametrize(("scale", "out_hw"), [(4, 64), (2, 32), (1, 16)])
def test_forward_shape(scale: int, out_hw: int, device: torch.device) -> None:
    net = RRDBNet(scale=scale, **TINY, generator=torch.Generator().manual_seed(0)).to(device)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    out = net(x)
    assert out.shape == (1, 3, out_hw, out_hw)
    assert out.device.type == device.type


@pytest.mark.parametrize("scale", [2, 1])
def test_pixel_unshuffle_channel_order(scale: int) -> None:
    """conv_first sees channel c*f^2 + i*f + j = x[c, h*f + i, w*f + j] (BasicSR pixel_unshuffle)."""
    f = {2: 2, 1: 4}[scale]
    net = RRDBNet(scale=scale, **TINY, generator=torch.Generator().manual_seed(0))
    seen: list[torch.Tensor] = []
    net.conv_first.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    net(x)
    expected = torch.empty(2, 3 * f * f, 8 // f, 12 // f)
    for c in range(3):
        for i in range(f):
            for j in range(f):
                for h in range(8 // f):
                    for w in range(12 // f):
                        expected[:, c * f * f + i * f + j, h, w] = x[:, c, h * f + i, w * f + j]
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)


def test_bad_scale_and_input() -> None:
    with pytest.raises(ValueError, match="scale must be one of 1, 2, 4"):
        RRDBNet(scale=3)
    with pytest.raises(ValueError, match="num_feat must be a positive int"):
        RRDBNet(num_feat=0)
    net = RRDBNet(scale=1, **TINY, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="divisible by 4, got 10x12"):
        net(torch.zeros(1, 3, 10, 12))
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        net(torch.zeros(1, 4, 8, 8))


def test_rdb_init_statistics() -> None:
    """RDB convs: N(0, (0.1 * sqrt(2 / fan_in))^2) (BasicSR default_init_weights scale 0.1), bias 0."""
    net = RRDBNet(num_block=1, generator=torch.Generator().manual_seed(123))
    for name, conv in net.body[0].rdb2.named_children():
        w = conv.weight.detach().double().flatten()
        n, fan_in = w.numel(), conv.weight[0].numel()
        sigma = 0.1 * math.sqrt(2.0 / fan_in)
        # SE of the sample std of a normal is sigma / sqrt(2n); allow 5 SE. Mean: 5 sigma / sqrt(n).
        assert abs(w.std().item() - sigma) < 5 * sigma / math.sqrt(2 * n), name
        assert abs(w.mean().item()) < 5 * sigma / math.sqrt(n), name
        assert stats.kstest(w.numpy(), "norm", args=(0.0, sigma)).pvalue > 1e-3, name
        assert torch.count_nonzero(conv.bias) == 0, name


def test_default_init_of_other_convs() -> None:
    """conv_first/body/up/hr/last keep PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    net = RRDBNet(num_block=1, generator=torch.Generator().manual_seed(5))
    for conv in (net.conv_first, net.conv_body, net.conv_up1, net.conv_hr, net.conv_last):
        bound = 1.0 / math.sqrt(conv.weight[0].numel())
        w = conv.weight.detach().double().flatten()
        assert w.abs().max() <= bound and conv.bias.abs().max() <= bound
        assert stats.kstest(w.numpy(), "uniform", args=(-bound, 2 * bound)).pvalue > 1e-3


def test_generator_determinism_and_global_rng_untouched() -> None:
    before = torch.get_rng_state()
    a = RRDBNet(**TINY, generator=torch.Generator().manual_seed(7)).state_dict()
    b = RRDBNet(**TINY, generator=torch.Generator().manual_seed(7)).state_dict()
    c = RRDBNet(**TINY, generator=torch.Generator().manual_seed(8)).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv_first.weight"], c["conv_first.weight"])
    # Without a generator the caller seeds torch's global RNG.
    torch.manual_seed(11)
    d = RRDBNet(**TINY).state_dict()
    torch.manual_seed(11)
    e = RRDBNet(**TINY).state_dict()
    assert all(torch.equal(d[k], e[k]) for k in d)
