"""What a training run does after each validation: NIQE, the best checkpoint, curves.png and TensorBoard.

``ValidationTracker.run`` is called by the trainer (rank 0) at every validation:

1. PSNR/SSIM/NIQE of the EMA model on the fixed degraded set (``val_shards``, ``pipelines.training.validate``), and NIQE
   alone on the real LR images of ``val_lq`` (no GT), recorded in metrics.jsonl and in the grid's caption.
2. ``val_select`` (psnr / ssim / niqe / none): when the validation is the best so far by that metric, the EMA
   weights are exported as ``models/net_g_best.pth`` (official ``params``/``params_ema`` wrapper) and
   ``models/net_g_best.json`` records the metric, its value and the iteration. The best so far is re-read from
   that JSON, so it survives ``--resume``.
3. ``curves.png`` in the run folder: losses, learning rate and validation metrics against iteration, the best
   checkpoint marked (matplotlib; the feature says what to install when it is missing).
4. TensorBoard scalars under ``<run_dir>/tensorboard`` when the ``tensorboard`` package is installed.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from models.weights import export_generator
from pipelines.common import rgb_to_tensor, tensor_to_rgb, write_bytes_atomic
from pipelines.inference.quality import niqe, psnr, ssim
from pipelines.inference.upscale import IMAGE_SUFFIXES
from pipelines.training.metrics import MetricsWriter
from pipelines.training.validate import ValidationPair, save_grid, validate

__all__ = ["ValidationTracker", "read_lq_folder", "score_lq", "plot_curves", "SELECT_METRICS"]

SELECT_METRICS = ("psnr", "ssim", "niqe", "none")
_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "niqe": False}


def read_lq_folder(folder: str, limit: int) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) of the images of ``val_lq``; FileNotFoundError / ValueError naming the file."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"val_lq {folder}: no such folder (a folder of real LR images, scored by NIQE)")
    images = []
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]:
        image = cv2.imdecode(np.fromfile(file, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"val_lq: {file} is not an image OpenCV can decode; remove it or fix it")
        images.append((file.name, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    if not images:
        raise ValueError(f"val_lq {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _niqe_or_none(rgb_uint8: np.ndarray, device: torch.device) -> float | None:
    try:
        return float(niqe(rgb_to_tensor(rgb_uint8, device))[0])
    except ValueError:  # smaller than two 96x96 blocks, or flat: no NIQE for this image
        return None


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


@torch.no_grad()
def score_lq(model: nn.Module, images: list[tuple[str, np.ndarray]], device: torch.device) -> dict:
    """Mean NIQE of the model's outputs on real LR images (no GT), and how many could be scored."""
    was_training = model.training
    model.eval()
    values = []
    for _, rgb in images:
        values.append(_niqe_or_none(tensor_to_rgb(model(rgb_to_tensor(rgb, device))), device))
    model.train(was_training)
    return {"niqe": _mean(values), "niqe_count": sum(v is not None for v in values), "count": len(images)}


