"""Validation and encoding of user dicts (metadata, metrics, parameters) stored as JSON.

What the store accepts, recursively: ``None``, ``bool``, ``int``, ``float``, ``str``, lists
and tuples (stored as lists), and dicts with ``str`` keys. For convenience numpy scalars
become the matching Python scalar, numpy arrays become lists, and ``datetime``/``date``
become ISO-8601 strings (so they come back as strings). Anything else (bytes, sets, objects,
non-string keys) is refused with an :class:`InvalidDataError` that names the offending key,
because the store never pickles and never guesses.

JSON has no NaN or infinity, yet training and backtests produce them (a diverged loss, a
Sharpe ratio with no trades). They are encoded explicitly as ``{"$float": "NaN"}``,
``{"$float": "Infinity"}`` and ``{"$float": "-Infinity"}`` and decoded back to floats, so
the files stay standard JSON that any tool can read. A user dict whose only key is
``"$float"`` is refused: the tag is reserved.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

from efsray.errors import InvalidDataError

__all__ = ["MAX_DEPTH", "decode", "dumps", "encode", "encode_metrics", "loads"]

MAX_DEPTH = 64
FLOAT_TAG = "$float"
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _tag(value: float) -> dict[str, str]:
    if math.isnan(value):
        return {FLOAT_TAG: "NaN"}
    return {FLOAT_TAG: "Infinity" if value > 0 else "-Infinity"}


def _where(path: str) -> str:
    return path or "the value"


def encode(value: Any, what: str = "value", *, _path: str = "", _depth: int = 0) -> Any:
    """Validate ``value`` and return its JSON-ready form (see the module docstring).

    ``what`` names the value in error messages ("metadata", "metrics", ...).
    """
    path = _path or what
    if _depth > MAX_DEPTH:
        raise InvalidDataError(f"{path} is nested more than {MAX_DEPTH} levels deep; flatten it")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _tag(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        if set(value) == {FLOAT_TAG}:
            raise InvalidDataError(
                f"{path} is a dict whose only key is {FLOAT_TAG!r}, which efsray reserves to "
                "encode NaN and infinity; rename the key"
            )
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidDataError(
                    f"{path} has a key {key!r} of type {type(key).__name__}; JSON keys must "
                    "be strings: convert the key with str()"
                )
            out[key] = encode(item, what, _path=f"{path}[{key!r}]", _depth=_depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [
            encode(item, what, _path=f"{path}[{i}]", _depth=_depth + 1)
            for i, item in enumerate(value)
        ]
    converted = _from_numpy(value)
    if converted is not _UNSUPPORTED:
        return encode(converted, what, _path=path, _depth=_depth)
    raise InvalidDataError(
        f"{_where(path)} is a {type(value).__module__}.{type(value).__qualname__}, which "
        "cannot be stored as JSON; use None, bool, int, float, str, lists and dicts with "
        "string keys (efsray never pickles)"
    )


_UNSUPPORTED = object()


def _from_numpy(value: Any) -> Any:
    module = type(value).__module__
    if not module.startswith("numpy"):
        return _UNSUPPORTED
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            return _UNSUPPORTED
        return value.tolist()
    if isinstance(value, np.bool_ | np.integer | np.floating):
        return value.item()
    return _UNSUPPORTED


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`: turn ``{"$float": ...}`` tags back into floats."""
    if isinstance(value, dict):
        if len(value) == 1 and FLOAT_TAG in value and value[FLOAT_TAG] in _NONFINITE:
            return _NONFINITE[value[FLOAT_TAG]]
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def encode_metrics(metrics: Any, what: str = "metrics") -> dict[str, Any]:
    """Validate a flat dict of named numbers (int or float, NaN and infinity allowed, or None)."""
    if not isinstance(metrics, Mapping):
        raise InvalidDataError(
            f"{what} must be a dict of name -> number, got {type(metrics).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise InvalidDataError(
                f"{what} has a key {key!r}; metric names must be non-empty strings"
            )
        number = _from_numpy(value) if type(value).__module__.startswith("numpy") else value
        if number is None:
            out[key] = None
            continue
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidDataError(
                f"{what}[{key!r}] is {value!r} ({type(value).__name__}); metrics must be "
                "numbers (int or float; NaN and infinity are allowed) or None: put other "
                "values in params"
            )
        out[key] = (
            number if not isinstance(number, float) or math.isfinite(number) else _tag(number)
        )
    return out


def dumps(value: Any, *, indent: int | None = None) -> bytes:
    """Serialize an already-encoded value as strict JSON (no NaN tokens)."""
    separators = (",", ":") if indent is None else None
    return json.dumps(value, allow_nan=False, indent=indent, separators=separators).encode()


def loads(raw: bytes) -> Any:
    """Parse JSON written by :func:`dumps` and decode the float tags."""
    return decode(json.loads(raw))
