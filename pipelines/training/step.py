"""One training iteration of either stage: degrade → crop → pool → G step → (D step) → EMA.

`TrainStep` owns everything one iteration touches, so that precision, memory layout and compile live in
one place: the networks as the step runs them (device, channels_last, `torch.compile`, DDP), both Adam
optimizers, the EMA, the autocast precision and, for fp16, the gradient scaler. Calling it runs one
iteration; the trainer (`pipelines.training.train`) and the benchmark (`bench/train_step.py`) both do exactly that.

Precision: the degradation and the crop (`make_training_pair`) always run in fp32 (fidelity of the paper's
pipeline); only the network forwards and the losses on their outputs run under autocast. Losses are
accumulated in fp32 (the network output is cast back before L1).

Gradient accumulation (``accumulate`` = k): the batch is degraded and pooled whole, as without it, and the G
and D updates run over k equal micro-batches with each loss divided by k, so the optimizer steps on the whole
batch's gradients (within float rounding) with 1/k of the activation memory; spectral norm makes one power
iteration per pass as with the whole batch (`steps.one_power_iteration`), and DDP reduces once per update.
It is the paper's batch on a smaller GPU, not a larger batch: raise ``data.batch_size`` for that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models.ema import ModelEMA
from pipelines.hardware import PRECISIONS, native_bf16
from pipelines.training.pool import TrainingPairPool
from pipelines.training.steps import (
    TrainingPair,
    discriminator_step,
    generator_step,
    make_training_pair,
    no_sync_unless,
    one_power_iteration,
    split_pair,
)
from pipelines.training.train_config import ConfigError, TrainConfig

__all__ = ["TrainStep", "TrainingDiverged", "resolve_precision"]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last checkpoint on disk is the last good state."""


