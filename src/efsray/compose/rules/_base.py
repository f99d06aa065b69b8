"""What every rule module shares: the rule and hit types, severities, and helpers that read
a service (environment, secrets, images, NFS options) the same way everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from efsray.compose.findings import RuleInfo, Severity
from efsray.compose.interpolate import interpolate
from efsray.compose.model import ComposeDoc, Service

__all__ = [
    "ALL_INTERFACES",
    "MIN_SHM",
    "RAY_PORTS",
    "RAY_VERSION",
    "SECRET_NAME",
    "URL_CREDENTIAL",
    "E",
    "Hit",
    "Rule",
    "W",
    "env_value",
    "granted_secret_paths",
    "image_tag",
    "info",
    "mounts_nfs",
    "nfs_option_map",
    "split_options",
]

# The Ray version of the package (pyproject's `ray` extra) and of the images; a test ties them.
RAY_VERSION = "2.60.0"

E, W = Severity.ERROR, Severity.WARNING

RAY_PORTS = {
    "6379": "the GCS port",
    "8265": "the dashboard and Jobs API",
    "10001": "the Ray Client port",
    "52365": "the dashboard agent",
    "8080": "the metrics port",
}
ALL_INTERFACES = {None, "", "0.0.0.0", "::", "[::]"}  # noqa: S104 (we look for them)
SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|CONNECTION_STRING|DSN"
    r"|DATABASE_URL)",
    re.IGNORECASE,
)
URL_CREDENTIAL = re.compile(r"://[^/@:\s]+:([^@\s$]+)@")
MIN_SHM = 1024**3


class Hit(NamedTuple):
    """What a rule's check yields: the message, the service, and the path in the file."""

    message: str
    service: str | None = None
    path: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule: its identity and advice, and the function that finds its hits in a file."""

    info: RuleInfo
    check: Callable[[ComposeDoc], Iterator[Hit]]


def info(id: str, name: str, severity: Severity, why: str, fix: str) -> RuleInfo:
    """A rule's identity and advice (positional, to keep the rule tables compact)."""
    return RuleInfo(id=id, name=name, severity=severity, why=why, fix=fix)


def env_value(svc: Service, name: str) -> tuple[bool, str | None]:
    """(present, interpolated value) of an environment variable of the service."""
    env = svc.environment()
    if name not in env:
        return False, None
    raw = env[name]
    return True, None if raw is None else interpolate(raw, svc.env).text


def granted_secret_paths(doc: ComposeDoc, svc: Service) -> dict[str, str]:
    """Container path -> secret name, for every secret the service is granted."""
    out: dict[str, str] = {}
    raw = svc.get("secrets")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str):
            out[f"/run/secrets/{item}"] = item
        elif isinstance(item, dict) and isinstance(item.get("source"), str):
            target = doc.text(item.get("target")) or item["source"]
            out[target if target.startswith("/") else f"/run/secrets/{target}"] = item["source"]
    return out


def image_tag(image: str) -> tuple[str, str | None, bool]:
    """(repository, tag, has_digest) of an image reference."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag, bool(digest)
    return ref, None, bool(digest)


def split_options(o: str) -> list[str]:
    """Split an ``o:`` string at commas that are not inside ``${...}``."""
    parts: list[str] = []
    current: list[str] = []
    level = 0
    for ch in o:
        if ch == "{":
            level += 1
        elif ch == "}":
            level = max(0, level - 1)
        if ch == "," and level == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def nfs_option_map(o: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for token in split_options(o):
        token = token.strip()
        if not token:
            continue
        key, eq, value = token.partition("=")
        out[key] = value if eq else None
    return out


def mounts_nfs(doc: ComposeDoc, svc: Service) -> list[str]:
    nfs = doc.nfs_volumes()
    return [m.source for m in svc.mounts() if m.type == "volume" and m.source in nfs]
