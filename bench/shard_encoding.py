"""Loader throughput per core and disk cost per patch for each sample encoding; prints one JSON object.

The same synthetic DIV2K-layout dataset as bench/shards.py (N 800x600 images cut from the bundled photos,
default multiscale + 400/200 crops) is sharded once per encoding (png, npy). Then, alternating the
encodings in every round (the machine's load drifts) and keeping the median:

* `decode`: decode_sample over every sample already in memory (the codec alone);
* `stream`: ShardStream with num_workers=0, i.e. one process on one core: tar read, decode, pad/crop to
  400, flip, float conversion, batching; patches/s per core.

Bytes per patch come from the manifests. Usage: python bench/shard_encoding.py [--images 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shards import stages  # noqa: E402
from shards.prepare import ShardConfig, prepare_shards  # noqa: E402
from shards.read import LoaderConfig, ShardStream, resolve_shards  # noqa: E402
from shards.stages import Problems, decode_sample, shard_samples  # noqa: E402

ENCODINGS = ("png", "npy")


def decode_rate(samples: list) -> float:
    t = time.perf_counter()
    for s in samples:
        decode_sample(s)
    return len(samples) / (time.perf_counter() - t)


def stream_rate(folder: Path, epochs: int, batch: int) -> float:
    stream = ShardStream(LoaderConfig(str(folder), batch_size=batch, patch_size=400, num_workers=0,
                                      shuffle_buffer=64, seed=0))
    t, n = time.perf_counter(), 0
    for epoch in range(epochs):
        for b in stream.epoch_batches(epoch):
            n += b.gt.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    from shards_bench import make_dataset  # bench/shards.py, loaded under this name below (it shadows `shards`)

    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "images": args.images}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "data", args.images)
        info, samples = {}, {}
        for enc in ENCODINGS:
            m = prepare_shards(ShardConfig(src="DIV2K", root=root, out=Path(tmp) / enc, shard_size=100, workers=1,
                                           encoding=enc)).manifest
            info[enc] = {"samples": m["totals"]["samples"], "bytes": m["totals"]["bytes"],
                         "bytes_per_patch": m["totals"]["bytes"] / m["totals"]["samples"]}
            samples[enc] = list(shard_samples(resolve_shards(str(Path(tmp) / enc)).urls, Problems()))
        runs = {enc: {"decode": [], "stream": []} for enc in ENCODINGS}
        for _ in range(args.rounds):
            for enc in ENCODINGS:
                runs[enc]["decode"].append(decode_rate(samples[enc]))
                runs[enc]["stream"].append(stream_rate(Path(tmp) / enc, args.epochs, args.batch))
        for enc in ENCODINGS:
            info[enc].update({f"{k}_patches_per_s_median": float(np.median(v)) for k, v in runs[enc].items()})
            info[enc]["runs"] = runs[enc]
    result["encodings"] = info
    result["stream_speedup_npy_vs_png"] = (info["npy"]["stream_patches_per_s_median"]
                                           / info["png"]["stream_patches_per_s_median"])
    result["decode_speedup_npy_vs_png"] = (info["npy"]["decode_patches_per_s_median"]
                                           / info["png"]["decode_patches_per_s_median"])
    result["bytes_ratio_npy_vs_png"] = info["npy"]["bytes_per_patch"] / info["png"]["bytes_per_patch"]
    result["opencv_rgb_decode"] = stages._RGB is not None
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    import importlib.util

    spec = importlib.util.spec_from_file_location("shards_bench", REPO / "bench" / "shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["shards_bench"] = module
    main()
