"""Benchmark `cli.py upscale` per backend and precision, side by side with the reference RealESRGANer.

Prints JSON. Two parts (`bench/upscale.py --backends` runs this script too):

* timing (default): RRDBNet x4, 23 blocks, random weights (seeded), on a --size crop of samples/astronaut.png,
  one full `pipelines.inference.enhance.enhance` call per run (uint8 in -> uint8 out, tile 0, pre_pad 10 = the work of
  the reference's untiled `enhance`, which pre-pads by 10). Variants: torch fp32 (oneDNN), NNPACK fp32, torch bf16
  autocast, onnxruntime fp32, OpenVINO fp32 and OpenVINO bf16 (skipped with the reason where the CPU has no bf16
  hardware), each through `pipelines.inference.backends.wrap_model`, plus bench/reference/ref_upscale.py in its own env.
  Every variant is warmed up at the timed size; per round each runs once, the order rotating, and the reference
  runs twice in a fresh process (the faster, warm run is kept). --clock process: CPU seconds of the
  process (all its threads), the measure least disturbed by other jobs on a shared machine with --threads 1.
* --errors: the released realesrgan-x4plus weights on a --error-size centre crop of every bundled photo, untiled:
  each variant's output against torch fp32 in 1/255 levels (max, 99.9th percentile, mean) and the PSNR of that
  difference rounded to whole levels.

    python bench/upscale_backends.py --threads 1 --size 96 --rounds 3 --reference-python /opt/refenv/bin/python \
        --out bench/results/upscale_backends.json
    python bench/upscale_backends.py --errors --error-size 128 --out bench/results/upscale_precision_x4plus.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.rrdbnet import RRDBNet  # noqa: E402
from pipelines.inference import backends  # noqa: E402
from pipelines.inference.enhance import TileState, build_model, enhance, prepare_model  # noqa: E402
from pipelines.inference.tiling import upscale_tensor  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("torch-fp32", "torch-bf16", "nnpack-fp32", "onnxruntime-fp32", "openvino-fp32", "openvino-bf16")
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[(h - size) // 2 : (h - size) // 2 + size, (w - size) // 2 : (w - size) // 2 + size])


def build_variants(model, names: list[str], threads: int) -> tuple[dict, dict[str, str]]:
    """name -> wrapped model, and name -> why it was skipped (missing extra, no bf16 hardware)."""
    built, skipped = {}, {}
    for name in names:
        backend, precision = name.split("-")
        try:
            backends.resolve_backend(backend, torch.device("cpu"), precision)
            built[name] = backends.wrap_model(model, backend, precision, threads)
        except (ValueError, ModuleNotFoundError) as error:
            skipped[name] = str(error)
    return built, skipped


def run_reference(python: str, args: argparse.Namespace) -> float:
    """One fresh process of bench/reference/ref_upscale.py (unmodified RealESRGANer), untiled, 2 runs: the faster."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref.json"
        script = REPO / "bench" / "reference" / "ref_upscale.py"
        argv = [str(script), "--repeats", "2", "--threads", str(args.threads), "--size", str(args.size),
                "--modes", "untiled", "--out", str(out)]
        clock = "process_time" if args.clock == "process" else "perf_counter"
        # The script times with time.perf_counter; --clock process swaps in the same clock as ours, unmodified.
        wrapper = (f"import runpy, sys, time; time.perf_counter = time.{clock}; "
                   f"sys.path.insert(0, {str(script.parent)!r}); sys.argv = {argv!r}; "
                   f"runpy.run_path({str(script)!r}, run_name='__main__')")
        subprocess.run([python, "-c", wrapper], check=True, stdout=subprocess.DEVNULL)
        seconds = json.loads(out.read_text())["seconds"]["untiled"]
        return seconds["min"]  # of its 2 runs after its 64x64 warm-up: the warm one, as ours are


def time_once(model, image: np.ndarray, clock) -> tuple[float, np.ndarray]:
    start = clock()
    out, _ = enhance(model, image, TileState(0, 0, 0, 10), log=lambda _m: None)
    return clock() - start, out


