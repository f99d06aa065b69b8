"""Retention of a results table: ``vacuum`` (superseded versions and merged-away segments,
after a short grace) and ``prune`` (``efsray cleanup``: old runs, old versions, leftovers,
then a vacuum with the cleanup's grace)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efsray.errors import StorageError
from efsray.store.nfs import committed_time, is_temp_name, list_dir, remove_file, stat_or_none
from efsray.store.results.manifest import TableManifest
from efsray.store.results.open_files import OPEN_FILES

if TYPE_CHECKING:
    from efsray.store.results.table import ResultTable

__all__ = ["prune", "vacuum"]


def vacuum(table: ResultTable, grace_cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove what merges superseded, keeping what readers may still use; returns
    (files, bytes) removed (with ``dry_run``: that would be).

    Every manifest names the whole table, so a version that is not the latest and was
    superseded before ``grace_cutoff`` is needed only by a reader who resolved it more
    than the grace period ago. Such versions go (only a prefix: no gaps), and with them
    the data files they name that no kept version names (a merge's inputs). Files no
    version ever named (a writer's uncommitted batch, a killed writer's leftovers) are
    not touched whatever their age: that stays ``prune``'s job, with its long grace, so
    a short grace here can never remove a batch before its commit. The latest version
    and everything it names always stay."""
    return _remove(_vacuum_paths(table, grace_cutoff), dry_run)


def _vacuum_paths(table: ResultTable, grace_cutoff: float) -> list[Path]:
    """What :func:`vacuum` removes: data files first, then versions (a crash leaves names)."""
    _, versions = table.log.known_versions()
    manifests = table.log.read_present(versions)
    present = sorted(manifests)
    removable: list[int] = []
    for i, version in enumerate(present[:-1]):
        superseded = committed_time(manifests[present[i + 1]])
        if superseded is None or superseded >= grace_cutoff:
            break
        removable.append(version)
    if not removable:
        return []
    kept: set[str] = set()
    for version in present[len(removable) :]:
        kept |= table.parse_manifest(version, manifests[version]).files()
    doomed: set[str] = set()
    for version in removable:
        doomed |= table.parse_manifest(version, manifests[version]).files() - kept
    paths = [table.data / name for name in sorted(doomed)]
    return paths + [table.log.path(v) for v in removable]


def _remove(paths: Iterable[Path], dry_run: bool) -> tuple[int, int]:
    """Remove ``paths`` (those still there); returns (files, bytes)."""
    files = nbytes = 0
    for path in paths:
        st = stat_or_none(path)
        if st is None:
            continue
        files += 1
        nbytes += st.st_size
        if not dry_run:
            OPEN_FILES.forget(path)  # no descriptor of this process holds it (NFS: .nfsXXXX)
            remove_file(path)
    return files, nbytes


def _check_no_temp_left(table: ResultTable, version: int) -> None:
    """A commit removes its temporary manifest after linking it; if that failed (the
    commit stands, the protocol only logs it), a cleanup must not report success."""
    shard = table.log.path(version).parent
    from efsray.store.results.table import HOST

    mine = f".{HOST}.{os.getpid()}."
    left = [n for n in list_dir(shard) if is_temp_name(n) and mine in n]
    if left:
        raise StorageError(
            errno.EIO,
            f"results table {table.strategy}: retention committed version {version} but "
            f"could not remove its temporary file {left[0]}; run cleanup again later",
            str(shard / left[0]),
        )


def prune(
    table: ResultTable, older_than: float, *, grace_cutoff: float, dry_run: bool
) -> tuple[int, int]:
    """Retention of the table (``efsray cleanup``); returns (files, bytes) removed (or,
    with ``dry_run``, that would be). Each file is counted once, whichever rule removes it.

    1. Segments whose runs were all created before both cutoffs are dropped by a new
       version, except the segment of the newest run; their files go at once (as a
       legacy run's file did: retention retires them, whoever still reads them).
    2. Versions go as market data's do: committed before both cutoffs, not the latest,
       superseded before ``grace_cutoff`` (a reader who resolved it just before the next
       commit has had the grace period), and only a prefix, so no gaps.
    3. Data files go when no kept version names them and they are older than
       ``grace_cutoff`` (a writer's uncommitted files are younger): a merge's inputs
       stay as long as the versions that name them, so old versions stay readable.
    4. Then :func:`vacuum` with the same ``grace_cutoff``: versions superseded before it,
       whatever their age, and the merged-away files only they name.
    """
    limit = min(older_than, grace_cutoff)
    doomed: set[str] = set()
    ours = 0  # the version this retention commits, if any
    current = table.manifest()
    if current is not None:
        newest = max((s.max_created_ms for s in current.segments), default=0)
        dropped = [
            s for s in current.segments
            if s.max_created_ms < limit * 1000 and s.max_created_ms < newest
        ]  # fmt: skip
        doomed = {name for s in dropped for name in s.files()}
        names = {s.name for s in dropped}
        if names and not dry_run:

            def build(version: int, body: dict[str, Any] | None) -> dict[str, Any] | None:
                now = table.parse_manifest(version, body)
                kept = tuple(s for s in now.segments if s.name not in names)
                if len(kept) == len(now.segments):
                    return None
                return TableManifest(version, table.strategy, kept).to_json()

            done = table.log.commit(build)
            ours = done[0] if done else 0
            if ours:
                _check_no_temp_left(table, ours)
    _, versions = table.log.known_versions()
    manifests = table.log.read_present(versions)
    present = sorted(manifests)
    removable: list[int] = []
    for i, version in enumerate(present[:-1]):  # never the latest; only a prefix
        committed = committed_time(manifests[version])
        superseded = committed_time(manifests[present[i + 1]])
        # (A HEAD that names a removed version costs a reader a listing, no error.)
        if (
            committed is None
            or committed >= limit
            or superseded is None
            # superseded by this very retention: what it dropped goes anyway (1.), and
            # the rest is in the new version
            or (superseded >= grace_cutoff and present[i + 1] != ours)
        ):
            break
        removable.append(version)
    live: set[str] = set()
    for version in present:
        if version not in removable:
            live |= table.parse_manifest(version, manifests[version]).files() - doomed
    stale = [  # a writer's uncommitted files are younger than the grace period
        table.data / name for name in list_dir(table.data)
        if name not in live and (name in doomed or not _young(table.data / name, grace_cutoff))
    ]  # fmt: skip
    paths = stale + [table.log.path(v) for v in removable]
    # The vacuum plans on what is left after this pass; its files come before its versions.
    gone = set(paths)
    more = [p for p in _vacuum_paths(table, grace_cutoff) if p not in gone]
    data = [p for p in paths + more if p.parent == table.data]
    return _remove(data + [p for p in paths + more if p.parent != table.data], dry_run)


def _young(path: Path, grace_cutoff: float) -> bool:
    st = stat_or_none(path)
    return st is not None and st.st_mtime >= grace_cutoff
