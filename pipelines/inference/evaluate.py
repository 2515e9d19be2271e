"""``cli.py evaluate``: score methods (models, bicubic) on folders of LR photos, the paper's Table 1 way.

Each ``--lq`` folder is a test set (a column), each ``--model NAME=WEIGHTS`` and ``--bicubic`` a method (a row).
Model outputs come from the same in-memory inference as ``upscale`` (``upscale.enhance``: tiles, alpha,
gray, 16-bit); bicubic is MATLAB's ``imresize`` (the paper's bicubic). Every output gets NIQE
(``pipelines.inference.quality.niqe``); with ``--gt`` also PSNR and SSIM on the Y channel with ``crop_border = scale``
(BasicSR's test configs). Writes ``results.json``, ``results.csv``, ``table.md`` and ``comparison.png``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from pipelines.common import progress_bar, write_bytes_atomic
from pipelines.inference.enhance import TileState, build_model, enhance, merge_image, resolve_device, split_image
from pipelines.inference.evaluate_report import comparison_sheet, markdown_table, pick_crop
from pipelines.inference.quality import matlab_imresize, niqe, psnr, ssim
from pipelines.inference.tiling import default_overlap
from pipelines.inference.upscale import IMAGE_SUFFIXES, read_image

__all__ = ["EvaluateConfig", "EvaluateSummary", "evaluate", "parse_model_spec", "bicubic_upscale", "weights_checksum",
           "to_rgb_float"]

REPORT_FILES = ("results.json", "results.csv", "table.md", "comparison.png")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``NAME=WEIGHTS`` -> (name, weights); ValueError naming the option otherwise."""
    name, sep, weights = spec.partition("=")
    if not sep or not name.strip() or not weights.strip():
        raise ValueError(f"--model {spec!r}: expected NAME=WEIGHTS, e.g. --model x4plus=realesrgan-x4plus")
    return name.strip(), weights.strip()


@dataclass(frozen=True)
class EvaluateConfig:
    lq: tuple[Path, ...]
    out: Path
    models: tuple[tuple[str, str], ...] = ()  # (name, weights as upscale --weights takes them)
    bicubic: bool = False
    gt: tuple[Path, ...] = ()  # none, one for every set, or one per --lq in order
    scale: int = 4  # for bicubic when no model is given; otherwise the models' scale
    tile: int = 512
    device: str = "auto"
    comparison_images: int = 3  # images per set on comparison.png
    crop: int = 128  # side of the comparison crop, in output pixels
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.lq:
            raise ValueError("give at least one --lq folder")
        if not self.models and not self.bicubic:
            raise ValueError("nothing to evaluate: give --model NAME=WEIGHTS and/or --bicubic")
        names = [name for name, _ in self.models] + (["bicubic"] if self.bicubic else [])
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique, got {names} (bicubic is taken by --bicubic)")
        if len(self.gt) not in (0, 1, len(self.lq)):
            raise ValueError(f"--gt: give one folder for all sets or one per --lq ({len(self.lq)}), got {len(self.gt)}")
        for folder in (*self.lq, *self.gt):
            if not folder.is_dir():
                raise ValueError(f"{folder}: no such folder")
        if self.tile < 0 or self.comparison_images < 0 or self.crop < 16:
            raise ValueError("--tile and --comparison-images must be >= 0 and --crop >= 16")


@dataclass
class EvaluateSummary:
    out: Path
    table: str
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def weights_checksum(weights: str) -> str | None:
    """SHA-256 of the weight file(s) behind a ``--weights`` value (builtin: its ncnn .param + .bin)."""
    from models.ncnn import BUILTIN_MODELS, _package_models_dir
    if weights in BUILTIN_MODELS:
        folder = Path(str(_package_models_dir()))
        return _sha256([folder / f"{BUILTIN_MODELS[weights]}.param", folder / f"{BUILTIN_MODELS[weights]}.bin"])
    path = Path(weights)
    files = [path, path.with_suffix(".bin")] if path.suffix == ".param" else [path]
    return _sha256(files) if all(f.is_file() for f in files) else None


def bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic x``scale`` of a cv2 image (any kind ``upscale`` accepts), rounded to its dtype."""
    split = split_image(image)
    rgb = matlab_imresize(torch.from_numpy(np.ascontiguousarray(split.rgb.transpose(2, 0, 1))), scale)
    rgb = rgb.clamp(0, 1).permute(1, 2, 0).numpy()
    alpha = None
    if split.alpha is not None:
        alpha = matlab_imresize(torch.from_numpy(split.alpha)[None], scale)[0].clamp(0, 1).numpy()
    return merge_image(rgb, alpha, split.mode, split.dtype)


def to_rgb_float(image: np.ndarray) -> np.ndarray:
    """A cv2 image (gray/BGR/BGRA, 8/16-bit) -> HWC RGB float64 in [0, 1] (alpha dropped) for the metrics."""
    return split_image(image).rgb.astype(np.float64)  # float32 k/255, exactly what NIQE's reference sees


def _collect(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _gt_index(folder: Path | None) -> dict[str, Path]:
    return {} if folder is None else {p.stem: p for p in _collect(folder)}


def _set_names(folders: tuple[Path, ...]) -> list[str]:
    names: list[str] = []
    for folder in folders:
        base = folder.resolve().name or "set"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _score(output: np.ndarray, gt: np.ndarray | None, gt_error: str | None, scale: int,
           device: torch.device) -> dict:
    rgb = to_rgb_float(output)
    row: dict = {"niqe": None, "psnr": None, "ssim": None}
    try:
        tensor = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().to(device)
        row["niqe"] = float(niqe(tensor[None])[0])
    except ValueError as error:
        row["niqe_error"] = str(error)
    if gt_error:
        row["gt_error"] = gt_error
    elif gt is not None:
        gt_rgb = to_rgb_float(gt)
        if gt_rgb.shape != rgb.shape:
            row["gt_error"] = (f"size mismatch: output {rgb.shape[1]}x{rgb.shape[0]} vs GT "
                               f"{gt_rgb.shape[1]}x{gt_rgb.shape[0]}")
        else:
            a, b = np.round(rgb * 255.0), np.round(gt_rgb * 255.0)  # BasicSR scores 8-bit images
            row["psnr"] = psnr(a, b, crop_border=scale, y_channel=True)
            row["ssim"] = ssim(a, b, crop_border=scale, y_channel=True)
    return row


def _means(images: dict, methods: list[str]) -> dict:
    out = {}
    for method in methods:
        rows = [img["methods"][method] for img in images.values() if method in img["methods"]]
        entry = {}
        for metric in ("niqe", "psnr", "ssim"):
            values = [r[metric] for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
            entry[metric] = float(np.mean(values)) if values else None
            entry[f"{metric}_count"] = len(values)
        out[method] = entry
    return out


def _check_out(config: EvaluateConfig) -> None:
    existing = [name for name in REPORT_FILES if (config.out / name).exists()]
    if existing and not config.overwrite:
        raise FileExistsError(f"{config.out} already holds an evaluation ({', '.join(existing)}); "
                              "choose another --out or pass --overwrite")


def evaluate(config: EvaluateConfig, stream: TextIO | None = None) -> EvaluateSummary:
    """Run every method on every image of every set; write the report files; return the summary."""
    stream = sys.stderr if stream is None else stream
    _check_out(config)
    device = resolve_device(config.device, False)
    models, method_info = {}, {}
    for name, weights in config.models:
        model, description = build_model(weights, device)
        models[name] = model
        method_info[name] = {"kind": "model", "weights": weights, "description": description,
                             "sha256": weights_checksum(weights), "scale": int(model.scale)}
    scales = {info["scale"] for info in method_info.values()}
    if len(scales) > 1:
        raise ValueError(f"the models have different scales {sorted(scales)}; evaluate one scale at a time")
    scale = scales.pop() if scales else config.scale
    if config.bicubic:
        method_info["bicubic"] = {"kind": "bicubic", "description": "MATLAB imresize bicubic (antialiased)",
                                  "scale": scale}
    methods = list(method_info)
    set_names = _set_names(config.lq)
    gts = [config.gt[0] if len(config.gt) == 1 else config.gt[i] if config.gt else None
           for i in range(len(config.lq))]
    jobs = [(s, path) for s, folder in enumerate(config.lq) for path in _collect(folder)]
    if not jobs:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, config.lq))}")
    states = {name: TileState(config.tile, default_overlap(model, config.tile)) for name, model in models.items()}
    for name, state in states.items():
        method_info[name]["tile_overlap"] = state.overlap
    sets = {name: {"path": str(folder), "gt": str(gts[i]) if gts[i] else None, "images": {}}
            for i, (name, folder) in enumerate(zip(set_names, config.lq, strict=True))}
    gt_index = [_gt_index(g) for g in gts]
    skipped: list[dict] = []
    sheet_rows: dict[str, list] = {name: [] for name in set_names}
    started = time.perf_counter()
    bar = progress_bar(len(jobs) * len(methods), "evaluate", "output", enabled=config.progress, file=stream)
    for s, path in jobs:
        set_name = set_names[s]
        try:
            image = read_image(path)
            split_image(image)  # rejects unsupported kinds before any method runs
        except ValueError as error:
            skipped.append({"set": set_name, "file": str(path), "reason": str(error)})
            bar.write(f"skipped {path}: {error}")
            bar.update(len(methods))
            continue
        gt, gt_error = None, None
        if gts[s] is not None:
            gt_path = gt_index[s].get(path.stem)
            if gt_path is None:
                gt_error = f"no GT named {path.stem}.* in {gts[s]}"
            else:
                try:
                    gt = read_image(gt_path)
                except ValueError as error:
                    gt_error = str(error)
        entry = {"lq_size": list(image.shape[:2]), "methods": {}}
        outputs = {}
        for method in methods:
            bar.set_postfix_str(f"{set_name}/{path.name} {method}", refresh=False)
            try:
                if method in models:
                    output, _ = enhance(models[method], image, states[method], log=bar.write)
                else:
                    output = bicubic_upscale(image, scale)
            except (RuntimeError, ValueError) as error:
                entry["methods"][method] = {"niqe": None, "psnr": None, "ssim": None, "error": str(error)}
                bar.write(f"{method} failed on {path}: {error}")
            else:
                entry["methods"][method] = _score(output, gt, gt_error, scale, device)
                outputs[method] = output
            bar.update(1)
        sets[set_name]["images"][path.name] = entry
        if len(sheet_rows[set_name]) < config.comparison_images and len(outputs) == len(methods):
            sheet_rows[set_name].append(_sheet_row(path.name, image, outputs, entry, scale, config.crop))
    bar.close()
    for data in sets.values():
        data["mean"] = _means(data["images"], methods)
    settings = {"scale": scale, "tile": config.tile, "device": str(device), "crop_border": scale,
                "lq": [str(p) for p in config.lq], "gt": [str(p) for p in config.gt],
                "comparison_images": config.comparison_images, "comparison_crop": config.crop,
                "psnr_ssim": "Y channel of MATLAB YCbCr, 8-bit, crop_border = scale (BasicSR)",
                "niqe": "pipelines.inference.quality.niqe (BasicSR 1.4.2 calculate_niqe, Y channel, crop_border 0)",
                "torch": torch.__version__}
    report = {"settings": settings, "methods": method_info, "sets": sets, "skipped": skipped,
              "seconds": time.perf_counter() - started}
    table = markdown_table(sets, methods, has_gt=any(gts))
    _write_report(config.out, report, table, comparison_sheet(sheet_rows, methods))
    return EvaluateSummary(config.out, table, skipped, report["seconds"])


def _sheet_row(name: str, image: np.ndarray, outputs: dict[str, np.ndarray], entry: dict, scale: int,
               crop: int) -> dict:
    lq_rgb = (to_rgb_float(image) * 255).round().astype(np.uint8)
    y, x, side = pick_crop(lq_rgb, scale, crop)
    crops = {"input (nearest)": np.repeat(np.repeat(lq_rgb[y // scale:(y + side) // scale,
                                                           x // scale:(x + side) // scale], scale, 0), scale, 1)}
    labels = {"input (nearest)": f"LR, nearest x{scale}"}
    for method, output in outputs.items():
        crops[method] = (to_rgb_float(output)[y:y + side, x:x + side] * 255).round().astype(np.uint8)
        value = entry["methods"][method].get("niqe")
        labels[method] = "NIQE n/a" if value is None else f"NIQE {value:.2f}"
    return {"name": name, "crops": crops, "labels": labels}


def _write_report(out: Path, report: dict, table: str, sheet: np.ndarray | None) -> None:
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "results.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["set", "image", "method", "niqe", "psnr", "ssim", "note"])
    for set_name, data in report["sets"].items():
        for image, entry in data["images"].items():
            for method, row in entry["methods"].items():
                note = "; ".join(str(row[k]) for k in ("error", "niqe_error", "gt_error") if row.get(k))
                writer.writerow([set_name, image, method, *(("" if row.get(k) is None else f"{row[k]:.6f}")
                                                            for k in ("niqe", "psnr", "ssim")), note])
    for item in report["skipped"]:
        writer.writerow([item["set"], Path(item["file"]).name, "", "", "", "", f"skipped: {item['reason']}"])
    write_bytes_atomic(out / "results.csv", buffer.getvalue().encode())
    write_bytes_atomic(out / "table.md", table.encode())
    if sheet is not None:
        ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        if ok:
            write_bytes_atomic(out / "comparison.png", data.tobytes())

