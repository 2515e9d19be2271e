"""Two-stage Real-ESRGAN training, one loop for both stages: `net` (L1) and `gan` (+ perceptual + GAN).

Launch:
    python cli.py train --stage net --config configs/train_realesrnet_x4plus.toml           # one process
    torchrun --standalone --nproc_per_node=8 cli.py train --stage net --config ...           # one node
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        cli.py train --stage gan --config ...                                               # two nodes

Every iteration: next GT batch → degrade on the model's device → crop the pair → pool → G step →
(D step) → EMA → schedule. Rank 0 logs, validates and writes checkpoints; losses are averaged over
ranks. Interrupt with Ctrl-C or SIGTERM and a checkpoint is written before exiting; `--resume`
continues bit-identically (CPU) from the latest one.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from models.discriminator import UNetDiscriminatorSN
from models.ema import ModelEMA
from models.losses import PerceptualLoss
from models.rrdbnet import RRDBNet
from models.vgg import VGGFeatureExtractor, resolve_vgg19_weights
from models.weights import export_generator, load_generator_state_dict, load_into
from pipelines.checkpoint import checkpoint_path, latest_checkpoint, save_atomic
from pipelines.dist import DistInfo, cleanup_distributed, mean_over_ranks, setup_distributed
from pipelines.metrics import MetricsWriter
from pipelines.pool import TrainingPairPool
from pipelines.safety import (
    best_validated_iteration,
    changed_config_keys,
    check_init_report,
    check_run_dir,
    clear_run_dir,
    load_resume_checkpoint,
    prune_checkpoints,
    trim_metrics,
)
from pipelines.steps import discriminator_step, generator_step, make_training_pair
from pipelines.train_config import PERCEPTUAL_LAYERS, ConfigError, TrainConfig, stage_defaults
from pipelines.validate import read_pairs, save_grid, validate
from shards.read import LoaderConfig, ShardStream

__all__ = ["train", "TrainResult", "learning_rate", "TrainingDiverged"]

# Keys that may change when resuming (they do not alter what is computed).
RESUMABLE_CHANGES = {"total_iter", "log_every", "checkpoint_every", "val_every", "val_shards", "val_max_images",
                     "keep_checkpoints", "data.max_pixels"}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last checkpoint on disk is the last good state."""


@dataclass(frozen=True)
class TrainResult:
    iteration: int
    run_dir: Path
    checkpoint: Path | None
    interrupted: bool
    last_logs: dict


def learning_rate(base: float, iteration: int, milestones: tuple[int, ...], gamma: float, warmup: int) -> float:
    """LR at 1-based ``iteration``: linear warm-up, then ×gamma at each milestone passed (MultiStepLR)."""
    factor = gamma ** sum(iteration > m for m in milestones)
    if warmup and iteration <= warmup:
        factor *= iteration / warmup
    return base * factor


