"""Inference backends and precision for ``cli.py upscale``: torch, torch with NNPACK's Winograd convolutions
(``pipelines.inference.nnpack``), or the same network exported to ONNX and run by onnxruntime or OpenVINO
(optional extras, imported lazily).

A backend is an ``nn.Module`` that stands in for the torch model exactly where ``pipelines.inference.tiling`` calls it
once per batch of tiles: (B, 3, h, w) float32 on the CPU in, (B, 3, h * s, w * s) out. Everything around that
call (mod pad, pre pad, windows, blending, clamp, alpha, gray, 16-bit, outscale) stays the shared code of
``pipelines.inference.upscale`` / ``pipelines.inference.tiling``, so it behaves the same whatever runs the convolutions.

Precision (``--precision``; ``--half`` is an alias of fp16):

* ``fp32``: the exact default. ``bf16``: torch autocast (CPU and CUDA), or OpenVINO's bf16 inference
  precision hint, which OpenVINO honours only on CPUs with AMX / AVX512-BF16. ``fp16``: the model in half
  precision on CUDA (what the official inference does with ``--fp32`` off).
* ``auto``: fp16 on CUDA; on the CPU the fastest precision within ``CPU_AUTO_TOLERANCE_255`` of fp32 for the
  released x4plus weights on the bundled photos. bf16 autocast measured max 13.7 / p99.9 3.3 levels
  (README, "Upscale precision"), far outside it, so ``auto`` is fp32 on every CPU and bf16 is opt-in.

Backend ``auto``: torch on CUDA; on the CPU the fastest installed backend for the precision, in the order
``AUTO_ORDER`` measured side by side by ``bench/upscale.py --backend ...`` and ``bench/upscale_routes.py`` (README,
Benchmarks): for fp32 OpenVINO, then ncnn, then onnxruntime, then torch; with one thread ncnn first
(``AUTO_ORDER_ONE_THREAD``: its Winograd convolutions lead there, and scale less than OpenVINO's direct ones from
two threads on); torch is always available. NNPACK (Winograd) is opt-in: slower than torch with two threads at
tile 128 on this EPYC.

The ONNX graph is exported in memory for each run (about 2 s for x4plus, once per run, not per image): no
cache directory to invalidate when weights change, nothing written outside the output folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
from typing import Literal

import numpy as np
import torch
from torch import nn

from pipelines.inference import nnpack

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Backend = Literal["auto", "torch", "nnpack", "onnxruntime", "openvino", "ncnn"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
BACKENDS: tuple[str, ...] = ("auto", "torch", "nnpack", "onnxruntime", "openvino", "ncnn")
RUNTIME_EXTRAS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn"}  # backend -> pyproject extra
# Packages each extra brings: torch.onnx.export needs `onnx` to write the graph the runtime reads; the ncnn graph is
# written by models.ncnn_write.
RUNTIME_MODULES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"), "ncnn": ("ncnn",)}
# What each backend can run on the CPU; fp16 convolutions are CUDA-only here (no CPU fp16 kernels worth using).
CPU_PRECISIONS = {"torch": ("fp32", "bf16"), "nnpack": ("fp32",), "onnxruntime": ("fp32",),
                  "openvino": ("fp32", "bf16"), "ncnn": ("fp32",)}
# Fastest first at equal precision, measured on the CPU (bench/results/upscale_tiled128_backends.json,
# upscale_routes_96.json, upscale_backends*.json).
AUTO_ORDER = {"fp32": ("openvino", "ncnn", "onnxruntime", "torch"), "bf16": ("openvino", "torch")}  # nnpack: opt-in
# One thread (e.g. one upscale per core, or a worker process): ncnn 1.42x the reference vs OpenVINO 1.15x, untiled
# 96x96 (bench/results/upscale_routes_96_1thread.json); two threads: OpenVINO 1.31x, ncnn 1.23x at tile 128
# (upscale_tiled128_ncnn.json).
AUTO_ORDER_ONE_THREAD = {"fp32": ("ncnn", "openvino", "onnxruntime", "torch")}
# auto on the CPU takes a reduced precision only if x4plus stays this close to fp32 (1/255 levels): about the
# default tiling's own error at tile 512, overlap 64 (pipelines.inference.tiling docstring).
CPU_AUTO_TOLERANCE_255 = {"max": 2.0, "p999": 1.0}
CPU_AUTO_PRECISION = "fp32"  # bf16 autocast: max 13.7, p99.9 3.3 -> outside the tolerance on any CPU
ONNX_OPSET = 17
OPENVINO_NO_BF16 = ("--backend openvino --precision bf16: this CPU has no bf16 hardware (AMX / AVX512-BF16) and "
                    "OpenVINO would run fp32; use --backend torch (emulated bf16) or --precision fp32")


def parse_precision(precision: str, half: bool = False) -> str:
    """``--precision`` with ``--half`` as an alias of fp16; ValueError for unknown values or a contradiction."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if half and precision not in ("auto", "fp16"):
        raise ValueError(f"--half is an alias of --precision fp16 and contradicts --precision {precision}; drop one")
    return "fp16" if half else precision


