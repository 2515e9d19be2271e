"""Write RRDBNet / SRVGGNetCompact as ncnn ``.param`` (text) + ``.bin``, laid out as the released files.

The layout follows what ONNX -> onnx2ncnn produces for Real-ESRGAN and what the released
``REALESRGAN_*`` files contain (the reader in ``models.ncnn`` / ``models.ncnn_compact`` parses both):
input blob ``data``, output blob ``output`` (the names realesrgan-ncnn-vulkan extracts), explicit
``Split`` layers for blobs read more than once, RRDBNet's leaky ReLUs fused into Convolution
(9=2, slope 0.2), the scaled residuals as Eltwise sums, nearest ``Interp`` for upsampling;
SRVGGNetCompact as Convolution / PReLU pairs, PixelShuffle and BinaryOp add. Pixel-unshuffle (RRDBNet
x2 / x1) is ``Reorg`` with mode 0, which is PyTorch's channel order (checked against the ncnn runtime).

Storage: convolution weights carry a tag, fp16 (0x01306B47, padded to 4 bytes; as the released files)
or raw fp32 (tag 0); biases and PReLU slopes are raw fp32, as ncnn's ``ModelBin::load(n, 1)`` reads them.
"""

from __future__ import annotations

import struct
from collections import Counter

import torch
from torch import nn

from models.compact import ResizedOutput, SRVGGNetCompact
from models.ema import unwrap_model
from models.ncnn import TAG_FP16, TAG_FP32
from models.rrdbnet import LRELU_SLOPE, RRDBNet


def _float(value: float) -> str:
    return f"{value:.6e}"


class _Graph:
    """Layers in forward order; ``text()`` inserts a Split wherever a blob feeds several layers."""

    def __init__(self) -> None:
        self.layers: list[list] = []  # [type, name, inputs, outputs, params]
        self.chunks: list[bytes] = []
        self.count = 0

    def add(self, layer_type: str, inputs: list[str], params: str = "", output: str | None = None) -> str:
        self.count += 1
        out = output or str(self.count)
        self.layers.append([layer_type, f"{layer_type}_{self.count}", list(inputs), [out], params])
        return out

    def text(self) -> str:
        uses = Counter(b for layer in self.layers for b in layer[2])
        lines: list[list] = []
        pending: dict[str, list[str]] = {}
        for layer_type, name, inputs, outputs, params in self.layers:
            inputs = [pending[b].pop(0) if b in pending else b for b in inputs]
            lines.append([layer_type, name, inputs, outputs, params])
            blob = outputs[0]
            if uses[blob] > 1:
                outs = [f"{blob}_splitncnn_{k}" for k in range(uses[blob])]
                pending[blob] = list(outs)
                lines.append(["Split", f"splitncnn_{blob}", [blob], outs, ""])
        blobs = {b for line in lines for b in line[3]}
        body = [f"{t:<24} {n:<24} {len(i)} {len(o)} {' '.join(i + o)} {p}".rstrip() for t, n, i, o, p in lines]
        return "\n".join(["7767517", f"{len(lines)} {len(blobs)}", *body]) + "\n"

    def weights(self, weight: torch.Tensor, bias: torch.Tensor, fp16: bool) -> None:
        flat = weight.detach().float().cpu().numpy().ravel()
        if fp16:
            raw = flat.astype("<f2").tobytes()
            self.chunks += [struct.pack("<I", TAG_FP16), raw, b"\0" * (-len(raw) % 4)]
        else:
            self.chunks += [struct.pack("<I", TAG_FP32), flat.astype("<f4").tobytes()]
        self.raw(bias)

    def raw(self, values: torch.Tensor) -> None:
        self.chunks.append(values.detach().float().cpu().numpy().astype("<f4").tobytes())

    def conv(self, module: nn.Conv2d, x: str, fp16: bool, act: str = "", output: str | None = None) -> str:
        w = module.weight
        if tuple(w.shape[2:]) != (3, 3) or module.stride != (1, 1) or module.padding != (1, 1) or module.bias is None:
            raise ValueError(f"ncnn export supports 3x3 stride-1 pad-1 convolutions with bias, got {module}")
        self.weights(w, module.bias, fp16)
        return self.add("Convolution", [x], f"0={w.shape[0]} 1=3 4=1 5=1 6={w.numel()}{act}", output)


