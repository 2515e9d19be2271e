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
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist

from models.discriminator import UNetDiscriminatorSN
from models.losses import PerceptualLoss
from models.vgg import VGGFeatureExtractor, resolve_vgg19_weights
from models.weights import build_generator, check_same_arch, export_generator, load_generator_state_dict, load_into
from pipelines.training.checkpoint import checkpoint_path, latest_checkpoint, save_atomic
from pipelines.training.dist import DistInfo, cleanup_distributed, mean_over_ranks, setup_distributed
from pipelines.training.elastic import Heartbeat, rank_state, restart_count, resume_after_restart
from pipelines.training.metrics import MetricsWriter
from pipelines.training.pool import TrainingPairPool
from pipelines.training.safety import (
    best_validated_iteration,
    changed_config_keys,
    check_init_report,
    check_run_dir,
    clear_run_dir,
    load_resume_checkpoint,
    prune_checkpoints,
    trim_metrics,
)
from pipelines.training.step import TrainingDiverged, TrainStep
from pipelines.training.train_config import PERCEPTUAL_LAYERS, ConfigError, TrainConfig, stage_defaults
from pipelines.training.val_quality import ValidationTracker
from pipelines.training.validate import read_pairs
from shards.read import ShardStream

__all__ = ["train", "TrainResult", "learning_rate", "TrainingDiverged"]

# Keys that may change when resuming (they do not alter what is computed).
RESUMABLE_CHANGES = {"total_iter", "log_every", "checkpoint_every", "val_every", "val_shards", "val_max_images",
                     "val_select", "val_lq", "dist_timeout_s", "keep_checkpoints", "data.max_pixels"}


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


def _build_models(cfg: TrainConfig):
    init = torch.Generator().manual_seed(_seed(cfg.seed, 0))  # same on every rank
    net = cfg.network
    net_g = build_generator(net.generator_spec(cfg.scale), generator=init)
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
    check_same_arch(net_g, state, cfg.init_from)
    report = load_into(net_g, state, strict=False)
    check_init_report(report, source)  # hook: pipelines/training/safety.py
    log(f"initialised G from {source}: {report.summary()}")


def _perceptual(cfg: TrainConfig, device: torch.device) -> PerceptualLoss | None:
    if cfg.stage != "gan" or cfg.loss.perceptual_weight == 0:
        return None
    weights = resolve_vgg19_weights(cfg.loss.perceptual_weights or None)
    extractor = VGGFeatureExtractor(weights, PERCEPTUAL_LAYERS, generator=torch.Generator().manual_seed(0))
    layer_weights = dict(zip(PERCEPTUAL_LAYERS, cfg.loss.perceptual_layer_weights, strict=True))
    return PerceptualLoss(extractor, layer_weights, cfg.loss.perceptual_weight).to(device)


