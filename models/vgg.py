"""VGG19 feature extractor for the perceptual loss, without torchvision.

Source: BasicSR ``basicsr/archs/vgg_arch.py`` (``VGGFeatureExtractor``) as used by
``PerceptualLoss`` in Real-ESRGAN stage 2: torchvision's ImageNet ``vgg19().features`` layout,
pre-activation features, truncated after the deepest requested layer, ImageNet input
normalization, frozen and in eval mode.

Weights are torchvision's ``vgg19-dcbb9e9d.pth`` (a plain state dict with ``features.N.*`` and
``classifier.*`` keys). Nothing is downloaded: ``resolve_vgg19_weights`` looks in, in order,
an explicit path, the ``ESRGAN_KIT_VGG19_WEIGHTS`` environment variable, and the torch hub cache
``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` (where torchvision itself would cache it).

Random weights exist only for smoke tests and only when the exact string ``"random"`` is passed as
the explicit spec. The environment variable is always read as a path; ``"random"`` there is an
error, so a stray or misspelt setting can never silently train against a random VGG.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILENAME}"
VGG19_ENV_VAR = "ESRGAN_KIT_VGG19_WEIGHTS"
RANDOM_WEIGHTS = "random"

# torchvision vgg19 "E" configuration: channels per conv, "M" = max-pool.
_VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    block, conv = 1, 1
    for item in _VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return tuple(names)


# Names in torchvision `features` index order: conv1_1=0, relu1_1=1, conv1_2=2, ..., pool5=36.
VGG19_LAYER_NAMES: tuple[str, ...] = _layer_names()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsNotFoundError(FileNotFoundError):
    """No VGG19 weights file at any of the places looked; the message lists them."""


def _missing_weights_message(looked: Sequence[str]) -> str:
    hub_target = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    places = "\n".join(f"  - {place}" for place in looked)
    return (
        "VGG19 weights for the perceptual loss were not found. Looked in:\n"
        f"{places}\n"
        f"Needed: torchvision's ImageNet VGG19 (no batch norm), file name {VGG19_FILENAME}, from {VGG19_URL}.\n"
        f"Put it at {hub_target} (the torch hub cache, $TORCH_HOME/hub/checkpoints), or set "
        f"{VGG19_ENV_VAR}=/path/to/{VGG19_FILENAME}, or pass the path explicitly.\n"
        f'For smoke tests only, pass the explicit value "{RANDOM_WEIGHTS}" to use random VGG weights.'
    )


def resolve_vgg19_weights(spec: str | os.PathLike[str] | None) -> Path | Literal["random"]:
    """Find the VGG19 weights file.

    Args:
        spec: an explicit path, the exact string ``"random"`` (random weights, smoke tests only),
            or ``None`` to look in ``$ESRGAN_KIT_VGG19_WEIGHTS`` and then the torch hub cache.

    Returns:
        The path of an existing file, or ``"random"``.

    Raises:
        VGGWeightsNotFoundError: nothing found; the message lists every place looked and where to
            put the file.
        ValueError: the environment variable says ``"random"`` (only an explicit spec may).
    """
    if spec is not None:
        if isinstance(spec, str) and spec == RANDOM_WEIGHTS:
            return RANDOM_WEIGHTS
        path = Path(spec).expanduser()
        if path.is_file():
            return path
        raise VGGWeightsNotFoundError(_missing_weights_message([f"explicit path {path}: no such file"]))

    looked: list[str] = []
    env_value = os.environ.get(VGG19_ENV_VAR, "").strip()
    if env_value == RANDOM_WEIGHTS:
        raise ValueError(
            f'{VGG19_ENV_VAR}="{RANDOM_WEIGHTS}" is refused: the variable must name a weights file. '
            f'Random VGG weights are only available by passing "{RANDOM_WEIGHTS}" explicitly.'
        )
    if env_value:
        path = Path(env_value).expanduser()
        if path.is_file():
            return path
        # The user asked for this file; falling through to another copy would hide the typo.
        raise VGGWeightsNotFoundError(_missing_weights_message([f"${VGG19_ENV_VAR}={env_value}: no such file"]))
    looked.append(f"${VGG19_ENV_VAR}: not set")

    hub_path = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME
    if hub_path.is_file():
        return hub_path
    looked.append(f"torch hub cache {hub_path}: no such file")
    raise VGGWeightsNotFoundError(_missing_weights_message(looked))


def build_vgg19_features(num_layers: int = len(VGG19_LAYER_NAMES)) -> nn.Sequential:
    """The first ``num_layers`` modules of torchvision's ``vgg19().features`` (uninitialized, CPU).

    Indices match torchvision, so ``features.N.weight`` keys map one to one.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    with torch.device("meta"):
        for item in _VGG19_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(item)
    return nn.Sequential(*layers[:num_layers]).to_empty(device="cpu")


