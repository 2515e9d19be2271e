"""Peak memory of `pipelines.inference.enhance.enhance`: whole-image float assembly (before) vs in-place bands (after).

Each measurement runs in a fresh process and reports its peak RSS (`resource.getrusage` ru_maxrss) and the
RSS right after start-up (imports, model), so the difference is what upscaling one image costs. The image is
a 3000x2000 RGB uint8 made from samples/astronaut.png (tiled), the network a small seeded RRDBNet x4 (8
features, 1 block: memory, not speed, is measured; activations of bigger nets are per tile anyway), tile 256.
`before` is the previous path, kept in pipelines.inference.upscale for comparison: merge_image(run_model(...)) on the
whole float32 HR image; `after` is `enhance` (enhance_into). Modes alternate, --rounds times.

    python bench/upscale_memory.py [--rounds 2] [--size 3000x2000] [--tile 256] \
        [--out bench/results/upscale_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import resource, sys, time
sys.path.insert(0, {root!r})
import cv2, numpy as np, torch
torch.set_num_threads({threads})
from models.rrdbnet import RRDBNet
from pipelines.inference.enhance import TileState, enhance, merge_image, prepare_model, run_model, split_image
width, height = {width}, {height}
photo = cv2.imread({photo!r}, cv2.IMREAD_COLOR)
reps = (height // photo.shape[0] + 1, width // photo.shape[1] + 1, 1)
image = np.ascontiguousarray(np.tile(photo, reps)[:height, :width])
net = prepare_model(RRDBNet(3, 3, 4, 8, 1, 4, generator=torch.Generator().manual_seed(0)), torch.device("cpu"))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
state = TileState({tile}, {tile} // 8)
if {mode!r} == "before":
    split = split_image(image)
    out = merge_image(run_model(net, split.rgb, state), None, split.mode, split.dtype)
else:
    out, _ = enhance(net, image, state)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{{base}} {{peak}} {{seconds}} {{out.shape[0]}} {{out.shape[1]}} {{int(out[::997, ::991].sum())}}")
"""


def measure(mode: str, width: int, height: int, tile: int, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), threads=threads, width=width, height=height, tile=tile, mode=mode,
                        photo=str(ROOT / "samples" / "astronaut.png"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    base, peak, seconds, h, w, checksum = done.stdout.split()
    return {"mode": mode, "startup_rss_mb": int(base) / 1024, "peak_rss_mb": int(peak) / 1024,
            "upscale_mb": (int(peak) - int(base)) / 1024, "seconds": float(seconds), "output": [int(h), int(w)],
            "checksum": int(checksum)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", default="3000x2000")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    runs = [measure(mode, width, height, args.tile, args.threads)
            for _ in range(args.rounds) for mode in ("before", "after")]
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in ("before", "after")}
    summary = {m: {"peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "upscale_mb": max(r["upscale_mb"] for r in rs)}
               for m, rs in by_mode.items()}
    result = {"benchmark": "upscale peak memory", "image": [height, width], "tile": args.tile,
              "network": "RRDBNet x4, 8 features, 1 block, seeded", "threads": args.threads,
              "machine": f"{platform.machine()} {os.cpu_count()} cores, shared", "load": os.getloadavg(),
              "identical_outputs": len({r["checksum"] for r in runs}) == 1, "runs": runs, "summary": summary,
              "ratio_upscale_mb_after_vs_before": summary["after"]["upscale_mb"] / summary["before"]["upscale_mb"]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
