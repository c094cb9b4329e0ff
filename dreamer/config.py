"""Frozen dataclass configs, and the command line generated from them.

Every field of a command's config becomes a flag (``episode_length`` becomes
``--episode-length``), with its type, default and help taken from the dataclass. A YAML
file given with ``--config`` may set any field; flags on the command line win over it.
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
    return dataclasses.field(default=default, metadata=metadata)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one argument per field of ``config_cls`` to ``parser``."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        kind, choices = _field_kind(hints[field.name])
        help_text = field.metadata.get("help", "")
        has_default = field.default is not dataclasses.MISSING
        if has_default and field.default is not None:
            help_text += f" (default: {field.default})"
        if field.metadata.get("positional"):
            parser.add_argument(field.name, type=kind, choices=choices, help=help_text)
            continue
        flag = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=field.name, type=kind, choices=choices,
                                default=argparse.SUPPRESS, help=help_text,
                                metavar=None if choices else field.name.upper())


def config_from_args(config_cls: type, args: argparse.Namespace, config_file: str | None = None):
    """Build ``config_cls`` from its defaults, then the YAML file, then the flags given."""
    values: dict[str, Any] = {}
    names = {field.name for field in dataclasses.fields(config_cls)}
    if config_file:
        values.update(load_yaml_fields(config_file, names))
    values.update({name: getattr(args, name) for name in names if hasattr(args, name)})
    missing = [
        field.name for field in dataclasses.fields(config_cls)
        if field.name not in values and field.default is dataclasses.MISSING
    ]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise InputError(flags, "required")
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as error:
        raise InputError(config_file or "arguments", str(error)) from None


def load_yaml_fields(path: str | Path, names: set[str]) -> dict[str, Any]:
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
    unknown = sorted(set(loaded) - names)
    if unknown:
        raise InputError(path, f"unknown config fields: {', '.join(unknown)}")
    return loaded


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML that `load_yaml_fields` reads back."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


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
