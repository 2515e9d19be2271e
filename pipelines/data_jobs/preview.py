"""`preview-degradations`: a contact sheet of degraded samples with their parameters, plus the records.

Each input photo is turned into a GT patch the way the reference's dataset does (centre crop to
``gt_size``, reflect-101 padding when smaller), optionally USM-sharpened as training does, and
degraded ``count`` times. Every tile is degraded as its own batch of one, so the per-batch choices
(resize, noise type, order) vary between tiles as they do between training batches. The sheet shows
the GT, then each LQ enlarged with nearest neighbour (so artifacts stay visible) and captioned with
its main parameters; ``records.json`` holds the full per-sample records, replayable with
`degrade.apply`. The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

import degrade
from degrade import DegradationConfig
from pipelines.common import rgb_to_tensor, tensor_to_rgb, write_bytes_atomic
from shards.decode import ImageSkipped
from shards.decode import load_image as decode_source

__all__ = ["PreviewConfig", "PreviewResult", "load_rgb", "preview_degradations", "caption_lines"]

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class PreviewConfig:
    """What to preview and where to write it."""

    images: tuple[Path, ...] = ()  # empty: the bundled sample photos
    count: int = 4
    seed: int = 0
    gt_size: int = 400
    usm: bool = True
    show_stages: bool = False
    out: Path = Path("preview-out")
    degradation: DegradationConfig = DegradationConfig()


@dataclass(frozen=True)
class PreviewResult:
    sheet: Path
    records: Path
    tiles: int


def bundled_samples() -> tuple[Path, ...]:
    return tuple(sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def load_rgb(path: Path) -> np.ndarray:
    """Read an image as HWC RGB uint8 with the shards' decoder, so the preview shows the pixels training sees.

    One policy (``shards.decode``): EXIF orientation applied, 16-bit scaled down by rounding, gray
    expanded, alpha dropped, the declared size checked before decoding. Errors name the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return decode_source(path).rgb
    except ImageSkipped as error:
        raise ValueError(f"{path}: not a readable image ({error.kind}: {error.detail})") from error


