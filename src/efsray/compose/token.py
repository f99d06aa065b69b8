"""Secrets for the compose stacks: the Ray auth token (and the Grafana admin password).

Compose (without Swarm) bind-mounts a ``file:`` secret at ``/run/secrets/NAME`` with the host
file's owner and mode, so the file must be readable by the containers' user. The contract
(docs/deploy.md, "Secrets"): every efsray container runs as **uid 1000, gid 100** (the ``ray``
user of the official Ray image, the connector image's ``efsray`` user and the EFS access
point's owner). :func:`write_token` makes the file readable by that uid and by nobody else it
can avoid:

- run as root: the file is chowned to 1000:100, mode 0600;
- run as uid 1000: mode 0600, owned by the caller;
- run as a member of gid 100: group 100, mode 0640;
- run as anyone else: mode 0644 (a container cannot read it otherwise), and the directory it
  is in, when the caller owns it, becomes 0700 so that other host users cannot reach it.

A token that exists is never overwritten: replacing it on a running cluster locks every node
out.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from efsray.errors import ComposeError, storage_error_from

__all__ = ["CONTAINER_GID", "CONTAINER_UID", "TokenFile", "generate_token", "write_token"]

CONTAINER_UID = 1000
"""The uid every efsray container runs as (Ray image ``ray`` user, EFS access point owner)."""
CONTAINER_GID = 100
"""The gid every efsray container runs as (``users``)."""


@dataclass(frozen=True, slots=True)
class TokenFile:
    """Where a token was written, and who can read it."""

    path: Path
    mode: int
    uid: int
    gid: int
    note: str

    @property
    def container_readable(self) -> bool:
        """Whether uid ``CONTAINER_UID`` / gid ``CONTAINER_GID`` can read the file."""
        if self.uid == CONTAINER_UID:
            return bool(self.mode & stat.S_IRUSR)
        if self.gid == CONTAINER_GID:
            return bool(self.mode & stat.S_IRGRP)
        return bool(self.mode & stat.S_IROTH)


def generate_token(nbytes: int = 32) -> str:
    """A random hex token (256 bits by default)."""
    if nbytes < 16:
        raise ComposeError(f"a token of {nbytes} bytes is too short; use at least 16")
    return secrets.token_hex(nbytes)


def write_token(
    path: str | Path,
    *,
    nbytes: int = 32,
    uid: int = CONTAINER_UID,
    gid: int = CONTAINER_GID,
) -> TokenFile:
    """Create ``path`` holding a new token, readable by the containers' ``uid``/``gid``.

    Refuses to replace an existing file. See the module docstring for the modes chosen.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode, owner, note = _access_for(uid, gid)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
    except OSError as exc:
        os.close(fd)
        target.unlink(missing_ok=True)
        raise storage_error_from(exc, "setting the token file's owner and mode", target) from None
    os.close(fd)
    if mode & stat.S_IROTH:
        _close_directory(target.parent)
    st = target.stat()
    return TokenFile(target, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, note)


def _access_for(uid: int, gid: int) -> tuple[int, tuple[int, int] | None, str]:
    """(mode, (uid, gid) to chown to or None, why) for a token readable by uid/gid."""
    me = os.geteuid()
    if me == 0:
        return 0o600, (uid, gid), f"owned by {uid}:{gid} (the containers' user), mode 0600"
    if me == uid:
        return 0o600, None, f"owned by you (uid {uid}, the containers' user), mode 0600"
    if gid in os.getgroups():
        return 0o640, (-1, gid), f"group {gid} (the containers' group), mode 0640"
    return (
        0o644,
        None,
        f"mode 0644: you are neither root, uid {uid} nor in group {gid}, so the containers "
        "can only read it as 'other'; its directory is made 0700 to keep other host users out",
    )


def _close_directory(directory: Path) -> None:
    """chmod 0700 a directory the caller owns (best effort: a shared one is left alone)."""
    try:
        if directory.stat().st_uid == os.geteuid():
            directory.chmod(0o700)
    except OSError:
        pass
