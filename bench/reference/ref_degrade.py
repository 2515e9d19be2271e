"""Time the reference (BasicSR 1.4.2 / Real-ESRGAN 0.3.0) per-training-batch degradation work on CPU.

Run ONLY with the separate reference env (see bench/reference/README.md); never imported by tests or the library:

    /opt/refenv/bin/python bench/reference/ref_degrade.py --repeats 5

What one "batch" is (x4, B=12, GT 400x400, option values of options/train_realesrgan_x4plus.yml):
  * dataset side, per sample: the GT preparation of RealESRGANDataset.__getitem__ (hflip, pad/crop to 400;
    untimed, it is I/O-like work) and the three kernels (kernel1, kernel2, final sinc/pulse; timed as "kernels"),
    written out step by step with basicsr's random_mixed_kernels / circular_lowpass_kernel;
  * model side: RealESRGANModel.feed_data written out step by step with basicsr's functions (USMSharp, filter2D,
    F.interpolate, random_add_*_noise_pt, DiffJPEG(differentiable=False), paired_random_crop), the training-pair
    pool (the reference's own _dequeue_and_enqueue, called on a CPU state object) and the second USM on the 256 crop.
The model class is not instantiated because its constructor calls .cuda().

Faithfulness check (on by default, --no-check to skip): with the same seeds, the written-out sequence must give
bit-identical gt/kernels to RealESRGANDataset.__getitem__ and bit-identical lq/gt/gt_usm to the unmodified
RealESRGANModel.feed_data (called unbound on a CPU state object). The result goes into the JSON.
"""

from __future__ import annotations

# The reference draws from the global `random`, `numpy.random` and torch RNGs; this script reproduces its exact
# draw order on purpose, so the project's no-global-RNG rule (NPY002) does not apply here.
# ruff: noqa: NPY002
import argparse
import datetime
import functools
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import types
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import basicsr
import cv2
import numpy as np
import torch
import torchvision
from basicsr.data.degradations import (
    circular_lowpass_kernel,
    random_add_gaussian_noise_pt,
    random_add_poisson_noise_pt,
    random_mixed_kernels,
)
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import DiffJPEG, USMSharp, imfrombytes, img2tensor
from basicsr.utils.img_process_util import filter2D
from realesrgan.data.realesrgan_dataset import RealESRGANDataset
from realesrgan.models.realesrgan_model import RealESRGANModel
from realesrgan.version import __version__ as realesrgan_version
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO / "samples"
SAMPLE_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
RESULTS = REPO / "bench" / "results"

# Real-ESRGAN options/train_realesrgan_x4plus.yml, datasets.train (reference doc §1.1 table).
KERNEL_LIST = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
DATASET_OPT = {
    "use_hflip": True, "use_rot": False,
    "blur_kernel_size": 21, "kernel_list": KERNEL_LIST, "kernel_prob": KERNEL_PROB, "sinc_prob": 0.1,
    "blur_sigma": [0.2, 3], "betag_range": [0.5, 4], "betap_range": [1, 2],
    "blur_kernel_size2": 21, "kernel_list2": KERNEL_LIST, "kernel_prob2": KERNEL_PROB, "sinc_prob2": 0.1,
    "blur_sigma2": [0.2, 1.5], "betag_range2": [0.5, 4], "betap_range2": [1, 2],
    "final_sinc_prob": 0.8,
}
# Same file, top level + train section (reference doc §1.2 and §4.2).
MODEL_OPT = {
    "scale": 4, "gt_size": 256, "queue_size": 180, "high_order_degradation": True,
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5], "gaussian_noise_prob": 0.5,
    "noise_range": [1, 30], "poisson_scale_range": [0.05, 3], "gray_noise_prob": 0.4, "jpeg_range": [30, 95],
    "second_blur_prob": 0.8, "resize_prob2": [0.3, 0.4, 0.3], "resize_range2": [0.3, 1.2],
    "gaussian_noise_prob2": 0.5, "noise_range2": [1, 25], "poisson_scale_range2": [0.05, 2.5],
    "gray_noise_prob2": 0.4, "jpeg_range2": [30, 95],
    "l1_gt_usm": True, "percep_gt_usm": True, "gan_gt_usm": False, "dist": False,
}
KERNEL_RANGE = [2 * v + 1 for v in range(3, 11)]  # R-ds: hard-coded 7..21
CROP_PAD_SIZE = 400  # R-ds: hard-coded
ISSUE_ANCHOR = {"total_ms": 3800, "usm_share": 0.80, "poisson_share": 0.14, "jpeg_share": 0.03}

