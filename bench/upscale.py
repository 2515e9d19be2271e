"""Benchmark `cli.py upscale`: seconds per input megapixel, untiled and tiled, and how far tiles are from seam-free.

Prints JSON. Timing: RRDBNet x4, 23 blocks, random weights (seeded generator), on a 256x256 centre crop of
samples/astronaut.png (the crop bench/reference/ref_upscale.py times the reference's RealESRGANer on); each
run is one full `pipelines.inference.enhance.enhance` call (uint8 in -> uint8 out, the same work as the reference's
enhance). Warm-up: one 64x64 call per mode (as the reference script), then --repeats timed runs; median
and min are reported because other jobs share the CPU.

    python bench/upscale.py [--repeats 3] [--threads 2] [--overlaps 12 16] [--device cpu --device cuda]
    python bench/upscale.py --repeats 1 --rounds 3 --reference-python /opt/refenv/bin/python  # alternate with
        # bench/reference/ref_upscale.py, one run each per round, so both see the same CPU contention
    python bench/upscale.py --threads 1 --clock process --repeats 1 --rounds 2 --reference-python ...
        # CPU seconds on one thread: the comparison least disturbed by other jobs on a shared machine
    python bench/upscale.py --backend auto openvino torch --repeats 1 --rounds 3 --reference-python ...
        # several fp32 backends (auto: what `cli.py upscale` runs), alternating with each other and the reference
    python bench/upscale.py --seams --weights realesrgan-x4plus --seam-size 128   # tile-edge errors
    python bench/upscale.py --backends --threads 1 --size 96 --reference-python /opt/refenv/bin/python
        # per backend / precision (torch fp32/bf16, onnxruntime, OpenVINO) with the reference: upscale_backends.py

--seams measures, for --weights (default: the random model), (a) e(d): the largest output change, in 1/255,
at LR distance d from a one-sided cut of the input, and (b) tiled-vs-untiled max / 99.9th-percentile error
for our blended tiling at several overlaps and for the reference's crop-only tiling (tile_pad 10,
re-implemented here from its description: each tile's input extended by tile_pad, output cropped back).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from pipelines.inference.tiling import default_overlap, upscale_tensor  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REFERENCE_JSON = REPO / "bench" / "results" / "reference_upscale.json"
RANDOM_NETS = {  # --seams --weights NAME: seeded random nets (the benchmark's, and the tests' tiny ones)
    "random-x4-23": dict(scale=4, num_block=23),
    **{f"tiny-x{s}": dict(scale=s, num_feat=8, num_block=1, num_grow_ch=4) for s in (4, 2, 1)},
}
ANCHORS_S = {"untiled": 6.8, "tiled": 8.3}  # issue 5: the reference on a 2-core machine, 256x256


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[(h - size) // 2 : (h - size) // 2 + size, (w - size) // 2 : (w - size) // 2 + size])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": "perf_counter", "process": "process_time"}


def time_mode(model, image: np.ndarray, small: np.ndarray, tiling: tuple[int, int, int], repeats: int,
              device: torch.device, clock: str = "wall") -> tuple[list[float], np.ndarray]:
    now = getattr(time, CLOCKS[clock])
    enhance(model, small, TileState(*tiling), log=lambda _m: None)  # warm-up
    runs, out = [], None
    for _ in range(repeats):
        sync(device)
        start = now()
        out, _ = enhance(model, image, TileState(*tiling), log=lambda _m: None)
        sync(device)
        runs.append(now() - start)
    return runs, out


def load_model(device: torch.device, half: bool):
    return prepare_model(RRDBNet(num_block=23, generator=torch.Generator().manual_seed(0)), device, half)


def modes(args: argparse.Namespace, model) -> dict[str, tuple[int, int, int]]:
    """Mode name -> (tile, overlap, tile batch) for TileState."""
    overlaps = args.overlaps or [default_overlap(model, args.tile)]
    chosen = {"untiled": (0, 0, 0)} if "untiled" in args.modes else {}
    if "tiled" in args.modes:
        for batch in args.tile_batches:
            name = "" if args.tile_batches == [0] else f"_batch{batch or 'auto'}"
            chosen.update({f"tiled_overlap{ov}{name}": (args.tile, ov, batch) for ov in overlaps})
    return chosen


def summarize(runs: list[float], megapixels: float) -> dict:
    return {"seconds_median": round(statistics.median(runs), 3), "seconds_min": round(min(runs), 3),
            "runs": [round(r, 3) for r in runs],
            "s_per_megapixel_median": round(statistics.median(runs) / megapixels, 2),
            "s_per_megapixel_min": round(min(runs) / megapixels, 2)}


def timing(args: argparse.Namespace, device: torch.device, half: bool, rounds: int = 1,
           between_rounds=None) -> list[dict]:
    """Time every mode of every --backend (one result each); with ``rounds`` > 1 the backends and modes
    alternate, and ``between_rounds(r)`` runs before each round."""
    model = load_model(device, half)
    precision = "fp16" if half else "fp32"
    names = args.backend if device.type == "cpu" else ["torch"]
    variants = {}
    for name in names:  # auto resolves as `cli.py upscale` does; a backend asked twice runs once
        resolved = backends.resolve_backend(name, device, precision)
        variants.setdefault(resolved, backends.wrap_model(model, resolved, precision, args.threads))
    src = cv2.imread(str(REPO / "samples" / "astronaut.png"), cv2.IMREAD_COLOR)
    image, small = centre_crop(src, args.size), centre_crop(src, 64)
    chosen = modes(args, model)
    runs: dict[tuple[str, str], list[float]] = {(b, m): [] for b in variants for m in chosen}
    outputs: dict[tuple[str, str], np.ndarray] = {}
    for r in range(rounds):
        if between_rounds is not None:
            between_rounds(r)
        for backend, wrapped in variants.items():
            for mode, tiling in chosen.items():
                times, outputs[backend, mode] = time_mode(wrapped, image, small, tiling, args.repeats, device,
                                                          args.clock if device.type == "cpu" else "wall")
                runs[backend, mode] += times
    megapixels = args.size * args.size / 1e6
    results = []
    for backend in variants:
        result = {m: {"tile": t, "overlap": ov, "tile_batch": b or "auto", **summarize(runs[backend, m], megapixels)}
                  for m, (t, ov, b) in chosen.items()}
        for mode in (m for m in chosen if (backend, "untiled") in outputs and m != "untiled"):
            diff = np.abs(outputs[backend, mode].astype(int) - outputs[backend, "untiled"].astype(int))
            result[mode]["vs_untiled_uint8"] = {"max": int(diff.max()), "pixels_differing": int((diff > 0).sum())}
        for mode in (m for m in chosen if backend != "torch" and ("torch", m) in outputs):
            diff = np.abs(outputs[backend, mode].astype(int) - outputs["torch", mode].astype(int))
            result[mode]["vs_torch_uint8"] = {"max": int(diff.max()), "pixels_differing": int((diff > 0).sum())}
        results.append({"device": str(device), "half": half, "backend": backend, **result})
    return results


def run_reference(python: str, args: argparse.Namespace, store: dict[str, list[float]]) -> None:
    """One run of bench/reference/ref_upscale.py (the unmodified RealESRGANer) in its own environment."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ref.json"
        script = REPO / "bench" / "reference" / "ref_upscale.py"
        argv = [str(script), "--repeats", "1", "--threads", str(args.threads), "--size", str(args.size),
                "--modes", *args.modes, "--out", str(out)]
        # The script times with time.perf_counter; --clock process swaps in the same clock as ours, unmodified.
        wrapper = (f"import runpy, sys, time; time.perf_counter = time.{CLOCKS[args.clock]}; "
                   f"sys.path.insert(0, {str(script.parent)!r}); sys.argv = {argv!r}; "
                   f"runpy.run_path({str(script)!r}, run_name='__main__')")
        subprocess.run([python, "-c", wrapper], check=True, stdout=subprocess.DEVNULL)
        for mode, values in json.loads(out.read_text())["seconds"].items():
            store.setdefault(mode, []).append(values["median"])  # one timed run per round


