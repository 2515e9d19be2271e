"""The human-readable parts of an ``evaluate`` report: the Markdown table and the comparison sheet."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["markdown_table", "comparison_sheet", "pick_crop"]

_METRICS = (("niqe", "NIQE ↓", min, 3), ("psnr", "PSNR (Y) ↑", max, 2), ("ssim", "SSIM (Y) ↑", max, 4))


def markdown_table(sets: dict, methods: list[str], has_gt: bool) -> str:
    """One table per metric: methods × sets of means, best value of each set in bold, image counts in a note."""
    names = list(sets)
    lines: list[str] = []
    for key, title, best_of, digits in _METRICS:
        if key != "niqe" and not has_gt:
            continue
        lines += [f"**{title}** (mean over the images of each set)", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        best = {}
        for name in names:
            values = [sets[name]["mean"][m][key] for m in methods if sets[name]["mean"][m][key] is not None]
            best[name] = best_of(values) if values else None
        for method in methods:
            cells = []
            for name in names:
                value = sets[name]["mean"][method][key]
                text = "n/a" if value is None else f"{value:.{digits}f}"
                cells.append(f"**{text}**" if value is not None and value == best[name] else text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        counts = ", ".join(f"{name}: {sets[name]['mean'][methods[0]][key + '_count']}/{len(sets[name]['images'])}"
                           for name in names)
        lines += ["", f"Images scored ({methods[0]}): {counts}.", ""]
    return "\n".join(lines)


def pick_crop(lq_rgb: np.ndarray, scale: int, crop: int) -> tuple[int, int, int]:
    """(y, x, side) in output pixels of the most detailed square: highest mean gradient magnitude in the LR.

    Side = ``crop`` (a multiple of ``scale``, at most the output's smaller side).
    """
    h, w = lq_rgb.shape[:2]
    side_lr = max(1, min(crop // scale, h, w))
    gray = cv2.cvtColor(lq_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    integral = cv2.integral(energy)
    sums = (integral[side_lr:, side_lr:] - integral[:-side_lr, side_lr:] - integral[side_lr:, :-side_lr]
            + integral[:-side_lr, :-side_lr])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y) * scale, int(x) * scale, side_lr * scale


def _label(text: str, width: int, height: int = 22, bold: bool = False) -> np.ndarray:
    band = np.full((height, width, 3), 255, np.uint8)
    scale = 0.5
    thickness = 2 if bold else 1
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    while tw > width - 4 and scale > 0.3:
        scale -= 0.05
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.putText(band, text, (max(2, (width - tw) // 2), (height + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), thickness, cv2.LINE_AA)
    return band


def comparison_sheet(rows_by_set: dict[str, list[dict]], methods: list[str], cell: int = 256) -> np.ndarray | None:
    """Rows of crops (input nearest-enlarged, then every method) with the method name and NIQE under each.

    Each crop is shown at ``cell`` × ``cell`` (nearest enlargement, so pixels stay visible).
    """
    columns = ["input (nearest)", *methods]
    gap = 4
    width = len(columns) * (cell + gap) + gap
    blocks = []
    for set_name, rows in rows_by_set.items():
        if not rows:
            continue
        blocks.append(_label(f"set {set_name}", width, 28, bold=True))
        for row in rows:
            tiles = [np.full((cell + 44, gap, 3), 255, np.uint8)]
            for column in columns:
                crop = row["crops"][column]
                zoom = max(1, cell // max(crop.shape[:2]))
                big = cv2.resize(crop, (crop.shape[1] * zoom, crop.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
                canvas = np.full((cell, cell, 3), 255, np.uint8)
                canvas[:min(cell, big.shape[0]), :min(cell, big.shape[1])] = big[:cell, :cell]
                name = row["name"] if len(row["name"]) <= 30 else "..." + row["name"][-27:]
                caption = [_label(column if column != "input (nearest)" else name, cell),
                           _label(row["labels"][column] or f"(nearest x{zoom})", cell)]
                tiles += [np.vstack([canvas, *caption]), np.full((cell + 44, gap, 3), 255, np.uint8)]
            blocks += [np.hstack(tiles), np.full((gap, width, 3), 255, np.uint8)]
    if not blocks:
        return None
    return np.vstack(blocks)
