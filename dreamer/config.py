"""The command line and YAML files, generated from the config dataclasses.

Every field of a command's config becomes a flag (``episode_length`` becomes
``--episode-length``), with its help, default and choices taken from the dataclass. A
field that is itself a config nests: ``ensemble.members`` is ``--ensemble.members`` on
the command line and ``ensemble: {members: 5}`` in YAML. A YAML file given with
``--config`` may set any field; flags on the command line win over it.

A config class may name presets that one of its fields selects (``presets = {"model":
{"rssm": {...}}}``: other defaults for ``--model rssm``); they lie between the class's
defaults and the YAML file (`with_presets`).

Flags and YAML values go through one path: `tasks.config.coerce` gives each value its
field's type (YAML's number forms such as ``1e-3`` included), then the config is built,
which checks choices, bounds and the rules that join fields. Nothing is written to disk
before this succeeds; a bad value ends as an `InputError` naming the flag or the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tasks.config import check_bounds, coerce, field_hints, is_section
from tasks.errors import InputError

# Names the command line keeps for itself; config fields may not use them.
_RESERVED = {"json", "config"}


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type, prefix: str = "",
                         section_default: Any = None) -> None:
    """Add one argument per field of ``config_cls`` (recursively for nested configs).

    Values stay text here; `config_from_args` types and checks them, so a flag and the
    same key in a YAML file pass the same checks and fail with the same message.
    ``section_default`` is the default of a nested section as its command sets it (which
    may differ from the section class's own defaults): the help shows its values.
    """
    hints = field_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        hint = hints[field.name]
        dest = prefix + field.name
        if dest in _RESERVED:
            raise TypeError(f"config field {dest} clashes with a command-line option")
        default = _default(field) if section_default is None else getattr(section_default, field.name)
        if is_section(hint):
            add_config_arguments(parser, hint, prefix=dest + ".", section_default=default)
            continue
        help_text = field.metadata.get("help", "")
        if default is not dataclasses.MISSING and default is not None and not is_section(type(default)):
            help_text += f" (default: {default})"
        choices = _choices(hint)
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else field.name.upper()
        if field.metadata.get("positional"):
            parser.add_argument(dest, metavar=metavar, help=help_text)
            continue
        flag = "--" + dest.replace("_", "-")
        if _base_type(hint) is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=help_text, metavar=metavar)


def config_from_args(config_cls: type, args: argparse.Namespace, config_file: str | None = None):
    """Build ``config_cls`` from its defaults, then the YAML file, then the flags given."""
    values = load_yaml_fields(config_file, config_cls) if config_file else {}
    given = {name: value for name, value in vars(args).items() if not name.startswith("_")}
    return build_config(config_cls, with_presets(config_cls, values, given), given,
                        source=config_file or "command line")


def with_presets(config_cls: type, values: dict[str, Any], flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested ``values`` laid over the presets that ``config_cls.presets`` holds for the
    value its selecting fields take (from ``flags``, else ``values``, else the default)."""
    merged: dict[str, Any] = {}
    fields = {field.name: field for field in dataclasses.fields(config_cls)}
    for name, presets in getattr(config_cls, "presets", {}).items():
        chosen = (flags or {}).get(name, values.get(name, _default(fields[name])))
        merged = _deep_merge(merged, presets.get(chosen, {}))
    return _deep_merge(merged, values)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if value is None and isinstance(merged.get(key), dict):
            continue  # an empty section in YAML (``fit:``) sets nothing
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if both_sections else value
    return merged


def build_config(config_cls: type, values: dict[str, Any], flags: dict[str, Any], source: str, prefix: str = ""):
    """``config_cls`` from nested ``values`` (YAML) overridden by dotted ``flags``.

    Raises:
        InputError: naming the flag (``--dream.gradient``) or the YAML file and key
            (``run.yaml: dream.gradient``) whose value is wrong, or ``source`` for a rule
            that joins several fields.
    """
    hints = field_hints(config_cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(config_cls):
        dest = prefix + field.name
        hint = hints[field.name]
        if is_section(hint):
            given = values.get(field.name, {})
            if given is None:
                given = {}
            elif isinstance(given, hint):  # a default that is itself a section instance
                given = _shallow_fields(given)
            if not isinstance(given, dict):
                raise InputError(source, f"{dest}: expected a section (a mapping of its fields), got {given!r}")
            # The parent's default instance supplies the nested defaults, then YAML, then flags.
            default = _default(field)
            nested = {} if default is dataclasses.MISSING else _shallow_fields(default)
            nested.update(given)
            kwargs[field.name] = build_config(hint, nested, flags, source, prefix=dest + ".")
        elif dest in flags:
            kwargs[field.name] = _typed(flags[dest], hint, field, "--" + dest.replace("_", "-"), None)
        elif field.name in values:
            kwargs[field.name] = _typed(values[field.name], hint, field, dest, source)
        elif _default(field) is dataclasses.MISSING:
            raise InputError("--" + dest.replace("_", "-"), "required")
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as error:
        section = f"{prefix.rstrip('.')}: " if prefix else ""
        raise InputError(source, section + str(error)) from None


def load_yaml_fields(path: str | Path, config_cls: type) -> dict[str, Any]:
    """The fields set in a YAML config file; unknown keys are an error, not ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such config file")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid YAML ({str(error).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(path, "a config file must be a mapping of field names to values")
    unknown = _unknown_keys(loaded, config_cls)
    if unknown:
        raise InputError(path, f"unknown config fields: {', '.join(unknown)}")
    return loaded


def _typed(value: Any, hint: Any, field: dataclasses.Field, name: str, source: str | None) -> Any:
    """``value`` coerced and bounds-checked, errors naming the flag, or the file and key."""
    try:
        typed = coerce(value, hint, name)
        check_bounds(typed, field, name)
        return typed
    except ValueError as error:
        if source is None:
            flag, _, problem = str(error).partition(": ")
            raise InputError(flag, problem) from None
        raise InputError(source, str(error)) from None


def _unknown_keys(values: dict[str, Any], config_cls: type, prefix: str = "") -> list[str]:
    hints = field_hints(config_cls)
    unknown = []
    for key, value in values.items():
        if not isinstance(key, str) or key not in hints:
            unknown.append(prefix + str(key))
        elif is_section(hints[key]) and isinstance(value, dict):
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


def _base_type(hint: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _choices(hint: Any) -> tuple | None:
    base = _base_type(hint)
    return typing.get_args(base) if typing.get_origin(base) is Literal else None
