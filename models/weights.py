"""Loading, exporting and recognising generator weights in the official Real-ESRGAN format.

Sources: BasicSR ``basicsr/models/base_model.py`` (``save_network``: ``{"params": ..., "params_ema":
...}``, ``module.`` stripped; ``load_network``: ``param_key`` with fallback to ``params``, and in
non-strict mode tensors whose shape differs are skipped via the ``<key>.ignore`` rename) and
Real-ESRGAN ``realesrgan/utils.py`` (inference prefers ``params_ema``). Detection follows spandrel's
idea of reading hyperparameters off the state-dict shapes.

Every file is read with ``torch.load(..., weights_only=True)``: no arbitrary unpickling.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.compact import CompactSpec, ResizedOutput, SRVGGNetCompact, detect_compact_spec, looks_like_compact
from models.ema import unwrap_model
from models.ncnn import WEIGHTS_PACKAGE, builtin_model, parse_weights_spec
from models.ncnn_compact import load_ncnn_model
from models.rrdbnet import UNSHUFFLE_FACTOR, RRDBNet, RRDBNetSpec, check_param_shapes, rrdbnet_param_shapes
from shards.atomic import write_file_atomic

StateDict = dict[str, torch.Tensor]
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile
ARCH_KEY = "arch"  # optional {"type": ..., hyperparameters} next to params / params_ema; loaders ignore it
_REQUIRED_RRDB_KEYS = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load`` on CPU with ``weights_only=True`` and a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in several types; all mean "not a safe weights file"
        raise ValueError(
            f"{path}: cannot be read as a weights file with torch.load(weights_only=True) "
            f"(a corrupt file or one holding arbitrary Python objects): {err}"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict (state dict or checkpoint wrapper), got {type(obj).__name__}")
    return obj


def load_safetensors_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``.safetensors`` file as ``{"params": state dict, "arch": metadata}`` (no pickle involved)."""
    try:
        from safetensors import safe_open
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{path}: reading .safetensors needs the safetensors package: "
                                  "pip install -e \".[onnx]\"") from err
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
            meta = handle.metadata() or {}
        arch = json.loads(meta.get(ARCH_KEY, "null")) or {}
    except Exception as err:  # header / JSON errors come in several types; all mean "not a valid file"
        raise ValueError(f"{path}: cannot be read as a .safetensors weights file: {err}") from err
    return {"params": state, ARCH_KEY: arch}


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(
    obj: Mapping[str, Any], prefer: tuple[str, ...] = ("params_ema", "params")
) -> tuple[StateDict, str | None]:
    """Pick the state dict out of a checkpoint and strip ``module.`` / ``_orig_mod.`` prefixes.

    Args:
        obj: a loaded file: the official wrapper ``{"params": sd, "params_ema": sd}`` or a bare state dict.
        prefer: wrapper keys to try in order (``params_ema`` first, as Real-ESRGAN inference does).

    Returns:
        (state dict, the wrapper key used, or None for a bare state dict).
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict or checkpoint wrapper, got {type(obj).__name__}")
    key_used: str | None = None
    for key in prefer:
        if key in obj and isinstance(obj[key], Mapping):
            obj, key_used = obj[key], key
            break
    if not _is_tensor_dict(obj):
        raise ValueError(
            f"no state dict found: looked for wrapper keys {list(prefer)} and for a bare name->tensor dict; "
            f"top-level keys are {list(obj)[:8]}"
        )
    return {_strip_prefixes(k): v for k, v in obj.items()}, key_used


@dataclass(frozen=True)
class LoadReport:
    """What ``load_into`` did: keys loaded, skipped for a shape mismatch, missing and unexpected."""

    loaded: tuple[str, ...]
    skipped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)  # key -> (file, model)
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not (self.skipped or self.missing or self.unexpected)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.skipped:
            parts.append("skipped (shape differs): " + ", ".join(
                f"{k} file {a} vs model {b}" for k, (a, b) in self.skipped.items()))
        if self.missing:
            parts.append(f"missing from file: {list(self.missing)[:8]}{' ...' if len(self.missing) > 8 else ''}")
        if self.unexpected:
            parts.append(f"unexpected in file: {list(self.unexpected)[:8]}{' ...' if len(self.unexpected) > 8 else ''}")
        return "; ".join(parts)


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Copy ``state_dict`` into ``model`` (unwrapped from DDP / compile first).

    Args:
        model: target module.
        state_dict: name -> tensor, already unwrapped (see ``unwrap_state_dict``).
        strict: every key must match in name and shape, else ValueError. With ``strict=False``
            tensors whose shape differs are skipped (BasicSR's ``.ignore`` trick, used to start an x2
            model from x4 weights) and missing / unexpected keys are reported, not raised.
    """
    target = unwrap_model(model)
    own = target.state_dict()
    skipped = {
        k: (tuple(v.shape), tuple(own[k].shape))
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    }
    report = LoadReport(
        loaded=tuple(k for k in own if k in state_dict and k not in skipped),
        skipped=skipped,
        missing=tuple(k for k in own if k not in state_dict),
        unexpected=tuple(k for k in state_dict if k not in own),
    )
    if strict and not report.complete:
        raise ValueError(f"strict load into {type(target).__name__} failed: {report.summary()}")
    target.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=strict)
    return report