def _check_resume_config(saved: dict, cfg: TrainConfig, resolved_precision_saved: bool = False) -> None:
    """Refuse changed settings; ``precision`` is checked as resolved (TrainStep.load_state_dict) when saved so."""
    free = RESUMABLE_CHANGES | ({"precision"} if resolved_precision_saved else set())
    changed = changed_config_keys(saved, cfg.to_dict(), stage_defaults(cfg.stage), free)  # keys added later: safety
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

    A fresh run (no ``resume``) refuses a ``run_dir`` that holds a previous run unless ``overwrite``; a torchrun
    restart continues from the latest checkpoint by itself (or starts again if the first attempt wrote none).
    """
    info = setup_distributed(device, cfg.dist_timeout_s)
    resume = resume or resume_after_restart(Path(cfg.run_dir))  # torchrun restart: continue (elastic.py)
    heartbeat = Heartbeat(info.rank, info.world_size, cfg.dist_timeout_s, info.device)
    clean = False
    try:
        # A restart before the first checkpoint finds this run's own config.toml: not a previous run.
        check_run_dir(Path(cfg.run_dir), resume=resume, overwrite=overwrite or restart_count() > 0)
        result = _train(cfg, info, resume, stop_at, log if info.is_main else (lambda *_: None), heartbeat,
                        overwrite)
        clean = True
        return result
    except RuntimeError as error:  # a timed-out collective: name the rank that stalled, if one did
        stalled = heartbeat.diagnose(error) if info.distributed and not isinstance(error, TrainingDiverged) else None
        if stalled is None:
            raise
        raise stalled from error
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


@dataclass
class _Run:
    """A built run: what the loop reads and updates (the step holds networks, optimizers, EMA, precision)."""

    cfg: TrainConfig
    info: DistInfo
    run_dir: Path
    stream: ShardStream
    step: TrainStep
    rank_gen: torch.Generator  # this rank's degradation and crop randomness
    pool: TrainingPairPool
    val_pairs: list
    metrics: MetricsWriter
    start: int = 0  # the last finished iteration (0, or the checkpoint's)
    seen_keys: set[str] = field(default_factory=set)  # for the end-of-run data-split report (bounded)
    tracker: ValidationTracker | None = None  # NIQE, best checkpoint, curves, TensorBoard (rank 0 only)
    heartbeat: Heartbeat | None = None  # names a stalled rank when a collective times out (pipelines.training.elastic)


def _train(cfg: TrainConfig, info: DistInfo, resume: bool, stop_at: int | None, log,
           heartbeat: Heartbeat | None = None, overwrite: bool = False) -> TrainResult:
    run = _build_run(cfg, info, resume, log, overwrite)
    run.heartbeat = heartbeat
    return _loop(run, stop_at, log)


def _build_run(cfg: TrainConfig, info: DistInfo, resume: bool, log, overwrite: bool = False) -> _Run:
    """Check and open everything, build the step, restore a checkpoint: everything that can fail, before work."""
    run_dir, dev = Path(cfg.run_dir), info.device
    _check_shards(cfg.data.shards)
    stream = ShardStream(cfg.data.loader_config(cfg.seed), rank=info.rank, world_size=info.world_size)
    perceptual = _perceptual(cfg, dev)
    val_pairs = read_pairs(cfg.val_shards, cfg.val_max_images) if cfg.val_shards and info.is_main else []
    net_g, net_d = _build_models(cfg)
    checkpoint = _find_checkpoint(run_dir, cfg, log) if resume else None
    if checkpoint is None:
        _init_weights(cfg, net_g, log)
    step = TrainStep(cfg, net_g, net_d, perceptual, dev, distributed=info.distributed,
                     agree=lambda flags: _agree(flags, info))
    micro = f", {cfg.accumulate} micro-batches of {cfg.data.batch_size // cfg.accumulate} per update" \
        if cfg.accumulate > 1 else ""
    log(f"precision {step.precision} (config: {cfg.precision}), channels_last {step.channels_last}, "
        f"compile {cfg.compile} on {dev}{micro}")
    rank_gen = torch.Generator().manual_seed(_seed(cfg.seed, 1, info.rank))  # degradation, crops
    pool = TrainingPairPool(cfg.queue_size, torch.Generator().manual_seed(_seed(cfg.seed, 2, info.rank)))
    start = _restore(checkpoint, step, rank_gen, pool, stream, info, log) if checkpoint is not None else 0
    if info.is_main:
        if overwrite and not resume:  # hook: pipelines/training/safety.py (every check above has passed)
            for path in clear_run_dir(run_dir):
                log(f"--overwrite: removed {path}")
        if checkpoint is not None and (dropped := trim_metrics(run_dir / "metrics.jsonl", start)):  # hook: safety.py
            log(f"metrics.jsonl: dropped {dropped} records written after the checkpoint of iteration {start}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    metrics = MetricsWriter(run_dir / "metrics.jsonl")
    tracker = ValidationTracker(run_dir, cfg.val_select, metrics, log, cfg.val_lq, cfg.val_max_images) \
        if info.is_main else None
    return _Run(cfg, info, run_dir, stream, step, rank_gen, pool, val_pairs, metrics, start, tracker=tracker)


def _find_checkpoint(run_dir: Path, cfg: TrainConfig, log) -> dict:
    found, checkpoint = load_resume_checkpoint(run_dir)  # hook: safety.py (a corrupt one names the previous)
    _check_resume_config(checkpoint["config"], cfg, resolved_precision_saved="precision" in checkpoint)
    log(f"resuming from {found} (iteration {checkpoint['iter']})")
    return checkpoint


def _restore(checkpoint: dict, step: TrainStep, rank_gen: torch.Generator, pool: TrainingPairPool,
             stream: ShardStream, info: DistInfo, log) -> int:
    """Continue where the checkpoint stopped: step state, this rank's RNG and pool, the data position."""
    step.load_state_dict(checkpoint)
    mine = rank_state(checkpoint["ranks"], info.rank, info.world_size, log)
    if mine is not None:  # the world size may change between runs (README: Multi-node, restarts and failures)
        rank_gen.set_state(mine["generator"])
        pool.load_state_dict(mine["pool"], info.device)
    stream.load_state_dict(checkpoint["data"])
    return int(checkpoint["iter"])


def _loop(run: _Run, stop_at: int | None, log) -> TrainResult:
    """Iterations start+1 .. end: step, log, checkpoint, validate, stop on a signal (all ranks together)."""
    cfg, info = run.cfg, run.info
    end = min(cfg.total_iter, stop_at) if stop_at is not None else cfg.total_iter
    batches, window = iter(run.stream), _Window()
    last_path, logs, interrupted, it = None, {}, False, run.start
    with _StopFlag() as stop:
        for it in range(run.start + 1, end + 1):
            window.add(*_timed_step(run, batches, it))
            if it % cfg.log_every == 0 or it == end:
                logs = _log_window(run, window, it, log)
            (stop_now,) = _agree([stop.raised], info)
            if it % cfg.checkpoint_every == 0 or it == end or stop_now:
                last_path = _save(run, it, log)
            if it % cfg.val_every == 0 or it == cfg.total_iter:
                _run_validation(run, it)
            if stop_now:
                interrupted = True
                log(f"interrupted at iteration {it}: checkpoint written, continue with --resume")
                break
    batches.close()  # stop the loader (its worker processes, open shards) before the process group goes
    _report_ranks(run.step.net_g, run.seen_keys, info, log)
    return TrainResult(it, run.run_dir, last_path, interrupted, logs)


