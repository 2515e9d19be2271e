"""``cli.py export``: a generator (anything ``upscale`` accepts) to ONNX, ncnn, .pth or .safetensors.

* ONNX (``export_onnx``): NCHW float32 RGB in [0, 1] -> same x scale; input ``input``, output ``output``;
  batch, height and width dynamic unless ``static`` is given. Written with the TorchScript exporter
  (``dynamo=False``: the dynamo exporter needs onnxscript), which writes RRDBNet's pixel-unshuffle as
  Reshape + Transpose + Reshape (no SpaceToDepth, whose DCR channel order differs from PyTorch's and
  which TensorRT-style runtimes reject for x2 / x1 models); the compact net's pixel shuffle is
  DepthToSpace (CRD). ``fp16`` stores the weights in float16 with a Cast to float32 in front of their
  consumers: half the file, float32 compute, same float32 input / output (runtimes that build fp16
  engines, e.g. TensorRT with ``--fp16``, fold the casts).
* ncnn (``models.ncnn_write``): ``NAME.param`` + ``NAME.bin`` with fp16 weight storage, as the
  released files that realesrgan-ncnn-vulkan / Upscayl load with ``-m DIR -n NAME``.
* pth: the official wrapper with ``params_ema`` only (as the released ``RealESRGAN_x4plus.pth``), plus
  an ``arch`` entry (ignored by BasicSR / spandrel) for compact ReLU models, whose activation the
  tensors do not show.
* safetensors: the same state dict (spandrel reads .safetensors; the package is a small wheel without
  dependencies), hyperparameters as string metadata.

Every export runs a check inference of the written file against the torch model on a seeded input
(onnxruntime for ONNX and the ncnn runtime for ncnn when installed, else our own reader) and reports
the max |difference|. Files are written atomically; an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from models.compact import ResizedOutput, SRVGGNetCompact
from models.ema import unwrap_model
from models.ncnn_write import ncnn_files
from models.weights import ARCH_KEY, describe_spec, load_generator
from pipelines.common import write_bytes_atomic

ExportFormat = Literal["onnx", "ncnn", "pth", "safetensors"]
FORMATS: tuple[str, ...] = ("onnx", "ncnn", "pth", "safetensors")
DEFAULT_OPSET = 17
CHECK_SIZE = 32  # LR side of the check input: a multiple of every unshuffle factor


@dataclass(frozen=True)
class ExportConfig:
    weights: str
    to: ExportFormat
    out: Path
    name: str = ""  # ncnn only: the file stem (OUT/NAME.param, OUT/NAME.bin)
    fp16: bool = False  # ONNX only: float16 weights (ncnn always stores fp16, pth / safetensors keep fp32)
    static: tuple[int, int] | None = None  # ONNX only: fixed (height, width)
    opset: int = DEFAULT_OPSET
    check: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if self.to not in FORMATS:
            raise ValueError(f"--to must be one of {', '.join(FORMATS)} (got {self.to!r})")
        if self.to == "ncnn" and not self.name:
            raise ValueError("--to ncnn needs --name NAME (writes OUT/NAME.param and OUT/NAME.bin)")
        if self.to != "onnx" and (self.fp16 or self.static or self.opset != DEFAULT_OPSET):
            raise ValueError("--fp16, --static and --opset apply to --to onnx only (ncnn always stores fp16)")
        if self.static is not None and min(self.static) < 1:
            raise ValueError(f"--static must be HxW with positive sides (got {self.static})")
        if not 11 <= self.opset <= 21:
            raise ValueError(f"--opset must be between 11 and 21 (got {self.opset})")


@dataclass(frozen=True)
class ExportReport:
    written: tuple[Path, ...]
    arch: str
    scale: int
    max_diff: float | None
    check: str  # what the check ran on, or why it was skipped

    def lines(self) -> list[str]:
        out = [f"wrote {p} ({p.stat().st_size:,} bytes)" for p in self.written]
        out.append(f"architecture: {self.arch}, scale x{self.scale}")
        out.append(f"check: max |difference| {self.max_diff:.3g} ({self.check})" if self.max_diff is not None
                   else f"check: {self.check}")
        return out


def _check_input(size: tuple[int, int] | None) -> torch.Tensor:
    h, w = size or (CHECK_SIZE, CHECK_SIZE + 8)
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))


def _torch_out(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).float().numpy()


# ---------------------------------------------------------------- ONNX


def _fp16_weights(onnx_model) -> None:
    """Store float32 initializers feeding Conv / PRelu as float16, each behind a Cast to float32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = onnx_model.graph
    consumers = {name for node in graph.node if node.op_type in ("Conv", "PRelu") for name in node.input}
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name in consumers:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}_fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=f"cast_{init.name}"))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)


