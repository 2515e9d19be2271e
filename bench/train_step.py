"""Benchmark: milliseconds per training iteration, for each stage and precision, on CPU (and CUDA when present).

Prints JSON. (a) RRDBNet x4 (23 blocks) forward + backward with L1 for a batch of 2 LQ patches of 64×64
(the issue's anchor: the reference takes ≈2,570 ms on a 2-core machine); (b) a full iteration of each
stage at batch 2 through `pipelines.training.step.TrainStep`, the trainer's own step: degradation of a 2×400×400
GT batch, the 256/64 crop, the pool, G with its losses, (D real + fake,) the Adam steps and the EMA
(anchor for the GAN stage: ≈7,600 ms). The VGG19 has random weights (the cost is the same). Median of
`--repeats` after a warm-up; the precisions are timed alternately (one repeat of each in turn), so load
from other jobs falls on all of them alike. bf16 on a CPU without AMX / AVX512-BF16 is emulated by torch
(labelled "native_bf16": false in the JSON): it measures what `precision = "bf16"` costs there, not what
bf16 hardware does.

    python bench/train_step.py [--repeats 3] [--threads 2] [--device cpu|cuda] [--precision fp32 --precision bf16]
                               [--out bench/results/train_step.json]

When bench/results/reference_train_step.json exists (bench/reference/ref_train_step.py, run in the
reference's own venv just before this on the same machine), the CPU fp32 result is put beside it as
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE_JSON = REPO / "bench" / "results" / "reference_train_step.json"
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from models.discriminator import UNetDiscriminatorSN  # noqa: E402
from models.losses import PerceptualLoss, l1_loss  # noqa: E402
from models.rrdbnet import RRDBNet  # noqa: E402
from models.vgg import VGGFeatureExtractor  # noqa: E402
from pipelines.hardware import autocast, describe  # noqa: E402
from pipelines.training.pool import TrainingPairPool  # noqa: E402
from pipelines.training.step import TrainStep  # noqa: E402
from pipelines.training.train_config import PERCEPTUAL_LAYERS, load_train_config  # noqa: E402

PAPER_NETWORK = (64, 23, 32)  # num_feat, num_block, num_grow_ch (RRDBNet x4plus)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return 1000 * (time.perf_counter() - start)


def alternate(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Median / min ms of each function, timed in turn (a, b, a, b, ...) after ``warmup`` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed_ms(fn, device))
    return {name: {"median_ms": round(statistics.median(t), 1), "min_ms": round(min(t), 1), "n": len(t)}
            for name, t in times.items()}


@dataclass
class BenchStep:
    """A TrainStep with its own GT batch, pool and generator: ``run()`` is one trainer iteration."""

    step: TrainStep
    photos: torch.Tensor
    pool: TrainingPairPool
    generator: torch.Generator

    def run(self) -> dict[str, float]:
        return self.step(self.photos, iteration=1, pool=self.pool, generator=self.generator, lr_g=1e-4, lr_d=1e-4)

    def pair_only(self) -> None:
        """Degrade → crop → pool alone (the data side of the step)."""
        self.step.training_pair(self.photos, self.pool, self.generator)


def make_bench_step(stage: str, device: torch.device, precision: str, batch: int, *, patch: int = 400, gt: int = 256,
                    network: tuple[int, int, int] = PAPER_NETWORK, compile: bool = False, channels_last: bool = True,
                    seed: int = 0) -> BenchStep:
    """The trainer's step for ``stage`` at the given sizes, with random weights and a random GT batch."""
    num_feat, num_block, num_grow_ch = network
    # A full pool (steady state) of two batches: 180 would only delay the permutation; 2 batches show its cost.
    cfg = load_train_config(stage, values={
        "data.batch_size": batch, "data.patch_size": patch, "data.gt_size": gt, "queue_size": 2 * batch,
        "network.num_feat": num_feat, "network.num_block": num_block, "network.num_grow_ch": num_grow_ch,
        "precision": precision, "compile": compile, "channels_last": channels_last,
        "loss.perceptual_weights": "random"})
    g = torch.Generator().manual_seed(seed)
    net_g = RRDBNet(3, 3, 4, num_feat, num_block, num_grow_ch, generator=g)
    net_d = UNetDiscriminatorSN(3, num_feat, True, generator=g) if stage == "gan" else None  # 64 in the paper
    perceptual = None
    if stage == "gan":
        extractor = VGGFeatureExtractor("random", PERCEPTUAL_LAYERS, generator=torch.Generator().manual_seed(0))
        weights = dict(zip(PERCEPTUAL_LAYERS, cfg.loss.perceptual_layer_weights, strict=True))
        perceptual = PerceptualLoss(extractor, weights).to(device)
    step = TrainStep(cfg, net_g, net_d, perceptual, device)
    photos = torch.rand(batch, 3, patch, patch, generator=g).to(device)
    return BenchStep(step, photos, TrainingPairPool(2 * batch, torch.Generator().manual_seed(2)),
                     torch.Generator().manual_seed(1))


