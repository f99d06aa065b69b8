"""One exception hierarchy for everything efsray raises on purpose.

Every class derives from :class:`EfsrayError`, and where a builtin exception means the same
thing the class derives from that too, so callers can catch broadly (``except OSError``) or
narrowly (``except StorageFullError``). Every message says what was wrong, with which value,
and what to do about it. Library code raises; only the CLI turns errors into exit codes.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "ClusterError",
    "CommitConflictError",
    "ComposeError",
    "ConfigError",
    "CorruptionError",
    "DatabaseError",
    "DeadlineExceeded",
    "EfsrayError",
    "InvalidDataError",
    "InvalidNameError",
    "MountError",
    "NotFoundError",
    "StorageError",
    "StorageFullError",
    "StoreFormatError",
    "VersionNotFoundError",
    "storage_error_from",
]


class EfsrayError(Exception):
    """Root of every error efsray raises on purpose.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1


class ConfigError(EfsrayError, ValueError):
    """A setting (environment variable, env file, option) has a value we cannot use."""

    exit_code = 2


class InvalidNameError(EfsrayError, ValueError):
    """A user-supplied name (symbol, timeframe, model id, ...) cannot become a path."""

    exit_code = 2


class InvalidDataError(EfsrayError, ValueError):
    """Input data (bars, metrics, metadata) failed validation; nothing was written."""

    exit_code = 2


class NotFoundError(EfsrayError, FileNotFoundError):
    """The thing asked for (series, version, checkpoint, run) does not exist."""

    exit_code = 3


class VersionNotFoundError(NotFoundError):
    """A version number that was never committed, or was removed by retention."""


class CommitConflictError(EfsrayError):
    """Optimistic commit gave up after too many concurrent writers won the race."""


class CorruptionError(EfsrayError):
    """Stored bytes do not match their recorded size or checksum, or cannot be parsed."""

    exit_code = 4


class StoreFormatError(EfsrayError):
    """The directory is not an efsray store, or was written by an incompatible version."""

    exit_code = 4


class StorageError(EfsrayError, OSError):
    """The filesystem failed an operation (EIO, ESTALE that did not clear, EACCES, ...)."""

    exit_code = 5

    def __str__(self) -> str:
        # OSError's default form is "[Errno 28] message: 'path'"; ours already names both.
        return self.strerror or super().__str__()


class StorageFullError(StorageError):
    """ENOSPC or EDQUOT: the volume or the quota is full. Nothing partial was published."""


class DeadlineExceeded(EfsrayError, TimeoutError):
    """An operation did not finish within its deadline (a hung mount, a dead server)."""

    exit_code = 6


class MountError(EfsrayError):
    """Mounting, unmounting or inspecting a mount failed."""

    exit_code = 5


class DatabaseError(EfsrayError):
    """PostgreSQL (Neon) refused, failed, or is unreachable."""

    exit_code = 5


class ClusterError(EfsrayError):
    """Ray could not be reached or a distributed job failed."""

    exit_code = 5


class ComposeError(EfsrayError):
    """A compose file could not be read or rendered."""

    exit_code = 2


def storage_error_from(exc: OSError, action: str, path: object) -> StorageError:
    """Wrap an ``OSError`` from ``action`` on ``path`` in the matching efsray error.

    The message keeps the errno name so that logs stay greppable, and says what to do.
    """
    code = exc.errno or 0
    name = _errno.errorcode.get(code, str(code))
    reason = exc.strerror or str(exc)
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        return StorageFullError(
            code,
            f"{action} failed on {path}: {name} ({reason}). The volume or quota is full; "
            "free space (efsray cleanup) or raise the quota, then retry. "
            "Nothing partial was published.",
            str(path),
        )
    if code in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        hint = "check the mount is read-write and owned by this uid/gid (EFS access point)"
    elif code == _errno.ESTALE:
        hint = "another host replaced or removed the file; retry the operation"
    else:
        hint = "check the mount with `efsray health`, then retry"
    return StorageError(code, f"{action} failed on {path}: {name} ({reason}); {hint}.", str(path))
