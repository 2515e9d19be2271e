"""The `calibrate` job: measure, fit, and write degradation.toml, report.json and report.png atomically."""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import degrade
from degrade import DegradationConfig
from pipelines.common import write_bytes_atomic
from pipelines.data_jobs.calibrate import (
    CONTENT_QUANTILE,
    FEATURES,
    FITTED,
    CalibrateConfig,
    content_activity,
    fit,
    hr_crops,
    load_target_patches,
    measure,
)
from pipelines.data_jobs.calibrate_start import DRAW_SEED_STEP, LQ_FITTED, VALIDATION_DRAWS, fit_estimated

__all__ = ["CalibrateResult", "run_calibrate", "plot_report"]

_OUTPUTS = ("degradation.toml", "report.json", "report.png")


@dataclass(frozen=True)
class CalibrateResult:
    out: Path
    patches: int
    skipped: list[str]
    stock_distance: float | None
    fitted_distance: float | None
    summary: str  # what the command prints


def _jsonable(values: dict[str, np.ndarray]) -> dict[str, list]:
    return {k: [None if not np.isfinite(x) else round(float(x), 4) for x in v] for k, v in values.items()}


def _file_summary(files: list[dict]) -> dict:
    formats: dict[str, int] = {}
    for f in files:
        formats[f["format"]] = formats.get(f["format"], 0) + 1
    jpegs = [f for f in files if f["format"] == "jpeg"]
    summary: dict = {"formats": formats}
    if jpegs:
        qualities = [f["quality"] for f in jpegs]
        sub: dict[str, int] = {}
        for f in jpegs:
            sub[f["subsampling"]] = sub.get(f["subsampling"], 0) + 1
        summary["jpeg"] = {"quality_min": min(qualities), "quality_max": max(qualities), "subsampling": sub,
                           "max_table_error": max(f["table_error"] for f in jpegs)}
    webps = [f for f in files if f["format"] == "webp"]
    if webps:
        lossy = [f["quality"] for f in webps if not f["lossless"]]
        summary["webp"] = {"lossy": len(lossy), "lossless": len(webps) - len(lossy),
                           "quality_min": min(lossy, default=None), "quality_max": max(lossy, default=None),
                           "max_quant_error": max((f["quant_error"] for f in webps), default=None)}
    return summary


def _start_point(files: list[dict]) -> dict[str, float] | None:
    """The paper values with the JPEG range read exactly from the files' tables, when all targets are JPEGs."""
    if not files or any(f["format"] != "jpeg" for f in files):
        return None
    start = {k: b[2] for k, b in FITTED.items()}
    qualities = [f["quality"] for f in files]
    # The file's own compression is the last step: JPEG after the final resize (final_order_prob 1).
    start.update(jpeg_lo=float(max(10, min(qualities))), jpeg_hi=float(min(100, max(qualities))), final_order_prob=1.0)
    return start


def _describe(values: dict[str, np.ndarray]) -> str:
    rows = []
    for name in FEATURES:
        v = values[name][np.isfinite(values[name])]
        if v.size:
            q10, q50, q90 = np.quantile(v, [0.1, 0.5, 0.9])
            rows.append(f"  {name:<26} median {q50:8.3f}   10-90 % [{q10:.3f}, {q90:.3f}]")
    return "\n".join(rows)


