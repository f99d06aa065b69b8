"""A read-only view of a compose document that tolerates any shape.

The schema check reports malformed documents; the rules must still never crash on them. Every
accessor here therefore returns an empty value for a part that is missing or of the wrong
type, and strings are interpolated with the file's own defaults (see :mod:`.interpolate`).
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from efsray.compose.interpolate import interpolate
from efsray.compose.yamlio import LoadedYaml

__all__ = [
    "EFSRAY_SERVICES",
    "ComposeDoc",
    "Mount",
    "PortSpec",
    "RayStart",
    "Service",
    "parse_size",
    "shell_segments",
    "splits_cleanly",
]

_SHELLS = {"sh", "bash", "ash", "dash", "zsh"}
_FLAGS = {"head", "block", "disable-usage-stats", "verbose", "ray-debugger-external"}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)

# The efsray services of the stacks (by service name) and the command each one runs.
EFSRAY_SERVICES: dict[str, tuple[str, ...]] = {
    "efs-monitor": ("efsray", "monitor"),
    "neon-connector": ("efsray", "sync"),
}


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """A scalar as text (Compose accepts numbers where it wants strings); else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _interpolated(value: Any, env: Mapping[str, str]) -> str | None:
    """A scalar as text with its variables substituted; None when it is not a scalar."""
    raw = _text(value)
    return None if raw is None else interpolate(raw, env).text


def parse_size(value: Any) -> int | None:
    """``2gb``, ``512m``, ``1.5g``, ``1073741824`` -> bytes; None when unreadable."""
    text = _text(value)
    if text is None:
        return None
    m = _SIZE.match(text)
    if not m:
        return None
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def shell_segments(script: str, _depth: int = 0) -> list[list[str]]:
    """Split a shell script into simple commands (at ``&&``, ``||``, ``;``, ``|``, newlines)
    and each command into words. A ``sh -c SCRIPT`` wrapper is unwrapped. Never raises."""
    if _depth > 4:
        return []
    inner = _shell_c_argument(_split_words(script))
    if inner is not None:
        return shell_segments(inner, _depth + 1)
    out: list[list[str]] = []
    for part in re.split(r"&&|\|\||;|\||\n", script):
        words = _split_words(part)
        if not words:
            continue
        inner = _shell_c_argument(words)
        if inner is not None:
            out.extend(shell_segments(inner, _depth + 1))
        else:
            out.append(words)
    return out


def _split_words(text: str) -> list[str]:
    """Words of a command, as a shell would split them. An unbalanced quote (which Compose
    rejects; rule CMP006 reports it) is closed at the end so the words can still be read."""
    for closing in ("", '"', "'"):
        try:
            return shlex.split(text + closing, posix=True)
        except ValueError:
            continue
    return [w.strip("'\"") for w in text.split()]


def splits_cleanly(text: str) -> bool:
    """True when ``text`` splits into words without an unbalanced quote or escape."""
    try:
        shlex.split(text, posix=True)
    except ValueError:
        return False
    return True


def _shell_c_argument(words: list[str]) -> str | None:
    if words and words[0].rsplit("/", 1)[-1] in _SHELLS:
        for i, word in enumerate(words[1:-1], start=1):
            if word in ("-c", "-ec", "-ce", "-lc", "-xc"):
                return words[i + 1]
    return None


