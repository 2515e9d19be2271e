"""RRDBNet, the ESRGAN / Real-ESRGAN generator, with the official state-dict layout.

Source: BasicSR ``basicsr/archs/rrdbnet_arch.py`` (ESRGAN, Wang et al. 2018, §3.1; Real-ESRGAN,
Wang et al. 2021, §3.3). Module attribute names are the upstream ones, so the released
``RealESRGAN_x4plus.pth`` / ``RealESRNet_x4plus.pth`` state dicts load with ``strict=True``.

Randomness: construction never touches torch's global RNG when a ``generator`` is given; the
modules are built on the ``meta`` device and every parameter is then drawn from that generator.
Without a generator the same draws come from torch's global RNG, so the *caller* seeds it
(``torch.manual_seed``) exactly as with any ``nn.Module``. Loading weights needs no randomness.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Net scale -> pixel-unshuffle factor; the body always upsamples x4 (two nearest x2 stages).
UNSHUFFLE_FACTOR: dict[int, int] = {4: 1, 2: 2, 1: 4}
LRELU_SLOPE = 0.2
RDB_INIT_SCALE = 0.1  # BasicSR default_init_weights(..., 0.1) on the RDB convs only


@dataclass(frozen=True)
class RRDBNetSpec:
    """Hyperparameters of an RRDBNet; defaults are Real-ESRGAN's x4plus (options/*_x4plus.yml)."""

    scale: int = 4
    num_block: int = 23
    num_feat: int = 64
    num_grow_ch: int = 32
    num_in_ch: int = 3
    num_out_ch: int = 3

    def __post_init__(self) -> None:
        if self.scale not in UNSHUFFLE_FACTOR:
            raise ValueError(f"RRDBNet scale must be one of 1, 2, 4 (got {self.scale!r})")
        for name in ("num_block", "num_feat", "num_grow_ch", "num_in_ch", "num_out_ch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RRDBNet {name} must be a positive int (got {value!r})")

    @property
    def unshuffle_factor(self) -> int:
        """Pixel-unshuffle factor applied to the input (1 for x4, 2 for x2, 4 for x1)."""
        return UNSHUFFLE_FACTOR[self.scale]


