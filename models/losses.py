"""Losses of Real-ESRGAN training: L1 pixel loss, VGG19 perceptual loss, vanilla GAN loss.

Sources: BasicSR ``basicsr/losses/basic_loss.py`` (``L1Loss``, ``PerceptualLoss``) and
``basicsr/losses/gan_loss.py`` (``GANLoss`` with ``gan_type='vanilla'``), with the weights of
Real-ESRGAN's ``options/train_realesrgan_x4plus.yml``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from models.vgg import VGGFeatureExtractor

# options/train_realesrgan_x4plus.yml, perceptual_opt.layer_weights
PERCEPTUAL_LAYER_WEIGHTS: dict[str, float] = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}
GAN_LOSS_WEIGHT = 0.1  # gan_opt.loss_weight; applies to the generator only


def l1_loss(output: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * mean |output - target| (BasicSR ``L1Loss``, reduction 'mean')."""
    if output.shape != target.shape:
        raise ValueError(f"l1_loss: output {tuple(output.shape)} and target {tuple(target.shape)} differ")
    return weight * F.l1_loss(output, target, reduction="mean")


def weighted_feature_l1(
    output_features: Mapping[str, torch.Tensor],
    target_features: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
) -> torch.Tensor:
    """sum_l w_l * mean |phi_l(out) - phi_l(gt)| (BasicSR ``PerceptualLoss.forward``, criterion l1)."""
    terms = [w * F.l1_loss(output_features[name], target_features[name]) for name, w in layer_weights.items()]
    return torch.stack(terms).sum()


class PerceptualLoss(nn.Module):
    """VGG19 perceptual loss: perceptual_weight * sum_l w_l * mean |phi_l(out) - phi_l(gt)|.

    The ground-truth features come from ``gt.detach()`` under ``no_grad``; the output is fed to
    VGG as is, without clamping, as upstream.

    Args:
        extractor: a ``VGGFeatureExtractor`` that returns every layer in ``layer_weights``.
        layer_weights: per-layer weights; Real-ESRGAN's by default.
        perceptual_weight: overall weight (1.0 in Real-ESRGAN).

    Example:
        >>> loss = PerceptualLoss(VGGFeatureExtractor("random", layer_names=("conv1_2",)), {"conv1_2": 1.0})
        >>> loss(torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8))
        tensor(0.)
    """

    def __init__(
        self,
        extractor: VGGFeatureExtractor,
        layer_weights: Mapping[str, float] | None = None,
        perceptual_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.layer_weights = dict(PERCEPTUAL_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        missing = [n for n in self.layer_weights if n not in extractor.layer_names]
        if missing:
            raise ValueError(f"PerceptualLoss: extractor does not return layers {missing}")
        self.extractor = extractor
        self.perceptual_weight = perceptual_weight

    @property
    def pretrained(self) -> bool:
        return self.extractor.pretrained

    def forward(self, output: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        if output.shape != gt.shape:
            raise ValueError(f"PerceptualLoss: output {tuple(output.shape)} and gt {tuple(gt.shape)} differ")
        output_features = self.extractor(output)
        with torch.no_grad():
            gt_features = self.extractor(gt.detach())
        return self.perceptual_weight * weighted_feature_l1(output_features, gt_features, self.layer_weights)


def gan_loss(
    logits: torch.Tensor, target_is_real: bool, is_disc: bool, weight: float = GAN_LOSS_WEIGHT
) -> torch.Tensor:
    """Vanilla GAN loss: BCE-with-logits of the whole logit map against a constant label.

    BasicSR ``GANLoss(gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0)``: the loss
    weight multiplies the generator's loss only (``is_disc=False``); the discriminator's is unweighted.

    Args:
        logits: discriminator output, any shape (e.g. (B, 1, H, W)).
        target_is_real: label 1 if True, else 0.
        is_disc: True when computing the discriminator's loss.
        weight: generator loss weight (0.1 in Real-ESRGAN).
    """
    target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    return loss if is_disc else loss * weight