def load_vgg19_features_(features: nn.Sequential, path: Path) -> None:
    """Copy torchvision's ``features.N.*`` tensors from ``path`` into ``features`` (in place)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected torchvision's VGG19 state dict, got a {type(state).__name__}")
    wanted = {f"features.{k}": v for k, v in features.state_dict().items()}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ValueError(
            f"{path}: not torchvision's VGG19 state dict; missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''} (file keys start with {list(state)[:4]})"
        )
    for key, target in wanted.items():
        if tuple(state[key].shape) != tuple(target.shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, VGG19 needs {tuple(target.shape)}"
            )
    features.load_state_dict({k.removeprefix("features."): state[k] for k in wanted})


def _init_random_(features: nn.Sequential, generator: torch.Generator) -> None:
    # torchvision's VGG init: kaiming_normal_(fan_out, relu), bias 0.
    for module in features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            nn.init.zeros_(module.bias)


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG19 returning pre-activation features of the requested layers.

    Args:
        weights: a weights file, or ``"random"`` (smoke tests only; sets ``pretrained=False`` and
            warns). Use ``resolve_vgg19_weights`` to find the file.
        layer_names: names from ``VGG19_LAYER_NAMES``; the net is cut after the deepest one.
        use_input_norm: normalize [0, 1] RGB input with the ImageNet mean and std.
        generator: draws the random weights when ``weights == "random"`` (default: seed 0).

    Shape:
        (B, 3, H, W) in [0, 1] -> dict name -> (B, C_l, H_l, W_l).
    """

    def __init__(
        self,
        weights: Path | Literal["random"],
        layer_names: Sequence[str] = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"),
        use_input_norm: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        unknown = [n for n in layer_names if n not in VGG19_LAYER_NAMES]
        if unknown or not layer_names:
            raise ValueError(f"unknown VGG19 layer names {unknown}; valid: {VGG19_LAYER_NAMES}")
        self.layer_names = tuple(layer_names)
        self._index = {VGG19_LAYER_NAMES.index(n): n for n in self.layer_names}
        self.features = build_vgg19_features(max(self._index) + 1)
        if isinstance(weights, str) and weights == RANDOM_WEIGHTS:
            self.pretrained = False
            msg = (
                "VGG19 perceptual loss is using RANDOM weights (weights='random'). This is for smoke tests "
                "only; a model trained with it will not learn a meaningful perceptual loss."
            )
            logger.warning("!" * 20 + " " + msg + " " + "!" * 20)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            _init_random_(self.features, generator or torch.Generator().manual_seed(0))
        elif isinstance(weights, Path | str):
            self.pretrained = True
            load_vgg19_features_(self.features, Path(weights))
        else:
            raise TypeError(f"weights must be a Path or 'random', got {type(weights).__name__}")
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Stay in eval mode: the extractor is a fixed loss network."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGGFeatureExtractor expects (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._index:
                # Clone: the next ReLU is in place and would overwrite the pre-activation feature.
                out[self._index[index]] = x.clone()
        return out