def plot_report(target: dict[str, np.ndarray], stock: dict[str, np.ndarray], fitted: dict[str, np.ndarray],
                distances: dict[str, dict[str, float]]) -> bytes:
    """PNG bytes: per feature, overlaid histograms of target vs stock vs fitted, with the distances."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("report.png needs matplotlib: pip install -e \".[plots]\"") from error
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), dpi=100)
    for ax, name in zip(axes.ravel(), FEATURES, strict=True):
        series = [(target, "target", "black", 2.4), (stock, "stock", "tab:red", 1.6),
                  (fitted, "fitted", "tab:blue", 1.6)]
        finite = [s[0][name][np.isfinite(s[0][name])] for s in series]
        both = np.concatenate([f for f in finite if f.size]) if any(f.size for f in finite) else np.zeros(1)
        lo, hi = np.quantile(both, [0.0, 1.0])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for values, (_, label, colour, width) in zip(finite, series, strict=True):
            if values.size:
                d = distances.get(label, {}).get(name)
                text = label if d is None else f"{label} (W1/spread {d:.2f})"
                ax.hist(values, bins=bins, density=True, histtype="step", color=colour, linewidth=width, label=text)
        ax.set_title(name.replace("_", " "), fontsize=12)
        ax.legend(fontsize=9)
        ax.tick_params(labelsize=9)
    stock_d, fitted_d = distances.get("stock", {}), distances.get("fitted", {})
    title = "calibrate: target vs stock paper config vs fitted config"
    if stock_d and fitted_d:
        title += (f" — mean distance stock {np.mean(list(stock_d.values())):.3f}, "
                  f"fitted {np.mean(list(fitted_d.values())):.3f}")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _check_outputs(cfg: CalibrateConfig) -> None:
    existing = [n for n in _OUTPUTS if (cfg.out / n).exists()]
    if existing and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out / existing[0]} exists: pass --overwrite to replace it or choose another --out")


def run_calibrate(cfg: CalibrateConfig) -> CalibrateResult:
    """Measure the targets; unless measure_only, fit and write the three outputs."""
    _check_outputs(cfg)
    targets = load_target_patches(cfg.target, cfg.lq_size, cfg.max_patches, cfg.seed)
    count = targets.patches.shape[0]
    if count < cfg.min_patches:
        skipped = f"; skipped: {'; '.join(targets.skipped)}" if targets.skipped else ""
        raise ValueError(f"{cfg.target}: found {count} usable {cfg.lq_size}x{cfg.lq_size} patches in "
                         f"{len(targets.files)} readable images, need at least {cfg.min_patches} (add images, "
                         f"or lower --lq-size / --min-patches){skipped}")
    target = measure(targets.patches)
    report: dict = {"target": str(cfg.target), "lq_size": cfg.lq_size, "patches": count, "skipped": targets.skipped,
                    "files": targets.files, "file_summary": _file_summary(targets.files),
                    "per_patch": {"origin": [list(o) for o in targets.origin], **_jsonable(target)}}
    lines = [f"measured {count} patches of {cfg.lq_size}x{cfg.lq_size} from {len(targets.files)} images"
             + (f" ({len(targets.skipped)} skipped)" if targets.skipped else ""), _describe(target)]
    lines += [f"skipped {s}" for s in targets.skipped]
    if cfg.measure_only:
        write_bytes_atomic(cfg.out / "report.json", json.dumps(report, indent=1).encode())
        lines.append(f"wrote {cfg.out / 'report.json'}")
        return CalibrateResult(cfg.out, count, targets.skipped, None, None, "\n".join(lines))
    if importlib.util.find_spec("matplotlib") is None:  # fail before the search, not after it
        raise RuntimeError("calibrate writes report.png with matplotlib: pip install -e \".[plots]\" "
                           "(or use --measure-only)")
    base = DegradationConfig(scale=cfg.scale).with_order(cfg.order)
    # Scenes like the targets': HR crops flatter than nearly every target tile are passed over (hr_crops).
    min_activity = float(np.quantile(content_activity(targets.patches), CONTENT_QUANTILE))
    crops, content = hr_crops(cfg.hr, cfg.lq_size * cfg.scale, cfg.sim_patches, cfg.seed, min_activity, cfg.lq_size)
    hr = degrade.usm_sharpen(crops)
    report["hr_content"] = {**content, "quantile": CONTENT_QUANTILE}
    if cfg.start == "estimate":
        # further crop draws (other seeds, the same content gate): the downscale choice and the parsimony step
        draws = tuple(degrade.usm_sharpen(hr_crops(cfg.hr, cfg.lq_size * cfg.scale, cfg.sim_patches,
                                                   cfg.seed + DRAW_SEED_STEP * k, min_activity, cfg.lq_size)[0])
                      for k in range(1, VALIDATION_DRAWS + 1))
        result = fit_estimated(target, targets.files, hr, base, cfg.budget, cfg.seed, cfg.progress, draws)
        report["simplify"] = result["simplify"]
        fitted_names = sorted(LQ_FITTED)
        report["start"] = {"kind": "estimate", "downscale": result["downscale"], **result["start"]}
        report["compression_mixture"] = result["mixture"]  # None: not every file says how it was compressed
    else:
        result = fit(target, hr, base, cfg.budget, cfg.seed, _start_point(targets.files), cfg.progress)
        fitted_names = sorted(FITTED)
    report.update({
        "fitted_parameters": fitted_names, "seed": cfg.seed, "budget": cfg.budget, "sim_patches": cfg.sim_patches,
        "spread": result["spread"],
        "stock": {k: result["stock"][k] for k in ("values", "distance", "features")},
        "fitted": {k: result["fitted"][k] for k in ("values", "distance", "features")},
        "trace": result["trace"],
        "sim_per_patch": {"stock": _jsonable(result["stock"]["sim"]), "fitted": _jsonable(result["fitted"]["sim"])},
    })
    png = plot_report(target, result["stock"]["sim"], result["fitted"]["sim"],
                      {"stock": result["stock"]["features"], "fitted": result["fitted"]["features"]})
    write_bytes_atomic(cfg.out / "degradation.toml", result["config"].to_toml().encode())
    write_bytes_atomic(cfg.out / "report.json", json.dumps(report, indent=1).encode())
    write_bytes_atomic(cfg.out / "report.png", png)
    lines.append(f"distance to the targets: stock paper config {result['stock']['distance']:.3f}, "
                 f"fitted {result['fitted']['distance']:.3f} ({len(result['trace'])} simulations)")
    lines += [f"  {k:<26} stock {result['stock']['features'][k]:.3f}  fitted {result['fitted']['features'][k]:.3f}"
              for k in FEATURES]
    lines.append(f"wrote {cfg.out / 'degradation.toml'}, report.json, report.png")
    return CalibrateResult(cfg.out, count, targets.skipped, result["stock"]["distance"], result["fitted"]["distance"],
                           "\n".join(lines))