def compare(ours: dict, reference: dict[str, dict], source: str) -> dict:
    """Speed-ups of ours over the reference: untiled vs untiled, each tiled mode vs the reference's tile 128."""
    out: dict = {"reference": source}
    for mode, row in ours.items():
        ref = reference.get("untiled" if mode == "untiled" else "tiled")
        if not isinstance(row, dict) or "seconds_median" not in row or ref is None:
            continue
        megapixels = row["seconds_median"] / row["s_per_megapixel_median"]
        out[mode] = {"reference_median_s": round(ref["median"], 3), "reference_min_s": round(ref["min"], 3),
                     "reference_runs": ref.get("runs"),
                     "reference_s_per_megapixel_median": round(ref["median"] / megapixels, 2),
                     "ours_median_s": row["seconds_median"], "ours_min_s": row["seconds_min"],
                     "speedup_median": round(ref["median"] / row["seconds_median"], 2),
                     "speedup_min": round(ref["min"] / row["seconds_min"], 2)}
    return out


def interleaved_reference(runs: dict[str, list[float]]) -> dict[str, dict]:
    return {m: {"median": statistics.median(v), "min": min(v), "runs": [round(x, 3) for x in v]}
            for m, v in runs.items()}


def stored_reference(args: argparse.Namespace) -> tuple[dict[str, dict], str] | None:
    """bench/results/reference_upscale.json when it measured the same size and tile."""
    if not REFERENCE_JSON.is_file():
        return None
    ref = json.loads(REFERENCE_JSON.read_text())
    if ref["config"]["size"] != args.size or ref["seconds"].get("tiled", {}).get("tile", args.tile) != args.tile:
        return None
    return ref["seconds"], f"{REFERENCE_JSON.relative_to(REPO)} (measured {ref['env']['date_utc']}, not alternated)"


