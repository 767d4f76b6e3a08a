"""Dataclass configs that load from and save to YAML, with command-line overrides.

Every config in privlens is a dataclass. ``save_config`` writes it as plain YAML (nested
dataclasses become mappings, tuples become lists, infinities ``.inf``); ``load_config``
rebuilds it with type checks, and ``apply_overrides`` takes ``key.sub=value`` strings, so a
run can be saved, replayed and tweaked from the command line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

__all__ = ["ConfigError", "to_dict", "from_dict", "save_config", "load_config",
           "apply_overrides"]


class ConfigError(ValueError):
    """Bad config file or override."""


def to_dict(cfg) -> dict:
    """Plain-Python mapping of a (nested) dataclass, ready for YAML or JSON."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, f"{where}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else typing.Any
        return tuple(_coerce(v, inner, where) for v in value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if math.isnan(out):
            raise ConfigError(f"{where}: NaN is not allowed")
        return out
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            out = int(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if out != float(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # YAML reads unquoted serial numbers as integers
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from a mapping, checking names and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def save_config(cfg, path) -> Path:
    """Write ``cfg`` as YAML to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def load_config(cls, path):
    """Read a YAML file written by :func:`save_config` (or by hand) into ``cls``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping of fields")
    return from_dict(cls, data)


def apply_overrides(cfg, overrides):
    """Return a copy of ``cfg`` with ``["a.b=value", ...]`` applied (values parsed as YAML)."""
    data = to_dict(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown field {parts[-1]!r}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data)


def assemble_config(cls, config_file=None, fields: dict | None = None, sets=()):
    """Defaults < YAML file < ``--field`` options < ``--set key=value``."""
    cfg = load_config(cls, config_file) if config_file else cls()
    if fields:
        cfg = from_dict(cls, {**to_dict(cfg), **{k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in fields.items()}})
    return apply_overrides(cfg, sets)
