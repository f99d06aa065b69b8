"""Validation of every user-supplied name that becomes part of a path.

Symbols, timeframes, model ids, strategy ids and aliases all end up as directory or file
names under the store root. A name is accepted only if it is a single, ordinary path
component: it can never be empty, ``.``/``..``, contain a separator or a NUL, start with a
dot (our temporary and hidden files do) or a dash (it would read as a CLI option), or be
longer than 128 characters.
"""

from __future__ import annotations

import re

from efsray.errors import InvalidNameError

__all__ = ["MAX_NAME_LENGTH", "is_valid_name", "validate_name"]

MAX_NAME_LENGTH = 128
_ALLOWED = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._^=+@-]*")
_RULE = (
    "use 1-128 characters from letters, digits and . _ - ^ = + @, "
    "starting with a letter, a digit or ^"
)


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe single path component, else raise InvalidNameError.

    ``kind`` names what the value is ("symbol", "model id", ...) for the error message.
    """
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} must be a string, got {type(value).__name__} {value!r}")
    problem = _problem(value)
    if problem is None:
        return value
    shown = value if len(value) <= 40 else f"{value[:40]}... ({len(value)} characters)"
    raise InvalidNameError(f"invalid {kind} {shown!r}: {problem}; {_RULE}")


def is_valid_name(value: str) -> bool:
    """Whether ``value`` passes :func:`validate_name` (for listings, which skip what is not
    ours: temporary files, lost+found, editor debris)."""
    return _problem(value) is None


def _problem(value: str) -> str | None:
    if value == "":
        return "it is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"it has {len(value)} characters, more than {MAX_NAME_LENGTH}"
    if "\x00" in value:
        return "it contains a NUL byte"
    if "/" in value or "\\" in value:
        return "it contains a path separator"
    if value in (".", ".."):
        return "it is a relative directory reference"
    if value.startswith("."):
        return "it starts with '.' (reserved for hidden and temporary files)"
    if value.startswith("-"):
        return "it starts with '-' (it would read as a command-line option)"
    if _ALLOWED.fullmatch(value) is None:
        bad = sorted({c for c in value if not re.fullmatch(r"[A-Za-z0-9._^=+@-]", c)})
        return f"it contains {', '.join(repr(c) for c in bad)}"
    return None
