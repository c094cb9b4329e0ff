"""Frozen dataclass configs, and the command line generated from them.

Every field of a command's config becomes a flag (``episode_length`` becomes
``--episode-length``), with its type, default and help taken from the dataclass. A field
that is itself a config dataclass nests: ``ensemble.members`` is ``--ensemble.members``
on the command line and ``ensemble: {members: 5}`` in YAML. A YAML file given with
``--config`` may set any field; flags on the command line win over it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.errors import InputError


def option(default: Any = dataclasses.MISSING, help: str = "", positional: bool = False) -> Any:
    """A config field with its command-line help; ``positional`` fields take no ``--``."""
    metadata = {"help": help, "positional": positional}
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type, prefix: str = "") -> None:
    """Add one argument per field of ``config_cls`` (recursively for nested configs)."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        hint = hints[field.name]
        dest = prefix + field.name
        if dataclasses.is_dataclass(hint):
            add_config_arguments(parser, hint, prefix=dest + ".")
            continue
        kind, choices = _field_kind(hint)
        help_text = field.metadata.get("help", "")
        default = _default(field)
        if default is not dataclasses.MISSING and default is not None:
            help_text += f" (default: {default})"
        if field.metadata.get("positional"):
            parser.add_argument(dest, type=kind, choices=choices, help=help_text)
            continue
        flag = "--" + dest.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=dest, type=kind, choices=choices,
                                default=argparse.SUPPRESS, help=help_text,
                                metavar=None if choices else field.name.upper())


def config_from_args(config_cls: type, args: argparse.Namespace, config_file: str | None = None):
    """Build ``config_cls`` from its defaults, then the YAML file, then the flags given."""
    values = load_yaml_fields(config_file, config_cls) if config_file else {}
    given = {name: value for name, value in vars(args).items() if not name.startswith("_")}
    return build_config(config_cls, values, given, source=config_file or "arguments")


def build_config(config_cls: type, values: dict[str, Any], flags: dict[str, Any], source: str, prefix: str = ""):
    """``config_cls`` from nested ``values`` (YAML) overridden by dotted ``flags``."""
    hints = typing.get_type_hints(config_cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(config_cls):
        dest = prefix + field.name
        if dataclasses.is_dataclass(hints[field.name]):
            # The parent's default instance supplies the nested defaults, then YAML, then flags.
            default = _default(field)
            nested = {} if default is dataclasses.MISSING else _shallow_fields(default)
            given = values.get(field.name) or {}
            nested.update(_shallow_fields(given) if dataclasses.is_dataclass(given) else given)
            kwargs[field.name] = build_config(hints[field.name], nested, flags, source, prefix=dest + ".")
        elif dest in flags:
            kwargs[field.name] = flags[dest]
        elif field.name in values:
            kwargs[field.name] = values[field.name]
        elif _default(field) is dataclasses.MISSING:
            raise InputError("--" + dest.replace("_", "-"), "required")
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise InputError(source, str(error)) from None


def load_yaml_fields(path: str | Path, config_cls: type) -> dict[str, Any]:
    """The fields set in a YAML config file; unknown keys are an error, not ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such config file")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(path, f"not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise InputError(path, "a config file must be a mapping of field names to values")
    unknown = _unknown_keys(loaded, config_cls)
    if unknown:
        raise InputError(path, f"unknown config fields: {', '.join(unknown)}")
    return loaded


def _unknown_keys(values: dict[str, Any], config_cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(config_cls)
    unknown = []
    for key, value in values.items():
        if key not in hints:
            unknown.append(prefix + key)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            unknown += _unknown_keys(value, hints[key], prefix + key + ".")
    return sorted(unknown)


def _shallow_fields(config: Any) -> dict[str, Any]:
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _field_kind(hint: Any) -> tuple[type, list | None]:
    """The argparse type and choices for a field's annotation."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported config field type {hint}")
        return _field_kind(inner[0])
    if origin is Literal:
        choices = list(typing.get_args(hint))
        return type(choices[0]), choices
    if hint in (int, float, str, bool):
        return hint, None
    raise TypeError(f"unsupported config field type {hint}")
