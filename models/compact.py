"""SRVGGNetCompact, the small generator of realesr-animevideov3 and realesr-general-x4v3.

Source: Real-ESRGAN ``realesrgan/archs/srvgg_arch.py`` (``SRVGGNetCompact``). ``body`` is one
``nn.ModuleList``: conv3x3(in -> num_feat), activation, then ``num_conv`` x [conv3x3(num_feat ->
num_feat), activation], then conv3x3(num_feat -> out * scale^2); the result is pixel-shuffled and the
nearest-upsampled input is added back. State-dict keys are therefore ``body.<i>.weight`` /
``body.<i>.bias`` with the convolutions at even indices and the activations at odd ones; only PReLU
has parameters (``body.<odd>.weight``, one slope per feature, initialised to 0.25). The official
LeakyReLU slope is 0.1. Released models: animevideov3 (num_feat 64, num_conv 16, PReLU, x4) and
general-x4v3 (num_conv 32).

Because ReLU / LeakyReLU have no parameters, a state dict of such a model does not say which of the
two it used; ``export_generator`` therefore records the hyperparameters next to the weights (see
``models.weights``), and spandrel (which needs ``body.1.weight``) detects only PReLU models.

Randomness: as ``RRDBNet``, every initial weight comes from the given ``generator`` (PyTorch's
default Conv2d initialisation, which the official code keeps).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.rrdbnet import check_param_shapes, init_default_conv_

ActType = Literal["prelu", "leakyrelu", "relu"]
ACT_TYPES: tuple[str, ...] = ("prelu", "leakyrelu", "relu")
COMPACT_SCALES = (1, 2, 3, 4)
COMPACT_LRELU_SLOPE = 0.1  # srvgg_arch.py: nn.LeakyReLU(negative_slope=0.1)
PRELU_INIT = 0.25  # nn.PReLU default
_BODY_KEY = re.compile(r"body\.(\d+)\.(weight|bias)")


@dataclass(frozen=True)
class CompactSpec:
    """Hyperparameters of an SRVGGNetCompact; defaults are realesr-animevideov3's."""

    scale: int = 4
    num_feat: int = 64
    num_conv: int = 16
    act_type: str = "prelu"
    num_in_ch: int = 3
    num_out_ch: int = 3

    def __post_init__(self) -> None:
        if self.scale not in COMPACT_SCALES:
            raise ValueError(f"SRVGGNetCompact scale must be one of 1, 2, 3, 4 (got {self.scale!r})")
        if self.act_type not in ACT_TYPES:
            raise ValueError(f"SRVGGNetCompact act_type must be one of {ACT_TYPES} (got {self.act_type!r})")
        for name in ("num_feat", "num_in_ch", "num_out_ch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SRVGGNetCompact {name} must be a positive int (got {value!r})")
        if not isinstance(self.num_conv, int) or isinstance(self.num_conv, bool) or self.num_conv < 0:
            raise ValueError(f"SRVGGNetCompact num_conv must be an int >= 0 (got {self.num_conv!r})")

    @property
    def unshuffle_factor(self) -> int:
        """No pixel-unshuffle: any input size works (read by ``pipelines.inference.tiling``)."""
        return 1

    @property
    def last_index(self) -> int:
        """Index of the last convolution in ``body``."""
        return 2 * self.num_conv + 2


