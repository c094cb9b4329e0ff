"""Strict reading of logged values: booleans, real numbers and integers, or one clear error.

Logs arrive as CSV text, Parquet columns and npz arrays of any dtype. A lenient cast
turns ``"no"`` into True, ``0.5`` into True and ``"7b"`` into an ordering of text, and the
damage shows up much later as hundreds of one-step episodes. These functions accept a
value only in its usual spellings and otherwise raise `InputError` naming the field, the
row and the value.
"""

from __future__ import annotations

import numpy as np

from tasks.errors import InputError

TRUE_SPELLINGS = ("true", "1")
FALSE_SPELLINGS = ("false", "0")


def as_booleans(values, field: str, path) -> np.ndarray:
    """``values`` as a bool array: from bools, from 0/1 numbers, or from true/false/1/0 text (any case)."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "b":
        return array
    if kind in "iuf":
        valid = (array == 0) | (array == 1)
        _refuse_first(array, valid, field, path, "is not a boolean (true/false or 1/0)")
        return array.astype(bool)
    text = np.char.lower(np.char.strip(np.asarray([str(v) if v is not None else "" for v in array.reshape(-1)])))
    text = text.reshape(array.shape)
    is_true, is_false = np.isin(text, TRUE_SPELLINGS), np.isin(text, FALSE_SPELLINGS)
    _refuse_first(array, is_true | is_false, field, path, "is not a boolean (true/false or 1/0)")
    return is_true


def as_reals(values, field: str, path) -> np.ndarray:
    """``values`` as a real numeric array: numbers pass as they are; complex, text and gaps are refused."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind in "biuf":
        return array
    if kind == "c":
        raise InputError(path, f"{field} holds complex numbers; only real values can be modelled")
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError):
        parsed = np.asarray([_parses_as_real(v) for v in array.reshape(-1)]).reshape(array.shape)
        _refuse_first(array, parsed, field, path, "is not a number")
        # Every value parses one by one (numpy refuses some spellings Python takes, "1_000").
        return np.asarray([float(v) for v in array.reshape(-1)], dtype=np.float64).reshape(array.shape)


def as_integers(values, field: str, path, minimum: int | None = None, missing: int | None = None) -> np.ndarray:
    """``values`` as int64: integral numbers (or their text) at least ``minimum``.

    Args:
        missing: what an empty value (NaN, null) becomes; None refuses empty values.
    """
    array = np.asarray(values)
    if array.dtype.kind == "b":
        raise InputError(path, f"{field} holds true/false values; it must hold integers")
    if array.dtype.kind not in "iu":
        numbers = as_reals(np.where(_is_missing(array), np.nan, array) if array.dtype.kind == "O" else array, field, path)
        numbers = numbers.astype(np.float64)
        gaps = np.isnan(numbers)
        if missing is None:
            _refuse_first(array, ~gaps, field, path, "is empty; every row needs an integer")
        _refuse_first(array, gaps | (numbers == np.round(numbers)), field, path, "is not an integer")
        array = np.where(gaps, missing if missing is not None else 0, numbers).astype(np.int64)
        if minimum is not None:
            _refuse_first(array, gaps | (array >= minimum), field, path, f"is below {minimum}")
        return array
    array = array.astype(np.int64)
    if minimum is not None:
        _refuse_first(array, array >= minimum, field, path, f"is below {minimum}")
    return array


def _refuse_first(array: np.ndarray, valid: np.ndarray, field: str, path, problem: str) -> None:
    """Raise naming the first row (and column) where ``valid`` is False, if there is one."""
    valid = np.asarray(valid)
    if valid.all():
        return
    index = np.unravel_index(int(np.flatnonzero(~valid.reshape(-1))[0]), valid.shape)
    where = (f"row {index[0]}" if index else "value") + (f", column {index[1]}" if len(index) > 1 else "")
    value = array[index]
    shown = repr(value.item() if hasattr(value, "item") else value)
    raise InputError(path, f"{field} {where}: {shown[:40]} {problem}")


def _parses_as_real(value) -> bool:
    if value is None or isinstance(value, bool):
        return False
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _is_missing(array: np.ndarray) -> np.ndarray:
    return np.asarray([v is None for v in array.reshape(-1)]).reshape(array.shape)
