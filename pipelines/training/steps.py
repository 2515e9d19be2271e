"""One training iteration, as plain functions: make the pair, update G, update D.

`make_training_pair` is the reference's `feed_data` (reference §1.2): USM-sharpen the 400×400 GT,
degrade it on the GT's device, crop the 256/64 pair with one offset for the batch, pass it through
the training-pair pool, and sharpen the cropped GT again for the L1/perceptual targets (the reference's
GAN model recomputes USM after the pool the same way; here both stages do, see README).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import degrade
from models.losses import gan_loss, l1_loss
from pipelines.hardware import autocast
from pipelines.training.pool import TrainingPairPool

__all__ = ["TrainingPair", "random_crop_offsets", "make_training_pair", "generator_step", "discriminator_step"]


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


def _to_floats(terms: dict[str, Tensor]) -> dict[str, float]:
    """Scalar tensors -> Python floats with one device-to-host copy (one sync on CUDA, not one per term)."""
    values = torch.stack([t.detach().float().reshape(()) for t in terms.values()]).tolist()
    return dict(zip(terms, values, strict=True))


def _identity(loss: Tensor) -> Tensor:
    return loss


def generator_step(net_g: nn.Module, optimizer: torch.optim.Optimizer, pair: TrainingPair, *,
                   pixel_weight: float, perceptual: nn.Module | None = None, net_d: nn.Module | None = None,
                   gan_weight: float = 0.1, precision: str = "fp32") -> tuple[dict[str, float], Tensor, Tensor]:
    """Update G: L1 (+ perceptual + GAN in stage gan). Returns logs, the output and the total loss.

    ``net_d`` is the unwrapped discriminator with its parameters frozen by the caller (reference §4.2
    step 1); its gradient flows only into G. ``precision`` ("fp32", "bf16", "fp16") is the autocast of the
    network forwards; the losses are computed on fp32 copies of their outputs.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(pair.lq.device, precision):
        output = net_g(pair.lq)
    output = output.float()
    terms: dict[str, Tensor] = {}
    loss = l1_loss(output, pair.target, pixel_weight)
    terms["l_g_pix"] = loss
    if perceptual is not None:
        with autocast(pair.lq.device, precision):
            l_percep = perceptual(output, pair.target).float()
        terms["l_g_percep"] = l_percep
        loss = loss + l_percep
    if net_d is not None:
        with autocast(pair.lq.device, precision):
            l_gan = gan_loss(net_d(output).float(), True, is_disc=False, weight=gan_weight)
        terms["l_g_gan"] = l_gan
        loss = loss + l_gan
    terms["l_g_total"] = loss
    return _to_floats(terms), output, loss


def discriminator_step(net_d: nn.Module, optimizer: torch.optim.Optimizer, real: Tensor, fake: Tensor, *,
                       precision: str = "fp32", scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Update D on real (unsharpened GT) and fake (detached G output), two backward passes (§4.2 steps 3-6).

    With a ``scaler`` (fp16) both losses are scaled and the step is skipped on overflow; the caller calls
    ``scaler.update()`` once per iteration.
    """
    scale = scaler.scale if scaler is not None else _identity
    optimizer.zero_grad(set_to_none=True)
    no_sync = net_d.no_sync() if hasattr(net_d, "no_sync") else nullcontext()
    with no_sync:  # DDP: reduce gradients once, after both passes
        with autocast(real.device, precision):
            real_logits = net_d(real).float()
        l_real = gan_loss(real_logits, True, is_disc=True)
        scale(l_real).backward()
    with autocast(real.device, precision):
        fake_logits = net_d(fake.detach().clone()).float()
    l_fake = gan_loss(fake_logits, False, is_disc=True)
    scale(l_fake).backward()
    if scaler is not None:
        scaler.step(optimizer)
    else:
        optimizer.step()
    return _to_floats({"l_d_real": l_real, "out_d_real": real_logits.mean(), "l_d_fake": l_fake,
                       "out_d_fake": fake_logits.mean()})
