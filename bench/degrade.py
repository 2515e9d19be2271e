"""Benchmark: the degradation work the reference does per training batch, with a per-step breakdown.

Prints JSON. A batch is 12 GT images of 400×400 (the reference's shape, x4): USM sharpening of the
GT, kernel synthesis (3 kernels per sample), and the full second-order degradation to the LQ.
Per-step times are measured by wrapping the functions `degrade.pipeline` calls (no code path
changes). Random choices differ per batch (e.g. upscaling makes later steps costlier), so the
numbers are medians over many batches with different seeds, the same seeds on every device.

    python bench/degrade.py [--batches 20] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import degrade  # noqa: E402
from degrade import pipeline  # noqa: E402

STEPS = {  # pipeline-level name → step label
    "mixed_kernels": "kernels",
    "filter2d": "blur",
    "resize": "resize",
    "add_gaussian_noise": "noise",
    "add_poisson_noise": "noise",
    "jpeg_compress": "jpeg",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _timed_steps(totals: dict[str, float], device: torch.device):
    originals = {name: getattr(pipeline, name) for name in STEPS}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            _sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(device)
            totals[STEPS[name]] += time.perf_counter() - start
            return out

        return timed

    for name, fn in originals.items():
        setattr(pipeline, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(pipeline, name, fn)


def run(device: torch.device, batches: int, batch_size: int, size: int, per_sample: bool) -> dict:
    config = degrade.DegradationConfig(per_sample=per_sample)
    images = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for seed in range(-2, batches):  # two warm-up batches
        totals: dict[str, float] = defaultdict(float)
        _sync(device)
        start = time.perf_counter()
        sharpened = degrade.usm_sharpen(images)
        _sync(device)
        totals["usm"] = time.perf_counter() - start
        with _timed_steps(totals, device):
            params = degrade.sample_params(config, batch_size, torch.Generator().manual_seed(1000 + seed))
            degrade.apply(sharpened, params, config)
        _sync(device)
        totals["total"] = time.perf_counter() - start
        if seed >= 0:
            rows.append(dict(totals))
    steps = ["usm", "kernels", "blur", "resize", "noise", "jpeg", "total"]
    median_ms = {s: round(1000 * statistics.median(r.get(s, 0.0) for r in rows), 2) for s in steps}
    mean_ms = {s: round(1000 * statistics.fmean(r.get(s, 0.0) for r in rows), 2) for s in steps}
    return {
        "device": str(device),
        "batch": [batch_size, 3, size, size],
        "per_sample": per_sample,
        "batches": batches,
        "median_ms": median_ms,
        "mean_ms": mean_ms,
        "share_of_mean_total": {s: round(mean_ms[s] / mean_ms["total"], 3) for s in steps[:-1]},
        "samples_per_s": round(batch_size / (mean_ms["total"] / 1000), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--per-sample", action="store_true", help="also measure per-sample granularity")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = []
    for name in devices:
        results.append(run(torch.device(name), args.batches, args.batch_size, args.size, False))
        if args.per_sample:
            results.append(run(torch.device(name), args.batches, args.batch_size, args.size, True))
    print(json.dumps({
        "benchmark": "degrade",
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
