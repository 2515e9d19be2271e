"""One training iteration, as plain functions: make the pair, G's losses, update D.

`make_training_pair` is the reference's `feed_data` (reference §1.2): USM-sharpen the 400×400 GT,
degrade it on the GT's device, crop the 256/64 pair with one offset for the batch, pass it through
the training-pair pool, and sharpen the cropped GT again for the L1/perceptual targets (the reference's
GAN model recomputes USM after the pool the same way; here both stages do, see README).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import degrade
from models.losses import gan_loss, l1_loss
from pipelines.hardware import autocast
from pipelines.training.pool import TrainingPairPool

__all__ = ["TrainingPair", "random_crop_offsets", "make_training_pair", "split_pair", "one_power_iteration",
           "no_sync_unless", "generator_step", "discriminator_step"]


@dataclass(frozen=True)
class TrainingPair:
    lq: Tensor
    gt: Tensor  # unsharpened: the discriminator's real input
    target: Tensor  # USM-sharpened GT when sharpen_gt, else gt: the L1 / perceptual target


def random_crop_offsets(height: int, width: int, size: int, generator: torch.Generator) -> tuple[int, int]:
    """One (top, left) for a size×size crop, uniform over the valid positions, inclusive."""
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return top, left


def make_training_pair(gt: Tensor, *, config: degrade.DegradationConfig, gt_size: int, sharpen_gt: bool,
                       crop_before_degrade: bool, pool: TrainingPairPool, generator: torch.Generator) -> TrainingPair:
    """Degrade a GT batch into an (LQ, GT) training pair of gt_size / (gt_size / scale) patches."""
    scale = config.scale
    with torch.no_grad():
        if crop_before_degrade:  # ~2x cheaper: degrade only the 256 crop (the LQ then never sees outside it)
            top, left = random_crop_offsets(gt.shape[-2], gt.shape[-1], gt_size, generator)
            gt = gt[..., top : top + gt_size, left : left + gt_size]
        params = degrade.sample_params(config, gt.shape[0], generator)
        lq = degrade.apply(degrade.usm_sharpen(gt), params, config)
        lq_size = gt_size // scale
        if not crop_before_degrade:  # paired_random_crop: one offset for the whole batch (reference §1.2 step 10)
            top, left = random_crop_offsets(lq.shape[-2], lq.shape[-1], lq_size, generator)
            lq = lq[..., top : top + lq_size, left : left + lq_size]
            gt = gt[..., top * scale : top * scale + gt_size, left * scale : left * scale + gt_size]
        lq, gt = pool.exchange(lq.contiguous(), gt.contiguous())
        target = degrade.usm_sharpen(gt) if sharpen_gt else gt
    return TrainingPair(lq, gt, target)


def split_pair(pair: TrainingPair, parts: int) -> list[TrainingPair]:
    """The pair as ``parts`` equal micro-batches, in batch order (views, no copies)."""
    if parts == 1:
        return [pair]
    chunks = [t.chunk(parts) for t in (pair.lq, pair.gt, pair.target)]
    return [TrainingPair(*fields) for fields in zip(*chunks, strict=True)]


@contextmanager
def one_power_iteration(net_d: nn.Module | None, later_micro_batch: bool) -> Iterator[None]:
    """Run a micro-batch after the first with D in eval mode, so that one batch in k micro-batches makes one
    spectral-norm power iteration per pass, as the whole batch does.

    A spectral-norm layer updates its u, v in every training-mode forward; in eval mode it uses them as they
    are, i.e. as the first micro-batch left them, which gives the same normalised weight. The U-Net
    discriminator has no other mode-dependent layer (no dropout, no batch norm).
    """
    if net_d is None or not later_micro_batch or not net_d.training:
        yield
        return
    net_d.eval()
    try:
        yield
    finally:
        net_d.train()


def no_sync_unless(model: nn.Module, last: bool):
    """DDP: reduce gradients only in the last backward of an accumulated step (in one process: nothing)."""
    return model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext()


def _to_floats(terms: dict[str, Tensor]) -> dict[str, float]:
    """Scalar tensors -> Python floats with one device-to-host copy (one sync on CUDA, not one per term)."""
    values = torch.stack([t.detach().float().reshape(()) for t in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


def _fp32_or_wider(t: Tensor) -> Tensor:
    """Autocast outputs back to fp32 for the losses; a float64 run (tests of exactness) stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def _identity(loss: Tensor) -> Tensor:
    return loss