@dataclass(frozen=True, slots=True)
class RayStart:
    """One ``ray start`` invocation: its options (``--key=value``) and flags."""

    options: dict[str, str | None]
    words: tuple[str, ...]

    @property
    def head(self) -> bool:
        return "head" in self.options

    @property
    def block(self) -> bool:
        return "block" in self.options

    def get(self, name: str) -> str | None:
        return self.options.get(name)

    @classmethod
    def parse(cls, words: list[str]) -> RayStart:
        options: dict[str, str | None] = {}
        i = 0
        while i < len(words):
            word = words[i]
            if word.startswith("--"):
                key, eq, value = word[2:].partition("=")
                if eq:
                    options[key] = value
                elif key not in _FLAGS and i + 1 < len(words) and not words[i + 1].startswith("-"):
                    options[key] = words[i + 1]
                    i += 1
                else:
                    options[key] = None
            i += 1
        return cls(options=options, words=tuple(words))


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One published port. ``host_ip`` None means every interface of the host."""

    raw: str
    host_ip: str | None
    published: str | None
    target: str


@dataclass(frozen=True, slots=True)
class Mount:
    """One volume or bind mount of a service."""

    type: str  # volume, bind, tmpfs, ...
    source: str | None
    target: str | None
    read_only: bool
    index: int


@dataclass(frozen=True)
class Service:
    name: str
    spec: dict[Any, Any]
    env: Mapping[str, str] = field(default_factory=dict)

    def text(self, value: Any) -> str | None:
        return _interpolated(value, self.env)

    def get(self, key: str) -> Any:
        return self.spec.get(key)

    # --- command -------------------------------------------------------------------------
    def command_script(self) -> str:
        """The service's command (entrypoint first) as one shell-like script."""
        parts = [self._script(self.spec.get("entrypoint")), self._script(self.spec.get("command"))]
        return " ".join(p for p in parts if p)

    def _script(self, value: Any) -> str:
        if isinstance(value, list):
            words = [self.text(w) or "" for w in value]
            inner = _shell_c_argument(words)
            return inner if inner is not None else shlex.join(words)
        return self.text(value) or ""

    @functools.cached_property
    def _segments(self) -> list[list[str]]:
        return shell_segments(self.command_script())

    def segments(self) -> list[list[str]]:
        return self._segments

    @functools.cached_property
    def _ray_starts(self) -> list[RayStart]:
        starts = []
        for words in self.segments():
            for i in range(len(words) - 1):
                if words[i].rsplit("/", 1)[-1] == "ray" and words[i + 1] == "start":
                    starts.append(RayStart.parse(words[i + 2 :]))
                    break
        return starts

    def ray_starts(self) -> list[RayStart]:
        return self._ray_starts

    def runs(self, *words: str) -> bool:
        """True when some command of the service starts with ``words`` (``efsray monitor``)."""
        n = len(words)
        for segment in self.segments():
            for i in range(len(segment) - n + 1):
                if segment[i].rsplit("/", 1)[-1] == words[0] and tuple(
                    segment[i + 1 : i + n]
                ) == tuple(words[1:]):
                    return True
        return False

    @property
    def is_ray(self) -> bool:
        image = self.text(self.spec.get("image")) or ""
        return bool(self.ray_starts()) or image.split(":", 1)[0].endswith("rayproject/ray")

    @property
    def is_ray_head(self) -> bool:
        return any(s.head for s in self.ray_starts())

    @property
    def long_running(self) -> bool:
        """A service meant to stay up: a Ray node or an efsray service."""
        return (
            self.is_ray
            or self.name in EFSRAY_SERVICES
            or any(self.runs(*words) for words in EFSRAY_SERVICES.values())
        )

    # --- environment ---------------------------------------------------------------------
    def environment(self) -> dict[str, str | None]:
        """Variables as written in the file (before interpolation); None = pass-through."""
        raw = self.spec.get("environment")
        out: dict[str, str | None] = {}
        if isinstance(raw, dict):
            for key, value in raw.items():
                out[str(key)] = None if value is None else _text(value)
        elif isinstance(raw, list):
            for item in raw:
                text = _text(item)
                if text is None:
                    continue
                key, eq, value = text.partition("=")
                out[key.strip()] = value if eq else None
        return out

    # --- ports, mounts, healthcheck, scale -----------------------------------------------
    def ports(self) -> list[PortSpec]:
        out = []
        for item in _list(self.spec.get("ports")):
            if isinstance(item, dict):
                target = self.text(item.get("target")) or ""
                host_ip = self.text(item.get("host_ip")) or None
                published = self.text(item.get("published"))
                out.append(PortSpec(str(item), host_ip, published, target))
                continue
            text = self.text(item)
            if text is not None:
                out.append(_parse_short_port(text))
        return out

    def mounts(self) -> list[Mount]:
        out = []
        for index, item in enumerate(_list(self.spec.get("volumes"))):
            if isinstance(item, dict):
                ro = item.get("read_only")
                out.append(
                    Mount(
                        type=self.text(item.get("type")) or "volume",
                        source=self.text(item.get("source")),
                        target=self.text(item.get("target")),
                        read_only=ro is True or (_text(ro) or "").lower() == "true",
                        index=index,
                    )
                )
                continue
            text = self.text(item)
            if text is None:
                continue
            parts = text.split(":")
            if len(parts) == 1:
                out.append(Mount("volume", None, parts[0], False, index))
                continue
            source, target = parts[0], parts[1]
            modes = parts[2].split(",") if len(parts) > 2 else []
            kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
            out.append(Mount(kind, source, target, "ro" in modes, index))
        return out

    def healthcheck(self) -> dict[Any, Any] | None:
        hc = self.spec.get("healthcheck")
        return hc if isinstance(hc, dict) else None

    def healthcheck_script(self) -> str | None:
        """The healthcheck's command as a script; None when there is none or it is off."""
        hc = self.healthcheck()
        if hc is None or hc.get("disable") is True or _text(hc.get("disable")) == "true":
            return None
        test = hc.get("test")
        if isinstance(test, list):
            words = [self.text(w) or "" for w in test]
            if not words or words[0] == "NONE":
                return None
            if words[0] == "CMD-SHELL":
                return " ".join(words[1:])
            if words[0] == "CMD":
                words = words[1:]
            inner = _shell_c_argument(words)
            return inner if inner is not None else shlex.join(words)
        return self.text(test)

    def replicas(self) -> int | None:
        """deploy.replicas or scale, when the file decides it (defaults count)."""
        for value in (_dict(self.spec.get("deploy")).get("replicas"), self.spec.get("scale")):
            text = self.text(value)
            if text is not None and text.strip().isdigit():
                return int(text.strip())
        return None


