"""The benchmarks of the GPU check kit (run by bench/gpu_check.sh after the CUDA-marked tests).

Writes gpu_check.json and summary.md (with the test results from the junit files the script wrote) into
--out. On one CUDA GPU:

* degradation share: degrade → crop → pool of a 48 × 400² GT batch alone, and one full bf16 net-stage
  step at the paper's GT 256 (goal: degradation < 10 % of the step);
* train step: it/s and samples/s of the net stage (RRDBNet x4plus, Real-ESRNet) in fp32, bf16, bf16
  without channels_last (does the layout pay on this GPU?) and bf16 + torch.compile at batch 12 and 48
  (goal: bf16 >= 1.5x fp32; anchor: 4 V100 = 80-93 samples/s at batch 48 for the official Real-ESRNet,
  i.e. 20-23 per GPU);
* upscale: ms per megapixel of the x4plus architecture in fp16, untiled and at tile 512.

--dry-run runs the same code on CPU with tiny sizes (a 1-block network, 64² patches, batch 2, fp32 / bf16
without compile: inductor's C++ build takes minutes on two shared cores) so the kit cannot rot; its
numbers mean nothing. Weights are random: the cost of a step does not depend on their values.

    python bench/gpu_check.py --out bench/results/cuda [--dry-run] [--budget-s 330]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from train_step import PAPER_NETWORK, alternate, make_bench_step, timed_ms  # noqa: E402

from models.rrdbnet import RRDBNet  # noqa: E402
from pipelines.hardware import describe  # noqa: E402
from pipelines.inference.tiling import upscale_tensor  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    device: str
    network: tuple[int, int, int]
    patch: int
    gt: int
    share_batch: int
    step_batches: tuple[int, ...]
    variants: tuple[tuple[str, bool, bool], ...]  # (precision, compile, channels_last; the last only acts on CUDA)
    upscale_precision: str
    upscale_input: int  # LR side, untiled
    upscale_tiled_input: int  # LR side of the tiled run
    upscale_tile: int
    repeats: int
    warmup: int


# bf16 without channels_last: the layout is kept only where it measures faster (it was slower for CPU training).
FULL = Sizes("cuda", PAPER_NETWORK, 400, 256, 48, (12, 48),
             (("fp32", False, True), ("bf16", False, True), ("bf16", False, False), ("bf16", True, True)),
             "fp16", 512, 1024, 512, 5, 2)
DRY = Sizes("cpu", (8, 1, 4), 64, 32, 2, (2,), (("fp32", False, True), ("bf16", False, True), ("bf16", False, False)),
            "fp32", 32, 48, 16, 2, 1)


def degrade_share(s: Sizes, dev: torch.device) -> dict:
    bench = make_bench_step("net", dev, "bf16", s.share_batch, patch=s.patch, gt=s.gt, network=s.network)
    times = alternate({"pair": bench.pair_only, "step": bench.run}, s.repeats, dev, s.warmup)
    pair_ms, step_ms = times["pair"]["median_ms"], times["step"]["median_ms"]
    return {"batch": s.share_batch, "patch": s.patch, "gt_size": s.gt, "degrade_crop_pool": times["pair"],
            "bf16_step": times["step"], "degrade_images_per_s": round(1000 * s.share_batch / pair_ms, 2),
            "share_of_step": round(pair_ms / step_ms, 4), "goal": "share_of_step < 0.10"}


def train_steps(s: Sizes, dev: torch.device, deadline: float) -> dict:
    out: dict = {}
    for precision, compiled, channels_last in s.variants:  # the most important variants first (time budget)
        for batch in s.step_batches:
            name = f"{precision}{'+compile' if compiled else ''}{'' if channels_last else '+contiguous'}_b{batch}"
            if time.monotonic() > deadline:
                out[name] = {"skipped": "time budget spent"}
                continue
            bench = make_bench_step("net", dev, precision, batch, patch=s.patch, gt=s.gt, network=s.network,
                                    compile=compiled, channels_last=channels_last)
            start = time.perf_counter()
            for _ in range(s.warmup + (2 if compiled else 0)):  # compile happens in the first calls
                bench.run()
            warm_s = time.perf_counter() - start
            ms = sorted(timed_ms(bench.run, dev) for _ in range(s.repeats))[s.repeats // 2]
            out[name] = {"precision": precision, "compile": compiled, "channels_last": bench.step.channels_last,
                         "batch": batch, "median_ms": round(ms, 1),
                         "it_per_s": round(1000 / ms, 3), "samples_per_s": round(1000 * batch / ms, 2),
                         "warmup_s": round(warm_s, 1), "n": s.repeats}
            del bench
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    for batch in s.step_batches:
        fp32, bf16 = out.get(f"fp32_b{batch}", {}), out.get(f"bf16_b{batch}", {})
        if "median_ms" in fp32 and "median_ms" in bf16:
            out[f"bf16_speedup_b{batch}"] = round(fp32["median_ms"] / bf16["median_ms"], 2)
        contiguous = out.get(f"bf16+contiguous_b{batch}", {})
        if "median_ms" in bf16 and "median_ms" in contiguous:
            out[f"channels_last_speedup_b{batch}"] = round(contiguous["median_ms"] / bf16["median_ms"], 2)
    out["goal"] = "bf16_speedup >= 1.5; anchor 20-23 samples/s per V100 (official Real-ESRNet, batch 48 on 4 GPUs)"
    return out


def upscale(s: Sizes, dev: torch.device) -> dict:
    num_feat, num_block, num_grow_ch = s.network
    model = RRDBNet(3, 3, 4, num_feat, num_block, num_grow_ch, generator=torch.Generator().manual_seed(0))
    model = model.eval().requires_grad_(False).to(dev, memory_format=torch.channels_last)
    model = model.half() if s.upscale_precision == "fp16" else model
    g = torch.Generator().manual_seed(1)
    out = {"precision": s.upscale_precision}
    for name, side, tile in (("untiled", s.upscale_input, 0), (f"tile{s.upscale_tile}", s.upscale_tiled_input,
                                                                s.upscale_tile)):
        image = torch.rand(1, 3, side, side, generator=g)
        times = alternate({name: lambda im=image, t=tile: upscale_tensor(model, im, t, 0 if not t else 16,
                                                                          log=lambda *_: None)},
                          s.repeats, dev, s.warmup)[name]
        megapixels = side * side / 1e6
        out[name] = {"input": f"{side}x{side}", "tile": tile, **times,
                     "ms_per_input_mp": round(times["median_ms"] / megapixels, 1),
                     "ms_per_output_mp": round(times["median_ms"] / (16 * megapixels), 2)}
    return out


def read_junit(path: Path) -> dict | None:
    """Counts from a junit XML pytest wrote (our own file), with the failing test names."""
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")} | {"failed": failed}


def summary_markdown(report: dict) -> str:
    lines = [f"# GPU check ({'DRY RUN on CPU, tiny sizes: numbers mean nothing' if report['dry_run'] else 'CUDA'})",
             "", "- machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()),
             f"- torch {report['torch']}, {report['date_utc']}", ""]
    for name, counts in report["tests"].items():
        if counts is None:
            lines.append(f"- tests `{name}`: not run")
            continue
        failed = f" ({', '.join(counts['failed'])})" if counts["failed"] else ""
        lines.append(f"- tests `{name}`: {counts['tests']} run, {counts['failures'] + counts['errors']} failed"
                     f"{failed}, {counts['skipped']} skipped")
    share = report.get("degrade_share", {"error": "not run"})
    if "error" not in share:
        lines += ["", f"Degradation (batch {share['batch']} × {share['patch']}²): "
                  f"{share['degrade_crop_pool']['median_ms']} ms, {share['degrade_images_per_s']} images/s; "
                  f"{100 * share['share_of_step']:.1f} % of one bf16 step ({share['bf16_step']['median_ms']} ms)."]
    steps = report.get("train_step", {"error": "not run"})
    if "error" not in steps:
        lines += ["", "| net stage | batch | ms/step | it/s | samples/s |", "|---|---|---|---|---|"]
        for name, row in steps.items():
            if isinstance(row, dict) and "median_ms" in row:
                lines.append(f"| {name.rsplit('_b', 1)[0]} | {row['batch']} | {row['median_ms']} | {row['it_per_s']} "
                             f"| {row['samples_per_s']} |")
            elif isinstance(row, dict):
                lines.append(f"| {name} | | skipped: {row['skipped']} | | |")
        lines += [f"- {k.rsplit('_b', 1)[0].replace('_', ' ')} at batch {k.rsplit('_b', 1)[1]}: {steps[k]}x"
                  for k in steps if "_speedup_b" in k]
    up = report.get("upscale", {"error": "not run"})
    if "error" not in up:
        lines += ["", f"Upscale ({up['precision']}): " + "; ".join(
            f"{k} {v['input']}: {v['ms_per_input_mp']} ms per input MP ({v['ms_per_output_mp']} per output MP)"
            for k, v in up.items() if isinstance(v, dict))]
    errors = [f"- {k}: {v['error']}" for k, v in report.items() if isinstance(v, dict) and "error" in v]
    return "\n".join(lines + (["", "## Errors", *errors] if errors else [])) + "\n"


def _write(report: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--budget-s", type=float, default=330, help="skip later train-step variants after this")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the dry run)")
    args = parser.parse_args()
    sizes = DRY if args.dry_run else FULL
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run to exercise the kit on CPU", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    dev = torch.device(sizes.device)
    deadline = time.monotonic() + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "gpu_check", "dry_run": args.dry_run, "torch": torch.__version__,
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": describe(dev),
              "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
              "tests": {name: read_junit(args.out / f"tests_{name}.xml") for name in ("cuda", "oom")}}
    for name, run in (("degrade_share", lambda: degrade_share(sizes, dev)),
                      ("train_step", lambda: train_steps(sizes, dev, deadline)),
                      ("upscale", lambda: upscale(sizes, dev))):
        try:
            report[name] = run()
        except Exception as error:  # noqa: BLE001 - one failing section must not hide the others' numbers
            report[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        _write(report, args.out)  # after every section: a run stopped by the script's timeout keeps what it had
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(report, args.out)
    print(summary_markdown(report))
    return 1 if any(isinstance(v, dict) and "error" in v for v in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
