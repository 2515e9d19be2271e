"""`quickstart`: the whole toolkit on the bundled photos in a few minutes on a CPU.

A real run of the real pipeline with small numbers: shard the bundled photos (one held out), preview
the degradations, bake a fixed validation set from the held-out photo with `degrade`, train both stages
(fine-tuning the released x4plus weights when the optional package is installed, else a tiny model from
scratch), validate against bicubic, and upscale the held-out photo. Everything lands in one folder with a
`summary.md`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pipelines.common import rgb_to_tensor, write_image_atomic
from pipelines.data_jobs.pairs import PairConfig, make_pairs
from pipelines.data_jobs.preview import PreviewConfig, bundled_samples, preview_degradations
from pipelines.inference.enhance import TileState, build_model, enhance
from pipelines.inference.quality import niqe
from pipelines.training.metrics import psnr, ssim
from pipelines.training.train import train
from pipelines.training.train_config import load_train_config
from pipelines.training.validate import read_pairs, validate
from shards.crop import CropConfig
from shards.multiscale import MultiscaleConfig
from shards.prepare import ShardConfig, prepare_shards

__all__ = ["QuickstartConfig", "quickstart"]

MARKER = ".esrgan-kit-quickstart"


@dataclass(frozen=True)
class QuickstartConfig:
    out: Path = Path("quickstart-out")
    holdout: str = "rocket.jpg"
    net_iters: int = 20
    gan_iters: int = 10
    from_scratch: bool = False  # True: a tiny model from scratch even when the released weights are installed
    smallest: bool = False  # the test suite's settings: tiny everything, a crop of the held-out photo
    seed: int = 0


def _released_weights_available() -> bool:
    from models.ncnn import builtin_weights

    try:
        builtin_weights("realesrgan-x4plus")
    except ModuleNotFoundError:
        return False
    return True


def _vgg_setting() -> tuple[str, str]:
    """Real VGG19 weights when the user has them; otherwise the explicit random option, reported loudly."""
    from models.vgg import resolve_vgg19_weights

    try:
        return "", f"ImageNet VGG19 from {resolve_vgg19_weights(None)}"
    except FileNotFoundError:
        return "random", ("RANDOM VGG19 weights (torchvision's vgg19-dcbb9e9d.pth was not found; put it in "
                          "$TORCH_HOME/hub/checkpoints/ or set ESRGAN_KIT_VGG19_WEIGHTS for a real perceptual loss)")


def _bicubic(lq: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(lq, (lq.shape[1] * scale, lq.shape[0] * scale), interpolation=cv2.INTER_CUBIC)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    write_image_atomic(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _side_by_side(left: np.ndarray, right: np.ndarray, labels: tuple[str, str]) -> np.ndarray:
    panels = []
    for image, label in zip((left, right), labels, strict=True):
        panel = image.copy()
        cv2.putText(panel, label, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 3, cv2.LINE_AA)
        cv2.putText(panel, label, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(panel)
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1]])


class QuickstartInterrupted(RuntimeError):
    """Ctrl-C / SIGTERM during a training step: the run saved its checkpoint; the quickstart stops."""


def _holdout_niqe(bicubic_rgb: np.ndarray, model_rgb: np.ndarray) -> dict[str, float | None]:
    """NIQE of the x4 held-out photo by bicubic and by the model (None when it is too small for NIQE)."""
    scores: dict[str, float | None] = {}
    for name, rgb in (("bicubic", bicubic_rgb), ("model", model_rgb)):
        try:
            scores[name] = float(niqe(rgb_to_tensor(rgb))[0])
        except ValueError:
            scores[name] = None
    return scores


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _train_or_stop(config, log) -> None:
    result = train(config, log=log)
    if result.interrupted:
        raise QuickstartInterrupted(f"interrupted during {config.stage} training (checkpoint in {config.run_dir})")


def quickstart(cfg: QuickstartConfig, log=print) -> Path:
    """Run everything; returns the path of summary.md."""
    started = time.perf_counter()
    out = cfg.out.resolve()
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} exists and is not a quickstart folder: choose another --out")
        shutil.rmtree(out)  # a quickstart is a fresh demonstration, never a partial resume
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `python cli.py quickstart`; rerunning replaces this folder\n")
    photos_dir, holdout_dir = out / "photos" / "train", out / "photos" / "holdout"
    photos_dir.mkdir(parents=True)
    holdout_dir.mkdir(parents=True)
    samples = bundled_samples()
    holdout_path = next((p for p in samples if p.name == cfg.holdout), None)
    if holdout_path is None:
        names = [p.name for p in samples]
        raise FileNotFoundError(f"held-out photo {cfg.holdout} is not among the bundled samples {names}")
    for path in samples:
        shutil.copy2(path, (holdout_dir if path == holdout_path else photos_dir) / path.name)
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"[quickstart] {name} done in {timings[name]} s")

    patch = 96 if cfg.smallest else 128
    t0 = time.perf_counter()
    crop = CropConfig(crop_size=patch, step=patch if cfg.smallest else patch // 2, min_size=patch)
    no_multiscale = MultiscaleConfig(scales=(), shortest_edge=0)
    train_report = prepare_shards(ShardConfig(src=str(photos_dir), root=out, out=out / "shards" / "train",
                                              crop=crop, multiscale="none", variants=no_multiscale,
                                              shard_size=64, workers=1))
    prepare_shards(ShardConfig(src=str(holdout_dir), root=out, out=out / "shards" / "holdout",
                               crop=CropConfig(crop_size=patch, step=patch, min_size=patch), multiscale="none",
                               variants=no_multiscale, shard_size=64, workers=1))
    step("shard", t0)

    t0 = time.perf_counter()
    preview = preview_degradations(PreviewConfig(images=tuple(sorted(photos_dir.iterdir())), count=2 if cfg.smallest
                                                 else 3, seed=cfg.seed, gt_size=128 if cfg.smallest else 256,
                                                 out=out / "preview"))
    step("preview", t0)

    t0 = time.perf_counter()
    val_count = 2 if cfg.smallest else 6
    make_pairs(PairConfig(shards=str(out / "shards" / "holdout"), out=out / "val-pairs", seed=cfg.seed,
                          count=val_count, usm=True))
    step("validation set", t0)

    finetune = not cfg.from_scratch and not cfg.smallest and _released_weights_available()
    vgg, vgg_note = _vgg_setting()
    gt_size = 64
    # Overrides as data (dotted key -> typed value), never turned into TOML text and parsed back.
    common = {"data.shards": str(out / "shards" / "train"), "data.batch_size": 2, "data.patch_size": patch,
              "data.gt_size": gt_size, "data.num_workers": 0, "data.shuffle_buffer": 16, "queue_size": 4,
              "log_every": 5, "val_shards": str(out / "val-pairs"), "val_max_images": val_count, "seed": cfg.seed,
              "loss.perceptual_weights": vgg}
    if finetune:
        model_note = "fine-tuned from the released RealESRGAN_x4plus weights (23 blocks)"
        net_extra = {"init_from": "realesrgan-x4plus", "optim.lr_g": 1e-5, "ema_decay": 0.9}
    else:
        model_note = "a tiny RRDBNet (16 features, 2 blocks) trained from scratch"
        net_extra = {"network.num_feat": 16, "network.num_block": 2, "network.num_grow_ch": 8,
                     "network.disc_num_feat": 16, "optim.lr_g": 5e-4, "ema_decay": 0.9}
    net_iters, gan_iters = (2, 2) if cfg.smallest else (cfg.net_iters, cfg.gan_iters)
    t0 = time.perf_counter()
    net_cfg = load_train_config("net", values={**common, **net_extra, "total_iter": net_iters,
                                               "checkpoint_every": net_iters, "val_every": net_iters,
                                               "run_dir": str(out / "runs" / "net")})
    _train_or_stop(net_cfg, log)
    step("train net", t0)
    t0 = time.perf_counter()
    gan_extra = {k: v for k, v in net_extra.items() if k not in ("init_from", "optim.lr_g")}
    net_weights = out / "runs" / "net" / "models" / "net_g_latest.pth"
    gan_cfg = load_train_config("gan", values={**common, **gan_extra, "total_iter": gan_iters,
                                               "checkpoint_every": gan_iters, "val_every": gan_iters,
                                               "init_from": str(net_weights), "optim.lr_g": 1e-5 if finetune else 1e-4,
                                               "run_dir": str(out / "runs" / "gan")})
    _train_or_stop(gan_cfg, log)
    step("train gan", t0)

    t0 = time.perf_counter()
    final_weights = out / "runs" / "gan" / "models" / "net_g_latest.pth"
    model, model_desc = build_model(str(final_weights), torch.device("cpu"))
    pairs = read_pairs(str(out / "val-pairs"))
    scores, images = validate(model, pairs, 4, torch.device("cpu"))
    bicubic = {"psnr": float(np.mean([psnr(_bicubic(p.lq, 4), p.gt, 4) for p in pairs])),
               "ssim": float(np.mean([ssim(_bicubic(p.lq, 4), p.gt, 4) for p in pairs]))}
    grid_rows = [np.hstack([_bicubic(lq, 4), output, gt]) for lq, output, gt in images[:4]]
    _write_png(out / "validation_bicubic_model_gt.png", np.vstack(grid_rows))
    step("validate", t0)

    t0 = time.perf_counter()
    holdout_bgr = cv2.imread(str(holdout_path), cv2.IMREAD_COLOR)
    if cfg.smallest:
        holdout_bgr = holdout_bgr[:48, :64]
    upscaled_bgr, _ = enhance(model, holdout_bgr, TileState(tile=128, overlap=16), log=lambda *_: None)
    _write_png(out / f"{holdout_path.stem}_x4.png", cv2.cvtColor(upscaled_bgr, cv2.COLOR_BGR2RGB))
    bicubic_rgb = _bicubic(cv2.cvtColor(holdout_bgr, cv2.COLOR_BGR2RGB), 4)
    side = _side_by_side(bicubic_rgb, cv2.cvtColor(upscaled_bgr, cv2.COLOR_BGR2RGB), ("bicubic x4", "model x4"))
    _write_png(out / f"{holdout_path.stem}_bicubic_vs_model.png", side)
    step("upscale", t0)
    holdout_niqe = _holdout_niqe(bicubic_rgb, cv2.cvtColor(upscaled_bgr, cv2.COLOR_BGR2RGB))

    total = round(time.perf_counter() - started, 1)
    summary = out / "summary.md"
    lines = [
        "# esrgan-kit quickstart", "",
        f"Model: {model_note}; VGG19 for the perceptual loss: {vgg_note}.",
        f"Data: {train_report.manifest['totals']['samples']} training patches of {patch}×{patch} from "
        f"{len(samples) - 1} bundled photos; {holdout_path.name} held out for validation and upscaling.",
        f"Training: {net_iters} iterations of stage net, then {gan_iters} of stage gan (batch 2, GT crops "
        f"{gt_size}×{gt_size}); final model {model_desc}.", "",
        f"| on {len(pairs)} held-out degraded crops | PSNR (dB) | SSIM |", "|---|---|---|",
        f"| bicubic ×4 | {bicubic['psnr']:.2f} | {bicubic['ssim']:.4f} |",
        f"| model ×4 (EMA) | {scores['psnr']:.2f} | {scores['ssim']:.4f} |", "",
        f"NIQE (lower is better; the crops above are too small for it) of the held-out photo {holdout_path.name} "
        f"upscaled ×4: bicubic {_fmt(holdout_niqe['bicubic'])}, model {_fmt(holdout_niqe['model'])}.", "",
        "A handful of iterations shows the pipeline working, not a trained model: for real results train on "
        "DF2K+OST (README) or fine-tune the released weights for 100k+ iterations.", "",
        "Files:",
        f"- degradation preview: `{preview.sheet.relative_to(out)}` (records: `{preview.records.relative_to(out)}`)",
        "- validation grid (bicubic | model | GT): `validation_bicubic_model_gt.png`",
        f"- upscaled held-out photo: `{holdout_path.stem}_x4.png`, beside bicubic: "
        f"`{holdout_path.stem}_bicubic_vs_model.png`",
        "- shards: `shards/train/`, validation pairs: `val-pairs/`, runs: `runs/net/`, `runs/gan/` "
        "(checkpoints, `models/net_g_latest.pth`, `metrics.jsonl`, `val/`)", "",
        "Seconds per step: " + ", ".join(f"{k} {v}" for k, v in timings.items()) + f"; total {total}.", "",
    ]
    summary.write_text("\n".join(lines), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"model": model_note, "vgg": vgg_note, "bicubic": bicubic,
                                                  "model_scores": scores,
                                                  "holdout_niqe": holdout_niqe, "timings_s": timings, "total_s": total},
                                                 indent=1), encoding="utf-8")
    return summary