def _parse_short_port(text: str) -> PortSpec:
    """``[HOST_IP:][PUBLISHED:]TARGET[/PROTO]``; IPv6 host IPs are written in brackets."""
    body = text.split("/", 1)[0].strip()
    host_ip: str | None = None
    if body.startswith("["):
        end = body.find("]")
        host_ip = body[1:end] if end > 0 else None
        body = body[end + 2 :] if end > 0 else body
        parts = body.split(":")
        published, target = (parts[0] or None, parts[-1]) if len(parts) > 1 else (None, parts[0])
        return PortSpec(text, host_ip, published, target)
    parts = body.split(":")
    if len(parts) >= 3:
        host_ip = ":".join(parts[:-2]) or None
        return PortSpec(text, host_ip, parts[-2] or None, parts[-1])
    if len(parts) == 2:
        return PortSpec(text, None, parts[0] or None, parts[1])
    return PortSpec(text, None, None, parts[0])


@dataclass(frozen=True)
class ComposeDoc:
    """A parsed compose file, with line numbers, and values to interpolate it with."""

    file: str
    loaded: LoadedYaml
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def data(self) -> dict[Any, Any]:
        return _dict(self.loaded.data)

    @functools.cached_property
    def _services(self) -> tuple[Service, ...]:
        return tuple(
            Service(str(name), spec, self.env)
            for name, spec in _dict(self.data.get("services")).items()
            if isinstance(spec, dict)
        )

    def services(self) -> Iterator[Service]:
        return iter(self._services)

    def service(self, name: str) -> Service | None:
        return next((s for s in self._services if s.name == name), None)

    def section(self, key: str) -> dict[Any, Any]:
        return _dict(self.data.get(key))

    def text(self, value: Any) -> str | None:
        return _interpolated(value, self.env)

    def line(self, *path: Any) -> int | None:
        return self.loaded.line_of(tuple(path))

    def nfs_volumes(self) -> dict[str, dict[Any, Any]]:
        """Top-level volumes that Docker's local driver mounts over NFS."""
        out = {}
        for name, spec in self.section("volumes").items():
            opts = _dict(_dict(spec).get("driver_opts"))
            if (_text(opts.get("type")) or "").strip() in ("nfs", "nfs4"):
                out[str(name)] = opts
        return out
