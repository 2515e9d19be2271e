"""Benchmark: milliseconds per training iteration, for each stage, on CPU (and CUDA when present).

Prints JSON. (a) RRDBNet x4 (23 blocks) forward + backward with L1 for a batch of 2 LQ patches of 64×64
(the issue's anchor: the reference takes ≈2,570 ms on a 2-core machine); (b) a full iteration of each
stage at batch 2 through the real step functions: degradation of a 2×400×400 GT batch, the 256/64 crop,
the pool, G with its losses, (D real + fake,) the Adam steps and the EMA (anchor for the GAN stage:
≈7,600 ms). The VGG19 has random weights (the cost is the same). Median of `--repeats` after a warm-up.

    python bench/train_step.py [--repeats 3] [--threads 2] [--device cpu|cuda] [--out bench/results/train_step.json]

When bench/results/reference_train_step.json exists (bench/reference/ref_train_step.py, run in the
reference's own venv just before this on the same machine), the CPU result is put beside it as
"vs_reference". Other jobs on the machine inflate both; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE_JSON = REPO / "bench" / "results" / "reference_train_step.json"
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import degrade  # noqa: E402
from models.discriminator import UNetDiscriminatorSN  # noqa: E402
from models.ema import ModelEMA  # noqa: E402
from models.losses import PerceptualLoss, l1_loss  # noqa: E402
from models.rrdbnet import RRDBNet  # noqa: E402
from models.vgg import VGGFeatureExtractor  # noqa: E402
from pipelines.pool import TrainingPairPool  # noqa: E402
from pipelines.steps import discriminator_step, generator_step, make_training_pair  # noqa: E402
from pipelines.train_config import PERCEPTUAL_LAYERS  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, repeats: int, device: torch.device) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1), "n": repeats}


def bench(device: torch.device, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    net_g = RRDBNet(generator=g).to(device)
    lq = torch.rand(2, 3, 64, 64, generator=g).to(device)
    gt = torch.rand(2, 3, 256, 256, generator=g).to(device)

    def net_fwd_bwd():
        net_g.zero_grad(set_to_none=True)
        l1_loss(net_g(lq), gt).backward()

    results = {"net_fwd_bwd_b2_64": _time(net_fwd_bwd, repeats, device)}

    config = degrade.DegradationConfig()
    photos = torch.rand(2, 3, 400, 400, generator=g).to(device)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = ModelEMA(net_g, 0.999)
    net_d = UNetDiscriminatorSN(generator=g).to(device)
    opt_d = torch.optim.Adam(net_d.parameters(), lr=1e-4, betas=(0.9, 0.99))
    extractor = VGGFeatureExtractor("random", PERCEPTUAL_LAYERS, generator=torch.Generator().manual_seed(0))
    perceptual = PerceptualLoss(extractor, dict(zip(PERCEPTUAL_LAYERS, (0.1, 0.1, 1, 1, 1), strict=True))).to(device)
    step_gen = torch.Generator().manual_seed(1)
    # A full pool (steady state): 180 would only delay the permutation; 2 slots show its cost.
    pool = TrainingPairPool(4, torch.Generator().manual_seed(2))

    def iteration(stage: str):
        pair = make_training_pair(photos, config=config, gt_size=256, sharpen_gt=True, crop_before_degrade=False,
                                  pool=pool, generator=step_gen)
        d = net_d if stage == "gan" else None
        if d is not None:
            d.requires_grad_(False)
        _, output, loss = generator_step(net_g, opt_g, pair, pixel_weight=1.0,
                                         perceptual=perceptual if stage == "gan" else None, net_d=d, gan_weight=0.1)
        loss.backward()
        opt_g.step()
        if d is not None:
            d.requires_grad_(True)
            discriminator_step(d, opt_d, pair.gt, output)
        ema.update(net_g)

    results["net_iteration_b2"] = _time(lambda: iteration("net"), repeats, device)
    results["gan_iteration_b2"] = _time(lambda: iteration("gan"), repeats, device)
    return {"device": str(device), **results}


def vs_reference(cpu: dict) -> dict | None:
    """Our CPU medians beside the reference's (same batch and patch sizes), with the speedup."""
    if not REFERENCE_JSON.is_file():
        return None
    ref = json.loads(REFERENCE_JSON.read_text())
    pairs = {"net_fwd_bwd_b2_64": "net_fwd_bwd_ms", "gan_iteration_b2": "gan_total_ms"}
    out = {"reference": f"{REFERENCE_JSON.relative_to(REPO)} (measured {ref['env']['date_utc']}, "
                        f"load {ref['env']['loadavg_at_start'][0]:.2f}, torch {ref['env']['torch']})"}
    for ours_key, ref_key in pairs.items():
        reference_ms = ref[ref_key]["median"]
        out[ours_key] = {"reference_median_ms": round(reference_ms, 1), "ours_median_ms": cpu[ours_key]["median_ms"],
                         "speedup": round(reference_ms / cpu[ours_key]["median_ms"], 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", action="append")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load_at_start = os.getloadavg()
    results = [bench(torch.device(d), args.repeats) for d in devices]
    report = {
        "benchmark": "train_step",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "anchors_reference_ms": {"net_fwd_bwd_b2_64": 2570, "gan_iteration_b2": 7600},
        "results": results,
    }
    cpu = next((r for r in results if r["device"] == "cpu"), None)
    if cpu is not None:
        report["vs_reference"] = vs_reference(cpu)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
