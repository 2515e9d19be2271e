"""Benchmark NIQE: `pipelines.inference.quality.niqe` vs BasicSR 1.4.2 `calculate_niqe`, seconds per image.

Image: samples/astronaut.png resized (cv2 INTER_CUBIC) to N×N for N in --sizes. Each round times ours once
(in this process, after a warm-up call) and then the reference once (bench/reference/ref_niqe.py in the
reference env, which warms up itself), so both see the same CPU contention; the JSON has every time, the
medians, the ratio reference/ours, the NIQE values of both, the load average and the versions.

    python bench/quality.py --reference-python /opt/refenv/bin/python [--sizes 512 1024 2048] [--rounds 3]
    python bench/quality.py --device cuda --sizes 2048      # ours on CUDA (no reference run without --reference-python)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import torch  # noqa: E402

from pipelines.inference.quality import niqe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _image(size: int, device: torch.device) -> torch.Tensor:
    bgr = cv2.resize(cv2.imread(str(REPO / "samples" / "astronaut.png")), (size, size), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255)[None].to(device)


def _ours(img: torch.Tensor) -> tuple[float, float]:
    if img.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = float(niqe(img)[0])  # float() waits for the device
    return time.perf_counter() - start, value


def _reference(python: str, size: int, threads: int) -> tuple[float, float]:
    out = subprocess.run([python, str(REPO / "bench" / "reference" / "ref_niqe.py"), "time", "--size", str(size),
                          "--threads", str(threads)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"][0], result["niqe"]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both (the reference's resize is torch)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reference-python", default="", help="python of the reference env, e.g. /opt/refenv/bin/python")
    p.add_argument("--contended", choices=("yes", "no"), default="yes")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality_niqe.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    load_start = os.getloadavg()
    for size in args.sizes:
        img = _image(size, device)
        niqe(img)  # warm-up: first-call costs (tables, allocator)
        ours, ref = [], []
        for _ in range(args.rounds):
            ours.append(_ours(img))
            if args.reference_python:
                ref.append(_reference(args.reference_python, size, args.threads))
        row = {"size": size, "ours_s": [t for t, _ in ours], "ours_median_s": statistics.median(t for t, _ in ours),
               "ours_niqe": ours[0][1]}
        if ref:
            row.update(reference_s=[t for t, _ in ref], reference_median_s=statistics.median(t for t, _ in ref),
                       reference_niqe=ref[0][1], niqe_abs_diff=abs(ours[0][1] - ref[0][1]))
            row["speedup"] = row["reference_median_s"] / row["ours_median_s"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    result = {"benchmark": "niqe seconds per image, astronaut resized to NxN", "device": str(device),
              "threads": args.threads, "rounds": args.rounds, "contended": args.contended,
              "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "cpu": _cpu(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rows": rows}
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
