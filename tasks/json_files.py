"""Reading the JSON files the project writes, checked before any field is used.

A hand-edited, truncated or foreign ``model.json``, ``policy.json``, ``summary.json`` or
``results.json`` ends as one `InputError` naming the file and the field at fault, not as
a ``KeyError`` deep in the code that reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.errors import InputError

# What a field must hold: a type, or a tuple of types; `int` never admits a bool.
Shape = dict[str, type | tuple[type, ...]]

_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
          bool: "true or false", type(None): "null"}


def read_json_object(path: str | os.PathLike, required: Shape, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, with every ``required`` field present and of its type.

    Args:
        path: the file.
        required: field names and the types each must hold.
        what: what the file is, for the message when it is missing ("a saved policy").

    Raises:
        InputError: naming ``path``: missing, not JSON, not an object, or a field missing
            or of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"no such file ({what})")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(path, f"is damaged: not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnicodeDecodeError:
        raise InputError(path, "is damaged: not text") from None
    if not isinstance(value, dict):
        raise InputError(path, "is damaged: expected a JSON object")
    for name, kinds in required.items():
        if name not in value:
            raise InputError(path, f"is damaged: no {name!r} field")
        if not holds(value[name], kinds):
            raise InputError(path, f"is damaged: {name!r} should be {describe(kinds)}, got {value[name]!r}")
    return value


def holds(value: Any, kinds: type | tuple[type, ...]) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def describe(kinds: type | tuple[type, ...]) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(_NAMES.get(kind, kind.__name__) for kind in kinds)
