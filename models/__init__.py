"""Networks, losses, EMA and weight handling for Real-ESRGAN-style training.

Glossary: gt / hr = the high-resolution target; lq / lr = the degraded low-resolution input;
scale = output size / input size (4, 2 or 1); stage 1 = "Net" (L1 only, gives RealESRNet),
stage 2 = "GAN" (L1 + VGG19 perceptual + GAN, gives RealESRGAN).

Modules: ``rrdbnet`` and ``compact`` (generators), ``discriminator`` (U-Net with spectral norm), ``vgg`` (VGG19
features without torchvision), ``losses``, ``ema``, ``weights`` (official checkpoint wrapper,
loading, export, architecture detection), ``ncnn`` / ``ncnn_compact`` (ncnn files as state dicts) and
``ncnn_write`` (state dicts as ncnn files).
"""

from models.compact import CompactSpec, SRVGGNetCompact
from models.discriminator import UNetDiscriminatorSN
from models.ema import ModelEMA, ema_update_, unwrap_model
from models.losses import PerceptualLoss, gan_loss, l1_loss
from models.rrdbnet import RRDBNet, RRDBNetSpec
from models.vgg import VGGFeatureExtractor, resolve_vgg19_weights
from models.weights import (
    detect_generator,
    detect_rrdbnet,
    export_generator,
    load_generator,
    load_into,
    unwrap_state_dict,
)

__all__ = [
    "CompactSpec",
    "ModelEMA",
    "PerceptualLoss",
    "RRDBNet",
    "RRDBNetSpec",
    "SRVGGNetCompact",
    "UNetDiscriminatorSN",
    "VGGFeatureExtractor",
    "detect_generator",
    "detect_rrdbnet",
    "ema_update_",
    "export_generator",
    "gan_loss",
    "l1_loss",
    "load_generator",
    "load_into",
    "resolve_vgg19_weights",
    "unwrap_model",
    "unwrap_state_dict",
]
