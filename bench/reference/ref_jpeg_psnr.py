"""PSNR of the reference DiffJPEG (BasicSR 1.4.2, differentiable=False) against OpenCV's libjpeg round trip.

Run ONLY with the separate reference env (see bench/reference/README.md); never imported by tests or the library:

    /opt/refenv/bin/python bench/reference/ref_jpeg_psnr.py

For each bundled photo (full size, RGB in [0,1], shape (1,3,H,W)) and quality q in {30,50,75,95}:
  * DiffJPEG(differentiable=False)(x, quality=torch.tensor([q], dtype=float32)) -> float output, never rounded;
  * cv2.imencode('.jpg', bgr_uint8, [IMWRITE_JPEG_QUALITY, q]) then cv2.imdecode (libjpeg, default 4:2:0).
PSNR = 10*log10(255^2 / MSE), float64, whole image, all three channels (B-psnr formula without border crop).
Reported: DiffJPEG vs OpenCV (unrounded and rounded to uint8), and each of them vs the original.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.utils import DiffJPEG
from ref_degrade import RESULTS, SAMPLE_DIR, SAMPLE_NAMES, env_info, write_result

QUALITIES = (30, 50, 75, 95)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10*log10(255^2/MSE) in float64 on [0,255] arrays (basicsr calculate_psnr, crop_border 0)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def diffjpeg_rgb(jpeger: DiffJPEG, rgb_u8: np.ndarray, quality: float) -> np.ndarray:
    """Reference DiffJPEG round trip; returns float RGB in [0,255] (not rounded, as in training)."""
    x = torch.from_numpy(rgb_u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    q = torch.tensor([quality], dtype=torch.float32)  # a fresh tensor: DiffJPEG overwrites it in place
    with torch.no_grad():
        out = jpeger(x, quality=q)
    return out[0].permute(1, 2, 0).numpy().astype(np.float64) * 255.0


def opencv_rgb(rgb_u8: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb_u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cv2.imencode failed at quality {quality}")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    jpeger = DiffJPEG(differentiable=False)
    rows = []
    for name in SAMPLE_NAMES:
        bgr = cv2.imread(str(SAMPLE_DIR / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{SAMPLE_DIR / name}: cannot be read as an image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for q in QUALITIES:
            d = diffjpeg_rgb(jpeger, rgb, float(q))
            c = opencv_rgb(rgb, q)
            rows.append({
                "image": name, "size_hw": list(rgb.shape[:2]), "quality": q,
                "psnr_diffjpeg_vs_opencv": psnr(d, c),
                "psnr_diffjpeg_rounded_vs_opencv": psnr(np.clip(np.round(d), 0, 255), c),
                "psnr_diffjpeg_vs_original": psnr(d, rgb),
                "psnr_opencv_vs_original": psnr(c, rgb),
                "max_abs_diff_diffjpeg_vs_opencv": float(np.max(np.abs(d - c))),
            })
    keys = [k for k in rows[0] if k.startswith(("psnr_", "max_abs"))]
    per_quality = {str(q): {k: statistics.fmean(r[k] for r in rows if r["quality"] == q) for k in keys}
                   for q in QUALITIES}
    return {
        "benchmark": "reference_jpeg_psnr",
        "what": "basicsr DiffJPEG(differentiable=False) vs OpenCV imencode/imdecode, full-size bundled photos",
        "env": env_info(args.threads),
        "opencv_jpeg_note": "cv2 default JPEG settings (4:2:0 chroma subsampling, libjpeg integer tables)",
        "mean_over_images_by_quality": per_quality,
        "rows": rows,
        "command": " ".join([sys.executable, *sys.argv]),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "reference_jpeg_psnr.json")
    args = p.parse_args(argv)
    write_result(run(args), args.out)


if __name__ == "__main__":
    main()
