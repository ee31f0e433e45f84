"""Dataclasses from plain mappings, with every key and value checked: recipes and model options.

`geognn.training` parses recipes with it and `geognn.models.EnergyModel.from_config` the
options of a model, so both give the same messages (the key path, the expected type, the
closest valid names).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, Union


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the key and what is expected."""


def _type_name(annotation) -> str:
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _check_value(value, annotation, where: str):
    """``value`` checked against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(err)
        expected = " or ".join(_type_name(a) for a in typing.get_args(annotation))
        raise ConfigError(f"{where}: expected {expected}, got {value!r}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is tuple and isinstance(value, list):  # YAML has lists only
        return tuple(value)
    expected_type = origin or annotation
    if expected_type is bool or not isinstance(value, bool):
        if isinstance(value, expected_type):
            return value
    raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})")


def from_dict(cls, mapping: Any, where: str = "config"):
    """Build dataclass ``cls`` from a mapping, checking every key and value type.

    Raises:
        ConfigError: not a mapping, an unknown key (with the closest valid
            names), or a value of the wrong type; the message names the key path.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in mapping.items():
        path = f"{where}.{key}" if where != "config" else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown key {path!r}{hint} (valid keys here: {', '.join(fields)})")
        values[key] = _check_value(value, hints[key], path)
    return cls(**values)
