"""The machinery under `detect.config`: YAML layers (``_base_``), dotted command-line overrides,
merging, checking every key against the dataclasses and coercing values to their types."""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A user error in a config file or override; its message is one line."""


def read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, mapping)] from the deepest base to `path`."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_base_", None)
    layers: list[tuple[Path, dict[str, Any]]] = []
    if base is not None:
        layers = read_layers(path.parent / str(base), seen + (path.resolve(),))
    return layers + [(path, data)]


def parse_override(item: str) -> dict[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"command line: override '{item}' is not of the form key=value")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed
    return out


def merge(dst: dict[str, Any], src: dict[str, Any], origin: dict[str, str], file: str,
           prefix: str = "") -> None:
    for k, v in src.items():
        dotted = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and not _is_free_dict(dotted):
            merge(dst[k], v, origin, file, dotted + ".")
        else:
            dst[k] = v
            origin[dotted] = file


def _is_free_dict(dotted: str) -> bool:
    """Keys whose value is a free-form mapping (replaced, not merged key by key)."""
    return dotted in {"train.loss_weights"}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_keys(layer: dict[str, Any], cls: type, file: str, prefix: str = "") -> None:
    hints = _hints(cls)
    for k, v in layer.items():
        dotted = f"{prefix}{k}"
        if k not in hints:
            close = difflib.get_close_matches(str(k), list(hints), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{file}: unknown key '{dotted}'{hint}")
        sub = hints[k]
        if dataclasses.is_dataclass(sub):
            if not isinstance(v, dict):
                raise ConfigError(f"{file}: '{dotted}' must be a mapping, got {v!r}")
            check_keys(v, sub, file, dotted + ".")


def build(cls: type, raw: dict[str, Any], prefix: str, origin: dict[str, str]) -> Any:
    kwargs = {}
    for name, tp in _hints(cls).items():
        if name not in raw:
            continue
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, raw[name], dotted + ".", origin)
        else:
            kwargs[name] = _coerce(raw[name], tp, dotted, origin)
    return cls(**kwargs)


def where(dotted: str, origin: dict[str, str]) -> str:
    while dotted and dotted not in origin:
        dotted = dotted.rpartition(".")[0]
    return origin.get(dotted, "config")


def _coerce(value: Any, tp: Any, dotted: str, origin: dict[str, str]) -> Any:
    """Check `value` against type `tp` (converting lists to tuples, ints to floats)."""
    try:
        return _convert(value, tp)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where(dotted, origin)}: '{dotted}' must be {_type_name(tp)}, got {value!r}"
        ) from None


def _convert(value: Any, tp: Any) -> Any:
    o, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if o in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _convert(value, a)
            except (TypeError, ValueError):
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if o is Literal:
        if value in args:
            return value
        raise ValueError
    if o is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError
        return tuple(_convert(v, a) for v, a in zip(value, args))
    if o is dict:
        if not isinstance(value, dict):
            raise TypeError
        return {_convert(k, args[0]): _convert(v, args[1]) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _type_name(tp: Any) -> str:
    o, args = typing.get_origin(tp), typing.get_args(tp)
    if o is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if o in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if o is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if o is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp))