# ---------------------------------------------------------------- seams


def crop_only_tiles(model, x: torch.Tensor, tile: int, pad: int) -> torch.Tensor:
    """The reference's tile_process as described in its spec (§6.1): pad, run, crop; no blending."""
    scale = model.scale
    _, c, h, w = x.shape
    out = torch.zeros(1, c, h * scale, w * scale)
    for y in range(0, h, tile):
        for xx in range(0, w, tile):
            y0, y1, x0, x1 = y, min(y + tile, h), xx, min(xx + tile, w)
            py0, py1, px0, px1 = max(y0 - pad, 0), min(y1 + pad, h), max(x0 - pad, 0), min(x1 + pad, w)
            with torch.inference_mode():
                t = model(x[..., py0:py1, px0:px1].contiguous(memory_format=torch.channels_last)).float()
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = t[
                ..., (y0 - py0) * scale : (y1 - py0) * scale, (x0 - px0) * scale : (x1 - px0) * scale]
    return out.clamp(0, 1)


def error_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    diff = (a - b).abs().flatten().double() * 255
    return {"max_255": round(diff.max().item(), 3), "p999_255": round(diff.quantile(0.999).item(), 3),
            "mean_255": round(diff.mean().item(), 4)}


def crop_only_stats(model, x: torch.Tensor, tile: int, untiled: torch.Tensor) -> dict | str:
    try:
        return error_stats(crop_only_tiles(model, x, tile, 10), untiled)
    except ValueError as error:  # x2 / x1 nets: the reference's padded tiles need not be multiples of 2 / 4
        return f"fails: {error}"


