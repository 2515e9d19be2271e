"""Which exact fp32 route runs RRDBNet fastest on this CPU? Candidates side by side, alternating, with the reference.

Prints JSON. Every route is the same network (RRDBNet x4, 23 blocks, random weights, seed 0) in float32, run
through one full `pipelines.inference.enhance.enhance` call per run (uint8 in -> uint8 out) on a --size centre
crop of samples/astronaut.png, untiled with pre_pad 10 (the reference's untiled default), so every route and
bench/reference/ref_upscale.py compute the same pixels. Routes (--routes):

  torch-cl          today's torch path: weights and tiles channels_last (oneDNN NHWC convolutions)
  torch-nchw        the same with contiguous (NCHW) weights and tiles
  torch-flush       torch-cl with torch.set_flush_denormal(True) during the call
  torch-jit-freeze  torch.jit.trace + torch.jit.freeze (+ optimize_for_inference: oneDNN prepacked weights,
                    conv + leaky ReLU fusion), traced at the timed shape
  torch-compile     torch.compile(inductor) with torch._inductor.config.freezing = True (compile time reported)
  nnpack            pipelines.inference.nnpack: NNPACK Winograd F(6x6, 3x3) convolutions (--backend nnpack)
  ort               onnxruntime as --backend onnxruntime (sequential, intra-op threads = --threads)
  ort-all-nospin    + graph_optimization_level ORT_ENABLE_ALL explicitly, intra-op spinning off
  ov-latency        OpenVINO as --backend openvino (LATENCY hint, 1 stream, f32 hint, --threads threads)
  ov-static         ov-latency compiled for the timed input shape only (static, not dynamic H / W)
  ov-throughput     OpenVINO THROUGHPUT hint (streams chosen by OpenVINO), f32 hint, --threads threads
  ov-latency-denorm ov-latency + CPU_DENORMALS_OPTIMIZATION
  ncnn              --backend ncnn: ncnn fp32 (fp16 / bf16 storage and arithmetic off; Winograd where ncnn picks it)

Per round every route runs once (order rotating) and the reference once in a fresh process (the faster of
its 2 runs); medians over --rounds. Each output's largest uint8 difference from torch-cl is reported.

    python bench/upscale_routes.py --threads 2 --size 96 --rounds 3 --reference-python /opt/refenv/bin/python \
        --out bench/results/upscale_routes_96.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from upscale_backends import _runtime_versions, centre_crop, run_reference, time_once  # noqa: E402

from models.rrdbnet import RRDBNet  # noqa: E402
from pipelines.inference import backends  # noqa: E402
from pipelines.inference.enhance import prepare_model  # noqa: E402
from pipelines.inference.nnpack import nnpack_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUTES = ("torch-cl", "torch-nchw", "torch-flush", "torch-jit-freeze", "torch-compile", "nnpack", "ort",
          "ort-all-nospin", "ov-latency", "ov-static", "ov-throughput", "ov-latency-denorm", "ncnn")


class Wrapped(backends._StandIn):
    """Any callable (B, 3, h, w) -> (B, 3, sh, sw) with the attributes tiling reads."""

    def __init__(self, model: nn.Module, run, contiguous: bool = False) -> None:
        super().__init__(model)
        self.run, self.contiguous = run, contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x.contiguous() if self.contiguous else x)


class FlushDenormal(Wrapped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.set_flush_denormal(True)
        try:
            return self.run(x)
        finally:
            torch.set_flush_denormal(False)


def openvino_route(model: nn.Module, threads: int, config: dict, static: tuple[int, ...] | None = None) -> Wrapped:
    import openvino as ov

    network = ov.convert_model(io.BytesIO(backends.export_onnx(model)))
    if static is not None:  # compiled for one input shape (the timed one) instead of dynamic batch / height / width
        network.reshape(list(static))
    compiled = ov.Core().compile_model(network, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                        "INFERENCE_PRECISION_HINT": "f32", **config})
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        request.infer({0: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return Wrapped(model, run)


def ort_route(model: nn.Module, threads: int, tuned: bool) -> Wrapped:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(backends.export_onnx(model), options, providers=["CPUExecutionProvider"])
    return Wrapped(model, lambda x: torch.from_numpy(session.run(None, {"input": np.ascontiguousarray(x.numpy())})[0]))


def build(name: str, model: nn.Module, shape: tuple[int, ...], threads: int, tmp: Path) -> tuple[nn.Module, float]:
    """(route, seconds it took to build: export, trace, compile; the compile's first call included)."""
    start = time.perf_counter()
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    if name == "torch-cl":
        route = model
    elif name == "torch-nchw":
        plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        route = Wrapped(plain, plain, contiguous=True)
    elif name == "torch-flush":
        route = FlushDenormal(model, model)
    elif name == "torch-jit-freeze":
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model, example.contiguous(memory_format=torch.channels_last), check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        route = Wrapped(model, frozen)
    elif name == "torch-compile":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        with torch.no_grad():
            compiled(example.contiguous(memory_format=torch.channels_last))
        route = Wrapped(model, compiled)
    elif name == "nnpack":
        route = nnpack_model(model)
    elif name in ("ort", "ort-all-nospin"):
        route = ort_route(model, threads, name != "ort")
    elif name == "ov-latency":
        route = openvino_route(model, threads, {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    elif name == "ov-static":
        route = openvino_route(model, threads, {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}, static=shape)
    elif name == "ov-throughput":
        route = openvino_route(model, threads, {"PERFORMANCE_HINT": "THROUGHPUT"})
    elif name == "ov-latency-denorm":
        route = openvino_route(model, threads, {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                                "CPU_DENORMALS_OPTIMIZATION": True})
    elif name == "ncnn":
        route = backends.wrap_model(model, "ncnn", "fp32", threads)  # --backend ncnn
    else:
        raise ValueError(name)
    return route, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=[r for r in ROUTES if r != "torch-compile"])
    parser.add_argument("--reference-python", help="e.g. /opt/refenv/bin/python: run the reference alternately")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.clock = "wall"
    torch.set_num_threads(args.threads)
    report = {"benchmark": "upscale_routes", "cpu": str(torch.cpu.get_capabilities().get("cpu_name", "")),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
              "threads": args.threads, "clock": "wall", "torch": torch.__version__, "versions": _runtime_versions(),
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "command": " ".join(sys.argv),
              "machine_shared": "yes: other jobs may run on the same cores (see loadavg)",
              "image": f"astronaut.png centre {args.size}x{args.size}", "tile": "0 (untiled), pre_pad 10",
              "model": "RRDBNet x4, 23 blocks, 64 features, random weights (seed 0)",
              "loadavg_at_start": list(os.getloadavg())}
    model = prepare_model(RRDBNet(num_block=23, generator=torch.Generator().manual_seed(0)), torch.device("cpu"))
    image = centre_crop(cv2.imread(str(REPO / "samples" / "astronaut.png"), cv2.IMREAD_COLOR), args.size)
    shape = (1, 3, args.size + 10, args.size + 10)
    built, build_s, skipped = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.routes:
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    built[name], build_s[name] = build(name, model, shape, args.threads, Path(tmp))
            except Exception as error:  # noqa: BLE001 - a route that cannot run here is reported, not fatal
                skipped[name] = f"{type(error).__name__}: {error}"[:300]
        clock = time.perf_counter
        outputs = {name: time_once(route, image, clock)[1] for name, route in built.items()}  # warm-up
        runs: dict[str, list[float]] = {name: [] for name in built}
        reference, loads = [], []
        for r in range(args.rounds):
            loads.append(round(os.getloadavg()[0], 2))
            if args.reference_python:
                reference.append(run_reference(args.reference_python, args))
            order = list(built)[r % len(built):] + list(built)[: r % len(built)]
            for name in order:
                seconds, outputs[name] = time_once(built[name], image, clock)
                runs[name].append(seconds)
    ref = statistics.median(reference) if reference else None
    base = statistics.median(runs["torch-cl"]) if runs.get("torch-cl") else None
    report["routes"] = {}
    for name, values in runs.items():
        median = statistics.median(values)
        diff = np.abs(outputs[name].astype(int) - outputs["torch-cl"].astype(int)) if "torch-cl" in outputs else None
        report["routes"][name] = {
            "seconds_median": round(median, 3), "seconds_min": round(min(values), 3),
            "runs": [round(v, 3) for v in values], "build_seconds": round(build_s[name], 1),
            "speedup_vs_torch_cl": round(base / median, 2) if base else None,
            "speedup_vs_reference": round(ref / median, 2) if ref else None,
            "uint8_max_diff_vs_torch_cl": int(diff.max()) if diff is not None else None}
    report["skipped"] = skipped
    if reference:
        report["reference"] = {"seconds_median": round(ref, 3), "runs": [round(v, 3) for v in reference],
                               "what": "RealESRGANer.enhance untiled (tile 0, pre_pad 10), faster of 2 runs per "
                                       "fresh process"}
    report["loadavg_1min_per_round"] = loads
    report["loadavg_at_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