def resolve_precision(precision: str, device: torch.device, capabilities: Mapping[str, object] | None = None) -> str:
    """The autocast precision a run uses on ``device``: "auto" becomes bf16 where it is native, else fp32.

    ``capabilities`` overrides the CPU flags torch reports (tests). fp16 is refused on CPU: no CPU this
    project runs on has native fp16 convolutions, and autocast would only emulate them.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device, capabilities) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device (this run is on {device.type}); "
                          f"use --set precision='bf16' or 'fp32'")
    return precision


def _same(flags: list[bool]) -> list[bool]:
    return flags


class TrainStep:
    """One iteration of stage net (G with L1) or gan (G with L1 + perceptual + GAN, then D), then the EMA.

    ``net_d`` is None for stage net. ``agree`` ORs flags over ranks (identity in one process) so every rank
    stops together when one sees a non-finite loss. The EMA is taken of ``net_g`` as it is when the step is
    built: initialise G first.
    """

    def __init__(self, cfg: TrainConfig, net_g: nn.Module, net_d: nn.Module | None, perceptual: nn.Module | None,
                 device: torch.device, *, distributed: bool = False,
                 agree: Callable[[list[bool]], list[bool]] = _same) -> None:
        self.cfg, self.device, self.perceptual, self._agree = cfg, device, perceptual, agree
        self.precision = resolve_precision(cfg.precision, device)
        self.channels_last = cfg.channels_last and device.type == "cuda"  # measured slower on CPU (README)
        self.net_g = net_g.to(device)
        self.ema = ModelEMA(self.net_g, cfg.ema_decay)
        self.net_d = net_d.to(device) if net_d is not None else None
        if self.channels_last:
            for module in (self.net_g, self.net_d, self.ema.module):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        optim = cfg.optim
        self.opt_g = torch.optim.Adam(self.net_g.parameters(), lr=optim.lr_g, betas=optim.betas,
                                      weight_decay=optim.weight_decay)
        self.opt_d = torch.optim.Adam(self.net_d.parameters(), lr=optim.lr_d, betas=optim.betas,
                                      weight_decay=optim.weight_decay) if self.net_d is not None else None
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none.
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self.model_g = self._wrap(self.net_g, distributed)
        self.model_d = self._wrap(self.net_d, distributed) if self.net_d is not None else None

    def _wrap(self, net: nn.Module, distributed: bool) -> nn.Module:
        model = torch.compile(net) if self.cfg.compile else net
        if distributed:
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None)
        return model

    def __call__(self, gt: Tensor, *, iteration: int, pool: TrainingPairPool, generator: torch.Generator,
                 lr_g: float, lr_d: float) -> dict[str, float]:
        """One iteration on a GT batch (any device: moved to the step's). Returns the loss terms as floats."""
        pair = self.training_pair(gt, pool, generator)
        logs, output = self.generator_update(pair, iteration, lr_g)
        if self.net_d is not None:
            logs.update(self.discriminator_update(pair, output, lr_d))
        if self.scaler is not None:
            self.scaler.update()  # once per iteration, after both optimizers stepped (torch.amp's rule)
        self.ema.update(self.net_g)
        return logs

    def training_pair(self, gt: Tensor, pool: TrainingPairPool, generator: torch.Generator) -> TrainingPair:
        """Degrade → crop → pool, in fp32, on the step's device (and in its memory layout)."""
        cfg = self.cfg
        pair = make_training_pair(gt.to(self.device), config=cfg.degradation,
                                  gt_size=cfg.data.gt_size, sharpen_gt=cfg.loss.sharpen_gt,
                                  crop_before_degrade=cfg.crop_before_degrade, pool=pool, generator=generator)
        if self.channels_last:
            pair = TrainingPair(*(t.contiguous(memory_format=torch.channels_last)
                                  for t in (pair.lq, pair.gt, pair.target)))
        return pair

    def generator_update(self, pair: TrainingPair, iteration: int, lr: float) -> tuple[dict[str, float], Tensor]:
        """G's losses and backward over the micro-batches, a finite check agreed by all ranks (before any
        weight changes), one Adam step. Returns the whole batch's mean losses and G's output."""
        _set_lr(self.opt_g, lr)
        if self.net_d is not None:
            self.net_d.requires_grad_(False)  # G's GAN loss must not update D (reference §4.2 step 1)
        loss_cfg, parts = self.cfg.loss, split_pair(pair, self.cfg.accumulate)
        self.opt_g.zero_grad(set_to_none=True)
        part_logs, outputs = [], []
        for index, part in enumerate(parts):
            with no_sync_unless(self.model_g, index == len(parts) - 1), one_power_iteration(self.net_d, index > 0):
                logs, output, loss = generator_step(self.model_g, part, pixel_weight=loss_cfg.pixel_weight,
                                                    perceptual=self.perceptual, net_d=self.net_d,
                                                    gan_weight=loss_cfg.gan_weight, precision=self.precision)
                if len(parts) > 1:
                    loss = loss / len(parts)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            part_logs.append(logs)
            outputs.append(output)
        logs = part_logs[0] if len(parts) == 1 else {key: sum(p[key] for p in part_logs) / len(parts)
                                                     for key in part_logs[0]}
        (diverged,) = self._agree([not math.isfinite(logs["l_g_total"])])
        if diverged:
            raise TrainingDiverged(f"loss is not finite at iteration {iteration} ({logs})")
        if self.scaler is not None:
            self.scaler.step(self.opt_g)  # skips the step when the scaled gradients overflowed
        else:
            self.opt_g.step()
        return logs, outputs[0] if len(outputs) == 1 else torch.cat([o.detach() for o in outputs])

    def discriminator_update(self, pair: TrainingPair, output: Tensor, lr: float) -> dict[str, float]:
        _set_lr(self.opt_d, lr)
        self.net_d.requires_grad_(True)
        return discriminator_step(self.model_d, self.opt_d, pair.gt, output, precision=self.precision,
                                  scaler=self.scaler, micro_batches=self.cfg.accumulate)

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue this step bit-identically (networks, EMA, optimizers, scaler)."""
        state = {"net_g": self.net_g.state_dict(), "net_g_ema": self.ema.state_dict(),
                 "optim_g": self.opt_g.state_dict(), "precision": self.precision}
        if self.net_d is not None:
            state.update(net_d=self.net_d.state_dict(), optim_d=self.opt_d.state_dict())
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore; refuses a state trained in another precision (``auto`` can resolve differently per machine)."""
        saved = state.get("precision", self.precision)
        if saved != self.precision:
            raise ConfigError(f"cannot resume: the checkpoint was trained in {saved}, but precision "
                              f"{self.cfg.precision!r} gives {self.precision} on {self.device.type}; resume with "
                              f"--set precision='{saved}' to continue it identically")
        self.net_g.load_state_dict(state["net_g"])
        self.ema.load_state_dict(state["net_g_ema"])
        self.opt_g.load_state_dict(state["optim_g"])
        if self.net_d is not None:
            self.net_d.load_state_dict(state["net_d"])
            self.opt_d.load_state_dict(state["optim_d"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