def seams(args: argparse.Namespace) -> dict:
    if args.weights in RANDOM_NETS:
        kwargs = RANDOM_NETS[args.weights]
        model = prepare_model(RRDBNet(**kwargs, generator=torch.Generator().manual_seed(0)), torch.device("cpu"))
        description = f"random RRDBNet {kwargs} (seed 0)"
    else:
        model, description = build_model(args.weights, torch.device("cpu"))
    size, scale = args.seam_size, model.scale
    bgr = centre_crop(cv2.imread(str(REPO / "samples" / "astronaut.png"), cv2.IMREAD_COLOR), size)
    x = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    untiled, _, _ = upscale_tensor(model, x, 0, 0)
    half = size // 2  # e(d): cut the input at the middle column, compare the kept half
    cut, _, _ = upscale_tensor(model, x[..., :half], 0, 0)
    per_col = (cut - untiled[..., : half * scale]).abs().amax(dim=(0, 1, 2)).reshape(half, scale).amax(1)
    profile = {int(half - 1 - j): round(float(e) * 255, 3) for j, e in enumerate(per_col.tolist())}
    tile = size // 2
    result = {"weights": description, "image": f"astronaut.png centre {size}x{size}", "tile": tile,
              "edge_error_255_by_lr_distance": {d: profile[d] for d in sorted(profile) if d < 16 or d % 8 == 0},
              "reference_crop_only_pad10": crop_only_stats(model, x, tile, untiled)}
    for overlap in args.seam_overlaps:
        tiled, _, _ = upscale_tensor(model, x, tile, overlap)
        result[f"blended_overlap_{overlap}"] = error_stats(tiled, untiled)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlaps", type=int, nargs="+",
                        help="tiled modes to time (default: the library's, 16 at tile 128)")
    parser.add_argument("--tile-batches", type=int, nargs="+", default=[0], help="windows per pass (0: auto)")
    parser.add_argument("--backend", nargs="+", default=["auto"], choices=backends.BACKENDS,
                        help="CPU backends to time, fp32 (auto: what `cli.py upscale` runs); they alternate per round")
    parser.add_argument("--reference-python", help="e.g. /opt/refenv/bin/python: run the reference alternately")
    parser.add_argument("--rounds", type=int, default=1, help="alternations with --reference-python")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="process: CPU seconds of this process (with --threads 1, insensitive to other jobs)")
    parser.add_argument("--modes", nargs="+", choices=("untiled", "tiled"), default=["untiled", "tiled"])
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    parser.add_argument("--seams", action="store_true", help="measure tile-edge errors instead of timing")
    parser.add_argument("--weights", default="random-x4-23",
                        help=f"--seams: a --weights value of cli.py upscale, or one of {sorted(RANDOM_NETS)}")
    parser.add_argument("--seam-size", type=int, default=128)
    parser.add_argument("--seam-overlaps", type=int, nargs="+", default=[8, 12, 16, 32, 64])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {"benchmark": "upscale", "torch": torch.__version__, "threads": args.threads, "clock": args.clock,
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "loadavg_at_start": list(os.getloadavg())}
    if args.seams:
        report["seams"] = seams(args)
    else:
        devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
        report.update(image=f"astronaut.png centre {args.size}x{args.size}", repeats=args.repeats,
                      model="RRDBNet x4, 23 blocks, 64 features, random weights", anchors_s=ANCHORS_S, results=[])
        reference: dict[str, list[float]] = {}
        for name in devices:
            interleave = name == "cpu" and args.reference_python is not None
            hook = (lambda _r: run_reference(args.reference_python, args, reference)) if interleave else None
            report["results"] += timing(args, torch.device(name), False, args.rounds if interleave else 1, hook)
            if name == "cuda":
                report["results"] += timing(args, torch.device(name), half=True)
        cpu = [r for r in report["results"] if r["device"] == "cpu"]
        stored = None if reference or not cpu else stored_reference(args)
        if reference:
            stored = (interleaved_reference(reference), "bench/reference/ref_upscale.py run by this script, "
                      f"alternating with ours ({args.rounds} rounds)")
        if stored is not None:
            report["vs_reference"] = {r["backend"]: compare(r, *stored) for r in cpu}
    report["loadavg_at_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    if "--backends" in sys.argv[1:]:  # the per-backend / per-precision benchmark has its own arguments
        sys.argv.remove("--backends")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from upscale_backends import main as backends_main

        backends_main()
    else:
        main()