def onnx_bytes(model: nn.Module, fp16: bool = False, static: tuple[int, int] | None = None,
               opset: int = DEFAULT_OPSET) -> bytes:
    """Serialise ``model`` (RRDBNet / SRVGGNetCompact, optionally ResizedOutput) to ONNX bytes."""
    try:
        import onnx
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("ONNX export needs the onnx package: pip install -e \".[onnx]\"") from err
    model = unwrap_model(model).eval()
    dummy = _check_input(static)
    dynamic = None if static else {"input": {0: "batch", 2: "height", 3: "width"},
                                   "output": {0: "batch", 2: "out_height", 3: "out_width"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tracer warnings about the input-shape checks, which tracing drops
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), buffer, input_names=["input"], output_names=["output"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    if any(node.op_type == "SpaceToDepth" for node in proto.graph.node):  # never expected; see module docstring
        raise RuntimeError("the exported graph contains SpaceToDepth")
    if fp16:
        _fp16_weights(proto)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(model: nn.Module, path: str | Path, fp16: bool = False, static: tuple[int, int] | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` as ONNX to ``path`` atomically (see the module docstring for the graph's contract)."""
    path = Path(path)
    write_bytes_atomic(path, onnx_bytes(model, fp16, static, opset))
    return path


def run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


# ---------------------------------------------------------------- ncnn / pth / safetensors


def ncnn_cpu_net(threads: int = 1):
    """An empty ``ncnn.Net`` set up for fp32 CPU inference: no Vulkan, fp16 / bf16 storage and arithmetic off."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute, opt.num_threads = False, threads
    opt.use_fp16_storage = opt.use_fp16_arithmetic = opt.use_fp16_packed = opt.use_bf16_storage = False
    return net


def ncnn_forward(net, x: np.ndarray, what: str) -> np.ndarray:
    """One image (3, H, W) through a loaded ncnn net ("data" in, "output" out); ValueError naming ``what``."""
    import ncnn

    pixels = np.ascontiguousarray(x, dtype=np.float32)  # the Mat wraps this memory: alive until the extract
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(pixels))
    ret, out = extractor.extract("output")
    if ret:
        raise ValueError(f"ncnn inference of {what} failed with code {ret}")
    return np.array(out).astype(np.float32)


def run_ncnn(param: Path, x: np.ndarray) -> np.ndarray:
    """One image (3, H, W) through the ``ncnn`` Python package on the CPU in fp32."""
    net = ncnn_cpu_net()
    if net.load_param(str(param)) or net.load_model(str(param.with_suffix(".bin"))):
        raise ValueError(f"ncnn cannot load {param} / {param.with_suffix('.bin')}")
    return ncnn_forward(net, x, str(param))


def _state_and_arch(model: nn.Module, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, object] | None]:
    if isinstance(model, ResizedOutput):
        raise ValueError(f"--to {fmt} cannot hold the bicubic output resize of this model (a released x{model.scale} "
                         "animevideov3 file is the x4 network + a resize): export the x4 model and upscale with "
                         f"--outscale {model.scale}, or export to onnx / ncnn, which keep the resize")
    net = unwrap_model(model)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    arch = {"type": "SRVGGNetCompact", **net.hparams} if isinstance(net, SRVGGNetCompact) else None
    return state, arch


def pth_bytes(model: nn.Module) -> bytes:
    state, arch = _state_and_arch(model, "pth")
    payload: dict[str, object] = {"params_ema": state}
    if arch is not None:
        payload[ARCH_KEY] = arch
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def safetensors_bytes(model: nn.Module) -> bytes:
    try:
        from safetensors.torch import save
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("--to safetensors needs the safetensors package: pip install -e \".[onnx]\"") from err
    state, arch = _state_and_arch(model, "safetensors")
    return save(state, metadata={ARCH_KEY: json.dumps(arch)} if arch else None)


# ---------------------------------------------------------------- the job


def _targets(config: ExportConfig) -> list[Path]:
    if config.to == "ncnn":
        return [config.out / f"{config.name}.param", config.out / f"{config.name}.bin"]
    return [config.out]


def _check(config: ExportConfig, model: nn.Module, written: list[Path]) -> tuple[float | None, str]:
    if not config.check:
        return None, "skipped (--no-check)"
    x = _check_input(config.static)
    expected = _torch_out(model, x)
    if config.to == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return None, "skipped: onnxruntime is not installed (pip install -e \".[onnx]\")"
        got = run_onnxruntime(written[0], x.numpy())
        how = f"onnxruntime CPU vs torch fp32{' (fp16 weights)' if config.fp16 else ''}"
    elif config.to == "ncnn" and importlib.util.find_spec("ncnn") is not None:
        got, how = run_ncnn(written[0], x[0].numpy())[None], "ncnn runtime CPU fp32 vs torch fp32 (fp16 weights)"
    else:
        reloaded, _ = load_generator(str(written[0]))
        got = _torch_out(reloaded, x)
        how = ("read back by our ncnn reader, torch forward (fp16 weights); the ncnn package is not installed"
               if config.to == "ncnn" else "reloaded with architecture detection, torch forward")
    if got.shape != expected.shape:
        raise RuntimeError(f"check inference of {written[0]}: output {got.shape}, torch {expected.shape}")
    return float(np.abs(got - expected).max()), f"{how}, input {x.shape[-2]}x{x.shape[-1]}"


def export_model(config: ExportConfig) -> ExportReport:
    """Load ``config.weights``, write the export, run the check inference; see the module docstring."""
    model, resolved = load_generator(config.weights)
    model = model.eval().requires_grad_(False)
    targets = _targets(config)
    existing = [p for p in targets if p.exists()]
    if existing and not config.force:
        raise FileExistsError(f"{existing[0]} exists; pass --force to replace it")
    if config.to == "ncnn":
        text, data = ncnn_files(model, fp16=True)
        payloads = [text.encode("utf-8"), data]
    elif config.to == "onnx":
        payloads = [onnx_bytes(model, config.fp16, config.static, config.opset)]
    elif config.to == "pth":
        payloads = [pth_bytes(model)]
    else:
        payloads = [safetensors_bytes(model)]
    for path, payload in zip(targets, payloads, strict=True):
        try:
            write_bytes_atomic(path, payload)
        except OSError as err:
            raise OSError(f"cannot write {path}: {err.strerror or err}; choose a writable --out") from err
    max_diff, how = _check(config, model, targets)
    return ExportReport(tuple(targets), describe_spec(resolved.spec, resolved.out_scale), resolved.scale,
                        max_diff, how)
