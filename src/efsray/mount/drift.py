"""Compare a live mount's options with the ones we would have asked for.

The kernel reports options in its own spelling (``vers=4.1`` for ``nfsvers=4.1``; a disabled
attribute cache as ``acregmin=0,acregmax=0,...``) and never shows options that only mount(8)
or amazon-efs-utils understand (``_netdev``, ``nofail``, ``tls``, ``iam``). This module knows
both, so a report lists only real differences.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from efsray.mount.options import (
    EFS_HELPER_OPTIONS,
    IGNORED_OPTIONS,
    RECOMMENDED_OPTIONS,
    USERSPACE_OPTIONS,
    harmful_reason,
    option_key,
    option_value,
)

__all__ = ["DriftItem", "DriftReport", "option_drift"]

DriftKind = Literal["missing", "different", "harmful", "ignored"]


@dataclass(frozen=True, slots=True)
class DriftItem:
    """One difference: ``expected`` is what we ask for, ``actual`` what the mount has."""

    option: str
    kind: DriftKind
    expected: str | None
    actual: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Every difference between a mount's live options and the expected ones."""

    mount_point: str
    expected: tuple[str, ...]
    live: tuple[str, ...]
    items: tuple[DriftItem, ...]

    @property
    def ok(self) -> bool:
        """No difference at all, and nothing harmful."""
        return not self.items

    @property
    def matches(self) -> bool:
        """Every expected option is live with the expected value (harmful options the caller
        asked for explicitly do not count as a mismatch)."""
        return not any(item.kind in ("missing", "different") for item in self.items)

    def summary(self) -> str:
        """One line per difference, or ``"options as recommended"``."""
        if not self.items:
            return "options as recommended"
        return "; ".join(f"{i.option}: {i.reason}" for i in self.items)


def _kernel_visible(options: Iterable[str]) -> list[str]:
    return [
        o
        for o in options
        if o.split("=", 1)[0] not in USERSPACE_OPTIONS
        and option_key(o) not in EFS_HELPER_OPTIONS
        and o.lower() not in IGNORED_OPTIONS
    ]


def option_drift(
    live: Sequence[str],
    expected: Sequence[str] = RECOMMENDED_OPTIONS,
    *,
    mount_point: str = "",
) -> DriftReport:
    """Report how ``live`` options (as read from mountinfo) differ from ``expected`` (default:
    AWS's recommended options)."""
    live_by_key: dict[str, str] = {}
    for option in live:
        live_by_key[option_key(option)] = option
    items: list[DriftItem] = []
    wanted = _kernel_visible(expected)
    for option in wanted:
        key = option_key(option)
        have = live_by_key.get(key)
        if have is None:
            items.append(
                DriftItem(key, "missing", option, None, f"expected {option}, not set on the mount")
            )
        elif option_value(have) != option_value(option) or _flag(have) != _flag(option):
            items.append(
                DriftItem(key, "different", option, have, f"expected {option}, mount has {have}")
            )
    for option in live:
        reason = harmful_reason(option)
        key = option_key(option)
        if reason:
            items.append(DriftItem(key, "harmful", None, option, f"{option}: {reason}"))
        elif option.lower() in IGNORED_OPTIONS:
            items.append(DriftItem(key, "ignored", None, option, IGNORED_OPTIONS[option.lower()]))
    return DriftReport(
        mount_point=mount_point, expected=tuple(wanted), live=tuple(live), items=tuple(items)
    )


def _flag(option: str) -> str:
    """The spelling of a flag option (``hard`` vs ``soft``, ``ac`` vs ``noac``); '' for k=v."""
    return "" if "=" in option else option.strip().lower()
