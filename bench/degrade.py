"""Benchmark: the degradation work of one training batch, per step, side by side with the reference.

Prints JSON (and writes it with --out). A batch is what the reference's `feed_data` does for 12 GT patches of
400×400 cut from the bundled photos (x4): USM of the GT, kernel synthesis (3 per sample), the second-order
degradation, quantization, the paired 256/64 crop, the training-pair pool (full: steady state) and the USM of
the 256 crop — here `pipelines.training.steps.make_training_pair`, the function training calls. Per-step times come
from wrapping the functions it calls (no code path changes); "other" is the rest (crop, pool, quantize,
bookkeeping). Random choices differ per batch (e.g. an upscale makes later steps costlier), so the numbers
are medians over batches with different seeds, the same seeds on every device.

With --reference-python the reference (bench/reference/ref_degrade.py, BasicSR 1.4.2 in its own environment)
runs in alternation with ours, one reference batch after each round of ours, so both see the same load.

    python bench/degrade.py [--batches 20] [--threads 2] [--device cpu|cuda]
    python bench/degrade.py --rounds 5 --batches 4 --reference-python /opt/refenv/bin/python \
        --out bench/results/degrade.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import degrade  # noqa: E402
from degrade import pipeline  # noqa: E402
from pipelines.training.pool import TrainingPairPool  # noqa: E402
from pipelines.training.steps import make_training_pair  # noqa: E402

SAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")  # as bench/reference/ref_degrade.py
STEPS = {  # pipeline-level name → step label
    "mixed_kernels": "kernels",
    "filter2d": "blur",
    "resize": "resize",
    "add_gaussian_noise": "noise",
    "add_poisson_noise": "noise",
    "jpeg_compress": "jpeg",
}
STEP_ORDER = ["usm", "kernels", "blur", "resize", "noise", "jpeg", "other", "total"]
REFERENCE_STEPS = {"usm": "usm", "kernels": "kernels", "blur": "blur", "resize": "resize", "noise": "noise",
                   "jpeg": "jpeg", "other": "quantize_crop_pool"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(totals: dict[str, float], label: str, fn, device: torch.device):
    def timed(*args, **kwargs):
        _sync(device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(device)
        totals[label] += time.perf_counter() - start
        return out

    return timed


@contextlib.contextmanager
def _timed_steps(totals: dict[str, float], device: torch.device):
    originals = {name: getattr(pipeline, name) for name in STEPS}
    usm = degrade.usm_sharpen
    for name, fn in originals.items():
        setattr(pipeline, name, _timed(totals, STEPS[name], fn, device))
    degrade.usm_sharpen = _timed(totals, "usm", usm, device)  # make_training_pair calls degrade.usm_sharpen
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(pipeline, name, fn)
        degrade.usm_sharpen = usm


def load_photos() -> list[torch.Tensor]:
    photos = []
    for name in SAMPLES:
        bgr = cv2.imread(str(REPO / "samples" / name), cv2.IMREAD_COLOR)
        photos.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255)
    return photos


def gt_batch(photos: list[torch.Tensor], batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` random size×size crops (reflect-101 padded if smaller, random h-flip), as the dataset cuts them."""
    crops = []
    for i in range(batch):
        photo = photos[i % len(photos)]
        if bool(torch.rand(1, generator=generator) < 0.5):
            photo = photo.flip(-1)
        h, w = photo.shape[-2:]
        if h < size or w < size:
            pad = np.pad(photo.numpy(), ((0, 0), (0, max(0, size - h)), (0, max(0, size - w))), mode="reflect")
            photo = torch.from_numpy(pad)
        h, w = photo.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        crops.append(photo[:, top : top + size, left : left + size])
    return torch.stack(crops).contiguous()


def _one_batch(images: torch.Tensor, config, pool: TrainingPairPool, seed: int, device: torch.device) -> dict:
    totals: dict[str, float] = defaultdict(float)
    _sync(device)
    start = time.perf_counter()
    with _timed_steps(totals, device):
        make_training_pair(images, config=config, gt_size=256, sharpen_gt=True, crop_before_degrade=False,
                           pool=pool, generator=torch.Generator().manual_seed(1000 + seed))
    _sync(device)
    totals["total"] = time.perf_counter() - start
    totals["other"] = totals["total"] - sum(v for k, v in totals.items() if k != "total")
    return {k: 1000 * v for k, v in totals.items()}


def _summary(rows: list[dict]) -> dict:
    median_ms = {s: round(statistics.median(r.get(s, 0.0) for r in rows), 2) for s in STEP_ORDER}
    mean_ms = {s: round(statistics.fmean(r.get(s, 0.0) for r in rows), 2) for s in STEP_ORDER}
    return {"batches": len(rows), "median_ms": median_ms, "mean_ms": mean_ms}


