"""How close our JPEG (and BasicSR's DiffJPEG, when installed) is to OpenCV's libjpeg, and how fast.

Run from the repo root with ``python bench/jpeg_vs_libjpeg.py [--threads N]``. It also runs from another venv,
e.g. one that has BasicSR, because the repo root is put on sys.path. It prints one JSON object:

* ``fidelity``: for each bundled photo (full size) and each quality in 30/50/75/95, the PSNR
  against ``cv2.imencode``/``cv2.imdecode`` and the largest difference in 8-bit levels. This is
  given for ``jpeg_compress`` (torch backend) and, if ``basicsr`` imports, for
  ``DiffJPEG(differentiable=False)``. A PSNR of ``null`` means bit-identical. The PSNR against
  the uncompressed input is given for context.
* ``summary``: those PSNRs averaged over the photos, per quality.
* ``timing_ms``: the median and minimum wall time per call for batches of 12x3x400x400 and
  12x3x100x100, one quality per sample from 30 to 95. Measured on CPU for each backend (and
  DiffJPEG), and on CUDA when a device is present.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from degrade.jpeg import jpeg_compress  # noqa: E402

QUALITIES = (30, 50, 75, 95)
SAMPLES = sorted(p for p in (REPO_ROOT / "samples").iterdir() if p.suffix.lower() in {".png", ".jpg"})

try:
    from basicsr.utils.diffjpeg import DiffJPEG
except ImportError:  # BasicSR is optional: only the comparison with the reference needs it
    DiffJPEG = None


def load(path: Path) -> torch.Tensor:
    """A photo as (1, 3, H, W) float32 RGB in [0, 1]."""
    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR in dB of two [0, 1] images; None when they are identical (infinite PSNR)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return None if mse == 0 else round(10 * math.log10(1 / mse), 3)


def compare(candidate: torch.Tensor, reference: torch.Tensor) -> dict[str, float | None]:
    diff = (candidate.double() - reference.double()).abs().max().item() * 255
    return {"psnr_db": psnr(candidate, reference), "max_abs_diff_levels": round(diff, 3)}


def reference_jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """BasicSR DiffJPEG on the same 8-bit input; it overwrites its quality tensor, hence a copy."""
    jpeger = DiffJPEG(differentiable=False).to(images.device)
    with torch.no_grad():
        return jpeger(images, quality=quality.clone().to(images.device)).clamp(0, 1)


def fidelity() -> list[dict]:
    rows = []
    for path in SAMPLES:
        images = load(path)
        for q in QUALITIES:
            opencv = jpeg_compress(images, q, backend="opencv")
            row = {"photo": path.name, "size": list(images.shape[-2:]), "quality": q,
                   "ours_vs_opencv": compare(jpeg_compress(images, q), opencv),
                   "opencv_vs_input_psnr_db": psnr(opencv, images)}
            if DiffJPEG is not None:
                row["diffjpeg_vs_opencv"] = compare(reference_jpeg(images, torch.tensor([float(q)])), opencv)
            rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    def mean(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else round(statistics.fmean(values), 3)

    out = {}
    for q in QUALITIES:
        sel = [r for r in rows if r["quality"] == q]
        out[str(q)] = {"ours_vs_opencv_psnr_db": mean([r["ours_vs_opencv"]["psnr_db"] for r in sel]),
                       "opencv_vs_input_psnr_db": mean([r["opencv_vs_input_psnr_db"] for r in sel])}
        if DiffJPEG is not None:
            out[str(q)]["diffjpeg_vs_opencv_psnr_db"] = mean([r["diffjpeg_vs_opencv"]["psnr_db"] for r in sel])
    return out


def time_ms(fn, device: torch.device, repeats: int) -> dict[str, float]:
    fn()  # warm-up: constants, allocator, CUDA kernels
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return {"median": round(statistics.median(times), 2), "min": round(min(times), 2)}


def timing() -> dict[str, dict[str, dict[str, float]]]:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    out = {}
    for size in (400, 100):
        gen = torch.Generator().manual_seed(size)
        images = torch.rand(12, 3, size, size, generator=gen)
        quality = torch.linspace(30, 95, 12)
        for device in devices:
            x, q = images.to(device), quality.to(device)
            cases = {"torch": lambda x=x, q=q: jpeg_compress(x, q)}
            if device.type == "cpu":
                cases["opencv"] = lambda x=x, q=q: jpeg_compress(x, q, backend="opencv")
            if DiffJPEG is not None:
                jpeger = DiffJPEG(differentiable=False).to(device)
                cases["diffjpeg"] = lambda x=x, q=q, j=jpeger: j(x, quality=q.clone())
            repeats = 5 if size == 400 else 15
            with torch.no_grad():
                out[f"12x3x{size}x{size}/{device.type}"] = {k: time_ms(f, device, repeats) for k, f in cases.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    if (threads := parser.parse_args().threads) is not None:
        torch.set_num_threads(threads)
    rows = fidelity()
    report = {
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "libjpeg": next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                         if line.strip().startswith("JPEG:")), "unknown"),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "basicsr_diffjpeg": DiffJPEG is not None,
        "summary": summarize(rows),
        "fidelity": rows,
        "timing_ms": timing(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
