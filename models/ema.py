"""Exponential moving average of a model's parameters.

Source: BasicSR ``basicsr/models/base_model.py`` (``model_ema``): after each optimizer step,
``ema = ema * decay + param * (1 - decay)`` over ``named_parameters()`` only; buffers are not
averaged. The EMA copy starts as a copy of the model and is saved as ``params_ema``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

EMA_DECAY = 0.999  # options/train_realesr*_x4plus.yml, train.ema_decay


def check_decay(decay: float, name: str = "EMA decay") -> float:
    """``decay`` if it is in [0, 1), else ValueError naming ``name`` (the one range check of the project).

    0 copies the model at every step; 1 is refused: the EMA would never leave its initial weights, so
    ``params_ema`` would silently be the untrained network.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {decay} (Real-ESRGAN: {EMA_DECAY})")
    return decay


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


@torch.no_grad()
def ema_update_(ema_model: nn.Module, model: nn.Module, decay: float = EMA_DECAY) -> None:
    """In place: ema_p <- ema_p * decay + p * (1 - decay) for every named parameter.

    Parameters are matched by name after unwrapping both modules; a name mismatch is an error
    rather than a silent partial update.
    """
    check_decay(decay)
    ema_params = dict(unwrap_model(ema_model).named_parameters())
    params = dict(unwrap_model(model).named_parameters())
    if ema_params.keys() != params.keys():
        only_ema = sorted(ema_params.keys() - params.keys())[:4]
        only_model = sorted(params.keys() - ema_params.keys())[:4]
        raise ValueError(f"EMA and model parameters differ: only in EMA {only_ema}, only in model {only_model}")
    for name, ema_p in ema_params.items():
        ema_p.mul_(decay).add_(params[name].detach().to(ema_p.dtype), alpha=1.0 - decay)


class ModelEMA:
    """An EMA copy of a model (``.module``), never DDP-wrapped, frozen and in eval mode.

    Args:
        model: the trained model, possibly wrapped by DDP or ``torch.compile``; the EMA starts as a
            deep copy of the unwrapped module (BasicSR's ``model_ema(0)``).
        decay: EMA decay (0.999 in Real-ESRGAN).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> ema = ModelEMA(net, decay=0.5)
        >>> ema.update(net)
    """

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY) -> None:
        self.decay = check_decay(decay)
        self.module = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current parameters (call after the optimizer step)."""
        ema_update_(self.module, model, self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights (what the official files store as ``params_ema``)."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
        self.module.load_state_dict(state_dict, strict=strict)
