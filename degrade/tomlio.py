"""Strict conversion between frozen dataclass configs, plain dicts and TOML.

Loading rejects unknown keys and wrong types (naming the dotted key), so a typo in a config file is
an error rather than a silently ignored setting. `set_override` applies ``key=value`` strings whose
value is parsed as a TOML literal — never with eval; `set_value` sets an already typed value (programs pass
overrides as data, not as text to be parsed back). The writer covers exactly what configs hold:
bools, ints, floats, strings, arrays of those, nested tables and arrays of tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigError", "from_dict", "to_dict", "to_toml", "from_toml", "parse_value", "set_override",
           "set_value", "override_data", "override_keys", "apply_overrides"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and how to fix it."""


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as nested dicts and lists (JSON- and TOML-serializable)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return from_dict(tp, value, key)
    if origin is typing.Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not one of {allowed}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected an array, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_describe(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], key: str = "") -> T:
    """Build dataclass ``cls`` from nested dicts; missing keys take the defaults, unknown keys are errors."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in [{key}]" if key else ""
        raise ConfigError(f"unknown key {unknown[0]!r}{where}; valid keys are: {', '.join(names)}")
    kwargs = {
        name: _convert(hints[name], data[name], f"{key}.{name}" if key else name) for name in names if name in data
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{key or cls.__name__}: {error}") from error


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    if value is None:
        raise ConfigError("TOML has no null: leave the key out instead")
    raise ConfigError(f"cannot write {value!r} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def _write_table(data: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    for name, value in data.items():
        if value is None or isinstance(value, Mapping) or _is_table_array(value):
            continue
        lines.append(f"{name} = {_toml_scalar(value)}")
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Mapping):
            lines.extend(["", f"[{path}]"])
            _write_table(value, path, lines)
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{path}]]"])
                _write_table(item, path, lines)


def to_toml(config: Any) -> str:
    """A dataclass config (or nested dict) as TOML text that `from_toml` reads back to an equal object."""
    data = to_dict(config) if dataclasses.is_dataclass(config) else config
    lines: list[str] = []
    _write_table(data, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def from_toml(cls: type[T], text: str, *, source: str = "<string>") -> T:
    """Parse TOML text into ``cls``; syntax errors name ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: invalid TOML: {error}") from error
    return from_dict(cls, data)


def parse_value(text: str) -> Any:
    """Parse a TOML literal (``3``, ``0.5``, ``true``, ``"bicubic"``, ``[30, 95]``); bare words are strings."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if text and all(ch.isalnum() or ch in "-_./" for ch in text):
            return text  # allow --set stage=net without quotes
        raise ConfigError(f"cannot parse {text!r} as a TOML value (quote strings, e.g. '\"bicubic\"')") from None


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` to nested dicts in place; integer parts index arrays of tables."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value")
    dotted, text = assignment.split("=", 1)
    if not _key_parts(dotted):
        raise ConfigError(f"override {assignment!r} has an empty key")
    set_value(data, dotted, parse_value(text.strip()))


def _key_parts(dotted: str) -> list[str]:
    return [p for p in dotted.strip().split(".") if p]


def set_value(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted.key`` to an already typed ``value`` in nested dicts in place (what `set_override` does after
    parsing its text); integer parts index arrays of tables. The value is checked when the config is built."""
    parts = _key_parts(dotted)
    if not parts:
        raise ConfigError(f"override {dotted!r} has an empty key")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {dotted}: {where} is not an index below {len(node)}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {dotted}: {where} is a value, not a table")
    if isinstance(node, list):
        raise ConfigError(f"override {dotted}: address an element of the array, e.g. {dotted}.0.<key>")
    node[parts[-1]] = value


def override_data(base: Mapping[str, Any], assignments: Iterable[str] = (),
                  values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (nested dicts) with each ``key=value`` text applied in order, then each typed
    ``values`` entry (dotted key -> value, e.g. from a program or a command-line flag, never turned into text)."""
    data = json.loads(json.dumps(base))
    for assignment in assignments:
        set_override(data, assignment)
    for dotted, value in (values or {}).items():
        set_value(data, dotted, value)
    return data


def override_keys(assignments: Iterable[str] = (), values: Mapping[str, Any] | None = None) -> set[str]:
    """The dotted keys the assignments and values set (``a..b = 1`` sets ``a.b``, as `set_override` reads it)."""
    return {".".join(_key_parts(k)) for k in [*(a.split("=", 1)[0] for a in assignments), *(values or {})]}


def apply_overrides(cls: type[T], base: Mapping[str, Any], assignments: Iterable[str] = (),
                    values: Mapping[str, Any] | None = None) -> T:
    """``cls`` built from ``base`` (nested dicts) with `override_data`'s texts, then typed values, applied."""
    return from_dict(cls, override_data(base, assignments, values))