def native_bf16_cpu() -> bool:
    """True where torch reports AMX-BF16 or AVX512-BF16 (oneDNN's hardware bf16); elsewhere bf16 is emulated."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return any(bool(caps.get(flag)) for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(precision: str, device: torch.device, half: bool = False) -> str:
    """``auto`` -> fp16 on CUDA, ``CPU_AUTO_PRECISION`` on the CPU; fp16 / unsupported bf16 are clear errors.

    ``half``: the precision came from ``--half`` (named so in the error message).
    """
    if precision == "auto":
        return "fp16" if device.type == "cuda" else CPU_AUTO_PRECISION
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"{'--half' if half else '--precision fp16'} needs a CUDA device (this run is on the CPU); "
                         f"drop it or use --precision fp32 / bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError("--precision bf16: this GPU has no bf16 support; use --precision fp16")
    return precision


def runtime_available(backend: str) -> bool:
    """Whether the backend's packages are installed (found, not imported: auto must stay cheap); for nnpack,
    whether this torch build has it."""
    if backend == "nnpack":
        return nnpack.nnpack_available()
    return all(importlib.util.find_spec(name) is not None for name in RUNTIME_MODULES[backend])


def import_runtime(backend: str):
    """Import onnxruntime / openvino (and onnx) / ncnn, or raise ModuleNotFoundError naming the extra to install."""
    for name in RUNTIME_MODULES[backend]:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ModuleNotFoundError(f"--backend {backend} needs the optional package {name}: "
                                      f"pip install -e \".[{RUNTIME_EXTRAS[backend]}]\"", name=name) from error
    return module


def resolve_backend(backend: str, device: torch.device, precision: str, threads: int = 0) -> str:
    """``auto`` -> the fastest installed backend for ``precision`` on ``device`` with ``threads`` CPU threads (0:
    torch's current count); errors for impossible pairs."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        orders = AUTO_ORDER_ONE_THREAD if (threads or torch.get_num_threads()) == 1 else AUTO_ORDER
        order = orders.get(precision) or AUTO_ORDER.get(precision, ("torch",))
        usable = (b for b in order if b == "torch" or runtime_available(b))
        return next(b for b in usable if b != "openvino" or precision != "bf16" or native_bf16_cpu())
    if backend != "torch":
        if device.type != "cpu":
            raise ValueError(f"--backend {backend} runs on the CPU here; use --device cpu or --backend torch")
        if precision not in CPU_PRECISIONS[backend]:
            raise ValueError(f"--backend {backend} runs {'/'.join(CPU_PRECISIONS[backend])} only (asked: "
                             f"--precision {precision}); use --backend torch or another --precision")
        if backend == "nnpack" and not nnpack.nnpack_available():
            raise ValueError(nnpack.NO_NNPACK)
        if backend in RUNTIME_MODULES:
            import_runtime(backend)
        if backend == "openvino" and precision == "bf16" and not native_bf16_cpu():
            raise ValueError(OPENVINO_NO_BF16)
    return backend


def export_onnx(model: nn.Module) -> bytes:
    """The model as ONNX bytes with dynamic batch, height and width (input "input", output "output").

    ``model`` is float32 on the CPU (runtime backends run there); the graph is the one `cli.py export` writes.
    """
    from pipelines.inference.export import onnx_bytes

    return onnx_bytes(model, opset=ONNX_OPSET)


class _StandIn(nn.Module):
    """Carries what ``tiling`` reads from a model: ``scale``, ``spec`` and a float32 CPU parameter."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.spec = getattr(model, "spec", None)
        self._scale = int(model.scale)
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # device / dtype of the inputs: CPU fp32

    @property
    def scale(self) -> int:
        return self._scale


class AutocastModel(_StandIn):
    """The torch model under autocast (bf16); inputs and outputs stay float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__(model)
        self.inner, self.dtype = model, dtype
        self.anchor = nn.Parameter(torch.zeros(0, device=next(model.parameters()).device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.inner(x).float()


class OnnxRuntimeModel(_StandIn):
    """The exported network in an onnxruntime CPU session with ``threads`` intra-op threads."""

    def __init__(self, model: nn.Module, threads: int) -> None:
        super().__init__(model)
        ort = import_runtime("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(export_onnx(model), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"input": np.ascontiguousarray(x.detach().float().numpy())})[0]
        return torch.from_numpy(out)


class NcnnModel(_StandIn):
    """The network written as an ncnn graph with fp32 weights (``models.ncnn_write``) in an ncnn CPU net:
    ``threads`` threads, fp16 / bf16 storage and arithmetic off, ncnn's own choice of Winograd / sgemm
    convolutions. Images of a batch run one at a time (an ncnn extractor takes one (C, H, W) blob)."""

    def __init__(self, model: nn.Module, threads: int) -> None:
        super().__init__(model)
        from models.ncnn_write import ncnn_files
        from pipelines.inference.export import ncnn_cpu_net

        import_runtime("ncnn")
        # ncnn may read weights loaded from memory in place (its DataReaderFromMemory): keep the bytes with the net.
        self._param, self._weights = ncnn_files(model, fp16=False)
        self.net = ncnn_cpu_net(threads)
        if self.net.load_param_mem(self._param):
            raise RuntimeError("ncnn could not read the exported graph")
        self.net.load_model_mem(self._weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from pipelines.inference.export import ncnn_forward

        return torch.stack([torch.from_numpy(ncnn_forward(self.net, image.numpy(), "the exported graph"))
                            for image in x.detach().float()])


class OpenVinoModel(_StandIn):
    """The exported network compiled by OpenVINO for the CPU (latency hint, one stream, ``threads`` threads)."""

    def __init__(self, model: nn.Module, threads: int, precision: str) -> None:
        super().__init__(model)
        ov = import_runtime("openvino")
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        network = ov.convert_model(io.BytesIO(export_onnx(model)))
        self.compiled = ov.Core().compile_model(network, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        got = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision == "bf16" and "bf16" not in got:  # OpenVINO silently falls back to f32 without AMX/AVX512-BF16
            raise ValueError(OPENVINO_NO_BF16)
        self.request = self.compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: np.ascontiguousarray(x.detach().float().numpy())})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())  # the request reuses its buffer


def wrap_model(model: nn.Module, backend: str, precision: str, threads: int = 0) -> nn.Module:
    """The torch model (as ``pipelines.inference.enhance.prepare_model`` made it) run by a resolved backend / precision.

    torch fp32 / fp16 return ``model`` itself (fp16 is ``prepare_model(half=True)``); bf16 wraps it in autocast;
    runtimes export it to ONNX and use ``threads`` (0: torch's current thread count).
    """
    threads = threads or torch.get_num_threads()
    if backend == "torch":
        return AutocastModel(model, torch.bfloat16) if precision == "bf16" else model
    if backend == "nnpack":
        return nnpack.nnpack_model(model)
    if backend == "onnxruntime":
        return OnnxRuntimeModel(model, threads)
    if backend == "openvino":
        return OpenVinoModel(model, threads, precision)
    if backend == "ncnn":
        return NcnnModel(model, threads)
    raise ValueError(f"unknown backend {backend!r}")


def describe(backend: str, precision: str, device: torch.device, threads: int = 0) -> str:
    """One line for the progress output, e.g. ``openvino fp32 on cpu, 2 threads (bf16 emulated)``."""
    note = " (bf16 emulated: no AMX / AVX512-BF16 on this CPU)" if (
        precision == "bf16" and device.type == "cpu" and not native_bf16_cpu()) else ""
    threads_text = f", {threads or torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return f"{backend} {precision} on {device}{threads_text}{note}"