def _rrdbnet(g: _Graph, net: RRDBNet, fp16: bool, final: str) -> None:
    lrelu = f" 9=2 -23310=1,{_float(LRELU_SLOPE)}"
    residual = f"0=1 -23301=2,{_float(0.2)},{_float(1.0)}"  # a * 0.2 + b
    x = g.add("Input", [], "", "data")
    factor = net.spec.unshuffle_factor
    if factor > 1:
        x = g.add("Reorg", [x], f"0={factor}")
    x = first = g.conv(net.conv_first, x, fp16)
    for block in net.body:
        block_in = x
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            feats = [x]
            for i, conv in enumerate((rdb.conv1, rdb.conv2, rdb.conv3, rdb.conv4, rdb.conv5), start=1):
                inp = feats[0] if i == 1 else g.add("Concat", feats)
                y = g.conv(conv, inp, fp16, lrelu if i < 5 else "")
                feats.append(y)
            x = g.add("Eltwise", [y, feats[0]], residual)
        x = g.add("Eltwise", [x, block_in], residual)
    x = g.add("BinaryOp", [first, g.conv(net.conv_body, x, fp16)])  # add (0=0, the default, unwritten)
    up = f"0=1 1={_float(2.0)} 2={_float(2.0)}"
    x = g.conv(net.conv_up1, g.add("Interp", [x], up), fp16, lrelu)
    x = g.conv(net.conv_up2, g.add("Interp", [x], up), fp16, lrelu)
    g.conv(net.conv_last, g.conv(net.conv_hr, x, fp16, lrelu), fp16, output=final)


def _compact(g: _Graph, net: SRVGGNetCompact, fp16: bool, final: str) -> None:
    spec = net.spec
    x = data = g.add("Input", [], "", "data")
    for layer in net.body[:-1]:
        if isinstance(layer, nn.Conv2d):
            x = g.conv(layer, x, fp16)
        elif isinstance(layer, nn.PReLU):
            g.raw(layer.weight)
            x = g.add("PReLU", [x], f"0={layer.weight.numel()}")
        elif isinstance(layer, nn.LeakyReLU):
            x = g.add("ReLU", [x], f"0={_float(layer.negative_slope)}")
        else:
            x = g.add("ReLU", [x])
    x = g.conv(net.body[-1], x, fp16)
    base = data
    if spec.scale > 1:
        x = g.add("PixelShuffle", [x], f"0={spec.scale}")
        base = g.add("Interp", [data], f"0=1 1={_float(spec.scale)} 2={_float(spec.scale)}")
    g.add("BinaryOp", [x, base], output=final)


def ncnn_files(model: nn.Module, fp16: bool = True) -> tuple[str, bytes]:
    """(.param text, .bin bytes) of an RRDBNet, an SRVGGNetCompact, or either wrapped in ``ResizedOutput``.

    ``fp16=True`` stores the convolution weights in half precision like the released files.
    """
    model = unwrap_model(model)
    resize = None
    if isinstance(model, ResizedOutput):
        resize, model = model.out_scale / model.net.scale, unwrap_model(model.net)
    g = _Graph()
    final = "output" if resize is None else "pre_resize"
    if isinstance(model, RRDBNet):
        _rrdbnet(g, model, fp16, final)
    elif isinstance(model, SRVGGNetCompact):
        _compact(g, model, fp16, final)
    else:
        raise ValueError(f"ncnn export supports RRDBNet and SRVGGNetCompact, not {type(model).__name__}")
    if resize is not None:  # bicubic, as the released animevideov3 x2 / x3 files
        g.add("Interp", [final], f"0=3 1={_float(resize)} 2={_float(resize)}", output="output")
    return g.text(), b"".join(g.chunks)