def _seed(cfg_seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([cfg_seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked once per iteration, so a checkpoint can be written."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (some test runners): no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _agree(flags: list[bool], info: DistInfo) -> list[bool]:
    """Any-rank OR of each flag, so all ranks stop (or go on) together."""
    if not info.distributed:
        return flags
    tensor = torch.tensor([float(f) for f in flags], device=info.device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def _gather(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def _build_models(cfg: TrainConfig, device: torch.device):
    init = torch.Generator().manual_seed(_seed(cfg.seed, 0))  # same on every rank
    net = cfg.network
    net_g = RRDBNet(3, 3, cfg.scale, net.num_feat, net.num_block, net.num_grow_ch, generator=init)
    net_d = UNetDiscriminatorSN(3, net.disc_num_feat, net.disc_skip_connection, generator=init) \
        if cfg.stage == "gan" else None
    return net_g, net_d


def _init_weights(cfg: TrainConfig, net_g, log) -> None:
    if not cfg.init_from:
        if cfg.stage == "gan":
            log("warning: stage gan without init_from starts from random weights; the paper starts from the "
                "net stage's EMA weights (--init-from runs/.../models/net_g_latest.pth)")
        return
    state, source = load_generator_state_dict(cfg.init_from, prefer=(cfg.init_key, "params_ema", "params"))
    report = load_into(net_g, state, strict=False)
    check_init_report(report, source)  # hook: pipelines/safety.py
    log(f"initialised G from {source}: {report.summary()}")


def _perceptual(cfg: TrainConfig, device: torch.device) -> PerceptualLoss | None:
    if cfg.stage != "gan" or cfg.loss.perceptual_weight == 0:
        return None
    weights = resolve_vgg19_weights(cfg.loss.perceptual_weights or None)
    extractor = VGGFeatureExtractor(weights, PERCEPTUAL_LAYERS, generator=torch.Generator().manual_seed(0))
    layer_weights = dict(zip(PERCEPTUAL_LAYERS, cfg.loss.perceptual_layer_weights, strict=True))
    return PerceptualLoss(extractor, layer_weights, cfg.loss.perceptual_weight).to(device)


def _check_resume_config(saved: dict, cfg: TrainConfig) -> None:
    changed = changed_config_keys(saved, cfg.to_dict(), stage_defaults(cfg.stage), RESUMABLE_CHANGES)  # safety.py
    if changed:
        raise ConfigError(f"cannot resume: the config differs from the checkpoint's in {', '.join(changed)}; "
                          f"use the saved {cfg.run_dir}/config.toml or start a new run_dir")


def _log_line(it: int, total: int, logs: dict, lr: float, rate: float, wait_share: float, eta_s: float) -> str:
    losses = " ".join(f"{k}={v:.4g}" for k, v in sorted(logs.items()))
    return (f"iter {it}/{total} {losses} lr={lr:.3g} {rate:.2f} it/s data-wait {100 * wait_share:.0f}% "
            f"eta {int(eta_s // 3600)}h{int(eta_s % 3600 // 60):02d}m")


def train(cfg: TrainConfig, *, resume: bool = False, device: str | None = None, stop_at: int | None = None,
          log=print, overwrite: bool = False) -> TrainResult:
    """Run (or resume) a training stage. ``stop_at`` stops early after that iteration, with a checkpoint.

    A fresh run (no ``resume``) refuses a ``run_dir`` that holds a previous run unless ``overwrite``.
    """
    info = setup_distributed(device)
    clean = False
    try:
        check_run_dir(Path(cfg.run_dir), resume=resume, overwrite=overwrite)  # hook: pipelines/safety.py
        result = _train(cfg, info, resume, stop_at, log if info.is_main else (lambda *_: None), overwrite)
        clean = True
        return result
    finally:
        cleanup_distributed(clean=clean, log=log)  # barrier only when every rank got here normally


def _check_shards(spec: str) -> None:
    """A clear error for the commonest mistake: local shards that are not there."""
    if not spec:
        raise FileNotFoundError("data.shards is empty: make shards with `python cli.py shard --src ... --out shards/` "
                                "and pass --set data.shards=shards/")
    if "://" in spec or spec.startswith("pipe:") or "{" in spec:
        return
    if not Path(spec).exists():
        raise FileNotFoundError(f"data.shards: {spec} does not exist; make shards with `python cli.py shard "
                                f"--src ... --out {spec}` or point data.shards at a shard folder")


def _train(cfg: TrainConfig, info: DistInfo, resume: bool, stop_at: int | None, log,
           overwrite: bool = False) -> TrainResult:
    run_dir = Path(cfg.run_dir)
    dev = info.device
    on_cuda = dev.type == "cuda"
    # Everything that can fail is checked before any work: data, weights, VGG, validation set.
    _check_shards(cfg.data.shards)
    stream = ShardStream(LoaderConfig(cfg.data.shards, batch_size=cfg.data.batch_size, patch_size=cfg.data.patch_size,
                                      shuffle_buffer=cfg.data.shuffle_buffer, hflip=cfg.data.hflip, rot=cfg.data.rot,
                                      num_workers=cfg.data.num_workers, seed=cfg.seed, strict=cfg.data.strict,
                                      manifest=cfg.data.manifest or None, max_pixels=cfg.data.max_pixels),
                         rank=info.rank, world_size=info.world_size)
    perceptual = _perceptual(cfg, dev)
    val_pairs = read_pairs(cfg.val_shards, cfg.val_max_images) if cfg.val_shards and info.is_main else []
    net_g, net_d = _build_models(cfg, dev)
    checkpoint = None
    if resume:
        found, checkpoint = load_resume_checkpoint(run_dir)  # hook: safety.py (a corrupt one names the previous)
        _check_resume_config(checkpoint["config"], cfg)
        log(f"resuming from {found} (iteration {checkpoint['iter']})")
    else:
        _init_weights(cfg, net_g, log)
    net_g.to(dev)
    ema = ModelEMA(net_g, cfg.ema_decay)
    if net_d is not None:
        net_d.to(dev)
    if on_cuda and cfg.channels_last:
        for module in (net_g, net_d, ema.module):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    optim = cfg.optim
    opt_g = torch.optim.Adam(net_g.parameters(), lr=optim.lr_g, betas=optim.betas, weight_decay=optim.weight_decay)
    opt_d = torch.optim.Adam(net_d.parameters(), lr=optim.lr_d, betas=optim.betas,
                             weight_decay=optim.weight_decay) if net_d is not None else None
    rank_gen = torch.Generator().manual_seed(_seed(cfg.seed, 1, info.rank))  # degradation, crops
    pool = TrainingPairPool(cfg.queue_size, torch.Generator().manual_seed(_seed(cfg.seed, 2, info.rank)))
    start = 0
    if checkpoint is not None:
        net_g.load_state_dict(checkpoint["net_g"])
        ema.load_state_dict(checkpoint["net_g_ema"])
        opt_g.load_state_dict(checkpoint["optim_g"])
        if net_d is not None:
            net_d.load_state_dict(checkpoint["net_d"])
            opt_d.load_state_dict(checkpoint["optim_d"])
        per_rank = checkpoint["ranks"]
        if len(per_rank) != info.world_size:
            raise ConfigError(f"the checkpoint was written by {len(per_rank)} processes, this run has "
                              f"{info.world_size}: resume with the same number of processes")
        rank_gen.set_state(per_rank[info.rank]["generator"])
        pool.load_state_dict(per_rank[info.rank]["pool"], dev)
        stream.load_state_dict(checkpoint["data"])
        start = int(checkpoint["iter"])
    if info.is_main:
        if overwrite and not resume:  # hook: pipelines/safety.py (every check above has passed)
            for path in clear_run_dir(run_dir):
                log(f"--overwrite: removed {path}")
        if checkpoint is not None and (dropped := trim_metrics(run_dir / "metrics.jsonl", start)):  # hook: safety.py
            log(f"metrics.jsonl: dropped {dropped} records written after the checkpoint of iteration {start}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    model_g = torch.compile(net_g) if cfg.compile else net_g
    model_d = torch.compile(net_d) if cfg.compile and net_d is not None else net_d
    if info.distributed:
        model_g = DistributedDataParallel(model_g, device_ids=[dev.index] if on_cuda else None)
        if model_d is not None:
            model_d = DistributedDataParallel(model_d, device_ids=[dev.index] if on_cuda else None)
    bf16 = cfg.bf16 and on_cuda

    def save(iteration: int) -> Path:
        ranks = _gather({"generator": rank_gen.get_state(), "pool": pool.state_dict()}, info)
        if not info.is_main:
            return checkpoint_path(run_dir, iteration)
        state = {"iter": iteration, "net_g": net_g.state_dict(), "net_g_ema": ema.state_dict(),
                 "optim_g": opt_g.state_dict(), "data": stream.state_dict(), "ranks": ranks,
                 "config": cfg.to_dict()}
        if net_d is not None:
            state.update(net_d=net_d.state_dict(), optim_d=opt_d.state_dict())
        path = checkpoint_path(run_dir, iteration)
        save_atomic(state, path)
        prune_checkpoints(run_dir, cfg.keep_checkpoints, best_validated_iteration(run_dir / "metrics.jsonl"))
        export_generator(run_dir / "models" / "net_g_latest.pth", net_g, ema.state_dict())
        if net_d is not None:
            save_atomic({"params": {k: v.cpu() for k, v in net_d.state_dict().items()}},
                        run_dir / "models" / "net_d_latest.pth")
        log(f"saved {path}")
        return path

    def run_validation(iteration: int) -> None:
        if not val_pairs:
            return
        scores, images = validate(ema.module, val_pairs, cfg.scale, dev)
        save_grid(images, run_dir / "val" / f"iter_{iteration:08d}.png")
        metrics.write({"iter": iteration, "val": scores})
        log(f"validation at {iteration}: PSNR {scores['psnr']:.3f} dB, SSIM {scores['ssim']:.4f}")

    batches = iter(stream)
    seen_keys: set[str] = set()  # for the end-of-run data-split report (bounded)
    last_path, window, logs, interrupted = None, [], {}, False
    wait_s = compute_s = 0.0
    end = min(cfg.total_iter, stop_at) if stop_at is not None else cfg.total_iter
    tick = time.perf_counter()
    with _StopFlag() as stop:
        for it in range(start + 1, end + 1):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            if len(seen_keys) < 100_000:
                seen_keys.update(batch.keys)
            lr_g = learning_rate(optim.lr_g, it, optim.milestones, optim.gamma, optim.warmup_iter)
            for group in opt_g.param_groups:
                group["lr"] = lr_g
            pair = make_training_pair(batch.gt.to(dev), config=cfg.degradation,
                                      gt_size=cfg.data.gt_size, sharpen_gt=cfg.loss.sharpen_gt,
                                      crop_before_degrade=cfg.crop_before_degrade, pool=pool, generator=rank_gen)
            if on_cuda and cfg.channels_last:
                pair = type(pair)(*(t.contiguous(memory_format=torch.channels_last) for t in
                                    (pair.lq, pair.gt, pair.target)))
            if net_d is not None:
                net_d.requires_grad_(False)
            step_logs, output, loss = generator_step(model_g, opt_g, pair, pixel_weight=cfg.loss.pixel_weight,
                                                     perceptual=perceptual, net_d=net_d, gan_weight=cfg.loss.gan_weight,
                                                     bf16=bf16)
            (diverged,) = _agree([not math.isfinite(step_logs["l_g_total"])], info)
            if diverged:
                raise TrainingDiverged(f"loss is not finite at iteration {it} ({step_logs}); the last good "
                                       f"checkpoint is {latest_checkpoint(run_dir)}. Lower the learning rate or "
                                       f"check the data, then --resume")
            loss.backward()
            opt_g.step()
            if net_d is not None:
                net_d.requires_grad_(True)
                lr_d = learning_rate(optim.lr_d, it, optim.milestones, optim.gamma, optim.warmup_iter)
                for group in opt_d.param_groups:
                    group["lr"] = lr_d
                step_logs.update(discriminator_step(model_d, opt_d, pair.gt, output, bf16=bf16))
            ema.update(net_g)
            if on_cuda:
                torch.cuda.synchronize(dev)
            t2 = time.perf_counter()
            wait_s += t1 - t0
            compute_s += t2 - t1
            window.append(step_logs)
            if it % cfg.log_every == 0 or it == end:
                logs = mean_over_ranks({k: float(np.mean([w[k] for w in window])) for k in window[0]}, info)
                elapsed = time.perf_counter() - tick
                rate = len(window) / max(elapsed, 1e-9)
                share = wait_s / max(wait_s + compute_s, 1e-9)
                log(_log_line(it, cfg.total_iter, logs, lr_g, rate, share, (cfg.total_iter - it) / max(rate, 1e-9)))
                if info.is_main:
                    metrics.write({"iter": it, "lr": lr_g, "it_per_s": rate, "data_wait_share": share,
                                   "bad_shards": sum(stream.bad_shards.values()),
                                   "bad_samples": sum(stream.bad_samples.values()), **logs})
                window, wait_s, compute_s, tick = [], 0.0, 0.0, time.perf_counter()
            (stop_now,) = _agree([stop.raised], info)
            if it % cfg.checkpoint_every == 0 or it == end or stop_now:
                last_path = save(it)
            if it % cfg.val_every == 0 or it == cfg.total_iter:
                run_validation(it)
            if stop_now:
                interrupted = True
                log(f"interrupted at iteration {it}: checkpoint written, continue with --resume")
                break
    batches.close()  # stop the loader (its worker processes, open shards) before the process group goes
    _report_ranks(net_g, seen_keys, info, log)
    return TrainResult(it if end > start else start, run_dir, last_path, interrupted, logs)


def _report_ranks(net_g: torch.nn.Module, seen_keys: set[str], info: DistInfo, log) -> None:
    """Under DDP: check every rank ends with the same weights, and report how the data was split."""
    if not info.distributed:
        return
    digest = float(sum(p.detach().double().sum().item() * (i + 1) for i, p in enumerate(net_g.parameters())))
    digests = _gather(digest, info)
    key_sets = _gather(sorted(seen_keys), info)
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP desync: generator weights differ between ranks (checksums {digests})")
    overlap = len(set.intersection(*(set(k) for k in key_sets)))
    log(f"ranks agree: generator weights identical on {info.world_size} ranks (checksum {digests[0]:.10g}); "
        f"samples seen per rank {[len(k) for k in key_sets]}, seen by every rank {overlap}")
