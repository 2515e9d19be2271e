"""CPU fp32 inference with NNPACK's Winograd convolutions (``--backend nnpack``, opt-in; see the README table).

RRDBNet spends about 90 % of a CPU forward in 3x3 convolutions. torch (oneDNN), onnxruntime (MLAS) and
OpenVINO (oneDNN) all compute them directly on AVX2, one multiply-add per weight and pixel. NNPACK, which
ships inside torch's CPU builds (``torch._nnpack_spatial_convolution``), computes a 3x3 convolution with
Winograd's F(6x6, 3x3) transform: 8x8 input tiles -> 6x6 output tiles, 64 multiplies per tile and channel
pair instead of 324, i.e. about 2.5x fewer after the transforms. Everything else (leaky ReLU, concatenation,
residual sums, nearest upsampling, pixel unshuffle) stays torch's own operations, so this is the same network
in float32 with a different summation order inside the convolutions.

Accuracy: Winograd rounding is larger than a direct convolution's but stays far inside 1/255 of the torch fp32
path: the released x4plus weights differ by at most 0.006 / 255 on the bundled photos
(``bench/upscale_backends.py --errors --variants nnpack-fp32``, bench/results/upscale_precision_nnpack_x4plus.json);
tests/pipelines/test_nnpack.py checks 1/255 for tiles, all image kinds, x4 / x2 / x1 and the released weights.

Two details the wrapper takes care of:

* ``torch._nnpack_available()`` initialises NNPACK; a convolution before that call fails.
* NNPACK reads NCHW-contiguous tensors; ``prepare_model`` keeps weights channels_last for oneDNN, so each
  wrapped convolution holds its own contiguous copy of the weight (made once).

RRDBNet's dense blocks are additionally run without ``torch.cat``: the block's input and each new feature map
are written once into one (1, C + 4G, H, W) buffer whose leading channels are the next convolution's input
(contiguous for one image), and the residual ``x5 * 0.2 + x`` is done in place with the same two roundings.
The result is bit-identical to the module's own forward with the same convolutions (tested).

Threads: NNPACK's thread pool is created at its first convolution with torch's thread count at that moment
(``upscale --threads`` is applied before the model is built).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from models.rrdbnet import LRELU_SLOPE, ResidualDenseBlock

NO_NNPACK = ("--backend nnpack: this torch build has no NNPACK (torch._nnpack_available() is False); "
             "use --backend torch")


def nnpack_available() -> bool:
    """Whether this torch build has NNPACK (and initialise it: convolutions fail before this call)."""
    return hasattr(torch, "_nnpack_spatial_convolution") and bool(torch._nnpack_available())


def eligible(conv: nn.Module) -> bool:
    """A float32 CPU Conv2d NNPACK computes: stride 1, no dilation or groups, zero padding given as numbers."""
    return (type(conv) is nn.Conv2d and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu")


class NnpackConv2d(nn.Module):
    """``conv`` computed by NNPACK (Winograd for 3x3) on NCHW-contiguous float32 tensors."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        weight = conv.weight.detach().contiguous().clone()
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[0])
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.padding = list(conv.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:  # NNPACK runs batches through another algorithm (its training path): one at a time,
            return torch.cat([self(x[i : i + 1]) for i in range(x.shape[0])])  # so batching never changes pixels
        return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias, self.padding, [1, 1])


class NnpackDenseBlock(nn.Module):
    """A ResidualDenseBlock without concatenations: features written once into one buffer (see the docstring)."""

    def __init__(self, block: ResidualDenseBlock) -> None:
        super().__init__()
        self.convs = nn.ModuleList(NnpackConv2d(c) for c in (block.conv1, block.conv2, block.conv3, block.conv4,
                                                              block.conv5))
        self.features, self.growth = block.conv1.in_channels, block.conv1.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:  # a batch slice over channels is not contiguous: one image at a time
            return torch.cat([self(x[i : i + 1]) for i in range(x.shape[0])])
        nf, gc = self.features, self.growth
        buffer = x.new_empty(1, nf + 4 * gc, *x.shape[-2:])
        buffer[:, :nf] = x
        for i, conv in enumerate(self.convs[:4]):
            width = nf + i * gc
            buffer[:, width : width + gc] = F.leaky_relu(conv(buffer[:, :width]), LRELU_SLOPE)
        # x5 * 0.2 + x, in place: the same two roundings as the module's expression.
        return self.convs[4](buffer).mul_(0.2).add_(x)


def nnpack_model(model: nn.Module, fuse_dense: bool = True) -> nn.Module:
    """A copy of ``model`` whose eligible convolutions (and RRDBNet dense blocks) run through NNPACK.

    ``model`` is not changed; the copy keeps its attributes (``scale``, ``spec``) and runs in NCHW.
    ``fuse_dense=False`` keeps the dense blocks' own forward (concatenations) around NNPACK convolutions.
    Raises ValueError when this torch build has no NNPACK.
    """
    if not nnpack_available():
        raise ValueError(NO_NNPACK)
    fast = copy.deepcopy(model)
    _swap(fast, fuse_dense)
    return fast.eval().requires_grad_(False)


def _swap(module: nn.Module, fuse_dense: bool) -> None:
    for name, child in module.named_children():
        if fuse_dense and isinstance(child, ResidualDenseBlock) and all(eligible(c) for c in child.children()):
            setattr(module, name, NnpackDenseBlock(child))
        elif eligible(child):
            setattr(module, name, NnpackConv2d(child))
        else:
            _swap(child, fuse_dense)