def centre_crop_tensor(rgb: np.ndarray, size: int) -> torch.Tensor:
    """Centre crop to size×size, reflect-101 padding bottom/right when smaller; (1, 3, size, size) float."""
    h, w = rgb.shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        rgb = cv2.copyMakeBorder(rgb, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb_to_tensor(rgb[top : top + size, left : left + size])


def _stage_caption(k: int, stage: dict) -> str:
    blur = stage["blur"]
    if not blur["applied"]:
        kernel = "no blur"
    elif blur["family"] == "sinc":
        kernel = f"sinc k{blur['size']} w{blur['cutoff']:.2f}"
    elif "sigma_y" in blur:
        kernel = f"{blur['family']} k{blur['size']} s{blur['sigma_x']:.1f}/{blur['sigma_y']:.1f}"
    else:
        kernel = f"{blur['family']} k{blur['size']} s{blur['sigma_x']:.1f}"
    resize = stage["resize"]
    noise = stage["noise"]
    level = f"s{noise['sigma']:.1f}" if noise["type"] == "gaussian" else f"x{noise['scale']:.2f}"
    return (f"{k}: {kernel} | {resize['type']} {resize['scale']:.2f} {resize['mode']} | "
            f"{noise['type'][:5]} {level}{' gray' if noise['gray'] else ''} | {_compression_caption(stage)}")


def _compression_caption(stage: dict) -> str:
    """"q75" for the paper's JPEG 4:2:0, "q75 4:4:4" for other samplings, "webp q80", "h264 crf26"."""
    compression = stage.get("compression")
    if compression is None:
        return f"q{stage['jpeg_quality']:.0f}"
    if compression["type"] == "webp":
        return f"webp q{compression['quality']:.0f}"
    if "crf" in compression:
        return f"{compression['type']} crf{compression['crf']:.0f}"
    return f"q{stage['jpeg_quality']:.0f} {compression['sampling']}"


def caption_lines(record: dict) -> list[str]:
    """Short text lines naming the main parameters of one degradation record."""
    lines = [_stage_caption(k + 1, stage) for k, stage in enumerate(record["stages"])]
    final = record["final"]
    sinc = f"sinc k{final['sinc']['size']} w{final['sinc']['cutoff']:.2f}" if final["sinc"]["applied"] else "no sinc"
    order = "resize+sinc > jpeg" if final["order"] == "resize_sinc_then_jpeg" else "jpeg > resize+sinc"
    lines.append(f"final: {order} | {final['resize_mode']} | {sinc}")
    return lines


def _tile(image: np.ndarray, side: int, lines: list[str], title: str) -> np.ndarray:
    """Image enlarged (nearest) to side×side with a title and caption lines below."""
    scale = 0.32
    line_height = 13
    enlarged = cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)
    all_lines = [title, *lines]
    panel = np.full((line_height * len(all_lines) + 6, side, 3), 255, np.uint8)
    for i, text in enumerate(all_lines):
        cv2.putText(panel, text, (3, line_height * (i + 1)), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([enlarged, panel])


def _grid(rows: list[list[np.ndarray]], gap: int = 6) -> np.ndarray:
    height = max(t.shape[0] for row in rows for t in row)
    width = max(t.shape[1] for row in rows for t in row)
    columns = max(len(row) for row in rows)
    sheet = np.full((len(rows) * (height + gap) + gap, columns * (width + gap) + gap, 3), 240, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = gap + r * (height + gap), gap + c * (width + gap)
            sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return sheet


def _degrade_one(gt: torch.Tensor, cfg: DegradationConfig, generator: torch.Generator, want_trace: bool):
    params = degrade.sample_params(cfg, 1, generator)
    trace: list[tuple[str, torch.Tensor]] | None = [] if want_trace else None
    lq = degrade.apply(gt, params, cfg, trace=trace)
    return lq, params.records()[0], trace or []


def preview_degradations(cfg: PreviewConfig) -> PreviewResult:
    """Degrade every input ``count`` times and write ``preview.png`` and ``records.json`` to ``cfg.out``."""
    if cfg.count < 1:
        raise ValueError(f"count must be at least 1, got {cfg.count}")
    if cfg.gt_size < 1:
        raise ValueError(f"--gt-size must be a positive patch side (the reference degrades 400), got {cfg.gt_size}")
    if cfg.gt_size % cfg.degradation.scale:
        raise ValueError(f"gt_size {cfg.gt_size} must be divisible by the scale {cfg.degradation.scale}")
    paths = cfg.images or bundled_samples()
    photos = [(path, load_rgb(path)) for path in paths]  # every input is read before anything is written
    generator = torch.Generator().manual_seed(cfg.seed)
    side = cfg.gt_size
    rows: list[list[np.ndarray]] = []
    records = []
    for path, rgb in photos:
        gt = centre_crop_tensor(rgb, cfg.gt_size)
        source = degrade.usm_sharpen(gt) if cfg.usm else gt
        gt_tile = _tile(tensor_to_rgb(gt), side, [f"{rgb.shape[1]}x{rgb.shape[0]} source",
                                                  "USM-sharpened input" if cfg.usm else "unsharpened input"],
                        f"GT {path.name}")
        row = [gt_tile]
        for index in range(cfg.count):
            lq, record, trace = _degrade_one(source, cfg.degradation, generator, cfg.show_stages)
            records.append({"image": str(path), "index": index, "record": record})
            title = f"#{index} LQ {lq.shape[-1]}x{lq.shape[-2]} (x{cfg.degradation.scale}, nearest)"
            if cfg.show_stages:
                steps = [_tile(tensor_to_rgb(images), side, [f"{images.shape[-1]}x{images.shape[-2]}"],
                               f"#{index} {name}") for name, images in trace]
                rows.append([gt_tile, *steps[:-1], _tile(tensor_to_rgb(lq), side, caption_lines(record), title)])
            else:
                row.append(_tile(tensor_to_rgb(lq), side, caption_lines(record), title))
        if not cfg.show_stages:
            rows.append(row)
    sheet = _grid(rows)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("could not encode the contact sheet")
    document = {"seed": cfg.seed, "count": cfg.count, "gt_size": cfg.gt_size, "usm": cfg.usm,
                "config": cfg.degradation.to_dict(), "samples": records}
    cfg.out.mkdir(parents=True, exist_ok=True)
    sheet_path, records_path = cfg.out / "preview.png", cfg.out / "records.json"
    write_bytes_atomic(records_path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())
    write_bytes_atomic(sheet_path, png.tobytes())
    return PreviewResult(sheet_path, records_path, len(records))


