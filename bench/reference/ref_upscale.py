"""Time the reference RealESRGANer (Real-ESRGAN 0.3.0 realesrgan/utils.py) inference on CPU, fp32.

Run ONLY with the separate reference env (see bench/reference/README.md); never imported by tests or the library:

    /opt/refenv/bin/python bench/reference/ref_upscale.py --repeats 2

The unmodified RealESRGANer class with basicsr RRDBNet(3,3,64,23,32) x4 (random weights, saved to a temporary .pth
under the key params_ema, which the class prefers; no internet for the released weights). Input: a 256x256 BGR
uint8 crop of samples/astronaut.png. Each timed run is one full enhance(img, outscale=4) call (pre-pad, model,
post-process, uint8 conversion), for:
  * untiled: tile=0, pre_pad=10 (class default);
  * tiled:   tile=128, tile_pad=10, pre_pad=10 (class default).
half=False (fp32: CPU). Warm-up: one enhance of a 64x64 crop per mode (same code paths, cheap; no per-shape cold
cost was seen beyond the first call), then --repeats timed runs at 256x256.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from realesrgan.utils import RealESRGANer
from ref_degrade import SAMPLE_DIR, add_run_args, env_info, stats, write_result

ANCHORS_S = {"untiled": 6.8, "tiled": 8.3}
MODES = {"untiled": {"tile": 0, "tile_pad": 10, "pre_pad": 10}, "tiled": {"tile": 128, "tile_pad": 10, "pre_pad": 10}}


def make_upsampler(weights: Path, mode: str) -> RealESRGANer:
    model = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    return RealESRGANer(scale=4, model_path=str(weights), model=model, half=False, device=torch.device("cpu"),
                        **MODES[mode])


def centre_crop(img, size: int):
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size].copy()


def time_enhance(upsampler: RealESRGANer, img) -> tuple[float, tuple]:
    with contextlib.redirect_stdout(io.StringIO()):  # tile_process prints one line per tile
        t0 = time.perf_counter()
        out, img_mode = upsampler.enhance(img, outscale=4)
        dt = time.perf_counter() - t0
    assert img_mode == "RGB" and out.shape == (img.shape[0] * 4, img.shape[1] * 4, 3), (img_mode, out.shape)
    return dt, out.shape


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2, help="timed enhance() calls per mode (median reported)")
    p.add_argument("--size", type=int, default=256, help="side of the square input crop")
    p.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    p.add_argument("--threads", type=int, default=2)
    add_run_args(p, "reference_upscale.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = env_info(args.threads)
    src = cv2.imread(str(SAMPLE_DIR / "astronaut.png"), cv2.IMREAD_COLOR)
    img, small = centre_crop(src, args.size), centre_crop(src, 64)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "rrdbnet_x4_random.pth"
        torch.manual_seed(0)
        net = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
        torch.save({"params_ema": net.state_dict()}, weights)
        for mode in args.modes:
            up = make_upsampler(weights, mode)
            with torch.no_grad():
                time_enhance(up, small)  # warm-up
                runs = [time_enhance(up, img) for _ in range(args.repeats)]
            results[mode] = dict(stats([r[0] for r in runs]), output_shape=list(runs[0][1]), **MODES[mode])
    env["loadavg_at_end"] = list(os.getloadavg())
    out = {
        "benchmark": "reference_upscale",
        "what": f"RealESRGANer.enhance, RRDBNet x4 random weights, {args.size}x{args.size} BGR uint8, fp32 CPU, "
                "outscale 4; seconds per call",
        "implementation": "realesrgan 0.3.0 RealESRGANer (pip install realesrgan --no-deps), unmodified",
        "contended": args.contended == "yes",
        "env": env,
        "config": {"size": args.size, "repeats": args.repeats, "warmup": "one 64x64 enhance per mode",
                   "threads": args.threads, "half": False, "image": "samples/astronaut.png centre crop"},
        "issue_anchors_s": ANCHORS_S,
        "seconds": results,
        "command": " ".join([sys.executable, *sys.argv]),
    }
    write_result(out, args.out)


if __name__ == "__main__":
    main()
