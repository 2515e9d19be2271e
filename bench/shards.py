"""Benchmark of the shard job and the streaming loader; prints one JSON object.

1. `shard` job on a synthetic DIV2K-layout dataset (N images of 800x600 made from the bundled photos,
   default multiscale + 400/200 crops): images/s and peak memory with 1 and 2 workers. Each run is a
   fresh subprocess; the main process's peak is its VmHWM, the workers' is the largest ru_maxrss of
   the children (an upper bound: it includes what a loky worker inherited when it was started).
   A second size (2N images) shows that peak memory does not grow with the dataset.
2. Patches/s of the streaming loader (ShardStream) versus the reference's disk backend: the same
   patches as individual PNG files in a folder, read by a map-style Dataset (cv2.imread, reflect-101
   pad / random crop to 400, horizontal flip, to float tensor) through a DataLoader with the same
   batch size and number of workers.

Usage: python bench/shards.py [--images 40] [--epochs 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shards.manifest import read_manifest  # noqa: E402
from shards.read import LoaderConfig, ShardStream  # noqa: E402
from shards.stages import gt_patch  # noqa: E402


def make_dataset(root: Path, n: int) -> Path:
    """n 800x600 PNGs in DIV2K/DIV2K_train_HR, cut from the bundled photos with flips and shifts."""
    folder = root / "DIV2K" / "DIV2K_train_HR"
    folder.mkdir(parents=True, exist_ok=True)
    photos = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted((REPO / "samples").glob("*.*g"))]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.resize(photos[i % len(photos)], (1000, 800), interpolation=cv2.INTER_CUBIC)
        top, left = int(rng.integers(0, 200)), int(rng.integers(0, 200))
        img = img[top : top + 600, left : left + 800]
        img = img[:, ::-1] if i % 2 else img
        shift = rng.integers(-20, 20, 3)
        img = np.clip(img.astype(np.int16) + shift, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    return root


JOB = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from shards.prepare import ShardConfig, prepare_shards
t = time.perf_counter()
r = prepare_shards(ShardConfig(src="DIV2K", root=Path({root!r}), out=Path({out!r}), workers={workers},
                               shard_size=100))
dt = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report the parent's peak.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": dt, "images": r.manifest["totals"]["sources"],
                  "samples": r.manifest["totals"]["samples"], "bytes": r.manifest["totals"]["bytes"],
                  "peak_rss_main_mb": hwm / 1024,
                  "peak_rss_largest_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def bench_job(root: Path, out: Path, workers: int) -> dict:
    code = JOB.format(repo=str(REPO), root=str(root), out=str(out), workers=workers)
    res = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                    text=True).stdout.strip().splitlines()[-1])
    res["workers"] = workers
    res["images_per_s"] = res["images"] / res["seconds"]
    return res


class FolderDataset(Dataset):
    """The reference's disk backend, reduced to what the GT side does (ref. §1.1, minus kernels)."""

    def __init__(self, files: list[Path], patch: int, seed: int) -> None:
        self.files, self.patch, self.seed = files, patch, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
        u = np.random.default_rng((self.seed, i)).random(5)
        patch = gt_patch(img, u, self.patch, True, False)
        return torch.from_numpy(np.ascontiguousarray(patch[..., ::-1].transpose(2, 0, 1))).float().div_(255.0)


def bench_folder(folder: Path, workers: int, epochs: int, batch: int) -> dict:
    files = sorted(folder.glob("*.png"))
    ds = FolderDataset(files, 400, 0)
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, generator=gen, num_workers=workers, drop_last=True)
    t, n = time.perf_counter(), 0
    for _ in range(epochs):
        for x in loader:
            n += x.shape[0]
    return {"patches_per_s": n / (time.perf_counter() - t), "patches": n}


def bench_stream(shards: Path, workers: int, epochs: int, batch: int) -> dict:
    stream = ShardStream(LoaderConfig(str(shards), batch_size=batch, patch_size=400, num_workers=workers,
                                      shuffle_buffer=256, seed=0))
    t, n = time.perf_counter(), 0
    for epoch in range(epochs):
        for b in stream.epoch_batches(epoch):
            n += b.gt.shape[0]
    return {"patches_per_s": n / (time.perf_counter() - t), "patches": n}


def export_folder(shards: Path, folder: Path) -> None:
    """The same patches as individual PNG files (what extract_subimages.py would have written)."""
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    for entry in read_manifest(shards)["shards"]:
        with tarfile.open(shards / entry["name"]) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".png"):
                    (folder / m.name).write_bytes(tar.extractfile(m).read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "opencv": cv2.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = make_dataset(tmp / "small", args.images)
        large = make_dataset(tmp / "large", 2 * args.images)
        result["shard_job"] = [bench_job(small, tmp / f"out{w}", w) for w in (1, 2)]
        result["shard_job_2x_images"] = bench_job(large, tmp / "out_large", 2)
        shards = tmp / "out2"
        export_folder(shards, tmp / "folder")
        loader = {}
        for workers in (0, 2):
            # Alternate the two readers and keep the median: the machine's load drifts during a run.
            runs: dict[str, list[float]] = {"shard_stream": [], "png_folder": []}
            for _ in range(args.rounds):
                stream = bench_stream(shards, workers, args.epochs, args.batch)
                folder = bench_folder(tmp / "folder", workers, args.epochs, args.batch)
                runs["shard_stream"].append(stream["patches_per_s"])
                runs["png_folder"].append(folder["patches_per_s"])
            med = {k: float(np.median(v)) for k, v in runs.items()}
            loader[f"workers={workers}"] = {"patches_per_s_median": med, "runs": runs,
                                            "speedup": med["shard_stream"] / med["png_folder"]}
        result["loader"] = loader
    result["bench_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