def load_checkpoint_into(
    model: nn.Module,
    path: str | os.PathLike[str],
    prefer: tuple[str, ...] = ("params_ema", "params"),
    strict: bool = True,
) -> LoadReport:
    """``load_state_dict_file`` + ``unwrap_state_dict`` + ``load_into``; errors name the file."""
    state_dict, _ = unwrap_state_dict(load_state_dict_file(path), prefer)
    try:
        return load_into(model, state_dict, strict=strict)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _cpu_state(params: Mapping[str, torch.Tensor] | nn.Module) -> StateDict:
    state = unwrap_model(params).state_dict() if isinstance(params, nn.Module) else params
    return {_strip_prefixes(k): v.detach().cpu().clone() for k, v in state.items()}


def export_generator(
    path: str | os.PathLike[str],
    params: Mapping[str, torch.Tensor] | nn.Module,
    params_ema: Mapping[str, torch.Tensor] | nn.Module | None = None,
) -> Path:
    """Write ``{"params": ..., "params_ema": ...}`` like BasicSR ``save_network``, atomically.

    Written with ``shards.atomic.write_file_atomic`` (temporary file, fsync, ``os.replace``): a crash never
    leaves a truncated weights file, a failure leaves no temporary file, and the mode follows the umask
    (not mkstemp's 0600). Tensors are saved on CPU without wrapper prefixes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"params": _cpu_state(params)}
    if params_ema is not None:
        payload["params_ema"] = _cpu_state(params_ema)
    if isinstance(unwrap_model(params) if isinstance(params, nn.Module) else None, SRVGGNetCompact):
        # ReLU / LeakyReLU compact models cannot be recognised from their tensors alone (see models.compact).
        payload[ARCH_KEY] = {"type": "SRVGGNetCompact", **unwrap_model(params).hparams}
    write_file_atomic(path, lambda handle: torch.save(payload, handle))
    return path


def _scale_from_channels(in_total: int, num_out_ch: int) -> tuple[int, int]:
    # conv_first sees num_in_ch * f^2 channels (f = 1, 2, 4 for x4, x2, x1). Assume
    # num_in_ch == num_out_ch when that is consistent (the released models); otherwise x4.
    for scale, factor in UNSHUFFLE_FACTOR.items():
        if in_total == num_out_ch * factor**2:
            return scale, num_out_ch
    return 4, in_total


def detect_rrdbnet(obj: Mapping[str, Any]) -> RRDBNetSpec:
    """Read an RRDBNet's hyperparameters off a state dict (bare or in the official wrapper).

    scale from conv_first's input channels (3 -> x4, 12 -> x2, 48 -> x1 for RGB), num_block from
    the highest ``body.N`` index + 1, num_feat / num_grow_ch / channels from the shapes. Every
    tensor is then checked against the full expected layout.

    Raises:
        ValueError: not an RRDBNet state dict (the message lists the keys seen), or shapes inconsistent.
    """
    state_dict, _ = unwrap_state_dict(obj)
    missing = [k for k in _REQUIRED_RRDB_KEYS if k not in state_dict]
    if missing:
        keys = list(state_dict)
        hint = ""
        if all(re.fullmatch(r"body\.\d+\.(weight|bias)", k) for k in keys):
            hint = " It looks like an SRVGGNetCompact (realesr-animevideov3 / realesr-general): use detect_generator."
        raise ValueError(
            f"not an RRDBNet state dict: missing {missing}. Saw {len(keys)} keys: {keys[:8]}"
            f"{' ...' if len(keys) > 8 else ''}.{hint}"
        )
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"body\.(\d+)\.", k))}
    first = state_dict["conv_first.weight"]
    num_out_ch = int(state_dict["conv_last.weight"].shape[0])
    scale, num_in_ch = _scale_from_channels(int(first.shape[1]), num_out_ch)
    spec = RRDBNetSpec(
        scale=scale,
        num_block=max(blocks) + 1,
        num_feat=int(first.shape[0]),
        num_grow_ch=int(state_dict["body.0.rdb1.conv1.weight"].shape[0]),
        num_in_ch=num_in_ch,
        num_out_ch=num_out_ch,
    )
    check_rrdbnet_shapes(state_dict, spec)
    return spec


def check_rrdbnet_shapes(state_dict: Mapping[str, torch.Tensor], spec: RRDBNetSpec) -> None:
    """Raise ValueError unless ``state_dict`` has exactly RRDBNet(spec)'s keys and shapes."""
    check_param_shapes(state_dict, rrdbnet_param_shapes(spec), f"RRDBNet({spec})")