def timing(args: argparse.Namespace) -> dict:
    model = prepare_model(RRDBNet(num_block=23, generator=torch.Generator().manual_seed(0)), torch.device("cpu"))
    built, skipped = build_variants(model, args.variants, args.threads)
    image = centre_crop(cv2.imread(str(REPO / "samples" / "astronaut.png"), cv2.IMREAD_COLOR), args.size)
    clock = CLOCKS[args.clock]
    outputs = {name: time_once(variant, image, clock)[1] for name, variant in built.items()}  # warm-up
    runs: dict[str, list[float]] = {name: [] for name in built}
    reference: list[float] = []
    loads = []
    for r in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        order = list(built)[r % len(built):] + list(built)[: r % len(built)]
        if args.reference_python:
            reference.append(run_reference(args.reference_python, args))
        for name in order:
            seconds, outputs[name] = time_once(built[name], image, clock)
            runs[name].append(seconds)
    result = {"variants": {}, "skipped": skipped, "loadavg_1min_per_round": loads}
    base = statistics.median(runs["torch-fp32"]) if runs.get("torch-fp32") else None
    ref = statistics.median(reference) if reference else None
    for name, values in runs.items():
        median = statistics.median(values)
        diff = np.abs(outputs[name].astype(int) - outputs["torch-fp32"].astype(int)) if base else None
        result["variants"][name] = {
            "seconds_median": round(median, 3), "seconds_min": round(min(values), 3),
            "runs": [round(v, 3) for v in values],
            "s_per_megapixel_median": round(median / (args.size**2 / 1e6), 1),
            "speedup_vs_torch_fp32": round(base / median, 2) if base else None,
            "speedup_vs_reference": round(ref / median, 2) if ref else None,
            "uint8_vs_torch_fp32": {"max": int(diff.max()), "pixels_differing": int((diff > 0).sum())}
            if diff is not None else None}
    if reference:
        result["reference"] = {"seconds_median": round(ref, 3), "seconds_min": round(min(reference), 3),
                               "runs": [round(v, 3) for v in reference],
                               "what": "RealESRGANer.enhance untiled (tile 0, pre_pad 10), "
                                       "the faster of 2 runs per fresh process"}
    return result


def errors(args: argparse.Namespace) -> dict:
    """Each variant against torch fp32 with the released x4plus weights on every bundled photo (untiled)."""
    model, description = build_model(args.weights, torch.device("cpu"))
    built, skipped = build_variants(model, [v for v in args.variants if v != "torch-fp32"], args.threads)
    photos = sorted(p for p in (REPO / "samples").iterdir() if p.suffix in (".png", ".jpg"))
    diffs: dict[str, list[np.ndarray]] = {name: [] for name in built}
    per_photo: dict[str, dict] = {name: {} for name in built}
    for path in photos:
        bgr = centre_crop(cv2.imread(str(path), cv2.IMREAD_COLOR), args.error_size)
        x = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
        exact = upscale_tensor(model, x, 0, 0)[0].double() * 255
        for name, variant in built.items():
            diff = ((upscale_tensor(variant, x, 0, 0)[0].double() * 255) - exact).abs().flatten().numpy()
            diffs[name].append(diff)
            per_photo[name][path.name] = {"max": round(float(diff.max()), 2),
                                          "p999": round(float(np.quantile(diff, 0.999)), 2)}
            print(f"{name} {path.name}: {per_photo[name][path.name]}", file=sys.stderr)
    out = {"weights": description, "photos": [p.name for p in photos],
           "crop": f"centre {args.error_size}x{args.error_size}, untiled", "skipped": skipped, "variants": {}}
    for name, parts in diffs.items():
        diff = np.concatenate(parts)
        rounded_mse = float(np.mean(np.round(diff) ** 2))  # the difference in whole levels (not round(a) - round(b))
        out["variants"][name] = {
            "max_255": round(float(diff.max()), 4), "p999_255": round(float(np.quantile(diff, 0.999)), 2),
            "mean_255": round(float(diff.mean()), 4),
            "psnr_vs_fp32_db": round(10 * np.log10(255**2 / rounded_mse), 1) if rounded_mse else "inf",
            "per_photo": per_photo[name]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="process")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--reference-python", help="e.g. /opt/refenv/bin/python: run the reference alternately")
    parser.add_argument("--errors", action="store_true", help="x4plus error per variant instead of timing")
    parser.add_argument("--weights", default="realesrgan-x4plus")
    parser.add_argument("--error-size", type=int, default=128)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    report = {"benchmark": "upscale_backends" if not args.errors else "upscale_precision_errors",
              "cpu": str(caps.get("cpu_name", "")), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "amx_bf16": bool(caps.get("amx_bf16")), "avx512_bf16": bool(caps.get("avx512_bf16")),
              "native_bf16": backends.native_bf16_cpu(), "cpu_count": os.cpu_count(), "threads": args.threads,
              "clock": args.clock, "torch": torch.__version__, "versions": _runtime_versions(),
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "machine_shared": "yes: other jobs ran on the same cores (see loadavg)",
              "loadavg_at_start": list(os.getloadavg()), "command": " ".join(sys.argv)}
    if args.errors:
        report["errors"] = errors(args)
    else:
        report.update(image=f"astronaut.png centre {args.size}x{args.size}", tile="0 (untiled), pre_pad 10",
                      model="RRDBNet x4, 23 blocks, 64 features, random weights (seed 0)", **timing(args))
    report["loadavg_at_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def _runtime_versions() -> dict:
    versions = {}
    for name in ("onnxruntime", "openvino"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


if __name__ == "__main__":
    main()
