"""Fault and hang rules: which operations fail, with which errno, and which ones block.

A rule selects operations by kind (``ops``: FUSE operation names such as ``write``,
``rename``, ``getattr``; ``None`` means every kind) and by path (``path``: an
:func:`fnmatch.fnmatchcase` pattern on the path inside the mount, starting with ``/``; ``*``
also matches ``/``). For ``rename`` and ``link`` a rule matches when either path matches.

A :class:`FaultRule` fails the selected operation without performing it, either on the
``nth`` matching operation counted from the moment it is armed (then on the ``times - 1``
following ones too; ``times=None`` fails every one from the ``nth`` on, like a full disk
stays full), or with a ``probability`` per matching operation. A :class:`HangRule` blocks
every matching operation from the ``nth`` on until the hang is released.

Rules travel as JSON over the control socket: :meth:`to_dict` and :meth:`from_dict` are exact
inverses, and ``from_dict`` validates everything (it is a parser of untrusted input).
"""

from __future__ import annotations

import errno as _errno
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from efsray.errors import ConfigError
from efsray.simfs.profiles import OP_KINDS

__all__ = ["FAULT_ERRNOS", "FaultRule", "HangRule", "parse_ops"]

#: The errors a fault may inject. ENOSYS is deliberately absent: the kernel would take it as
#: "operation not implemented" and stop sending that operation for the rest of the mount.
FAULT_ERRNOS: Mapping[str, int] = {
    name: getattr(_errno, name)
    for name in (
        "EIO",
        "ENOSPC",
        "EDQUOT",
        "ESTALE",
        "EACCES",
        "EPERM",
        "EROFS",
        "ETIMEDOUT",
        "ENOTCONN",
        "EAGAIN",
        "EINTR",
    )
}

_MAX_PATTERN = 4096


def parse_ops(ops: str | Iterable[str] | None) -> frozenset[str] | None:
    """``None``/``"*"``/``"all"`` for every kind, else a set of known operation names.

    A string is split on commas: ``"write,fsync"``.
    """
    if ops is None:
        return None
    if isinstance(ops, str):
        if ops.strip() in ("", "*", "all"):
            return None
        ops = [part.strip() for part in ops.split(",")]
    names = list(ops)
    if not all(isinstance(name, str) for name in names):
        raise ConfigError(f"operation kinds must be strings, got {names!r}")
    chosen = frozenset(name for name in names if name)
    unknown = sorted(chosen - OP_KINDS)
    if unknown:
        raise ConfigError(
            f"unknown operation kind(s) {', '.join(unknown)}; known kinds: "
            f"{', '.join(sorted(OP_KINDS))}"
        )
    if not chosen:
        raise ConfigError("an empty list of operation kinds selects nothing; use '*' for all")
    return chosen


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path or len(path) > _MAX_PATTERN or "\0" in path:
        raise ConfigError(
            f"path pattern must be a non-empty string without NUL of at most {_MAX_PATTERN} "
            f"characters (an fnmatch pattern on the path inside the mount, like '/market/*'), "
            f"got {path!r}"
        )
    return path


def _check_count(name: str, value: object, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _ops_to_json(ops: frozenset[str] | None) -> list[str] | None:
    return None if ops is None else sorted(ops)


def _exact_keys(kind: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {kind} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown {kind} field(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )


@dataclass(frozen=True, slots=True)
class FaultRule:
    """Fail matching operations with ``error`` (an errno name from :data:`FAULT_ERRNOS`)."""

    error: str
    ops: frozenset[str] | None = None
    path: str = "*"
    nth: int = 1
    probability: float | None = None
    times: int | None = 1

    def __post_init__(self) -> None:
        if self.error not in FAULT_ERRNOS:
            raise ConfigError(
                f"cannot inject {self.error!r}; choose one of {', '.join(FAULT_ERRNOS)}"
            )
        object.__setattr__(self, "ops", parse_ops(self.ops))
        _check_path(self.path)
        _check_count("nth", self.nth, allow_none=False)
        _check_count("times", self.times, allow_none=True)
        p = self.probability
        if p is not None and (
            isinstance(p, bool)
            or not isinstance(p, int | float)
            or not math.isfinite(p)
            or not 0 < p <= 1
        ):
            raise ConfigError(f"probability must be a number in (0, 1], got {p!r}")

    @property
    def errno(self) -> int:
        return FAULT_ERRNOS[self.error]

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "ops": _ops_to_json(self.ops),
            "path": self.path,
            "nth": self.nth,
            "probability": self.probability,
            "times": self.times,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        _exact_keys("fault rule", data, {"error", "ops", "path", "nth", "probability", "times"})
        if "error" not in data:
            raise ConfigError("a fault rule needs 'error' (for example 'EIO')")
        error = data["error"]
        if not isinstance(error, str):
            raise ConfigError(f"error must be an errno name string, got {error!r}")
        return cls(
            error=error.upper(),
            ops=data.get("ops"),
            path=data.get("path", "*"),
            nth=data.get("nth", 1),
            probability=data.get("probability"),
            times=data.get("times", 1),
        )


@dataclass(frozen=True, slots=True)
class HangRule:
    """Block every matching operation, from the ``nth`` on, until released."""

    ops: frozenset[str] | None = None
    path: str = "*"
    nth: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", parse_ops(self.ops))
        _check_path(self.path)
        _check_count("nth", self.nth, allow_none=False)

    def to_dict(self) -> dict[str, Any]:
        return {"ops": _ops_to_json(self.ops), "path": self.path, "nth": self.nth}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HangRule:
        _exact_keys("hang rule", data, {"ops", "path", "nth"})
        return cls(ops=data.get("ops"), path=data.get("path", "*"), nth=data.get("nth", 1))