def compact_param_shapes(spec: CompactSpec) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of ``SRVGGNetCompact(spec)`` with its shape, in module order."""
    shapes: dict[str, tuple[int, ...]] = {}
    cin = spec.num_in_ch
    for i in range(spec.num_conv + 1):
        shapes[f"body.{2 * i}.weight"] = (spec.num_feat, cin, 3, 3)
        shapes[f"body.{2 * i}.bias"] = (spec.num_feat,)
        if spec.act_type == "prelu":
            shapes[f"body.{2 * i + 1}.weight"] = (spec.num_feat,)
        cin = spec.num_feat
    out = spec.num_out_ch * spec.scale**2
    shapes[f"body.{spec.last_index}.weight"] = (out, spec.num_feat, 3, 3)
    shapes[f"body.{spec.last_index}.bias"] = (out,)
    return shapes


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "leakyrelu":
        return nn.LeakyReLU(negative_slope=COMPACT_LRELU_SLOPE)
    return nn.ReLU()


class SRVGGNetCompact(nn.Module):
    """The compact VGG-style generator (official argument names and order).

    Args:
        num_in_ch, num_out_ch: channels.
        num_feat: feature channels.
        num_conv: hidden conv + activation pairs.
        upscale: 1, 2, 3 or 4 (the pixel-shuffle factor).
        act_type: ``prelu`` (released models), ``leakyrelu`` (slope 0.1) or ``relu``.
        generator: draws every initial weight; ``None`` uses torch's global RNG.

    Shape: (B, num_in_ch, H, W) -> (B, num_out_ch, H*upscale, W*upscale), any H and W.

    Example:
        >>> net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=3, generator=torch.Generator().manual_seed(0))
        >>> net(torch.zeros(1, 3, 5, 7)).shape
        torch.Size([1, 3, 15, 21])
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.spec = CompactSpec(upscale, num_feat, num_conv, act_type, num_in_ch, num_out_ch)
        with torch.device("meta"):
            layers: list[nn.Module] = []
            cin = num_in_ch
            for _ in range(num_conv + 1):
                layers += [nn.Conv2d(cin, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
                cin = num_feat
            layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
            self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)
        self.to_empty(device="cpu")
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                init_default_conv_(module, generator)
            elif isinstance(module, nn.PReLU):
                nn.init.constant_(module.weight, PRELU_INIT)

    @classmethod
    def from_spec(cls, spec: CompactSpec, *, generator: torch.Generator | None = None) -> SRVGGNetCompact:
        return cls(spec.num_in_ch, spec.num_out_ch, spec.num_feat, spec.num_conv, spec.scale, spec.act_type,
                   generator=generator)

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def upscale(self) -> int:  # the official attribute name
        return self.spec.scale

    @property
    def hparams(self) -> dict[str, int | str]:
        return asdict(self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.spec.num_in_ch:
            raise ValueError(f"SRVGGNetCompact expects (B, {self.spec.num_in_ch}, H, W) input, got {tuple(x.shape)}")
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        # The network learns the residual over nearest upsampling (srvgg_arch.py forward).
        base = F.interpolate(x, scale_factor=self.spec.scale, mode="nearest") if self.spec.scale > 1 else x
        return out + base


def looks_like_compact(keys) -> bool:
    """True when every key is ``body.<i>.weight|bias`` (the SRVGGNetCompact layout)."""
    keys = list(keys)
    return bool(keys) and all(_BODY_KEY.fullmatch(k) for k in keys)


def detect_compact_spec(state_dict, act_type: str | None = None) -> CompactSpec:
    """Read an SRVGGNetCompact's hyperparameters off a bare state dict.

    PReLU models carry ``body.1.weight``; for parameter-free activations pass ``act_type`` (relu or
    leakyrelu cannot be told apart from the weights). The scale comes from the last conv's
    out channels = num_out_ch * scale^2, with num_out_ch = num_in_ch (as every released model).

    Raises:
        ValueError: not this layout, ambiguous activation, or shapes inconsistent with any spec.
    """
    if not looks_like_compact(state_dict):
        raise ValueError(f"not an SRVGGNetCompact state dict (keys must all be body.N.weight/bias): "
                         f"{list(state_dict)[:6]}")
    conv_idx = sorted(int(_BODY_KEY.fullmatch(k).group(1)) for k, v in state_dict.items()
                      if k.endswith(".weight") and v.ndim == 4)
    if "body.0.weight" not in state_dict or conv_idx[-1] < 2:
        raise ValueError(f"SRVGGNetCompact needs body.0.weight and a last conv at body.2 or later; got convolutions "
                         f"at body indices {conv_idx}")
    first, last = state_dict["body.0.weight"], state_dict[f"body.{conv_idx[-1]}.weight"]
    num_in_ch, num_feat = int(first.shape[1]), int(first.shape[0])
    out_total = int(last.shape[0])
    scale = next((s for s in COMPACT_SCALES if out_total == num_in_ch * s * s), None)
    if scale is None:
        raise ValueError(f"SRVGGNetCompact: last conv has {out_total} outputs, not {num_in_ch} x scale^2 for "
                         f"any scale in {COMPACT_SCALES}")
    has_prelu = "body.1.weight" in state_dict
    if has_prelu:
        detected = "prelu"
    elif act_type in ("relu", "leakyrelu"):
        detected = act_type
    else:
        raise ValueError(
            "SRVGGNetCompact without PReLU parameters (no body.1.weight): ReLU and LeakyReLU models cannot be "
            "told apart from the weights alone; the file needs an 'arch' entry with act_type "
            "(files written by this toolkit have one)"
        )
    if act_type is not None and act_type != detected:
        raise ValueError(f"SRVGGNetCompact: weights have {detected} activations, but act_type {act_type!r} was given")
    spec = CompactSpec(scale, num_feat, (conv_idx[-1] - 2) // 2, detected, num_in_ch, num_in_ch)
    check_compact_shapes(state_dict, spec)
    return spec


def check_compact_shapes(state_dict, spec: CompactSpec) -> None:
    """Raise ValueError unless ``state_dict`` has exactly SRVGGNetCompact(spec)'s keys and shapes."""
    check_param_shapes(state_dict, compact_param_shapes(spec), f"SRVGGNetCompact({spec})")


class ResizedOutput(nn.Module):
    """A network followed by a bicubic resize of its output (align_corners False, no antialiasing).

    The released ncnn animevideov3 x2 / x3 files are the x4 network plus exactly this resize by 0.5 /
    0.75 (their last layer is ``Interp`` type 3); this module reproduces them in torch.
    """

    def __init__(self, net: nn.Module, scale: int) -> None:
        super().__init__()
        self.net = net
        self.out_scale = scale
        self.spec = net.spec

    @property
    def scale(self) -> int:
        return self.out_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        size = (x.shape[-2] * self.out_scale, x.shape[-1] * self.out_scale)
        return F.interpolate(out, size=size, mode="bicubic", align_corners=False)