def net_fwd_bwd(device: torch.device, precision: str) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    net = RRDBNet(generator=g).to(device)
    lq, gt = torch.rand(2, 3, 64, 64, generator=g).to(device), torch.rand(2, 3, 256, 256, generator=g).to(device)

    def run() -> None:
        net.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = net(lq)
        l1_loss(out.float(), gt).backward()

    return run


def bench(device: torch.device, precisions: list[str], repeats: int) -> dict:
    results = {"machine": describe(device)}
    results["net_fwd_bwd_b2_64"] = alternate({p: net_fwd_bwd(device, p) for p in precisions}, repeats, device)
    print(f"net_fwd_bwd_b2_64 {results['net_fwd_bwd_b2_64']}", file=sys.stderr, flush=True)  # progress
    for stage in ("net", "gan"):
        steps = {p: make_bench_step(stage, device, p, 2) for p in precisions}
        results[f"{stage}_iteration_b2"] = alternate({p: s.run for p, s in steps.items()}, repeats, device)
        print(f"{stage}_iteration_b2 {results[f'{stage}_iteration_b2']}", file=sys.stderr, flush=True)
        del steps
    return results


def vs_reference(cpu: dict) -> dict | None:
    """Our CPU fp32 medians beside the reference's (same batch and patch sizes), with the speedup."""
    if not REFERENCE_JSON.is_file() or "fp32" not in cpu["net_fwd_bwd_b2_64"]:
        return None
    ref = json.loads(REFERENCE_JSON.read_text())
    pairs = {"net_fwd_bwd_b2_64": "net_fwd_bwd_ms", "gan_iteration_b2": "gan_total_ms"}
    out = {"reference": f"{REFERENCE_JSON.relative_to(REPO)} (measured {ref['env']['date_utc']}, "
                        f"load {ref['env']['loadavg_at_start'][0]:.2f}, torch {ref['env']['torch']})"}
    for ours_key, ref_key in pairs.items():
        reference_ms, ours_ms = ref[ref_key]["median"], cpu[ours_key]["fp32"]["median_ms"]
        out[ours_key] = {"reference_median_ms": round(reference_ms, 1), "ours_fp32_median_ms": ours_ms,
                         "speedup": round(reference_ms / ours_ms, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", action="append")
    parser.add_argument("--precision", action="append", choices=["fp32", "bf16", "fp16"],
                        help="repeatable; default fp32 and bf16")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    precisions = args.precision or ["fp32", "bf16"]
    load_at_start = os.getloadavg()
    results = [bench(torch.device(d), [p for p in precisions if p != "fp16" or d.startswith("cuda")], args.repeats)
               for d in devices]
    report = {
        "benchmark": "train_step",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "anchors_reference_ms": {"net_fwd_bwd_b2_64": 2570, "gan_iteration_b2": 7600},
        "results": results,
    }
    cpu = next((r for r in results if r["machine"]["device"] == "cpu"), None)
    if cpu is not None:
        report["vs_reference"] = vs_reference(cpu)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
