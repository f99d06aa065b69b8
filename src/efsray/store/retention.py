"""Retention: remove what is old and unprotected, never what a reader may still need.

``cleanup(days=N)`` (``efsray cleanup --days N``, the seed's ``cleanup_old_data``) works
area by area and reports files and bytes per area:

- **market_data**: old versions of a series go: a version is removed only if it was
  committed before the cutoff (now - N days), is not the latest, and was superseded more
  than the grace period ago (a reader who resolved "latest" just before the next commit is
  still reading it). Only a prefix of the history goes, so ``history`` stays contiguous.
  A segment file is removed only when no kept version references it and it is older than
  the grace period (a writer's not-yet-committed segment is newer than that). A merge's
  inputs are gone already (``segment_moves``): their redirects go like segments, once no
  kept version names their input.
- **checkpoints**: :meth:`CheckpointStore.prune` with each model's stored policy (keep the
  latest, aliased, keep-last-N, keep-best-M, grace) and the cutoff; plus the data
  directories of crashed saves once older than the grace period.
- **results**: runs created before the cutoff, except the newest run of each strategy;
  Parquet files of runs that never committed, once older than the grace period; and each
  results table is vacuumed with the same grace (:func:`efsray.store.results.retention.vacuum`:
  versions superseded more than the grace period ago, whatever ``days`` says, and the
  merged-away segments only they name), counted once under ``results``.
- **logs**: files under ``logs/`` last modified before the cutoff.
- **temp**: temporary files of crashed writers (``.efsray-tmp.*``) older than the grace
  period, anywhere in the store.

Nothing younger than the grace period is ever removed, whatever ``days`` says.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from efsray.errors import EfsrayError, InvalidDataError
from efsray.store.checkpoints import DEFAULT_GRACE_S, CheckpointStore
from efsray.store.layout import StoreLayout
from efsray.store.market import list_series
from efsray.store.nfs import (
    VersionLog,
    committed_time,
    is_temp_name,
    list_dir,
    lstat_or_none,
    remove_file,
    remove_tree,
    tree_stats,
    walk,
)
from efsray.store.results import ResultStore
from efsray.store.segment_moves import is_moved_name, moved_source
from efsray.store.segments import is_segment_name

__all__ = ["AREAS", "AreaReport", "CleanupReport", "cleanup"]

log = logging.getLogger("efsray.store")

AREAS = ("market_data", "checkpoints", "results", "logs", "temp")


@dataclass(frozen=True, slots=True)
class AreaReport:
    """Files removed and bytes freed in one area (with dry_run: what would be)."""

    files: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class CleanupReport:
    """The outcome of one cleanup run."""

    dry_run: bool
    days: float
    cutoff: dt.datetime
    grace_seconds: float
    areas: dict[str, AreaReport]
    errors: tuple[str, ...] = field(default=())

    @property
    def files(self) -> int:
        return sum(a.files for a in self.areas.values())

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.areas.values())


class _Tally:
    def __init__(self) -> None:
        self.counts = {area: [0, 0] for area in AREAS}
        self.errors: list[str] = []

    def add(self, area: str, files: int, nbytes: int) -> None:
        self.counts[area][0] += files
        self.counts[area][1] += nbytes

    def guard(self, what: str, func: Callable[[], None]) -> None:
        """Run one unit of work; a failure is reported, and the other units still run."""
        try:
            func()
        except (EfsrayError, OSError) as exc:
            log.error("cleanup of %s failed: %s", what, exc)
            self.errors.append(f"{what}: {exc}")


def cleanup(
    layout: StoreLayout,
    *,
    days: float = 7,
    grace: float = DEFAULT_GRACE_S,
    dry_run: bool = False,
    now: float | None = None,
    checkpoints: CheckpointStore | None = None,
    results: ResultStore | None = None,
) -> CleanupReport:
    """Apply retention to the whole store (see the module docstring)."""
    if not isinstance(days, int | float) or isinstance(days, bool) or days < 0:
        raise InvalidDataError(f"days must be a number >= 0, got {days!r}")
    if not isinstance(grace, int | float) or isinstance(grace, bool) or grace < 0:
        raise InvalidDataError(f"grace must be a number of seconds >= 0, got {grace!r}")
    now = time.time() if now is None else now
    cutoff = now - days * 86400
    grace_cutoff = now - grace
    checkpoints = checkpoints or CheckpointStore(layout)
    results = results or ResultStore(layout)
    tally = _Tally()

    # Listing an area can fail too: reported like any other unit, and the other areas go on.
    series: list[tuple[str, str]] = []
    tally.guard("market data (listing the series)", lambda: series.extend(list_series(layout)))
    for symbol, timeframe in series:
        tally.guard(
            f"series {symbol}/{timeframe}",
            lambda s=symbol, t=timeframe: _market_series(  # type: ignore[misc]
                layout.series_dir(s, t), f"series {s}/{t}", cutoff, grace_cutoff, dry_run, tally
            ),
        )
    cutoff_dt = dt.datetime.fromtimestamp(cutoff, dt.UTC)
    models: list[str] = []
    tally.guard("checkpoints (listing the models)", lambda: models.extend(checkpoints.models()))
    for model in models:

        def prune_model(model: str = model) -> None:
            result = checkpoints.prune(
                model, older_than=cutoff_dt, grace=grace, dry_run=dry_run, now=now
            )
            tally.add("checkpoints", result.files, result.bytes)

        tally.guard(f"model {model}", prune_model)

    def prune_results() -> None:
        tally.add("results", *results.prune(cutoff, grace_cutoff=grace_cutoff, dry_run=dry_run))

    tally.guard("results", prune_results)
    tally.guard("logs", lambda: _logs(layout.logs, min(cutoff, grace_cutoff), dry_run, tally))
    tally.guard("temporary files", lambda: _temp(layout.root, grace_cutoff, dry_run, tally))
    report = CleanupReport(
        dry_run=dry_run,
        days=days,
        cutoff=cutoff_dt,
        grace_seconds=float(grace),
        areas={area: AreaReport(*tally.counts[area]) for area in AREAS},
        errors=tuple(tally.errors),
    )
    log.info(
        "cleanup%s: %d files, %d bytes (%s)", " (dry run)" if dry_run else "", report.files,
        report.bytes, ", ".join(f"{a} {r.files}/{r.bytes}" for a, r in report.areas.items()),
    )  # fmt: skip
    return report


# --- market data -------------------------------------------------------------------------


def _market_series(
    directory: Path, kind: str, cutoff: float, grace_cutoff: float, dry_run: bool, tally: _Tally
) -> None:
    vlog = VersionLog(directory, kind)
    head = vlog.head_hint()
    latest, versions = vlog.known_versions()
    if not latest:
        return
    manifests = vlog.read_present(versions)
    present = sorted(manifests)
    doomed: list[int] = []
    # Without HEAD, a reader probing from version 1 needs version 1. With it, readers step
    # forward from HEAD's version by lookups (HEAD may lag the latest by a few versions) and
    # do not need that version itself; one that finds nothing after it falls back to the
    # listed versions (VersionLog._fallback).
    if head > 0:
        for i, v in enumerate(present[:-1]):
            committed = committed_time(manifests[v])
            superseded = committed_time(manifests[present[i + 1]])
            if (
                v >= latest
                or committed is None
                or committed >= cutoff
                or superseded is None
                or superseded >= grace_cutoff
            ):
                break  # only a prefix goes: history stays contiguous
            doomed.append(v)
    else:
        log.warning("%s has no HEAD file; keeping all its versions", kind)
    kept = [v for v in present if v not in doomed]
    referenced = {
        str(seg["file"]) for v in kept for seg in manifests[v].get("segments", []) if "file" in seg
    }
    for v in doomed:
        _remove_file(vlog.path(v), "market_data", dry_run, tally)
    segments = directory / "segments"
    for name in list_dir(segments):
        # A redirect goes with the last kept version naming its input. The segment it leads
        # to stays: the version that merged it named it, and kept versions are a suffix of
        # the history (a chain's every link is named by a kept version).
        if is_moved_name(name):
            if moved_source(name) in referenced:
                continue
        elif is_temp_name(name) or name in referenced or not is_segment_name(name):
            continue
        path = segments / name
        st = lstat_or_none(path)
        if st is None:
            continue
        if st.st_mtime < grace_cutoff:
            _remove_file(path, "market_data", dry_run, tally, size=st.st_size)


def _remove_file(
    path: Path, area: str, dry_run: bool, tally: _Tally, *, size: int | None = None
) -> None:
    if size is None:
        st = lstat_or_none(path)
        if st is None:
            return  # another cleanup removed it first
        size = st.st_size
    if not dry_run and not remove_file(path):
        return  # another cleanup removed it first
    tally.add(area, 1, size)


# --- logs and temporary files ------------------------------------------------------------


def _logs(root: Path, cutoff: float, dry_run: bool, tally: _Tally) -> None:
    for directory, _, names in walk(root):
        for name in names:
            if is_temp_name(name):
                continue  # the temp sweep's business
            path = Path(directory) / name
            st = lstat_or_none(path)
            if st is None:
                continue
            if st.st_mtime < cutoff:
                _remove_file(path, "logs", dry_run, tally, size=st.st_size)


def _temp(root: Path, grace_cutoff: float, dry_run: bool, tally: _Tally) -> None:
    for directory, dirs, names in walk(root):
        for name in [d for d in dirs if is_temp_name(d)]:
            dirs.remove(name)  # a crashed copy's staging directory: goes whole
            path = Path(directory) / name
            newest, files, size = tree_stats(path)
            if newest is not None and newest < grace_cutoff:
                if not dry_run:
                    remove_tree(path, None)
                tally.add("temp", files, size)
        for name in names:
            if not is_temp_name(name):
                continue
            path = Path(directory) / name
            st = lstat_or_none(path)
            if st is None:
                continue
            if st.st_mtime < grace_cutoff:
                _remove_file(path, "temp", dry_run, tally, size=st.st_size)
