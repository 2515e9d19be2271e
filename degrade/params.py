"""Sampled degradation parameters: every random choice of a batch, one entry per sample.

`DegradationParams` is what `sample_params` draws and `apply` consumes. Every field is a (B,)
tensor, even choices the reference draws once per batch (they then hold B equal values), so a
sample can always be cut out of its batch (`select`) and replayed alone. `records()` turns the
batch into one JSON-serializable dict per sample; `from_records` reads them back exactly
(floats are float64 and JSON round-trips them bit for bit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from degrade.compress import COMPRESSION_TYPES, JPEG_SAMPLINGS
from degrade.kernels import KERNEL_FAMILIES
from degrade.resize import RESIZE_MODES

__all__ = ["StageParams", "FinalParams", "DegradationParams", "RESIZE_TYPES", "NOISE_TYPES", "FINAL_ORDERS"]

RECORD_VERSION = 1
RESIZE_TYPES: tuple[str, ...] = ("up", "down", "keep")
NOISE_TYPES: tuple[str, ...] = ("gaussian", "poisson")
FINAL_ORDERS: tuple[str, ...] = ("resize_sinc_then_jpeg", "jpeg_then_resize_sinc")
_FLOAT = torch.float64
_INT = torch.int64


def _select_fields(obj: Any, index: Tensor) -> Any:
    return dataclasses.replace(obj, **{f.name: getattr(obj, f.name)[index] for f in dataclasses.fields(obj)})


@dataclass(frozen=True)
class StageParams:
    """Draws of one stage. Kernel parameters a family does not use hold harmless placeholders."""

    blur_applied: Tensor  # bool
    kernel_family: Tensor  # int64 index into KERNEL_FAMILIES
    kernel_size: Tensor  # int64, odd
    sigma_x: Tensor
    sigma_y: Tensor
    theta: Tensor
    beta: Tensor
    sinc_cutoff: Tensor
    resize_type: Tensor  # int64 index into RESIZE_TYPES
    resize_scale: Tensor
    resize_mode: Tensor  # int64 index into RESIZE_MODES
    noise_type: Tensor  # int64 index into NOISE_TYPES
    noise_level: Tensor  # σ in 1/255 units (Gaussian) or scale (Poisson)
    noise_gray: Tensor  # bool
    noise_seed: Tensor  # int64
    jpeg_quality: Tensor
    compression: Tensor  # int64 index into COMPRESSION_TYPES (0: JPEG)
    jpeg_sampling: Tensor  # int64 index into JPEG_SAMPLINGS (0: 4:2:0)
    webp_quality: Tensor
    video_crf: Tensor

    def select(self, index: Tensor) -> StageParams:
        return _select_fields(self, index)

    def record(self, i: int) -> dict[str, Any]:
        family = KERNEL_FAMILIES[int(self.kernel_family[i])]
        blur: dict[str, Any] = {"applied": bool(self.blur_applied[i]), "family": family,
                                "size": int(self.kernel_size[i])}
        if family == "sinc":
            blur["cutoff"] = float(self.sinc_cutoff[i])
        else:
            blur["sigma_x"] = float(self.sigma_x[i])
            if not family.endswith("_iso") and family != "iso":
                blur["sigma_y"] = float(self.sigma_y[i])
                blur["theta"] = float(self.theta[i])
            if family.startswith(("generalized", "plateau")):
                blur["beta"] = float(self.beta[i])
        noise_type = NOISE_TYPES[int(self.noise_type[i])]
        record = {
            "blur": blur,
            "resize": {"type": RESIZE_TYPES[int(self.resize_type[i])], "scale": float(self.resize_scale[i]),
                       "mode": RESIZE_MODES[int(self.resize_mode[i])]},
            "noise": {"type": noise_type,
                      ("sigma" if noise_type == "gaussian" else "scale"): float(self.noise_level[i]),
                      "gray": bool(self.noise_gray[i]), "seed": int(self.noise_seed[i])},
            "jpeg_quality": float(self.jpeg_quality[i]),
        }
        kind, sampling = COMPRESSION_TYPES[int(self.compression[i])], JPEG_SAMPLINGS[int(self.jpeg_sampling[i])]
        if kind == "webp":
            record["compression"] = {"type": kind, "quality": float(self.webp_quality[i])}
        elif kind != "jpeg":
            record["compression"] = {"type": kind, "crf": float(self.video_crf[i])}
        elif sampling != "4:2:0":  # the paper's JPEG 4:2:0 records stay as they always were
            record["compression"] = {"type": kind, "sampling": sampling}
        return record

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> StageParams:
        def column(get, dtype):
            return torch.tensor([get(r) for r in records], dtype=dtype)

        def blur(r):
            return r["blur"]

        return cls(
            blur_applied=column(lambda r: blur(r)["applied"], torch.bool),
            kernel_family=column(lambda r: KERNEL_FAMILIES.index(blur(r)["family"]), _INT),
            kernel_size=column(lambda r: blur(r)["size"], _INT),
            sigma_x=column(lambda r: blur(r).get("sigma_x", 1.0), _FLOAT),
            sigma_y=column(lambda r: blur(r).get("sigma_y", blur(r).get("sigma_x", 1.0)), _FLOAT),
            theta=column(lambda r: blur(r).get("theta", 0.0), _FLOAT),
            beta=column(lambda r: blur(r).get("beta", 1.0), _FLOAT),
            sinc_cutoff=column(lambda r: blur(r).get("cutoff", torch.pi), _FLOAT),
            resize_type=column(lambda r: RESIZE_TYPES.index(r["resize"]["type"]), _INT),
            resize_scale=column(lambda r: r["resize"]["scale"], _FLOAT),
            resize_mode=column(lambda r: RESIZE_MODES.index(r["resize"]["mode"]), _INT),
            noise_type=column(lambda r: NOISE_TYPES.index(r["noise"]["type"]), _INT),
            noise_level=column(lambda r: r["noise"].get("sigma", r["noise"].get("scale")), _FLOAT),
            noise_gray=column(lambda r: r["noise"]["gray"], torch.bool),
            noise_seed=column(lambda r: r["noise"]["seed"], _INT),
            jpeg_quality=column(lambda r: r["jpeg_quality"], _FLOAT),
            compression=column(lambda r: COMPRESSION_TYPES.index(r.get("compression", {}).get("type", "jpeg")), _INT),
            jpeg_sampling=column(lambda r: JPEG_SAMPLINGS.index(r.get("compression", {}).get("sampling", "4:2:0")),
                                 _INT),
            webp_quality=column(lambda r: r.get("compression", {}).get("quality", 0.0), _FLOAT),
            video_crf=column(lambda r: r.get("compression", {}).get("crf", 0.0), _FLOAT),
        )


@dataclass(frozen=True)
class FinalParams:
    """Draws of the final step: order, resize mode back to the target size, final sinc filter."""

    order: Tensor  # int64 index into FINAL_ORDERS
    resize_mode: Tensor  # int64 index into RESIZE_MODES
    sinc_applied: Tensor  # bool; False is the reference's identity "pulse" kernel
    sinc_size: Tensor  # int64
    sinc_cutoff: Tensor

    def select(self, index: Tensor) -> FinalParams:
        return _select_fields(self, index)

    def record(self, i: int) -> dict[str, Any]:
        sinc: dict[str, Any] = {"applied": bool(self.sinc_applied[i])}
        if sinc["applied"]:
            sinc.update(size=int(self.sinc_size[i]), cutoff=float(self.sinc_cutoff[i]))
        return {"order": FINAL_ORDERS[int(self.order[i])], "resize_mode": RESIZE_MODES[int(self.resize_mode[i])],
                "sinc": sinc}

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> FinalParams:
        return cls(
            order=torch.tensor([FINAL_ORDERS.index(r["order"]) for r in records], dtype=_INT),
            resize_mode=torch.tensor([RESIZE_MODES.index(r["resize_mode"]) for r in records], dtype=_INT),
            sinc_applied=torch.tensor([r["sinc"]["applied"] for r in records], dtype=torch.bool),
            sinc_size=torch.tensor([r["sinc"].get("size", 1) for r in records], dtype=_INT),
            sinc_cutoff=torch.tensor([r["sinc"].get("cutoff", torch.pi) for r in records], dtype=_FLOAT),
        )


@dataclass(frozen=True)
class DegradationParams:
    """All draws for a batch: one `StageParams` per stage plus the `FinalParams`."""

    stages: tuple[StageParams, ...]
    final: FinalParams

    @property
    def batch_size(self) -> int:
        return int(self.final.order.shape[0])

    def select(self, index: Tensor | Sequence[int]) -> DegradationParams:
        """The parameters of the samples at ``index`` (in that order)."""
        index = torch.as_tensor(index, dtype=_INT)
        return DegradationParams(tuple(s.select(index) for s in self.stages), self.final.select(index))

    def records(self) -> list[dict[str, Any]]:
        """One JSON-serializable record per sample, holding everything needed to replay it."""
        return [
            {"version": RECORD_VERSION, "stages": [s.record(i) for s in self.stages], "final": self.final.record(i)}
            for i in range(self.batch_size)
        ]

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> DegradationParams:
        """Rebuild parameters from `records()` output (e.g. read back from JSON)."""
        if not records:
            raise ValueError("from_records needs at least one record")
        versions = {r.get("version") for r in records}
        if versions != {RECORD_VERSION}:
            raise ValueError(f"unsupported degradation record version(s) {sorted(map(str, versions))}; "
                             f"this library reads version {RECORD_VERSION}")
        orders = {len(r["stages"]) for r in records}
        if len(orders) != 1:
            raise ValueError(f"records mix degradation orders {sorted(orders)}")
        stages = tuple(StageParams.from_records([r["stages"][k] for r in records]) for k in range(orders.pop()))
        return cls(stages, FinalParams.from_records([r["final"] for r in records]))