def run_reference(python: str, seed: int, threads: int) -> dict:
    """One timed reference batch (plus its small warm-up batch) in the reference's own environment."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref.json"
        script = REPO / "bench" / "reference" / "ref_degrade.py"
        subprocess.run([python, str(script), "--repeats", "1", "--seed", str(seed), "--threads", str(threads),
                        "--no-check", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
    row = {ours: result["steps_ms"][theirs]["median"] for ours, theirs in REFERENCE_STEPS.items()}
    row["total"] = result["total_ms"]["median"]
    return {"row": row, "env": result["env"]}


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_tile" in flags}


def git_commit() -> str | None:
    """The commit of the code measured (with "+dirty" for uncommitted changes), for the JSON's provenance."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches of ours per round")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; with --reference-python one reference "
                                                              "batch runs after each round of ours")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--per-sample", action="store_true", help="draw every choice per sample")
    parser.add_argument("--reference-python", help="e.g. /opt/refenv/bin/python: alternate with the reference")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    photos = load_photos()
    config = degrade.DegradationConfig(per_sample=args.per_sample)
    report: dict = {"benchmark": "degrade", "what": "make_training_pair (= the reference's dataset kernels + "
                    "feed_data) per batch", "date_utc": datetime.datetime.now(datetime.timezone.utc)
                    .isoformat(timespec="seconds"), "torch": torch.__version__, "opencv": cv2.__version__,
                    "numpy": np.__version__, "commit": git_commit(), "threads": args.threads, **cpu_info(),
                    "batch": [args.batch_size, 3, args.size, args.size], "per_sample": args.per_sample,
                    "loadavg_at_start": list(os.getloadavg()), "rounds": [], "command": " ".join(sys.argv)}
    ours: dict[str, list[dict]] = {name: [] for name in devices}
    reference: list[dict] = []
    pools = {name: TrainingPairPool(180, torch.Generator().manual_seed(1234)) for name in devices}
    for name in devices:  # full pools (steady state, as in all but the first 15 iterations, and as the reference
        device = torch.device(name)  # script's make_state(full=True)), then one warm-up batch
        pool, fill = pools[name], torch.Generator().manual_seed(99)
        lq_side, gt_side = 256 // config.scale, 256
        pool.lq = torch.round(torch.rand(180, 3, lq_side, lq_side, generator=fill) * 255).div(255).to(device)
        pool.gt = torch.round(torch.rand(180, 3, gt_side, gt_side, generator=fill) * 255).div(255).to(device)
        pool.filled = 180
        images = gt_batch(photos, args.batch_size, args.size, torch.Generator().manual_seed(-1)).to(device)
        _one_batch(images, config, pool, -1, device)
    seed = 0
    for r in range(args.rounds):
        load_before = list(os.getloadavg())
        for name in devices:
            device = torch.device(name)
            for b in range(args.batches):
                images = gt_batch(photos, args.batch_size, args.size,
                                  torch.Generator().manual_seed(seed + b)).to(device)
                ours[name].append(_one_batch(images, config, pools[name], seed + b, device))
        if args.reference_python:
            reference.append(run_reference(args.reference_python, r, args.threads))
        report["rounds"].append({"loadavg_before": load_before, "loadavg_after": list(os.getloadavg())})
        seed += args.batches
        _finish(report, ours, reference, args.out, final=r == args.rounds - 1)


def _finish(report: dict, ours: dict[str, list[dict]], reference: list[dict], out: Path | None, final: bool) -> None:
    """Summaries and speed-ups so far; written to ``out`` after every round (a long run keeps what it measured)."""
    report["loadavg_at_end"] = list(os.getloadavg())
    report["results"] = [{"device": name, **_summary(rows)} for name, rows in ours.items()]
    if reference:
        ref = _summary([r["row"] for r in reference])
        ref["env"] = reference[-1]["env"]
        report["reference"] = ref
        cpu = _summary(ours["cpu"]) if "cpu" in ours else None
        if cpu is not None:
            report["speedup_cpu_vs_reference"] = {
                "median": {s: round(ref["median_ms"][s] / max(cpu["median_ms"][s], 1e-9), 2) for s in STEP_ORDER},
                "mean": {s: round(ref["mean_ms"][s] / max(cpu["mean_ms"][s], 1e-9), 2) for s in STEP_ORDER},
            }
    report["complete"] = final
    text = json.dumps(report, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if final:
        print(text)


if __name__ == "__main__":
    main()
