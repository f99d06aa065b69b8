"""Time-ordered unique ids (ULID layout) for backtest runs and checkpoint data directories.

An id is 26 characters of Crockford base32: 48 bits of Unix time in milliseconds, then 80
random bits. Ids sort by creation time (to the millisecond, and up to the clock skew between
hosts) and two hosts drawing the same id is vanishingly unlikely; where a collision would
matter the store also creates the file with ``create_exclusive``, so it cannot happen
silently.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time

from efsray.errors import InvalidNameError

__all__ = ["ID_LENGTH", "id_time", "is_id", "new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
ID_LENGTH = 26


def _b32(number: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[number & 31])
        number >>= 5
    return "".join(reversed(out))


def new_id(now: float | None = None) -> str:
    """A new id for the time ``now`` (seconds since the epoch; default: the current time)."""
    ms = int((time.time() if now is None else now) * 1000)
    if not 0 <= ms < 2**48:
        raise ValueError(f"time {now!r} is outside the range an id can hold")
    return _b32(ms, 10) + _b32(secrets.randbits(80), 16)


def is_id(value: object) -> bool:
    return isinstance(value, str) and _PATTERN.fullmatch(value) is not None


def id_time(value: str) -> dt.datetime:
    """The creation time (UTC) encoded in an id; InvalidNameError if it is not an id."""
    if not is_id(value):
        raise InvalidNameError(
            f"{value!r} is not an efsray id: ids are 26 characters of Crockford base32 "
            "(digits and upper-case letters without I, L, O, U), like 01J0Z3W8K2M4N6P8R0T2V4X6Z8"
        )
    ms = 0
    for char in value[:10]:
        ms = ms * 32 + _DECODE[char]
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
