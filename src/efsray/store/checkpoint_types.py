"""Model checkpoints: the value objects (RetentionPolicy, CheckpointInfo, PruneResult), the
limits and grace periods, and the per-model paths (:class:`_Model`) that the save, load and
retention parts of :class:`efsray.store.checkpoints.CheckpointStore` share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from efsray.errors import InvalidDataError
from efsray.store.checkpoint_files import BYTES_NAME, CheckpointFile
from efsray.store.nfs import VersionLog

MAX_METADATA_BYTES = 1 << 20
DEFAULT_GRACE_S = 3600.0
# The shortest grace period the CLI accepts without --force: far longer than a commit takes
# (a writer re-checks files it wrote more than _RECHECK_AFTER_S ago) and than a full read of
# a superseded version. Shorter ones can remove a writer's files between its write and its
# commit; the commit then fails cleanly, or (in the last instant) commits a version that
# names a missing file, which readers report as a CorruptionError.
MIN_GRACE_S = 600.0


def require_safe_grace(grace: float, *, force: bool, dry_run: bool = False) -> None:
    """Refuse a grace period below MIN_GRACE_S unless ``force`` (or ``dry_run``: nothing is
    removed), as Delta's VACUUM refuses a retention below 168 hours. For the CLI, where a
    person types ``--grace 0``; the library takes the grace it is given."""
    if grace < MIN_GRACE_S and not force and not dry_run:
        raise InvalidDataError(
            f"--grace {grace:g} is below the safe minimum of {MIN_GRACE_S:.0f} s: a writer "
            "or reader still working on what it would remove would fail, or commit a "
            "version that names removed files. Use --grace >= "
            f"{MIN_GRACE_S:.0f}, or add --force if no writer or reader is running"
        )


# Files written but not committed for this long are checked again before the commit, in
# case cleanup (whose grace period is far longer) took them for a crashed saver's debris.
_RECHECK_AFTER_S = 60.0
_ALIAS_RESTORE_WAIT_S = 2.0
_SHARD_CHARS = 5

Kind = Literal["bytes", "directory"]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What retention keeps of a model, besides its latest and aliased versions.

    ``keep_last``: the newest N versions. ``keep_best``: the best M versions by the numeric
    metadata value ``metric`` (``mode`` "min" or "max"); versions without it never count.
    """

    keep_last: int = 5
    keep_best: int = 0
    metric: str | None = None
    mode: Literal["min", "max"] = "max"

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_best"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidDataError(f"{name} must be an integer >= 0, got {value!r}")
        if self.keep_last < 1:
            raise InvalidDataError("keep_last must be >= 1: the latest version is always kept")
        if self.mode not in ("min", "max"):
            raise InvalidDataError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.keep_best and not self.metric:
            raise InvalidDataError("keep_best needs metric: the metadata key to rank versions by")

    def to_json(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "keep_best": self.keep_best,
                "metric": self.metric, "mode": self.mode}  # fmt: skip

    @classmethod
    def from_json(cls, value: Any) -> RetentionPolicy:
        if not isinstance(value, dict):
            return cls()
        return cls(
            keep_last=int(value.get("keep_last", 5)),
            keep_best=int(value.get("keep_best", 0)),
            metric=value.get("metric"),
            mode=value.get("mode", "max"),
        )


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One committed checkpoint version."""

    model: str
    version: int
    kind: Kind
    files: tuple[CheckpointFile, ...]
    bytes: int
    metadata: dict[str, Any]
    committed_at: str
    directory: str
    writer: str
    dirs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The stored file of a bytes checkpoint, else the checkpoint's directory."""
        return os.path.join(self.directory, BYTES_NAME) if self.kind == "bytes" else self.directory


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What retention removed (or, with dry_run, would remove) from one model."""

    model: str
    removed: tuple[int, ...]
    kept: tuple[int, ...]
    files: int
    bytes: int
    orphans: int
    dry_run: bool
    reasons: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    directory: Path
    log: VersionLog
    refs: VersionLog

    @property
    def data(self) -> Path:
        return self.directory / "data"
