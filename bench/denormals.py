"""Benchmark: do trained weights hit denormal (subnormal) slow paths on CPU? Flush-to-zero on vs off.

Prints JSON. Counts subnormal float32 values (0 < |x| < 2^-126) in the released x4plus weights, in every
convolution's output of a forward pass over a bundled photo crop, and in the gradients of one L1 backward;
then times forward and forward + backward with `torch.set_flush_denormal(False)` and `(True)` alternately
(same input, same weights), and reports the ratio. x86 CPUs slow down on subnormal operands (microcode
assists) unless FTZ/DAZ is set; oneDNN's convolution kernels may set it themselves.

    python bench/denormals.py [--size 64] [--repeats 3] [--threads 1] [--out bench/results/denormals.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import torch  # noqa: E402

from models.rrdbnet import RRDBNet  # noqa: E402
from models.weights import detect_rrdbnet, load_generator_state_dict, load_into  # noqa: E402
from pipelines.hardware import describe  # noqa: E402

SMALLEST_NORMAL = torch.finfo(torch.float32).tiny  # 2^-126


def subnormal_count(t: torch.Tensor) -> int:
    a = t.detach().float().abs()
    return int(((a > 0) & (a < SMALLEST_NORMAL)).sum())


def census(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Subnormal values in weights, convolution outputs (forward) and gradients (backward)."""
    weights = {"values": sum(p.numel() for p in model.parameters()),
               "subnormal": sum(subnormal_count(p) for p in model.parameters())}
    seen = {"values": 0, "subnormal": 0}

    def hook(_module, _inputs, output):
        seen["values"] += output.numel()
        seen["subnormal"] += subnormal_count(output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    model.zero_grad(set_to_none=True)
    out = model(x)
    for h in handles:
        h.remove()
    (out - x.repeat_interleave(4, -1).repeat_interleave(4, -2)).abs().mean().backward()
    grads = {"values": sum(p.grad.numel() for p in model.parameters()),
             "subnormal": sum(subnormal_count(p.grad) for p in model.parameters())}
    return {"weights": weights, "activations": seen, "gradients": grads}


def timings(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).mean().backward()

    out = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        times = {False: [], True: []}
        fn()  # warm-up
        for _ in range(repeats):
            for flush in (False, True):
                torch.set_flush_denormal(flush)
                start = time.perf_counter()
                fn()
                times[flush].append(1000 * (time.perf_counter() - start))
        torch.set_flush_denormal(False)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        out[name] = {"flush_off_median_ms": round(off, 1), "flush_on_median_ms": round(on, 1),
                     "off_over_on": round(off / on, 3), "n": repeats}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", default="realesrgan-x4plus")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state, source = load_generator_state_dict(args.weights)
    model = RRDBNet.from_spec(detect_rrdbnet(state))
    load_into(model, state, strict=True)
    bgr = cv2.imread(str(Path(__file__).resolve().parent.parent / "samples" / "astronaut.png"))
    crop = bgr[100 : 100 + args.size, 150 : 150 + args.size, ::-1].copy()
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    load_at_start = os.getloadavg()
    report = {"benchmark": "denormals", "weights": source, "input": f"1x3x{args.size}x{args.size}",
              "torch": torch.__version__, "machine": describe(torch.device("cpu")),
              "flush_denormal_supported": torch.set_flush_denormal(False),
              "loadavg_at_start": [round(v, 2) for v in load_at_start], "census": census(model, x),
              "timings": timings(model, x, args.repeats), "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
