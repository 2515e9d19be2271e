"""ncnn SRVGGNetCompact graphs (realesr-animevideov3) -> official state dicts, and a dispatching loader.

Layout of the released files (``REALESRGAN_ANIMAVIDEOV3_UP{2,3,4}X.param``): Input, Split, then
Convolution / PReLU pairs in forward order, the last Convolution (out * 16 channels), PixelShuffle
(0=4), a nearest Interp of the input (0=1, x4), BinaryOp add; the x2 / x3 files end with one more
Interp type 3 (bicubic) by 0.5 / 0.75. In the .bin, each convolution is a tagged weight blob plus a
raw fp32 bias, each PReLU its slopes as raw fp32 (ncnn ``PReLU::load_model`` reads type 1). We also
accept ReLU (separate layer with slope 0 / 0.1, or fused as Convolution activation 1 / 2), which the
writer in ``models.ncnn_write`` emits for non-PReLU models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.compact import COMPACT_LRELU_SLOPE, CompactSpec, compact_param_shapes
from models.ncnn import NcnnGraph, NcnnLayer, _check_conv_geometry, _read_blob, ncnn_rrdbnet_state_dict, read_ncnn_param
from models.rrdbnet import RRDBNetSpec

_COMPACT_LAYER_TYPES = {"Input", "Split", "Convolution", "PReLU", "ReLU", "PixelShuffle", "Interp", "BinaryOp"}
_ACT_RELU, _ACT_LEAKY = 1, 2
_INTERP_NEAREST, _INTERP_BICUBIC = 1, 3


@dataclass(frozen=True)
class NcnnModel:
    """A converted ncnn model: official state dict, architecture, and an optional output resize."""

    state: dict[str, torch.Tensor]
    spec: RRDBNetSpec | CompactSpec
    out_scale: int | None = None  # set when the graph ends with a bicubic resize (animevideov3 x2 / x3)


def is_compact_graph(graph: NcnnGraph) -> bool:
    return any(layer.type in ("PReLU", "PixelShuffle") for layer in graph.layers) or (
        not graph.of_type("Concat") and len(graph.of_type("Convolution")) >= 2)


def _activation_of(graph: NcnnGraph, convs: list[NcnnLayer], source: str) -> str:
    prelus, relus = graph.of_type("PReLU"), graph.of_type("ReLU")
    hidden = convs[:-1]
    fused = {int(c.params.get(9, 0)) for c in hidden}
    if len(prelus) == len(hidden) and not relus and fused == {0}:
        return "prelu"
    if not prelus and len(relus) == len(hidden) and fused == {0}:
        slopes = {float(r.params.get(0, 0.0)) for r in relus}
        if slopes == {0.0}:
            return "relu"
        if len(slopes) == 1 and abs(slopes.pop() - COMPACT_LRELU_SLOPE) < 1e-6:
            return "leakyrelu"
    if not prelus and not relus and fused == {_ACT_RELU}:
        return "relu"
    if not prelus and not relus and fused == {_ACT_LEAKY} and all(
            abs(c.params.get(10, (0.0,))[0] - COMPACT_LRELU_SLOPE) < 1e-6 for c in hidden):
        return "leakyrelu"
    raise ValueError(f"{source}: {len(hidden)} hidden convolutions but {len(prelus)} PReLU / {len(relus)} ReLU "
                     f"layers and fused activations {sorted(fused)}: not an SRVGGNetCompact graph")


def _spec_and_resize(graph: NcnnGraph, convs: list[NcnnLayer], act: str, source: str) -> tuple[CompactSpec, int | None]:
    for layer in (convs[0], convs[-1]):
        if not (layer.params.get(0) and layer.params.get(6)):
            raise ValueError(f"{source}: convolution {layer.name} lacks num_output (0=) or weight_data_size (6=)")
    num_feat = int(convs[0].params[0])
    num_in = int(convs[0].params[6]) // (num_feat * 9)
    out_total = int(convs[-1].params[0])
    scale = next((s for s in (1, 2, 3, 4) if out_total == num_in * s * s), None)
    if scale is None:
        raise ValueError(f"{source}: last convolution has {out_total} outputs, not {num_in} x scale^2")
    shuffles = graph.of_type("PixelShuffle")
    if [int(p.params.get(0, 1)) for p in shuffles] != ([scale] if scale > 1 else []):
        raise ValueError(f"{source}: expected one PixelShuffle 0={scale}, found {[p.params for p in shuffles]}")
    out_scale = None
    interps = graph.of_type("Interp")
    nearest = [i for i in interps if i.params.get(0) == _INTERP_NEAREST]
    bicubic = [i for i in interps if i.params.get(0) == _INTERP_BICUBIC]
    if len(nearest) != (1 if scale > 1 else 0) or any(float(i.params.get(1, 0)) != scale for i in nearest):
        raise ValueError(f"{source}: expected one nearest x{scale} Interp of the input, "
                         f"found {[i.params for i in interps]}")
    if bicubic:
        factor = float(bicubic[0].params.get(1, 0))
        out_scale = round(scale * factor)
        if len(bicubic) != 1 or bicubic[0] is not graph.layers[-1] or abs(out_scale - scale * factor) > 1e-6:
            raise ValueError(f"{source}: unsupported output resize {[i.params for i in bicubic]}")
    if len(interps) != len(nearest) + len(bicubic):
        raise ValueError(f"{source}: unsupported Interp layers {[i.params for i in interps]}")
    return CompactSpec(scale, num_feat, len(convs) - 2, act, num_in, num_in), out_scale


def ncnn_compact_model(graph: NcnnGraph, bin_data: bytes, source: str = "<ncnn>") -> NcnnModel:
    """Map a parsed SRVGGNetCompact graph and its .bin bytes to an official float32 state dict."""
    foreign = sorted({layer.type for layer in graph.layers} - _COMPACT_LAYER_TYPES)
    if foreign:
        raise ValueError(f"{source}: layer types {foreign} do not occur in an SRVGGNetCompact export")
    convs = graph.of_type("Convolution")
    if len(convs) < 2:
        raise ValueError(f"{source}: {len(convs)} convolutions do not form an SRVGGNetCompact (needs >= 2)")
    spec, out_scale = _spec_and_resize(graph, convs, _activation_of(graph, convs, source), source)
    shapes = compact_param_shapes(spec)
    data, offset, state, conv_i, prelu_i = memoryview(bin_data), 0, {}, 0, 0
    for layer in graph.layers:
        if layer.type == "Convolution":
            index = 2 * conv_i if conv_i <= spec.num_conv else spec.last_index
            name = f"body.{index}"
            shape = shapes[f"{name}.weight"]
            _check_conv_geometry(layer, name, shape, source)
            where = f"{source} layer {layer.name} ({name})"
            weight, offset = _read_blob(data, offset, int(np.prod(shape)), True, where)
            bias, offset = _read_blob(data, offset, shape[0], False, where)
            state[f"{name}.weight"] = torch.from_numpy(weight.reshape(shape))
            state[f"{name}.bias"] = torch.from_numpy(bias)
            conv_i += 1
        elif layer.type == "PReLU":
            if int(layer.params.get(0, 1)) != spec.num_feat:
                raise ValueError(f"{source}: PReLU {layer.name} has {layer.params.get(0, 1)} slopes, "
                                 f"expected {spec.num_feat}")
            slopes, offset = _read_blob(data, offset, spec.num_feat, False, f"{source} layer {layer.name}")
            state[f"body.{2 * prelu_i + 1}.weight"] = torch.from_numpy(slopes.copy())
            prelu_i += 1
    if offset != len(data):
        raise ValueError(f"{source}: .bin has {len(data)} bytes but the graph's weights use {offset}")
    return NcnnModel({k: state[k] for k in shapes}, spec, out_scale)


def ncnn_model(graph: NcnnGraph, bin_data: bytes, source: str = "<ncnn>") -> NcnnModel:
    """Convert an RRDBNet or SRVGGNetCompact graph (decided by its layer types)."""
    if is_compact_graph(graph):
        return ncnn_compact_model(graph, bin_data, source)
    state, spec = ncnn_rrdbnet_state_dict(graph, bin_data, source)
    return NcnnModel(state, spec)


def load_ncnn_model(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None) -> NcnnModel:
    """Read ``NAME.param`` + ``NAME.bin`` (RRDBNet or SRVGGNetCompact) into an ``NcnnModel``."""
    param_path = Path(param_path)
    bin_path = param_path.with_suffix(".bin") if bin_path is None else Path(bin_path)
    return ncnn_model(read_ncnn_param(param_path), bin_path.read_bytes(), f"{param_path} / {bin_path}")
