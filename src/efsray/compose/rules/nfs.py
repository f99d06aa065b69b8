"""EFS volume rules: NFS options compared with ``efsray.mount.options``, version, address."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from efsray.compose.interpolate import interpolate
from efsray.compose.model import ComposeDoc
from efsray.compose.rules._base import (
    E,
    Hit,
    Rule,
    W,
    info,
    nfs_option_map,
)
from efsray.mount.options import IGNORED_OPTIONS, RECOMMENDED_OPTIONS, harmful_reason

__all__ = ["RULES"]


def _nfs_volume_hits(
    doc: ComposeDoc, judge: Callable[[str, dict[Any, Any], dict[str, str | None]], Iterator[str]]
) -> Iterator[Hit]:
    for name, opts in doc.nfs_volumes().items():
        o = doc.text(opts.get("o")) or ""
        for message in judge(name, opts, nfs_option_map(o)):
            yield Hit(f"volume {name!r}: {message}", None, ("volumes", name, "driver_opts", "o"))


def _nfs_ignored(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        for key in o:
            if key in IGNORED_OPTIONS:
                yield f"option {key!r}: {IGNORED_OPTIONS[key]}"

    return _nfs_volume_hits(doc, judge)


EFS001 = Rule(
    info(
        "EFS001",
        "nfs-option-ignored",
        W,
        "The option does nothing on Linux; keeping it suggests a behaviour the mount "
        "does not have.",
        "Remove it (render the options with `efsray compose render`).",
    ),
    _nfs_ignored,
)


def _nfs_harmful(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        for key, value in o.items():
            token = key if value is None else f"{key}={value}"
            reason = harmful_reason(token)
            if reason is not None:
                yield f"option {token!r}: {reason}"

    return _nfs_volume_hits(doc, judge)


EFS002 = Rule(
    info(
        "EFS002",
        "nfs-option-harmful",
        E,
        "The option trades correctness or speed away on EFS.",
        "Remove it; use the options `efsray compose render` prints.",
    ),
    _nfs_harmful,
)


def _nfs_recommended(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        problems = []
        for option in RECOMMENDED_OPTIONS:
            key, eq, want = option.partition("=")
            have = o.get(key, o.get("vers") if key == "nfsvers" else None)
            if key not in o and not (key == "nfsvers" and "vers" in o):
                problems.append(f"{option} is missing")
            elif eq and have != want:
                problems.append(f"{key}={have} instead of {option}")
        if problems:
            yield "; ".join(problems)

    return _nfs_volume_hits(doc, judge)


EFS003 = Rule(
    info(
        "EFS003",
        "nfs-option-not-recommended",
        W,
        "AWS's recommended EFS options (nfsvers=4.1, rsize/wsize 1 MiB, hard, timeo=600, "
        "retrans=2, noresvport) keep throughput up and let the client reconnect on a new "
        "source port after a network blip (noresvport) instead of hanging.",
        "Use the `o:` string that `efsray compose render` prints.",
    ),
    _nfs_recommended,
)


def _nfs_version(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        version = o.get("nfsvers") or o.get("vers")
        kind = (doc.text(opts.get("type")) or "").strip()
        if version is None and kind == "nfs":
            yield "type nfs without nfsvers= mounts NFSv3, which EFS does not serve"
        elif version is not None and not version.startswith("4"):
            yield f"NFS version {version}: EFS serves NFSv4.0 and 4.1 only"

    return _nfs_volume_hits(doc, judge)


EFS004 = Rule(
    info(
        "EFS004",
        "nfs-version",
        E,
        "EFS speaks NFSv4.0 and 4.1 only; Docker's `type: nfs` mounts with the kernel "
        "default (v3) unless told otherwise, and that mount fails.",
        "Put nfsvers=4.1 in `o:`.",
    ),
    _nfs_version,
)


def _nfs_address(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        if not o.get("addr"):
            yield "no addr= in the options: Docker does not know which server to mount"
        device = doc.text(opts.get("device")) or ""
        if not device.startswith(":"):
            yield f"device {device!r} must be ':/path' (the export path, after a colon)"

    return _nfs_volume_hits(doc, judge)


EFS005 = Rule(
    info(
        "EFS005",
        "nfs-address",
        E,
        'Docker\'s local driver needs addr=SERVER in `o:` and device: ":/path" to mount '
        "NFS; without them the volume fails when the first container starts.",
        "Use `efsray compose render` for the block.",
    ),
    _nfs_address,
)


def _nfs_address_unguarded(doc: ComposeDoc) -> Iterator[Hit]:
    for name, opts in doc.nfs_volumes().items():
        raw = opts.get("o")
        if not isinstance(raw, str):
            continue
        addr = nfs_option_map(raw).get("addr") or ""
        result = interpolate(addr)
        unguarded = [v for v in result.unknown if v not in result.required]
        if unguarded:
            yield Hit(
                f"volume {name!r}: addr= comes from ${{{unguarded[0]}}} with no default and no "
                "`:?` guard",
                None,
                ("volumes", name, "driver_opts", "o"),
            )


EFS006 = Rule(
    info(
        "EFS006",
        "nfs-address-unguarded",
        W,
        "If the variable is unset Compose substitutes an empty string and the failure "
        "appears late, as an obscure mount error when a container starts.",
        "Write ${EFS_DNS_NAME:?set EFS_DNS_NAME} so Compose stops at once with a message.",
    ),
    _nfs_address_unguarded,
)


RULES: tuple[Rule, ...] = (
    EFS001,
    EFS002,
    EFS003,
    EFS004,
    EFS005,
    EFS006,
)