def generator_step(net_g: nn.Module, pair: TrainingPair, *, pixel_weight: float, perceptual: nn.Module | None = None,
                   net_d: nn.Module | None = None, gan_weight: float = 0.1,
                   precision: str = "fp32") -> tuple[dict[str, float], Tensor, Tensor]:
    """G's losses on a (micro-)batch: L1 (+ perceptual + GAN in stage gan). Returns logs, the output and the
    total loss; the caller runs backward and steps the optimizer (`pipelines.training.step.TrainStep`).

    ``net_d`` is the unwrapped discriminator with its parameters frozen by the caller (reference §4.2
    step 1); its gradient flows only into G. ``precision`` ("fp32", "bf16", "fp16") is the autocast of the
    network forwards; the losses are computed on fp32 copies of their outputs.
    """
    with autocast(pair.lq.device, precision):
        output = net_g(pair.lq)
    output = _fp32_or_wider(output)
    terms: dict[str, Tensor] = {}
    loss = l1_loss(output, pair.target, pixel_weight)
    terms["l_g_pix"] = loss
    if perceptual is not None:
        with autocast(pair.lq.device, precision):
            l_percep = _fp32_or_wider(perceptual(output, pair.target))
        terms["l_g_percep"] = l_percep
        loss = loss + l_percep
    if net_d is not None:
        with autocast(pair.lq.device, precision):
            l_gan = gan_loss(_fp32_or_wider(net_d(output)), True, is_disc=False, weight=gan_weight)
        terms["l_g_gan"] = l_gan
        loss = loss + l_gan
    terms["l_g_total"] = loss
    return _to_floats(terms), output, loss


def discriminator_step(net_d: nn.Module, optimizer: torch.optim.Optimizer, real: Tensor, fake: Tensor, *,
                       precision: str = "fp32", scaler: torch.amp.GradScaler | None = None,
                       micro_batches: int = 1) -> dict[str, float]:
    """Update D on real (unsharpened GT) and fake (detached G output), two backward passes (§4.2 steps 3-6).

    With ``micro_batches`` k > 1 each pass runs over k equal parts with the loss divided by k, all real parts
    before all fake parts, and only the first part of a pass in training mode (`one_power_iteration`): the
    gradients and spectral-norm vectors of the whole batch within float rounding, in 1/k of the activation
    memory. With a ``scaler`` (fp16) every loss is scaled and the step is skipped on overflow; the caller
    calls ``scaler.update()`` once per iteration. Logs are means over the parts (the whole batch's values).
    """
    scale = scaler.scale if scaler is not None else _identity
    optimizer.zero_grad(set_to_none=True)
    reals, fakes = real.chunk(micro_batches), fake.detach().chunk(micro_batches)
    terms: dict[str, list[Tensor]] = {"l_d_real": [], "out_d_real": [], "l_d_fake": [], "out_d_fake": []}
    for kind, parts, target in (("real", reals, True), ("fake", fakes, False)):
        for index, part in enumerate(parts):
            last = kind == "fake" and index == len(parts) - 1
            with no_sync_unless(net_d, last), one_power_iteration(net_d, index > 0):  # DDP: reduce once, at the end
                with autocast(real.device, precision):
                    logits = _fp32_or_wider(net_d(part.clone() if kind == "fake" else part))
                loss = gan_loss(logits, target, is_disc=True)
                scale(loss / micro_batches if micro_batches > 1 else loss).backward()
            terms[f"l_d_{kind}"].append(loss.detach())
            terms[f"out_d_{kind}"].append(logits.detach().mean())
    if scaler is not None:
        scaler.step(optimizer)
    else:
        optimizer.step()
    return _to_floats({name: torch.stack(values).mean() for name, values in terms.items()})