# Sub-steps summed into the categories the issue talks about.
CATEGORIES = {
    "usm": ("usm_gt400", "usm_gt256"),
    "kernels": ("kernels",),
    "blur": ("blur1", "blur2", "final_sinc"),
    "resize": ("resize1", "resize2", "final_resize"),
    "noise": ("noise1_gaussian", "noise1_poisson", "noise2_gaussian", "noise2_poisson"),
    "jpeg": ("jpeg1", "jpeg2"),
    "quantize_crop_pool": ("quantize", "crop", "pool"),
}


class StepTimer:
    """Accumulates wall milliseconds (time.perf_counter) per named step."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - t0) * 1e3


NULL_TIMER = StepTimer()


def seed_all(seed: int) -> None:
    """Seed the three global RNGs the reference draws from (basicsr set_random_seed does the same)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_samples() -> list[np.ndarray]:
    """Decode the bundled photos the way the dataset does (imfrombytes, BGR float32 in [0,1])."""
    return [imfrombytes((SAMPLE_DIR / n).read_bytes(), float32=True) for n in SAMPLE_NAMES]


def prepare_gt(img: np.ndarray) -> np.ndarray:
    """RealESRGANDataset.__getitem__ GT steps: augment (hflip only), reflect-101 pad, random 400 crop."""
    img = augment(img, DATASET_OPT["use_hflip"], DATASET_OPT["use_rot"])
    h, w = img.shape[0:2]
    if h < CROP_PAD_SIZE or w < CROP_PAD_SIZE:
        img = cv2.copyMakeBorder(img, 0, max(0, CROP_PAD_SIZE - h), 0, max(0, CROP_PAD_SIZE - w),
                                 cv2.BORDER_REFLECT_101)
    if img.shape[0] > CROP_PAD_SIZE or img.shape[1] > CROP_PAD_SIZE:
        h, w = img.shape[0:2]
        top = random.randint(0, h - CROP_PAD_SIZE)
        left = random.randint(0, w - CROP_PAD_SIZE)
        img = img[top:top + CROP_PAD_SIZE, left:left + CROP_PAD_SIZE, ...]
    return img


