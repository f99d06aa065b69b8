"""Time-ordered unique ids (ULID layout) for backtest runs and checkpoint data directories.

An id is 26 characters of Crockford base32: 48 bits of Unix time in milliseconds, then 80
random bits. Ids sort by creation time (to the millisecond, and up to the clock skew between
hosts) and two hosts drawing the same id is vanishingly unlikely; where a collision would
matter the store also creates the file with ``create_exclusive``, so it cannot happen
silently.

:func:`derive` makes the other kind: a deterministic id, for results that must be saved
exactly once whatever the retries. Its time part is a time the caller chooses (recorded
once, so that every retry and re-run derives the same id) and its 80 "random" bits are the
first 80 bits of the SHA-256 of a caller-chosen key that names the result (say, a sweep id
and a grid point). The same (time, key) always gives the same id; two different keys give
the same id only if their times fall in the same millisecond and their hashes agree on 80
bits (~1e-24 per pair).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading
import time

from efsray.errors import InvalidNameError

__all__ = ["ID_LENGTH", "MonotonicIds", "derive", "id_time", "is_id", "new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
ID_LENGTH = 26
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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


class MonotonicIds:
    """A source of new ids that sort in the order they were drawn, also within one
    millisecond (where :func:`new_id` alone sorts arbitrarily): an id drawn in the same
    millisecond as the previous one (or, the clock having stepped back, earlier) is the
    previous one plus one, as in the ULID spec's monotonic mode. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = ""

    def __call__(self) -> str:
        drawn = new_id()
        with self._lock:
            if self._last and drawn <= self._last:
                drawn = _successor(self._last)
            self._last = drawn
        return drawn


def _successor(value: str) -> str:
    number = 0
    for char in value:
        number = number * 32 + _DECODE[char]
    number += 1
    if number >= 2**128:
        raise ValueError("no id follows the largest one")
    return _b32(number, ID_LENGTH)


def derive(when: dt.datetime, key: bytes | str) -> str:
    """The id of time ``when`` (to the millisecond, floored) and ``key`` (see the module
    docstring). A naive ``when`` is taken as UTC."""
    if not isinstance(when, dt.datetime):
        raise TypeError(f"when must be a datetime, got {type(when).__name__}")
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes or str, got {type(key).__name__}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    ms = (when - _EPOCH) // dt.timedelta(milliseconds=1)
    if not 0 <= ms < 2**48:
        raise ValueError(f"time {when.isoformat()} is outside the range an id can hold")
    bits = int.from_bytes(hashlib.sha256(key).digest()[:10], "big")
    return _b32(ms, 10) + _b32(bits, 16)


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
    return _EPOCH + dt.timedelta(milliseconds=ms)  # exact (a float of ms / 1000 is not)
