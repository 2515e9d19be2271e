"""Small helpers shared by the jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from degrade import DegradationConfig
from degrade.tomlio import apply_overrides, to_dict

__all__ = ["resolve_degradation_config"]


def resolve_degradation_config(path: Path | None = None, *, order: int | None = None, scale: int | None = None,
                               overrides: Sequence[str] = ()) -> DegradationConfig:
    """Defaults < TOML file < --order/--scale < --set overrides."""
    config = DegradationConfig.load(path) if path is not None else DegradationConfig()
    if order is not None:
        config = config.with_order(order)
    if scale is not None:
        config = replace(config, scale=scale)
    return apply_overrides(DegradationConfig, to_dict(config), overrides) if overrides else config
