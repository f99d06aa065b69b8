"""Secrets for the compose stacks: the Ray auth token (and the Grafana admin password).

Compose mounts a ``file:`` secret into the container at ``/run/secrets/NAME`` with the host
file's owner and mode, so the file must be readable by the container user (uid 1000, the
``ray`` user of the official Ray image). We write it with mode 0600 and never overwrite one
that exists: replacing a token on a running cluster locks every node out.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from efsray.errors import ComposeError, storage_error_from

__all__ = ["generate_token", "write_token"]


def generate_token(nbytes: int = 32) -> str:
    """A random hex token (256 bits by default)."""
    if nbytes < 16:
        raise ComposeError(f"a token of {nbytes} bytes is too short; use at least 16")
    return secrets.token_hex(nbytes)


def write_token(path: str | Path, *, nbytes: int = 32, mode: int = 0o600) -> Path:
    """Create ``path`` holding a new token. Refuses to replace an existing file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ComposeError(
            f"{target} already exists; a running cluster uses it. Delete it first if you "
            "really mean to rotate the token (then restart every node)."
        ) from None
    except OSError as exc:
        raise storage_error_from(exc, "creating the token file", target) from None
    try:
        os.write(fd, generate_token(nbytes).encode("ascii"))  # no newline, as Ray writes it
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(target, mode)  # the umask may have narrowed it; make it exactly `mode`
    return target