GeneratorSpec = RRDBNetSpec | CompactSpec


def _arch_entry(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    entry = obj.get(ARCH_KEY) if isinstance(obj, Mapping) else None
    return entry if isinstance(entry, Mapping) else {}


def detect_generator(obj: Mapping[str, Any], act_type: str | None = None) -> GeneratorSpec:
    """RRDBNet or SRVGGNetCompact, with hyperparameters, read off a state dict (bare or wrapped).

    A compact model's activation is read from ``body.1.weight`` (PReLU), else from ``act_type``, else
    from the wrapper's ``arch`` entry that ``export_generator`` writes.
    """
    state_dict, _ = unwrap_state_dict(obj)
    if looks_like_compact(state_dict):
        return detect_compact_spec(state_dict, act_type or _arch_entry(obj).get("act_type"))
    return detect_rrdbnet(state_dict)


def build_generator(spec: GeneratorSpec, generator: torch.Generator | None = None) -> nn.Module:
    """The network described by ``spec`` (an ``RRDBNetSpec`` or ``CompactSpec``)."""
    if isinstance(spec, CompactSpec):
        return SRVGGNetCompact.from_spec(spec, generator=generator)
    return RRDBNet.from_spec(spec, generator=generator)


def describe_spec(spec: GeneratorSpec, out_scale: int | None = None) -> str:
    """One line for logs, e.g. ``SRVGGNetCompact x4 (num_feat 64, num_conv 16, prelu)``."""
    if isinstance(spec, CompactSpec):
        text = f"SRVGGNetCompact x{spec.scale} (num_feat {spec.num_feat}, num_conv {spec.num_conv}, {spec.act_type})"
    else:
        text = f"RRDBNet x{spec.scale} ({spec.num_block} blocks, num_feat {spec.num_feat}, grow {spec.num_grow_ch})"
    return text + (f" + bicubic output resize to x{out_scale}" if out_scale and out_scale != spec.scale else "")


@dataclass(frozen=True)
class ResolvedWeights:
    """A ``--weights`` value resolved: state dict, architecture, output resize (ncnn x2/x3 builtins), origin."""

    state: StateDict
    spec: GeneratorSpec
    description: str
    out_scale: int | None = None

    @property
    def scale(self) -> int:
        return self.out_scale or self.spec.scale


def resolve_weights(spec: str | os.PathLike[str], prefer: tuple[str, ...] = ("params_ema", "params"),
                    act_type: str | None = None) -> ResolvedWeights:
    """Resolve a builtin name, an ncnn ``.param`` or a checkpoint to a state dict plus its architecture."""
    source = parse_weights_spec(spec)
    if source.kind in ("builtin", "ncnn"):
        assert source.kind == "builtin" or source.path is not None
        converted = builtin_model(source.name) if source.kind == "builtin" else load_ncnn_model(source.path)
        origin = f"builtin {source.name} ({WEIGHTS_PACKAGE})" if source.kind == "builtin" else f"ncnn {source.path}"
        return ResolvedWeights(converted.state, converted.spec, origin, converted.out_scale)
    assert source.path is not None
    raw = load_safetensors_file(source.path) if source.path.suffix == ".safetensors" else \
        load_state_dict_file(source.path)
    state_dict, key = unwrap_state_dict(raw, prefer)
    try:
        detected = detect_generator({ARCH_KEY: _arch_entry(raw), "params": state_dict}, act_type)
    except ValueError as err:
        raise ValueError(f"{source.path}: {err}") from err
    return ResolvedWeights(state_dict, detected, f"{source.path} [{key or 'bare state dict'}]")


def load_generator(spec: str | os.PathLike[str], prefer: tuple[str, ...] = ("params_ema", "params"),
                   act_type: str | None = None) -> tuple[nn.Module, ResolvedWeights]:
    """Build the detected network, load the weights strictly, wrap the output resize if the source has one."""
    resolved = resolve_weights(spec, prefer, act_type)
    model = build_generator(resolved.spec)
    try:
        load_into(model, resolved.state, strict=True)
    except ValueError as err:
        raise ValueError(f"{os.fspath(spec)}: {err}") from err
    if resolved.out_scale and resolved.out_scale != resolved.spec.scale:
        model = ResizedOutput(model, resolved.out_scale)
    return model, resolved


def check_same_arch(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a clear error when ``--init-from`` weights are of another architecture than ``model``."""
    model = unwrap_model(model)
    file_compact, model_compact = looks_like_compact(state_dict), isinstance(model, SRVGGNetCompact)
    if file_compact != model_compact:
        names = {True: "SRVGGNetCompact (compact)", False: "RRDBNet"}
        raise ValueError(f"init_from {source}: the weights are an {names[file_compact]} but network.arch builds an "
                         f"{names[model_compact]}; set network.arch = \"{'compact' if file_compact else 'rrdbnet'}\"")


def load_generator_state_dict(
    spec: str | os.PathLike[str], prefer: tuple[str, ...] = ("params_ema", "params")
) -> tuple[StateDict, str]:
    """Resolve a ``--weights`` / ``--init-from`` value to a generator state dict (RRDBNet or compact).

    Args:
        spec: a builtin name (see ``models.ncnn.BUILTIN_MODELS``), an ncnn ``.param`` file, or a
            PyTorch checkpoint (official wrapper or bare state dict).
        prefer: wrapper keys tried in order for checkpoints.

    Returns:
        (state dict, a short description of where it came from, for logs).
    """
    source = parse_weights_spec(spec)
    if source.kind == "builtin":
        return builtin_model(source.name).state, f"builtin {source.name} ({WEIGHTS_PACKAGE})"
    assert source.path is not None
    if source.kind == "ncnn":
        return load_ncnn_model(source.path).state, f"ncnn {source.path}"
    state_dict, key = unwrap_state_dict(load_state_dict_file(source.path), prefer)
    return state_dict, f"{source.path} [{key or 'bare state dict'}]"
