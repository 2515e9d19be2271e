"""Evidence for `calibrate` with the full budget: three target sets with known degradations
(tests/pipelines/calibrate_targets.py), fitted against the other bundled photos as HR. Prints JSON
(stock and fitted distance, true and fitted ranges per set) and writes it with --out.

    python bench/calibrate.py [--budget 200] [--lq-size 64] [--sim-patches 48] [--start estimate|paper]
        [--out bench/results/calibrate.json]

With --start estimate (the default) the last stage is the LQ-size stage: its blur σ is in LQ pixels, its noise
at LQ size, so its ranges compare directly with the true ones; with --start paper "blur_stage1" is in HR pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.data_jobs.calibrate import CalibrateConfig  # noqa: E402
from pipelines.data_jobs.calibrate_report import run_calibrate  # noqa: E402
from tests.pipelines.calibrate_targets import TRUE_RANGES, hr_paths, make_target_set  # noqa: E402


def fitted_ranges(config_toml: Path) -> dict:
    from degrade import DegradationConfig

    cfg = DegradationConfig.load(config_toml)
    last = cfg.stages[-1]
    return {"noise": list(last.noise_range), "poisson": list(last.poisson_scale_range),
            "gaussian_noise_prob": last.gaussian_noise_prob, "gray_noise_prob": last.gray_noise_prob,
            "jpeg": list(last.jpeg_range), "blur_stage1": list(cfg.stages[0].blur_sigma),
            "blur_prob_stage1": cfg.stages[0].blur_prob, "resize_modes_stage1": list(cfg.stages[0].resize_modes),
            "blur_last_stage": list(last.blur_sigma), "blur_prob_last_stage": last.blur_prob,
            "final_sinc_prob": cfg.final_sinc_prob, "final_order_prob": cfg.final_order_prob}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--lq-size", type=int, default=64)
    parser.add_argument("--sim-patches", type=int, default=48)
    parser.add_argument("--max-patches", type=int, default=256)
    parser.add_argument("--sets", default="camera,messenger,old_scan")
    parser.add_argument("--start", choices=("estimate", "paper"), default="estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {"machine": {"load": os.getloadavg(), "cpus": os.cpu_count()},
               "args": vars(args) | {"out": str(args.out)}, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            folder = make_target_set(name, Path(tmp) / name)
            start = time.perf_counter()
            result = run_calibrate(CalibrateConfig(target=folder, hr=hr_paths(), out=Path(tmp) / f"{name}-out",
                                                   lq_size=args.lq_size, budget=args.budget,
                                                   sim_patches=args.sim_patches, max_patches=args.max_patches,
                                                   start=args.start, seed=args.seed, progress=False))
            report = json.loads((Path(tmp) / f"{name}-out" / "report.json").read_text())
            results["sets"][name] = {
                "true": TRUE_RANGES[name], "patches": result.patches, "seconds": round(time.perf_counter() - start, 1),
                "stock_distance": round(result.stock_distance, 4), "fitted_distance": round(result.fitted_distance, 4),
                "fitted": fitted_ranges(Path(tmp) / f"{name}-out" / "degradation.toml"),
                "features": {"stock": report["stock"]["features"], "fitted": report["fitted"]["features"]},
                "simulations": len(report["trace"]),
                **({"downscale": report["start"]["transfer"]["downscale"], "simplify": report["simplify"]}
                   if args.start == "estimate" else {}),
            }
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