def plot_curves(records: list[dict], path: Path, best: dict | None) -> None:
    """curves.png: losses, LR and validation metrics against iteration; the best checkpoint as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "lr" in r]
    val = [r for r in records if "val" in r or "val_lq" in r]
    panels = [("losses", sorted({k for r in train for k in r if k.startswith("l_")})), ("learning rate", ["lr"]),
              ("PSNR (dB)", ["psnr"]), ("SSIM", ["ssim"]), ("NIQE (lower is better)", ["niqe", "lq_niqe"])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), sharex=True)
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if title in ("losses", "learning rate"):
                points = [(r["iter"], r[key]) for r in train if key in r]
            elif key == "lq_niqe":
                points = [(r["iter"], r["val_lq"]["niqe"]) for r in val if r.get("val_lq", {}).get("niqe") is not None]
            else:
                points = [(r["iter"], r["val"][key]) for r in val if r.get("val", {}).get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                label = {"niqe": "val set (synthetic LQ)", "lq_niqe": "val_lq (real LR)"}.get(key, key)
                ax.plot(xs, ys, marker="o" if title not in ("losses", "learning rate") else None, ms=3, label=label)
        if best is not None:
            ax.axvline(best["iter"], color="tab:red", ls="--", lw=1)
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        if not ax.lines:
            why = "no values (NIQE needs outputs of at least 192x96 px)" if title.startswith("NIQE") else "no values"
            ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", color="gray", fontsize=8)
        elif len(keys) > 1 or title.startswith("NIQE"):
            ax.legend(fontsize=7)
    if best is not None:
        axes[0].text(best["iter"], 1.02, f"best {best['metric']} {best['value']:.4g} @ {best['iter']}",
                     transform=axes[0].get_xaxis_transform(), color="tab:red", fontsize=8, ha="center")
    axes[-1].set_xlabel("iteration")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


class ValidationTracker:
    """Rank 0's validation: metrics, grid, best-checkpoint export, curves, TensorBoard."""

    def __init__(self, run_dir: Path, select: str, metrics: MetricsWriter, log: Callable[[str], None],
                 val_lq: str = "", val_lq_max: int = 16) -> None:
        if select not in SELECT_METRICS:
            raise ValueError(f"val_select must be one of {SELECT_METRICS}, got {select!r}")
        self.run_dir, self.select, self.metrics, self.log = run_dir, select, metrics, log
        self.lq_images = read_lq_folder(val_lq, val_lq_max) if val_lq else []
        self.best = self._read_best()
        self._tb = None
        self._tb_missing_said = self._plot_missing_said = False

    @property
    def enabled(self) -> bool:
        return bool(self.lq_images)

    def _read_best(self) -> dict | None:
        path = self.run_dir / "models" / "net_g_best.json"
        if not path.is_file():
            return None
        best = json.loads(path.read_text(encoding="utf-8"))
        return best if best.get("metric") == self.select else None  # another metric: start over

    def _is_better(self, value: float | None) -> bool:
        if self.select == "none" or value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        higher = _HIGHER_IS_BETTER[self.select]
        return value > self.best["value"] if higher else value < self.best["value"]

    def run(self, iteration: int, ema_model: nn.Module, net_g: nn.Module, pairs: list[ValidationPair], scale: int,
            device: torch.device) -> dict:
        record: dict = {"iter": iteration}
        if pairs:
            scores, images = validate(ema_model, pairs, scale, device)
            per_image = [_niqe_or_none(output, device) for _, output, _ in images]
            scores["niqe"] = _mean(per_image)
            scores["niqe_count"] = sum(v is not None for v in per_image)
            captions = [f"PSNR {psnr(out, gt, crop_border=scale):.2f}  SSIM {ssim(out, gt, crop_border=scale):.3f}"
                        f"  NIQE {'n/a' if n is None else f'{n:.2f}'}"
                        for (_, out, gt), n in zip(images, per_image, strict=True)]
            save_grid(images, self.run_dir / "val" / f"iter_{iteration:08d}.png", captions=captions)
            record["val"] = scores
            niqe_text = "n/a" if scores["niqe"] is None else f"{scores['niqe']:.3f}"
            self.log(f"validation at {iteration}: PSNR {scores['psnr']:.3f} dB, SSIM {scores['ssim']:.4f}, "
                     f"NIQE {niqe_text}")
        if self.lq_images:
            record["val_lq"] = score_lq(ema_model, self.lq_images, device)
            lq_niqe = record["val_lq"]["niqe"]
            self.log(f"val_lq at {iteration}: NIQE {'n/a' if lq_niqe is None else f'{lq_niqe:.3f}'} "
                     f"({record['val_lq']['niqe_count']}/{record['val_lq']['count']} images)")
        self._select(iteration, record, ema_model, net_g)
        self.metrics.write(record)
        self._tensorboard(iteration, record)
        self._curves()
        return record

    def _select(self, iteration: int, record: dict, ema_model: nn.Module, net_g: nn.Module) -> None:
        if self.select == "none":
            return
        # NIQE selects on the real LR set when there is one (the paper's criterion), else on the val set
        source = "val_lq" if self.select == "niqe" and record.get("val_lq", {}).get("niqe") is not None else "val"
        value = record.get(source, {}).get(self.select)
        if not self._is_better(value):
            return
        models = self.run_dir / "models"
        export_generator(models / "net_g_best.pth", net_g, ema_model.state_dict())
        self.best = {"metric": self.select, "value": float(value), "iter": iteration, "source": source}
        write_bytes_atomic(models / "net_g_best.json", (json.dumps(self.best, indent=1) + "\n").encode())
        record["best"] = self.best
        self.log(f"new best {self.select} {value:.4f} at {iteration}: {models / 'net_g_best.pth'}")

    def _writer(self):
        if self._tb is None and not self._tb_missing_said:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.log("TensorBoard logging is off: pip install -e \".[tensorboard]\" to enable it")
                self._tb_missing_said = True
                return None
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._tb

    def _tensorboard(self, iteration: int, record: dict) -> None:
        writer = self._writer()
        if writer is None:
            return
        for group in ("val", "val_lq"):
            for key, value in record.get(group, {}).items():
                if isinstance(value, float) and math.isfinite(value):
                    writer.add_scalar(f"{group}/{key}", value, iteration)
        writer.flush()

    def log_training(self, iteration: int, logs: dict) -> None:
        """Losses, LR and speed to TensorBoard (they are in metrics.jsonl too)."""
        writer = self._writer()
        if writer is not None:
            for key, value in logs.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(f"train/{key}", value, iteration)

    def _curves(self) -> None:
        try:
            records = [json.loads(line) for line in self.metrics.path.read_text(encoding="utf-8").splitlines() if line]
            plot_curves(records, self.run_dir / "curves.png", self.best)
        except ImportError:
            if not self._plot_missing_said:
                self.log("curves.png needs matplotlib: pip install -e \".[plots]\"")
                self._plot_missing_said = True