def _blur_kernel(suffix: str) -> np.ndarray:
    """One first/second-degradation kernel exactly as R-ds draws it, zero-padded to 21x21."""
    o = DATASET_OPT
    kernel_size = random.choice(KERNEL_RANGE)
    if np.random.uniform() < o["sinc_prob" + suffix]:
        omega_c = np.random.uniform(np.pi / 3, np.pi) if kernel_size < 13 else np.random.uniform(np.pi / 5, np.pi)
        kernel = circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
    else:
        kernel = random_mixed_kernels(o["kernel_list" + suffix], o["kernel_prob" + suffix], kernel_size,
                                      o["blur_sigma" + suffix], o["blur_sigma" + suffix], [-math.pi, math.pi],
                                      o["betag_range" + suffix], o["betap_range" + suffix], noise_range=None)
    pad = (21 - kernel_size) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def sample_kernels() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kernel1, kernel2 and the final sinc (p=final_sinc_prob) or pulse kernel, as R-ds returns them."""
    kernel1 = _blur_kernel("")
    kernel2 = _blur_kernel("2")
    if np.random.uniform() < DATASET_OPT["final_sinc_prob"]:
        kernel_size = random.choice(KERNEL_RANGE)
        omega_c = np.random.uniform(np.pi / 3, np.pi)
        sinc = torch.FloatTensor(circular_lowpass_kernel(omega_c, kernel_size, pad_to=21))
    else:
        sinc = torch.zeros(21, 21).float()
        sinc[10, 10] = 1
    return torch.FloatTensor(kernel1), torch.FloatTensor(kernel2), sinc


def prepare_batch(images: list[np.ndarray], indices: list[int], timer: StepTimer = NULL_TIMER) -> dict:
    """Per-sample dataset work in __getitem__ order, collated like default_collate. Only kernels are timed."""
    samples = []
    for i in indices:
        gt = prepare_gt(images[i % len(images)])
        with timer("kernels"):
            k1, k2, sinc = sample_kernels()
        samples.append((img2tensor([gt], bgr2rgb=True, float32=True)[0], k1, k2, sinc))
    return {key: torch.stack([s[j] for s in samples]) for j, key in enumerate(("gt", "kernel1", "kernel2",
                                                                                 "sinc_kernel"))}


def make_state(batch: int, full: bool, seed: int = 1234) -> types.SimpleNamespace:
    """A CPU stand-in for the model object: what feed_data / _dequeue_and_enqueue read from `self`.

    The queues are created here (on CPU) so the reference's lazy initialisation branch, the only place it calls
    .cuda(), is never entered. full=True puts the pool in its steady state (ptr == queue_size: randperm + swap
    every batch, as for all but the first 15 of the 400k iterations); full=False starts it empty (enqueue only).
    """
    q = MODEL_OPT["queue_size"]
    assert q % batch == 0, f"queue size {q} must be divisible by the batch {batch}"
    g = torch.Generator().manual_seed(seed)
    state = types.SimpleNamespace(
        is_train=True, opt=MODEL_OPT, device=torch.device("cpu"), queue_size=q,
        usm_sharpener=USMSharp(), jpeger=DiffJPEG(differentiable=False),
        queue_lr=torch.rand(q, 3, 64, 64, generator=g) if full else torch.zeros(q, 3, 64, 64),
        queue_gt=torch.rand(q, 3, 256, 256, generator=g) if full else torch.zeros(q, 3, 256, 256),
        queue_ptr=q if full else 0,
    )
    state._dequeue_and_enqueue = functools.partial(RealESRGANModel._dequeue_and_enqueue, state)
    return state


def _resize_choice(prob: list[float], scale_range: list[float]) -> tuple[str, float, str]:
    updown = random.choices(["up", "down", "keep"], prob)[0]
    if updown == "up":
        scale = np.random.uniform(1, scale_range[1])
    elif updown == "down":
        scale = np.random.uniform(scale_range[0], 1)
    else:
        scale = 1
    return updown, float(scale), random.choice(["area", "bilinear", "bicubic"])


def _noise(out: torch.Tensor, stage: str, timer: StepTimer, choices: dict) -> torch.Tensor:
    o, sfx = MODEL_OPT, ("" if stage == "1" else "2")
    if np.random.uniform() < o["gaussian_noise_prob" + sfx]:
        choices[f"noise{stage}"] = "gaussian"
        with timer(f"noise{stage}_gaussian"):
            return random_add_gaussian_noise_pt(out, sigma_range=o["noise_range" + sfx], clip=True, rounds=False,
                                                gray_prob=o["gray_noise_prob" + sfx])
    choices[f"noise{stage}"] = "poisson"
    with timer(f"noise{stage}_poisson"):
        return random_add_poisson_noise_pt(out, scale_range=o["poisson_scale_range" + sfx],
                                           gray_prob=o["gray_noise_prob" + sfx], clip=True, rounds=False)


def _jpeg(out: torch.Tensor, jpeger: DiffJPEG, quality_range: list[float]) -> torch.Tensor:
    jpeg_p = out.new_zeros(out.size(0)).uniform_(*quality_range)
    out = torch.clamp(out, 0, 1)
    return jpeger(out, quality=jpeg_p)


@torch.no_grad()
def degrade(data: dict, state: types.SimpleNamespace, timer: StepTimer = NULL_TIMER) -> tuple:
    """RealESRGANModel.feed_data (R-gan), step by step, same calls and same RNG draw order.

    Returns (lq, gt, gt_usm, choices) after crop, pool and the second USM.
    """
    o, usm, jpeger = MODEL_OPT, state.usm_sharpener, state.jpeger
    choices: dict = {}
    gt = data["gt"]
    with timer("usm_gt400"):
        gt_usm = usm(gt)
    kernel1, kernel2, sinc_kernel = data["kernel1"], data["kernel2"], data["sinc_kernel"]
    ori_h, ori_w = gt.size()[2:4]
    # ---- first degradation ----
    with timer("blur1"):
        out = filter2D(gt_usm, kernel1)
    with timer("resize1"):
        choices["resize1"] = _resize_choice(o["resize_prob"], o["resize_range"])
        out = F.interpolate(out, scale_factor=choices["resize1"][1], mode=choices["resize1"][2])
    out = _noise(out, "1", timer, choices)
    with timer("jpeg1"):
        out = _jpeg(out, jpeger, o["jpeg_range"])
    # ---- second degradation ----
    choices["blur2"] = bool(np.random.uniform() < o["second_blur_prob"])
    if choices["blur2"]:
        with timer("blur2"):
            out = filter2D(out, kernel2)
    with timer("resize2"):
        choices["resize2"] = _resize_choice(o["resize_prob2"], o["resize_range2"])
        scale = choices["resize2"][1]
        out = F.interpolate(out, size=(int(ori_h / o["scale"] * scale), int(ori_w / o["scale"] * scale)),
                            mode=choices["resize2"][2])
    out = _noise(out, "2", timer, choices)
    # ---- final step: [resize back + sinc] and JPEG in random order ----
    choices["final_order"] = "resize_sinc_then_jpeg" if np.random.uniform() < 0.5 else "jpeg_then_resize_sinc"
    if choices["final_order"] == "resize_sinc_then_jpeg":
        with timer("final_resize"):
            mode = random.choice(["area", "bilinear", "bicubic"])
            out = F.interpolate(out, size=(ori_h // o["scale"], ori_w // o["scale"]), mode=mode)
        with timer("final_sinc"):
            out = filter2D(out, sinc_kernel)
        with timer("jpeg2"):
            out = _jpeg(out, jpeger, o["jpeg_range2"])
    else:
        with timer("jpeg2"):
            out = _jpeg(out, jpeger, o["jpeg_range2"])
        with timer("final_resize"):
            mode = random.choice(["area", "bilinear", "bicubic"])
            out = F.interpolate(out, size=(ori_h // o["scale"], ori_w // o["scale"]), mode=mode)
        with timer("final_sinc"):
            out = filter2D(out, sinc_kernel)
    choices["final_mode"] = mode
    with timer("quantize"):
        lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
    with timer("crop"):
        (gt, gt_usm), lq = paired_random_crop([gt, gt_usm], lq, o["gt_size"], o["scale"])
    with timer("pool"):
        state.lq, state.gt = lq, gt
        state._dequeue_and_enqueue()  # the reference method itself (queues pre-made on CPU)
        lq, gt = state.lq, state.gt
    with timer("usm_gt256"):
        gt_usm = usm(gt)
    return lq.contiguous(), gt, gt_usm, choices


def faithfulness_check(images: list[np.ndarray], batch: int, seed: int) -> dict:
    """Bit-compare the written-out sequence with the reference dataset and feed_data code under equal seeds."""
    indices = list(range(batch))
    seed_all(seed)
    mine = prepare_batch(images, indices)
    with tempfile.TemporaryDirectory() as tmp:
        meta = Path(tmp) / "meta_info.txt"
        meta.write_text("".join(f"{n}\n" for n in SAMPLE_NAMES))
        ds = RealESRGANDataset(dict(DATASET_OPT, io_backend={"type": "disk"}, dataroot_gt=str(SAMPLE_DIR),
                                    meta_info=str(meta)))
        seed_all(seed)
        items = [ds[i % len(SAMPLE_NAMES)] for i in indices]
    ref = {k: torch.stack([it[k] for it in items]) for k in mine}
    dataset_equal = {k: bool(torch.equal(mine[k], ref[k])) for k in mine}

    state_a, state_b = make_state(batch, full=True), make_state(batch, full=True)
    seed_all(seed + 1)
    lq, gt, gt_usm, _ = degrade(mine, state_a)
    seed_all(seed + 1)
    RealESRGANModel.feed_data(state_b, ref)
    feed_equal = {"lq": bool(torch.equal(lq, state_b.lq)), "gt": bool(torch.equal(gt, state_b.gt)),
                  "gt_usm": bool(torch.equal(gt_usm, state_b.gt_usm)),
                  "queue_lr": bool(torch.equal(state_a.queue_lr, state_b.queue_lr))}
    return {"batch": batch, "seed": seed, "dataset_getitem_equal": dataset_equal, "feed_data_equal": feed_equal,
            "all_equal": all(dataset_equal.values()) and all(feed_equal.values()),
            "lq_shape": list(lq.shape), "gt_shape": list(gt.shape)}


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "min": min(values),
            "max": max(values), "n": len(values)}


def env_info(threads: int) -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "basicsr": basicsr.__version__, "realesrgan": realesrgan_version, "opencv": cv2.__version__,
        "numpy": np.__version__, "cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads,
        "loadavg_at_start": list(os.getloadavg()), "executable": sys.executable,
    }


def summarize_steps(per_batch: list[dict[str, float]], totals: list[float]) -> tuple[dict, dict]:
    """Per-category and per-sub-step stats; share = mean(step) / mean(total) (random branches make medians of
    zero-or-not steps misleading, so shares are taken on means)."""
    names = sorted({k for b in per_batch for k in b})
    mean_total = statistics.fmean(totals)
    sub = {n: dict(stats([b.get(n, 0.0) for b in per_batch]),
                   share_of_total=statistics.fmean([b.get(n, 0.0) for b in per_batch]) / mean_total)
           for n in names}
    cats = {}
    for cat, members in CATEGORIES.items():
        vals = [sum(b.get(m, 0.0) for m in members) for b in per_batch]
        cats[cat] = dict(stats(vals), share_of_total=statistics.fmean(vals) / mean_total)
    return cats, sub


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    env = env_info(args.threads)
    images = load_samples()
    check = None if args.no_check else faithfulness_check(images, args.check_batch, args.seed)
    seed_all(args.seed)
    state = make_state(args.batch, full=args.pool == "full")
    per_batch, totals, choices = [], [], []
    for it in range(args.warmup + args.repeats):
        # Warm-up batches may be smaller: every code path runs, and the per-channel conv cost has no cold start.
        b = args.warmup_batch if it < args.warmup else args.batch
        indices = [it * args.batch + j for j in range(b)]
        timer = StepTimer()
        data = prepare_batch(images, indices, timer)  # GT prep (I/O-like) is untimed; kernels are timed
        t0 = time.perf_counter()
        _, _, _, ch = degrade(data, state, timer)
        total = timer.ms["kernels"] + (time.perf_counter() - t0) * 1e3
        if it >= args.warmup:
            per_batch.append(dict(timer.ms))
            totals.append(total)
            choices.append(ch)
    cats, sub = summarize_steps(per_batch, totals)
    noise_calls = defaultdict(list)
    for b in per_batch:
        for k, v in b.items():
            if k.startswith("noise"):
                noise_calls[k.split("_")[1]].append(v)
    mean_total = statistics.fmean(totals)
    poisson_share = sum(sub.get(n, {}).get("share_of_total", 0.0) for n in ("noise1_poisson", "noise2_poisson"))
    env["loadavg_at_end"] = list(os.getloadavg())
    return {
        "benchmark": "reference_degrade",
        "what": "Real-ESRGAN per-batch degradation on CPU: dataset kernels (3 per sample) + feed_data "
                "(USM, 2nd-order degradation, quantize, paired crop 256/64, pool, USM on 256 crop)",
        "contended": args.contended == "yes",
        "env": env,
        "config": {"batch": args.batch, "gt_size_in": CROP_PAD_SIZE, "scale": 4, "lq_out": 64, "gt_out": 256,
                   "repeats": args.repeats, "warmup": args.warmup,
                   "warmup_batch": args.warmup_batch, "seed": args.seed, "pool": args.pool,
                   "threads": args.threads, "samples": list(SAMPLE_NAMES)},
        "total_ms": stats(totals),
        "steps_ms": cats,
        "substeps_ms": sub,
        "noise_call_ms_by_type": {k: stats(v) for k, v in noise_calls.items()},
        "shares_vs_issue_anchor": {
            "measured": {"total_ms_mean": mean_total, "usm_share": cats["usm"]["share_of_total"],
                         "poisson_share": poisson_share, "jpeg_share": cats["jpeg"]["share_of_total"]},
            "issue_anchor": ISSUE_ANCHOR,
        },
        "per_batch_choices": choices,
        "faithfulness_check": check,
        "command": " ".join([sys.executable, *sys.argv]),
    }


def add_run_args(p: argparse.ArgumentParser, out_name: str) -> None:
    """--contended and --out, shared by the reference scripts."""
    p.add_argument("--contended", choices=("yes", "no"), default="yes",
                   help="whether other jobs shared the CPU during the run (recorded in the JSON)")
    p.add_argument("--out", type=Path, default=RESULTS / out_name)


def write_result(result: dict, out: Path) -> None:
    """Write the result JSON to ``out`` and print it."""
    text = json.dumps(result, indent=2, default=float)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed batches (median over them), >= 5 advised")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches")
    p.add_argument("--warmup-batch", type=int, default=2, help="batch size of the warm-up batches")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", choices=("full", "filling"), default="full",
                   help="training-pair pool state: steady state (full) or the first 15 iterations (filling)")
    p.add_argument("--check-batch", type=int, default=2, help="batch size of the bit-exactness check")
    p.add_argument("--no-check", action="store_true", help="skip the bit-exactness check against the reference")
    add_run_args(p, "reference_degrade.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    write_result(run(args), args.out)


if __name__ == "__main__":
    main()
