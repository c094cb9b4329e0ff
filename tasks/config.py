"""Typed, validated config dataclasses: one rule for a value from code, a flag or YAML.

A config is a frozen dataclass declared with `config`; its fields may carry help text,
bounds and a positional flag through `option`. Every instance checks its fields when it
is made (types, `Literal` choices, bounds), then runs the class's own ``__post_init__``
for rules that join fields (``min_std < max_std``). `coerce` turns what a command line
or a YAML file gives (strings, YAML's number forms) into the field's type, with the same
checks, so a choice refused on the command line is refused in a config file too.

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, a JSON
mapping (``dict``), another config class (a nested section), and ``X | None`` of these.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import types
import typing
from typing import Any, Literal

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def option(default: Any = dataclasses.MISSING, help: str = "", positional: bool = False,
           min: float | None = None, max: float | None = None) -> Any:
    """A config field with its command-line help, bounds (inclusive) and whether it is positional."""
    metadata = {"help": help, "positional": positional, "min": min, "max": max}
    if dataclasses.is_dataclass(default) or isinstance(default, dict):
        # A section or a mapping: each instance gets its own copy of the default.
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def config(cls: type) -> type:
    """Make ``cls`` a frozen dataclass whose fields are checked whenever an instance is made."""
    own_post_init = cls.__dict__.get("__post_init__")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_value(getattr(self, field.name), field_hint(type(self), field.name), field)
        if own_post_init is not None:
            own_post_init(self)

    cls.__post_init__ = __post_init__
    return dataclasses.dataclass(frozen=True)(cls)


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class (cached: resolving them is slow)."""
    return typing.get_type_hints(cls)


def field_hint(cls: type, name: str) -> Any:
    return field_hints(cls)[name]


def is_section(hint: Any) -> bool:
    """Whether a field is a nested config (a YAML mapping, ``--section.field`` flags)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def check_value(value: Any, hint: Any, field: dataclasses.Field | None = None) -> None:
    """Raise ValueError (``name: problem``) unless ``value`` has the field's type, choice and bounds."""
    name = field.name if field is not None else "value"
    coerced = coerce(value, hint, name, strict=True)
    if field is not None:
        check_bounds(coerced, field, name)


def check_bounds(value: Any, field: dataclasses.Field, name: str) -> None:
    low, high = field.metadata.get("min"), field.metadata.get("max")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if low is not None and value < low:
        raise ValueError(f"{name}: must be at least {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be at most {high:g}, got {value:g}")


def coerce(value: Any, hint: Any, name: str, strict: bool = False) -> Any:
    """``value`` as the type ``hint`` names, or ValueError saying what was expected.

    Strings are parsed (a flag's text, or a YAML scalar such as ``1e-3`` that PyYAML
    leaves a string); ``strict`` refuses strings where a number or boolean belongs, as
    a value set in code must already have its type.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None:
            return None
        return coerce(value, inner[0], name, strict)
    if origin is Literal:
        choices = typing.get_args(hint)
        candidate = value
        if isinstance(value, str) and not isinstance(choices[0], str) and not strict:
            candidate = coerce(value, type(choices[0]), name)
        if candidate not in choices or isinstance(candidate, bool) != isinstance(choices[0], bool):
            listed = ", ".join(str(choice) for choice in choices)
            raise ValueError(f"{name}: must be one of {listed}, got {value!r}")
        return candidate
    if is_section(hint):
        if not isinstance(value, hint):
            raise ValueError(f"{name}: expected a section of {hint.__name__} fields, got {value!r}")
        return value
    if origin is dict or hint is dict:
        return _mapping(value, name, strict)
    if hint is bool:
        return _boolean(value, name, strict)
    if hint is int:
        return _integer(value, name, strict)
    if hint is float:
        return _real(value, name, strict)
    if hint is str:
        if isinstance(value, str):
            return value
        if not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads `out: 2024` as a number
        raise ValueError(f"{name}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {hint}")


def _boolean(value: Any, name: str, strict: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and not strict:
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _integer(value: Any, name: str, strict: bool) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str) and not strict:
        try:
            return int(value.strip())
        except ValueError:
            number = _parse_real(value, name, "an integer")
    if isinstance(number, float) and math.isfinite(number) and number == round(number):
        return int(number)  # `1e5` steps, written as YAML or a flag
    raise ValueError(f"{name}: expected an integer, got {value!r}")


def _real(value: Any, name: str, strict: bool) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    number = value
    if isinstance(value, str) and not strict:
        number = _parse_real(value, name, "a number")
    if not isinstance(number, (int, float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(number)


def _parse_real(text: str, name: str, expected: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{name}: expected {expected}, got {text!r}") from None


def _mapping(value: Any, name: str, strict: bool) -> dict:
    if isinstance(value, str) and not strict:
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}: not a JSON mapping ({error.msg} at character {error.pos})") from None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{name}: expected a mapping of names to values, got {value!r}")
    return value
