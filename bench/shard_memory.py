"""Peak memory of the `shard` job on one large source image, per megapixel; prints one JSON object.

Issue 14 item 8: one 12000x12000 photo took 1.36 GB in the main process and 1.41 GB in a worker.
This writes one synthetic photo-like PNG of each size given (smooth gradients + texture + noise, so
the PNG patches are photo-sized), runs `shard` on it in a fresh subprocess per run (default
multiscale, 400/200 crops, 2 workers) and reports the main process's VmHWM and the largest worker's
ru_maxrss (an upper bound: it includes what a loky worker inherited when started), plus MB per
source megapixel. `--repo DIR` runs another checkout of the code (e.g. `git worktree add` of an
older commit) so before/after are measured side by side, alternating.

Usage: python bench/shard_memory.py [--sizes 3000,6000] [--workers 2] [--repo DIR ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent

JOB = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from shards.prepare import ShardConfig, prepare_shards
t = time.perf_counter()
r = prepare_shards(ShardConfig(src="DIV2K", root=Path({root!r}), out=Path({out!r}), workers={workers},
                               shard_size=200, overwrite=True))
dt = time.perf_counter() - t
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": dt, "samples": r.manifest["totals"]["samples"], "bytes": r.manifest["totals"]["bytes"],
                  "peak_rss_main_mb": hwm / 1024,
                  "peak_rss_largest_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def photo(side: int, seed: int = 0) -> np.ndarray:
    """A side x side photo-like BGR image, built in row blocks to keep the benchmark's own memory low."""
    rng = np.random.default_rng(seed)
    out = np.empty((side, side, 3), np.uint8)
    x = np.arange(side, dtype=np.float32)[None, :]
    for top in range(0, side, 512):
        y = np.arange(top, min(top + 512, side), dtype=np.float32)[:, None]
        for k in range(3):
            v = 128 + 90 * np.sin(x / (37 + 11 * k) + y / 53 + k) * np.cos(y / (29 + 7 * k) - x / 97)
            v += rng.normal(0, 6, v.shape).astype(np.float32)
            out[top : top + len(y), :, k] = np.clip(v, 0, 255).astype(np.uint8)
    return out


def run(repo: Path, root: Path, out: Path, workers: int) -> dict:
    code = JOB.format(repo=str(repo), root=str(root), out=str(out), workers=workers)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="3000,6000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repo", action="append", type=Path, default=[])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repos = [REPO, *args.repo]
    result: dict = {"cpu_count": os.cpu_count(), "opencv": cv2.__version__, "workers": args.workers,
                    "load_before": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for side in (int(s) for s in args.sizes.split(",")):
            root = Path(tmp) / str(side)
            folder = root / "DIV2K" / "DIV2K_train_HR"
            folder.mkdir(parents=True)
            assert cv2.imwrite(str(folder / "0001.png"), photo(side))
            for repo in repos:  # alternating: the machine's load drifts
                res = run(repo, root, Path(tmp) / "out", args.workers)
                mp = side * side / 1e6
                res.update(repo=str(repo), side=side, megapixels=mp,
                           main_mb_per_mp=res["peak_rss_main_mb"] / mp,
                           worker_mb_per_mp=res["peak_rss_largest_worker_mb"] / mp)
                result["runs"].append(res)
                print(json.dumps(res), file=sys.stderr)
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