def _learning_rates(optim, iteration: int) -> tuple[float, float]:
    return (learning_rate(optim.lr_g, iteration, optim.milestones, optim.gamma, optim.warmup_iter),
            learning_rate(optim.lr_d, iteration, optim.milestones, optim.gamma, optim.warmup_iter))


def _timed_step(run: _Run, batches, it: int) -> tuple[dict, float, float]:
    """Next batch, then one step: (loss terms, seconds waiting for data, seconds computing)."""
    t0 = time.perf_counter()
    batch = next(batches)
    t1 = time.perf_counter()
    if run.heartbeat is not None:
        run.heartbeat.beat(it)
    if len(run.seen_keys) < 100_000:
        run.seen_keys.update(batch.keys)
    lr_g, lr_d = _learning_rates(run.cfg.optim, it)
    try:
        step_logs = run.step(batch.gt, iteration=it, pool=run.pool, generator=run.rank_gen, lr_g=lr_g, lr_d=lr_d)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{error}; the last good checkpoint is {latest_checkpoint(run.run_dir)}. Lower the "
                               f"learning rate or check the data, then --resume") from None
    if run.info.device.type == "cuda":
        torch.cuda.synchronize(run.info.device)
    return step_logs, t1 - t0, time.perf_counter() - t1


class _Window:
    """Loss terms and timings since the last log line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.logs, self.wait_s, self.compute_s, self.tick = [], 0.0, 0.0, time.perf_counter()

    def add(self, logs: dict, wait_s: float, compute_s: float) -> None:
        self.logs.append(logs)
        self.wait_s += wait_s
        self.compute_s += compute_s


def _log_window(run: _Run, window: _Window, it: int, log) -> dict:
    """Average the window over itself and the ranks, print the progress line, append to metrics.jsonl."""
    cfg, stream = run.cfg, run.stream
    logs = mean_over_ranks({k: float(np.mean([w[k] for w in window.logs])) for k in window.logs[0]}, run.info)
    rate = len(window.logs) / max(time.perf_counter() - window.tick, 1e-9)
    share = window.wait_s / max(window.wait_s + window.compute_s, 1e-9)
    lr_g, _ = _learning_rates(cfg.optim, it)
    log(_log_line(it, cfg.total_iter, logs, lr_g, rate, share, (cfg.total_iter - it) / max(rate, 1e-9)))
    if run.info.is_main:
        run.metrics.write({"iter": it, "lr": lr_g, "it_per_s": rate, "data_wait_share": share,
                           "bad_shards": sum(stream.bad_shards.values()),
                           "bad_samples": sum(stream.bad_samples.values()), **logs})
        run.tracker.log_training(it, {"lr": lr_g, "it_per_s": rate, **logs})  # TensorBoard, if installed
    window.reset()
    return logs


def _save(run: _Run, iteration: int, log) -> Path:
    """Checkpoint (every rank's RNG and pool gathered to rank 0) and the exported latest weights."""
    step, info, run_dir = run.step, run.info, run.run_dir
    ranks = _gather({"generator": run.rank_gen.get_state(), "pool": run.pool.state_dict()}, info)
    path = checkpoint_path(run_dir, iteration)
    if not info.is_main:
        return path
    state = {"iter": iteration, **step.state_dict(), "data": run.stream.state_dict(), "ranks": ranks,
             "config": run.cfg.to_dict()}
    save_atomic(state, path)
    prune_checkpoints(run_dir, run.cfg.keep_checkpoints, _best_iteration(run))
    export_generator(run_dir / "models" / "net_g_latest.pth", step.net_g, step.ema.state_dict())
    if step.net_d is not None:
        save_atomic({"params": {k: v.cpu() for k, v in step.net_d.state_dict().items()}},
                    run_dir / "models" / "net_d_latest.pth")
    log(f"saved {path}")
    return path


def _best_iteration(run: _Run) -> int | None:
    """The iteration of the best validated checkpoint (by val_select; by PSNR when selection is off)."""
    if run.tracker is not None and run.tracker.best:
        return int(run.tracker.best["iter"])
    return best_validated_iteration(run.run_dir / "metrics.jsonl")


def _run_validation(run: _Run, iteration: int) -> None:
    """PSNR/SSIM/NIQE on the validation pairs (and NIQE on val_lq), best-checkpoint export, curves: val_quality."""
    if run.tracker is not None and (run.val_pairs or run.tracker.enabled):
        run.tracker.run(iteration, run.step.ema.module, run.step.net_g, run.val_pairs, run.cfg.scale, run.info.device)


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