def check_param_shapes(state_dict, expected: dict[str, tuple[int, ...]], model: str) -> None:
    """Raise ValueError unless ``state_dict`` has exactly the ``expected`` keys and shapes (``model`` names it)."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {s}" for k, s in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != s]
    if missing or unexpected or wrong:
        raise ValueError(f"state dict does not match {model}: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, wrong shapes {wrong[:4]}")


def rrdbnet_param_shapes(spec: RRDBNetSpec) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of ``RRDBNet(spec)`` with its shape, in module order.

    Computed from the architecture description (BasicSR ``rrdbnet_arch.py``) without building the
    model, so weight detection and the ncnn converter can validate files cheaply.

    Example:
        >>> rrdbnet_param_shapes(RRDBNetSpec(num_block=1))["conv_first.weight"]
        (64, 3, 3, 3)
    """
    nf, gc = spec.num_feat, spec.num_grow_ch
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, 3, 3)
        shapes[f"{name}.bias"] = (cout,)

    conv("conv_first", nf, spec.num_in_ch * spec.unshuffle_factor**2)
    for block in range(spec.num_block):
        for rdb in (1, 2, 3):
            for i in range(1, 6):
                conv(f"body.{block}.rdb{rdb}.conv{i}", gc if i < 5 else nf, nf + (i - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", spec.num_out_ch, nf)
    return shapes


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=True)


def init_default_conv_(conv: nn.Conv2d, generator: torch.Generator | None) -> None:
    """PyTorch's ``Conv2d.reset_parameters`` with an explicit generator.

    kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias uses the same bound.
    """
    nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
    if conv.bias is not None:
        bound = 1.0 / math.sqrt(conv.weight[0].numel())
        nn.init.uniform_(conv.bias, -bound, bound, generator=generator)


def init_rdb_conv_(conv: nn.Conv2d, generator: torch.Generator | None) -> None:
    """BasicSR ``default_init_weights(scale=0.1)``: kaiming_normal_ (fan_in, gain sqrt(2)) x 0.1, bias 0."""
    # kaiming_normal_ draws N(0, gain / sqrt(fan_in)); drawing with the 0.1-scaled std directly is the
    # same distribution and avoids a separate multiply pass.
    std = nn.init.calculate_gain("leaky_relu", 0) / math.sqrt(conv.weight[0].numel())
    nn.init.normal_(conv.weight, 0.0, RDB_INIT_SCALE * std, generator=generator)
    nn.init.zeros_(conv.bias)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output = conv5([x, x1..x4]) * 0.2 + x (ESRGAN Fig. 4)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = _conv3x3(num_feat, num_grow_ch)
        self.conv2 = _conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = _conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = _conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = _conv3x3(num_feat + 4 * num_grow_ch, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), LRELU_SLOPE)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), LRELU_SLOPE)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), LRELU_SLOPE)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), LRELU_SLOPE)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        # Residual scaling 0.2 keeps the deep stack stable (ESRGAN §3.2).
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: rdb3(rdb2(rdb1(x))) * 0.2 + x."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The ESRGAN generator as used by Real-ESRGAN (x4, x2 and x1 via pixel-unshuffle).

    Args:
        num_in_ch: input channels.
        num_out_ch: output channels.
        scale: net scale, one of 1, 2, 4. Scales 2 and 1 pixel-unshuffle the input by 2 and 4.
        num_feat: feature channels.
        num_block: number of RRDBs in the trunk.
        num_grow_ch: growth channels of the dense blocks.
        generator: draws every initial weight. ``None`` uses torch's global RNG (seed it yourself).

    Shape:
        (B, num_in_ch, H, W) -> (B, num_out_ch, H*scale, W*scale); H and W must be divisible by
        the unshuffle factor (2 for x2, 4 for x1).

    The hyperparameters are recorded on the module (``model.spec``, ``model.hparams``), as
    spandrel does, so a checkpoint consumer can rebuild the same architecture.

    Example:
        >>> net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.spec = RRDBNetSpec(scale, num_block, num_feat, num_grow_ch, num_in_ch, num_out_ch)
        nf, cin = num_feat, num_in_ch * self.spec.unshuffle_factor**2
        # Build on `meta` so no default init runs; all draws happen once, in _init_weights.
        with torch.device("meta"):
            self.conv_first = _conv3x3(cin, nf)
            self.body = nn.Sequential(*(RRDB(nf, num_grow_ch) for _ in range(num_block)))
            self.conv_body = _conv3x3(nf, nf)
            self.conv_up1 = _conv3x3(nf, nf)
            self.conv_up2 = _conv3x3(nf, nf)
            self.conv_hr = _conv3x3(nf, nf)
            self.conv_last = _conv3x3(nf, num_out_ch)
        self.to_empty(device="cpu")
        self._init_weights(generator)

    @classmethod
    def from_spec(cls, spec: RRDBNetSpec, *, generator: torch.Generator | None = None) -> RRDBNet:
        """Build the network described by ``spec`` (e.g. from ``weights.detect_rrdbnet``)."""
        return cls(
            spec.num_in_ch, spec.num_out_ch, spec.scale, spec.num_feat, spec.num_block, spec.num_grow_ch,
            generator=generator,
        )

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def hparams(self) -> dict[str, int]:
        """Constructor arguments as a plain dict (for configs and checkpoints)."""
        return asdict(self.spec)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        # Module order is fixed, so a seeded generator gives the same weights every time.
        for module in self.modules():
            if isinstance(module, ResidualDenseBlock):
                for conv in (module.conv1, module.conv2, module.conv3, module.conv4, module.conv5):
                    init_rdb_conv_(conv, generator)
        for conv in (self.conv_first, self.conv_body, self.conv_up1, self.conv_up2, self.conv_hr,
                     self.conv_last):
            init_default_conv_(conv, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.spec.unshuffle_factor
        if x.ndim != 4 or x.shape[1] != self.spec.num_in_ch:
            raise ValueError(
                f"RRDBNet expects (B, {self.spec.num_in_ch}, H, W) input, got {tuple(x.shape)}"
            )
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"RRDBNet x{self.spec.scale} pixel-unshuffles by {factor}: input H and W must be "
                f"divisible by {factor}, got {x.shape[-2]}x{x.shape[-1]} (pad the input first)"
            )
        # Channel order c*f^2 + i*f + j, identical to BasicSR's pixel_unshuffle.
        feat = F.pixel_unshuffle(x, factor) if factor > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), LRELU_SLOPE)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), LRELU_SLOPE)
        # No output activation or clamp, as upstream: callers clamp for display.
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LRELU_SLOPE))
