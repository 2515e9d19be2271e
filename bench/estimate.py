"""Accuracy (bias) tables of `degrade.estimate` on the bundled photos. Prints JSON; --out writes it.

noise: Gaussian colour noise σ added unclipped to each whole photo; error of `noise_sigma` against σ
and against √(σ² + σ₀²), σ₀ being the photo's own reading. jpeg: 64x64 tiles on the 8-grid, encoded
by OpenCV at quality q; detection rate and error of `jpeg_quality`. blur: Gaussian σ by OpenCV on the
whole photos; error of `blur_sigma` with each photo's own sharpness as s₀, and blind (default s₀).

    python bench/estimate.py [--out bench/results/estimate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from degrade import estimate  # noqa: E402
from degrade.jpeg import jpeg_compress  # noqa: E402
from degrade.noise import add_gaussian_noise  # noqa: E402
from tests.conftest import SAMPLE_FILES, load_sample_rgb, to_batch  # noqa: E402


def _r(x):
    return round(float(x), 2)


def noise_table(photos):
    own = [float(estimate.noise_sigma(to_batch(p))) for p in photos]
    rows = {}
    for sigma in (2, 5, 10, 20, 30):
        found = [float(estimate.noise_sigma(add_gaussian_noise(to_batch(p), sigma, False, torch.tensor([k]),
                                                               clip=False))) for k, p in enumerate(photos)]
        vs_added = [f - sigma for f in found]
        vs_total = [f - np.hypot(sigma, s0) for f, s0 in zip(found, own, strict=True)]
        rows[sigma] = {"bias_vs_added": _r(np.mean(vs_added)), "max_abs_vs_added": _r(np.max(np.abs(vs_added))),
                       "bias_vs_total": _r(np.mean(vs_total)), "max_abs_vs_total": _r(np.max(np.abs(vs_total)))}
    return {"own_sigma": [_r(s) for s in own], "rows": rows}


def jpeg_table(photos):
    tiles = torch.cat([to_batch(p)[..., i : i + 64, j : j + 64] for p in photos
                       for i in range(0, p.shape[0] - 63, 128) for j in range(0, p.shape[1] - 63, 128)])
    clean = estimate.jpeg_quality(tiles)
    rows = {"clean": {"jpeg_like": _r(clean.jpeg_like.float().mean())}}
    for q in (20, 30, 40, 50, 60, 70, 80, 90, 95):
        found = estimate.jpeg_quality(jpeg_compress(tiles, float(q), backend="opencv"))
        err = (found.quality - q)[found.jpeg_like].numpy()
        rows[q] = {"jpeg_like": _r(found.jpeg_like.float().mean()), "bias": _r(err.mean()) if err.size else None,
                   "max_abs": _r(np.abs(err).max()) if err.size else None,
                   "median_blockiness": _r(found.blockiness.median())}
    return {"tiles": int(tiles.shape[0]), "rows": rows}


def blur_table(photos):
    own = [float(estimate.sharpness(to_batch(p))) for p in photos]
    rows = {}
    for sigma in (0.5, 1.0, 1.5, 2.0, 3.0):
        blurred = [to_batch(np.clip(np.round(cv2.GaussianBlur(p.astype(np.float64), (0, 0), sigma)), 0, 255)
                            .astype(np.uint8)) for p in photos]
        rel = [float(estimate.blur_sigma(b, s0)) / sigma - 1 for b, s0 in zip(blurred, own, strict=True)]
        blind = [float(estimate.blur_sigma(b)) / sigma - 1 for b in blurred]
        rows[sigma] = {"bias_pct": _r(100 * np.mean(rel)), "max_abs_pct": _r(100 * np.max(np.abs(rel))),
                       "blind_bias_pct": _r(100 * np.mean(blind)), "blind_max_abs_pct": _r(100 * np.max(np.abs(blind)))}
    return {"own_sharpness": [_r(s) for s in own], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photos = [load_sample_rgb(p.name) for p in SAMPLE_FILES]
    result = {"photos": [p.name for p in SAMPLE_FILES], "load": os.getloadavg(), "noise": noise_table(photos),
              "jpeg": jpeg_table(photos), "blur": blur_table(photos)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
