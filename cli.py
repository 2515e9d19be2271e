"""Command-line interface: thin click commands, each building a config and calling one library function.

Run `python cli.py --help` for the list of commands.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import click


def _user_errors() -> tuple[type[BaseException], ...]:
    """The project's error types: each says what is wrong and how to fix it, so no traceback is shown."""
    from pipelines.training.checkpoint import CheckpointError
    from pipelines.training.elastic import RankStalled
    from pipelines.training.train import TrainingDiverged
    from shards.prepare import ShardJobError
    from shards.stages import ShardReadError

    return (ValueError, OSError, ModuleNotFoundError, TrainingDiverged, ShardReadError, ShardJobError, CheckpointError,
            RankStalled)


class _Main(click.Group):
    """Project errors become one line on stderr and exit code 2 (``ESRGAN_KIT_TRACEBACK=1`` shows the traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except _user_errors() as error:
            if os.environ.get("ESRGAN_KIT_TRACEBACK"):
                raise
            from pipelines.training.elastic import RankStalled
            from pipelines.training.train import TrainingDiverged

            click.echo(f"error: {one_line(error)}", err=True)
            code = EXIT_DIVERGED if isinstance(error, TrainingDiverged) else EXIT_STALLED if isinstance(
                error, RankStalled) else EXIT_USER_ERROR
            leave(ctx, code)


# Exit codes, so a scheduler can tell what happened: 0 finished; 2 bad input or config (retrying will not
# help); 3 training diverged (NaN loss); 75 (EX_TEMPFAIL) interrupted by SIGTERM / Ctrl-C after writing a
# checkpoint: rerun with --resume; 1 a rank stalled past dist_timeout_s (a rerun may succeed).
EXIT_STALLED, EXIT_USER_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 75


def leave(ctx: click.Context, code: int) -> None:
    """Exit with ``code``. Under torchrun (WORLD_SIZE > 1) a rank leaves with ``os._exit`` once its output is
    flushed and its process group destroyed: C++ destructors of leftover threads at interpreter exit
    could otherwise abort a finished run with SIGABRT, which a scheduler reads as a failure."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    ctx.exit(code)


def one_line(error: BaseException) -> str:
    """``error`` as one line; an OSError names its file and, when the disk is full, the fix."""
    if isinstance(error, OSError) and not str(error).strip(" :"):
        text = type(error).__name__
    elif isinstance(error, OSError) and error.strerror and not isinstance(error, FileNotFoundError | FileExistsError):
        where = f" writing {error.filename}" if error.filename else ""
        text = f"{error.strerror}{where}"
        if error.errno == errno.ENOSPC:
            text += ": free disk space (or choose an output on another disk) and rerun; finished work is kept"
    else:
        text = str(error) or type(error).__name__
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: the last line is the message
        text = text.strip().splitlines()[-1]
    return " ".join(text.split())


