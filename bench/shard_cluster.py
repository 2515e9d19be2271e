"""`shard` on Dask vs joblib: images/s per worker on one machine; prints one JSON object.

The synthetic DIV2K-layout dataset of bench/shards.py (N 800x600 images, default multiscale, 400/200
crops). Runs, alternating per round: joblib with 1 worker, Dask `local:1`, Dask `local:2` (a LocalCluster
of worker processes, started inside the timed run, as `--scheduler local:N` does). Usage:
python bench/shard_cluster.py [--images 16] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shards.prepare import ShardConfig, prepare_shards  # noqa: E402


def _make_dataset():
    spec = importlib.util.spec_from_file_location("shards_bench", REPO / "bench" / "shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result: dict = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "images": args.images}
    modes = {"joblib_1": {"workers": 1}, "dask_local_1": {"scheduler": "local:1"},
             "dask_local_2": {"scheduler": "local:2"}}
    runs: dict[str, list[float]] = {k: [] for k in modes}
    with tempfile.TemporaryDirectory() as tmp:
        root = _make_dataset()(Path(tmp) / "data", args.images)
        for _ in range(args.rounds):
            for name, kw in modes.items():
                out = Path(tmp) / name
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                prepare_shards(ShardConfig(src="DIV2K", root=root, out=out, shard_size=50, **kw))
                runs[name].append(args.images / (time.perf_counter() - t))
    result["images_per_s_median"] = {k: float(np.median(v)) for k, v in runs.items()}
    result["runs"] = runs
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