def check_device(device: str) -> None:
    """A click error for a CUDA device on a machine without one (instead of a traceback inside torch)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter(f"{device}: no CUDA device is available on this machine; use --device cpu",
                                 param_hint="--device")


@click.group(cls=_Main,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110, "terminal_width": 110})
def main() -> None:
    """Train real-world blind super-resolution models the Real-ESRGAN way."""


@main.command()
@click.option("--src", default="DF2K+OST", show_default=True,
              help="'+'-joined named datasets (DIV2K, Flickr2K, DF2K, OST) or image folders.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("datasets"),
              show_default=True, help="Folder the named datasets are looked up in.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("shards"),
              show_default=True, help="Output folder for NAME-000000.tar shards and manifest.json.")
@click.option("--name", default="train", show_default=True, help="Shard file prefix.")
@click.option("--crop-size", default=400, show_default=True, help="Sub-image size.")
@click.option("--step", default=200, show_default=True, help="Sub-image stride.")
@click.option("--thresh", default=0, show_default=True, help="Leftover margin above which a border crop is added.")
@click.option("--min-size", default=256, show_default=True,
              help="Shorter sides are skipped; sides between this and --crop-size are kept whole.")
@click.option("--multiscale", type=click.Choice(["auto", "all", "none"]), default="auto", show_default=True,
              help="auto: multiscale copies for DIV2K/Flickr2K/DF2K only.")
@click.option("--no-multiscale", is_flag=True, help="Same as --multiscale none.")
@click.option("--scales", default="0.75,0.5,1/3", show_default=True, help="Multiscale factors (LANCZOS).")
@click.option("--shortest-edge", default=400, show_default=True,
              help="Also a copy with this shortest edge (0: none).")
@click.option("--keep-original/--no-original", default=True, show_default=True,
              help="Cut the full-size image too.")
@click.option("--shard-size", default=1000, show_default=True, help="Samples per shard.")
@click.option("--png-level", default=3, show_default=True, help="PNG zlib compression level 0-9.")
@click.option("--encoding", type=click.Choice(["png", "npy"]), default="png", show_default=True,
              help="Patch format: png (smallest) or npy (raw uint8: ~1.7x the bytes, several times faster to load).")
@click.option("--workers", default=0, show_default=True, help="Worker processes (0: all cores).")
@click.option("--max-pixels", type=int, metavar="N",
              help="Sources whose header declares more than N pixels are skipped as too_large, never decoded "
                   "[default: 268435456 = 16384x16384].")
@click.option("--overwrite", is_flag=True, help="Replace shards made with another configuration.")
@click.option("--verify", type=click.Choice(["sha256", "size"]), default="sha256", show_default=True,
              help="How finished shards are checked when resuming.")
@click.option("--scheduler", default="", metavar="tcp://HOST:PORT|local:N",
              help="Run on a Dask cluster (one task per shard; --out on shared storage). Needs .[dist].")
def shard(src: str, root: Path, out: Path, name: str, crop_size: int, step: int, thresh: int, min_size: int,
          multiscale: str, no_multiscale: bool, scales: str, shortest_edge: int, keep_original: bool,
          shard_size: int, png_level: int, encoding: str, workers: int, max_pixels: int, overwrite: bool,
          verify: str, scheduler: str) -> None:
    """Cut HR images into WebDataset tar shards of PNG patches (resumable; see README)."""
    from pipelines.data_jobs.shard_job import run_shard
    from shards.crop import CropConfig
    from shards.multiscale import MultiscaleConfig, parse_scales
    from shards.prepare import ShardConfig

    try:
        cfg = ShardConfig(
            src=src, root=root, out=out, name=name,
            crop=CropConfig(crop_size, step, thresh, min_size),
            multiscale="none" if no_multiscale else multiscale,
            variants=MultiscaleConfig(parse_scales(scales), shortest_edge, keep_original),
            shard_size=shard_size, png_level=png_level, workers=workers, overwrite=overwrite, verify=verify,
            encoding=encoding, scheduler=scheduler, **({} if max_pixels is None else {"max_pixels": max_pixels}),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    run_shard(cfg)


@main.command("preview-degradations")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--count", default=4, show_default=True, help="Degradations per image.")
@click.option("--seed", default=0, show_default=True, help="Seed of the parameter draws (same seed, same files).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Degradation config TOML (default: the paper's second-order model).")
@click.option("--order", type=int, help="Number of degradation stages (1, 2 = paper, 3, ...).")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), help="Target scale (default 4).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a degradation config key, e.g. --set stages.1.blur_prob=1.0 (repeatable).")
@click.option("--stages", "show_stages", is_flag=True, help="Also show every intermediate step of each degradation.")
@click.option("--gt-size", default=400, show_default=True, help="GT patch side (the reference degrades 400x400).")
@click.option("--usm/--no-usm", default=True, show_default=True, help="Sharpen the GT first, as training does.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("preview-out"),
              show_default=True, help="Output folder for preview.png and records.json.")
def preview_degradations(images, count, seed, config_path, order, scale, overrides, show_stages, gt_size, usm, out):
    """Contact sheet of degraded samples with their parameters, and their records."""
    from degrade.tomlio import ConfigError
    from pipelines.common import resolve_degradation_config
    from pipelines.data_jobs.preview import PreviewConfig, preview_degradations

    try:
        degradation = resolve_degradation_config(config_path, order=order, scale=int(scale) if scale else None,
                                                 overrides=overrides)
        result = preview_degradations(PreviewConfig(images=tuple(images), count=count, seed=seed, gt_size=gt_size,
                                                    usm=usm, show_stages=show_stages, out=out,
                                                    degradation=degradation))
    except (ConfigError, FileNotFoundError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {result.sheet} ({result.tiles} degraded tiles) and {result.records}")



@main.command()
@click.option("--target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the images you want to upscale, at their low resolution.")
@click.option("--hr", "hr_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of sharp HR photos to degrade in the simulation (default: the bundled photos).")
@click.option("--scale", type=click.Choice(["1", "2", "4"]), default="4", show_default=True, help="Target scale.")
@click.option("--order", default=2, show_default=True, help="Degradation stages of the fitted config.")
@click.option("--lq-size", default=64, show_default=True, help="Patch side = the training LQ size (gt_size/scale).")
@click.option("--budget", default=200, show_default=True, help="Simulations (candidate configs) to try.")
@click.option("--seed", default=0, show_default=True, help="Seed of crops and draws (same seed, same fit).")
@click.option("--max-patches", default=256, show_default=True, help="Target patches measured at most.")
@click.option("--sim-patches", default=48, show_default=True, help="HR crops degraded per candidate.")
@click.option("--min-patches", default=16, show_default=True, help="Fewer usable target patches is an error.")
@click.option("--start", type=click.Choice(["estimate", "paper"]), default="estimate", show_default=True,
              help="estimate: moment-matched start in an LQ-size model, then a local search; paper: search from the "
                   "paper config.")
@click.option("--measure-only", is_flag=True, help="Only measure the targets: report.json and the printed summary.")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run in --out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("calib"), show_default=True,
              help="Output folder for degradation.toml, report.json and report.png.")
def calibrate(target, hr_dir, scale, order, lq_size, budget, seed, max_patches, sim_patches, min_patches, start,
              measure_only, overwrite, out):
    """Fit a degradation config to your own low-resolution images (and report what they suffer from)."""
    from pipelines.data_jobs.calibrate import CalibrateConfig
    from pipelines.data_jobs.calibrate_report import run_calibrate
    from pipelines.data_jobs.preview import IMAGE_SUFFIXES

    try:
        hr = () if hr_dir is None else tuple(sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        if hr_dir is not None and not hr:
            raise ValueError(f"{hr_dir}: no images found for --hr")
        result = run_calibrate(CalibrateConfig(target=target, hr=hr, out=out, scale=int(scale), order=order,
                                               lq_size=lq_size, budget=budget, seed=seed, max_patches=max_patches,
                                               sim_patches=sim_patches, min_patches=min_patches,
                                               start=start, measure_only=measure_only, overwrite=overwrite))
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, RuntimeError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(result.summary)

@main.command()
@click.option("--stage", type=click.Choice(["net", "gan"]), help="net: L1 (Real-ESRNet); gan: + perceptual + GAN.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Training config TOML (see configs/).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set data.batch_size=8 (repeatable; values are TOML literals).")
@click.option("--init-from", help="Initial G weights: a .pth (official or ours), an ncnn .param, or a builtin name.")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint of the run directory.")
@click.option("--overwrite", is_flag=True, help="Start afresh in a run_dir that holds a previous run, deleting it.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def train(stage, config_path, overrides, init_from, resume, overwrite, device):
    """Train a stage on one process, or on many under torchrun (see README)."""
    from pipelines.training.train import train as run_training
    from pipelines.training.train_config import load_train_config

    # --init-from is passed as data, not as TOML text; it wins over --set init_from=... Errors: one line, exit 2.
    config = load_train_config(stage, config_path, overrides, {"init_from": init_from} if init_from else None)
    result = run_training(config, resume=resume, device=None if device == "auto" else device, overwrite=overwrite)
    click.echo(f"{'stopped' if result.interrupted else 'finished'} at iteration {result.iteration}; "
               f"weights in {result.run_dir / 'models'}")
    leave(click.get_current_context(), EXIT_INTERRUPTED if result.interrupted else 0)


@main.command()
@click.option("--shards", "shards_spec", required=True,
              help="GT shards: a folder with manifest.json, a brace pattern or a URL.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--seed", default=0, show_default=True, help="Seed; pair i uses a generator seeded from (seed, i).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Degradation config TOML (default: the paper's second-order x4 model).")
@click.option("--count", type=int, help="Use only the first N input samples.")
@click.option("--format", "fmt", type=click.Choice(["shards", "folders"]), default="shards", show_default=True,
              help="Paired shards, or HR/ LR/ folders with a meta-info file.")
@click.option("--gt-size", default=0, show_default=True, help="Centre crop / pad the GT to this size (0: as stored).")
@click.option("--usm", is_flag=True, help="Degrade the USM-sharpened GT, as the reference's GAN stage does.")
@click.option("--name", default="pairs", show_default=True, help="Shard file prefix.")
@click.option("--shard-size", default=1000, show_default=True, help="Pairs per shard / checkpoint.")
@click.option("--device", default="cpu", show_default=True, help="Device for the degradation (cpu, cuda).")
@click.option("--overwrite", is_flag=True, help="Replace an output made with other options.")
@click.option("--scheduler", default="", metavar="tcp://HOST:PORT|local:N",
              help="Run on a Dask cluster (one task per output shard; --out on shared storage). Needs .[dist].")
def degrade(shards_spec: str, out: Path, seed: int, config_path: Path | None, count: int | None, fmt: str,
            gt_size: int, usm: bool, name: str, shard_size: int, device: str, overwrite: bool,
            scheduler: str) -> None:
    """Bake degraded (GT, LQ) pairs offline with the training degradation code (deterministic)."""
    import degrade as deg
    from pipelines.data_jobs.degrade_job import run_degrade
    from pipelines.data_jobs.pairs import PairConfig

    check_device(device)
    try:
        degradation = deg.DegradationConfig.load(config_path) if config_path else deg.DegradationConfig()
        cfg = PairConfig(shards=shards_spec, out=out, degradation=degradation, seed=seed, count=count, format=fmt,
                         gt_size=gt_size, usm=usm, name=name, shard_size=shard_size, device=device,
                         overwrite=overwrite, scheduler=scheduler)
    except ValueError as exc:  # degrade.ConfigError is a ValueError
        raise click.BadParameter(str(exc)) from exc
    run_degrade(cfg)

@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("quickstart-out"),
              show_default=True, help="Output folder (replaced when it holds an earlier quickstart).")
@click.option("--net-iters", default=20, show_default=True, help="Iterations of stage net.")
@click.option("--gan-iters", default=10, show_default=True, help="Iterations of stage gan.")
@click.option("--from-scratch", is_flag=True, help="Train a tiny model even when the released weights are installed.")
@click.option("--smallest", is_flag=True, help="The test suite's settings: 2 iterations per stage, tiny crops.")
@click.option("--seed", default=0, show_default=True)
def quickstart(out, net_iters, gan_iters, from_scratch, smallest, seed):
    """The whole pipeline on the bundled photos: shard, preview, train, upscale."""
    from pipelines.quickstart import QuickstartConfig, QuickstartInterrupted
    from pipelines.quickstart import quickstart as run_quickstart

    try:
        summary = run_quickstart(QuickstartConfig(out=out, net_iters=net_iters, gan_iters=gan_iters,
                                                  from_scratch=from_scratch, smallest=smallest, seed=seed))
    except (QuickstartInterrupted, FileExistsError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary.read_text(encoding="utf-8"))
    click.echo(f"everything is in {summary.parent}/ (start with {summary})")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--weights", required=True,
              help="A .pth (official params_ema/params or bare), an ncnn .param, or realesrgan-x4plus[-anime].")
@click.option("--suffix", default="out", show_default=True, help="Output name: <name>_<suffix>.<ext>.")
@click.option("--ext", type=click.Choice(["auto", "png", "jpg", "webp"]), default="auto", show_default=True,
              help="auto keeps the input's; RGBA (and 16-bit unless png/tif) is always saved as png.")
@click.option("-s", "--outscale", type=float, help="Final scale (LANCZOS4 resize after the model; default: its scale).")
@click.option("-t", "--tile", default=512, show_default=True, help="Tile size in input pixels (0: whole image).")
@click.option("--tile-overlap", type=int,
              help="Context kept on each side of a tile cut (default: tile/8, at least 12 x4, 24 x2, 48 x1; "
                   "96 keeps x4plus within 1/255 of untiled).")
@click.option("--tile-batch", default=0, show_default=True, help="Tiles per forward pass (0: auto).")
@click.option("--pre-pad", default=0, show_default=True, help="Reflect-pad right/bottom before the model.")
@click.option("--alpha-upsampler", type=click.Choice(["realesrgan", "linear"]), default="realesrgan",
              show_default=True, help="Alpha through the network, or cv2 INTER_LINEAR.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--half", is_flag=True, help="Alias of --precision fp16 (CUDA only).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: fp16 on CUDA, fp32 on the CPU (bf16 is opt-in: up to 14/255 from fp32 with x4plus).")
@click.option("--backend", type=click.Choice(["auto", "torch", "nnpack", "onnxruntime", "openvino", "ncnn"]),
              default="auto",
              show_default=True, help="CPU runtime for the network (auto: the fastest installed; see README).")
@click.option("-r", "--recursive", is_flag=True, help="Scan input folders recursively (subfolders mirrored in OUT).")
@click.option("--threads", default=0, show_default=True, help="CPU threads, torch and runtimes (0: torch's default).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: keep them and skip the input).")
def upscale(inputs, out, weights, suffix, ext, outscale, tile, tile_overlap, tile_batch, pre_pad, alpha_upsampler,
            device, half, precision, backend, recursive, threads, quiet, overwrite):
    """Upscale images or folders with seam-free tiles; exit code 1 if any input failed (see README)."""
    from pipelines.inference.upscale import UpscaleConfig, upscale_files

    try:
        config = UpscaleConfig(tuple(inputs), out, weights, suffix=suffix, ext=ext, outscale=outscale,
                               alpha_upsampler=alpha_upsampler, tile=tile, tile_overlap=tile_overlap,
                               tile_batch=tile_batch, pre_pad=pre_pad, device=device, half=half,
                               precision=precision, backend=backend, recursive=recursive, threads=threads,
                               progress=not quiet, overwrite=overwrite)
        summary = upscale_files(config)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary.line())
    if summary.failed:
        sys.exit(1)


# ---- export (issue 12) ----
def _parse_hw(ctx, param, value):
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError as err:
        raise click.BadParameter(f"expected HxW such as 256x256, got {value!r}") from err
    return height, width


@main.command()
@click.option("--weights", required=True, help="What upscale accepts: .pth / .safetensors, ncnn .param, builtin name.")
@click.option("--to", "to", type=click.Choice(["onnx", "ncnn", "pth", "safetensors"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output file (onnx, pth, safetensors) or folder (ncnn).")
@click.option("--name", default="", help="ncnn: file stem, writes OUT/NAME.param and OUT/NAME.bin.")
@click.option("--fp16", is_flag=True, help="ONNX: float16 weights (float32 compute and I/O).")
@click.option("--static", callback=_parse_hw, metavar="HxW", help="ONNX: fixed input size instead of dynamic H/W.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
@click.option("--no-check", is_flag=True, help="Skip the check inference of the written file.")
@click.option("--force", is_flag=True, help="Replace existing output files.")
def export(weights, to, out, name, fp16, static, opset, no_check, force):
    """Export a generator to ONNX, ncnn (.param/.bin), .pth or .safetensors (see README)."""
    from pipelines.inference.export import ExportConfig, export_model

    try:
        report = export_model(ExportConfig(weights, to, out, name, fp16, static, opset, not no_check, force))
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError, OSError) as error:
        raise click.ClickException(str(error)) from error
    for line in report.lines():
        click.echo(line)
# ---- end export ----


# ---------------------------------------------------------------- evaluate (issue 9)
@main.command()
@click.option("--lq", "lq", multiple=True, required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of LR images: one test set (a column). Repeatable.")
@click.option("--gt", "gt", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="GT folder (files matched by name): one for all sets or one per --lq. Adds PSNR/SSIM (Y).")
@click.option("--model", "models", multiple=True, metavar="NAME=WEIGHTS",
              help="A method (a row): any weights upscale accepts, e.g. x4plus=realesrgan-x4plus. Repeatable.")
@click.option("--bicubic", is_flag=True, help="Add MATLAB bicubic as a method.")
@click.option("--scale", default=4, show_default=True, help="Bicubic scale when no --model is given.")
@click.option("-t", "--tile", default=512, show_default=True, help="Tile size in input pixels (0: whole image).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--comparison-images", default=3, show_default=True, help="Images per set on comparison.png.")
@click.option("--crop", default=128, show_default=True, help="Comparison crop side in output pixels.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier report in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def evaluate(lq, gt, models, bicubic, scale, tile, device, comparison_images, crop, out, overwrite, quiet):
    """NIQE (and PSNR/SSIM with --gt) of models and bicubic on LR photo folders; exit code 1 if any was skipped."""
    from pipelines.inference.evaluate import EvaluateConfig, parse_model_spec
    from pipelines.inference.evaluate import evaluate as run_evaluate

    try:
        config = EvaluateConfig(tuple(lq), out, tuple(parse_model_spec(m) for m in models), bicubic, tuple(gt),
                                scale=scale, tile=tile, device=device, comparison_images=comparison_images,
                                crop=crop, overwrite=overwrite, progress=not quiet)
        summary = run_evaluate(config)
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(summary.table)
    click.echo(f"report in {summary.out}/ (results.json, results.csv, table.md, comparison.png); "
               f"{len(summary.skipped)} image(s) skipped, {summary.seconds:.1f} s")
    if summary.skipped:
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
