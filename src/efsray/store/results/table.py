"""One strategy's results table: batches committed as segments through the version log.

``results/tables/<strategy>/`` holds a version log (``HEAD``, ``versions/``, see
:class:`efsray.store.nfs.VersionLog`) and ``data/``: segments (Parquet, one row per run) and
their sidecars (the runs' equity curves and trade lists). A batch is committed like a market
data append: its two files are written under unique names nobody knows yet (their fsyncs in
the background), then the next version's manifest, naming them, is created with
``create_exclusive``: the commit point. A writer killed before that leaves files no manifest
names (cleanup removes them after the grace period); two writers never overwrite each other
(a lost race rebuilds the manifest on the winner's version).

Chosen run ids (a sweep derives them from the sweep and the point) make a batch idempotent:
before committing, the segments whose id range overlaps the batch's are read and the runs
already stored are compared with the new ones (the same: reused; different: an error) and
left out; if a segment that overlaps the batch appears between that check and the commit
(another attempt of the same task), the commit is rebuilt after checking it too.

Small segments are merged (``merge``, run by the writer after its commit, like market
data's compaction): ``MERGE_FACTOR`` neighbours of one size tier into one, sorted by run id,
their sidecars concatenated, up to ``MAX_SEGMENT_ROWS`` rows. Superseded files stay until
``vacuum`` (a short grace) or retention (``prune``) removes them, so readers of older
versions keep working (:mod:`efsray.store.results.retention`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from efsray.errors import CorruptionError, InvalidDataError
from efsray.store.hashing import check, split_digest
from efsray.store.ids import id_time
from efsray.store.merging import find_run
from efsray.store.nfs import (
    BackgroundSyncs,
    ManifestCache,
    VersionLog,
    ensure_dir,
    read_bytes,
    read_range,
    remove_file,
)
from efsray.store.results.format import (
    Mask,
    PreparedRun,
    created_range,
    decode_rows,
    decode_segment,
    decode_table,
    encode_batch,
    encode_rows,
    merge_tables,
    metric_ranges,
    query_columns,
)
from efsray.store.results.index import encode_index, read_index_rows
from efsray.store.results.manifest import SegmentEntry, SidecarEntry, TableManifest
from efsray.store.results.parts import footer_of, read_part
from efsray.store.results.records import TABLES, comparable, digest

__all__ = ["MAX_SEGMENT_ROWS", "MERGE_FACTOR", "ResultTable"]

log = logging.getLogger("efsray.store")

MERGE_FACTOR = 4
_PARSED = 4  # parsed manifests kept per table
MAX_SEGMENT_ROWS = 32_768
HOST = socket.gethostname().split(".")[0][:32] or "host"
ROW_COLUMNS = (
    "run_id", "created_at", "writer", "record", "tables",
    *(f"table.{n}.{c}" for n in TABLES for c in ("offset", "bytes", "rows", "digest")),
)  # fmt: skip


class _Recheck(Exception):
    def __init__(self, base: TableManifest) -> None:
        self.base = base


class ResultTable:
    """The results table of ``strategy`` under ``directory``."""

    def __init__(
        self, directory: Path, strategy: str, *, cache: ManifestCache, algorithm: str
    ) -> None:
        self.directory = directory
        self.strategy = strategy
        self.data = directory / "data"
        self.algorithm = algorithm
        self.log = VersionLog(directory, f"results table {strategy}", cache)
        self._cache = cache
        self._parsed: dict[int, TableManifest] = {}
        self._parsed_lock = threading.Lock()
        self._made = False

    # --- manifests -------------------------------------------------------------------------

    def parse_manifest(self, version: int, body: Mapping[str, Any] | None) -> TableManifest:
        """``version``'s manifest from its JSON ``body``; the newest few parsed are kept
        (a committed version never changes; parsing 64 segments' entries took ~2 ms, most
        of a load by id on local disk)."""
        if body is None:
            return TableManifest(0, self.strategy)
        found = self._parsed.get(version)
        if found is None:
            found = TableManifest.from_json(version, body, str(self.log.path(version)))
            with self._parsed_lock:
                self._parsed[version] = found
                while len(self._parsed) > _PARSED:
                    self._parsed.pop(min(self._parsed))
        return found

    def manifest(self, version: int | None = None) -> TableManifest | None:
        """The manifest of ``version`` (default: the latest); None if nothing is committed."""
        if version is not None:
            return self.parse_manifest(version, self.log.read(version))
        found = self.log.latest()
        return None if found is None else self.parse_manifest(*found)

    def known_manifest(self) -> TableManifest | None:
        """The newest manifest this process has read or committed, without asking the
        filesystem for a newer one (None if it knows none)."""
        version = self._cache.newest(self.directory)
        body = self._cache.get(self.directory, version) if version else None
        return None if body is None else self.parse_manifest(version, body)

    def find(self, run_id: str, *, tables: bool = False) -> dict[str, Any] | None:
        """The stored row of ``run_id`` (see :meth:`rows`), or None. A run never changes once
        committed, so the newest manifest this process knows answers first, without the
        round trips that look for a newer version; only a run it does not hold (or whose
        files a vacuum removed since) is looked up in the latest version."""
        known = self.known_manifest()
        failed = False
        if known is not None:
            try:
                row = self.rows(known, [run_id], tables=tables).get(run_id)
            except CorruptionError:  # files gone with a vacuumed version: ask the latest
                row, failed = None, True  # (real damage raises there, if it names them)
            if row is not None:
                return row
        latest = self.manifest()
        if latest is None or (known is not None and latest.version == known.version and not failed):
            return None
        return self.rows(latest, [run_id], tables=tables).get(run_id)

    # --- reading ----------------------------------------------------------------------------

    def read_segment(
        self,
        entry: SegmentEntry,
        *,
        columns: Sequence[str] | None = None,
        filters: Mask | None = None,
        run_ids: Sequence[str] | None = None,
        whole: bool = False,
    ) -> pa.Table:
        """A segment's rows (see ``decode_rows``): a segment with a footer entry only the
        byte ranges of the wanted columns and row groups (:mod:`~.parts`), verified page by
        page; an older one (or ``whole``) its whole bytes, verified against the manifest."""
        what = f"segment {self.data / entry.name}"
        if whole or entry.footer is None:
            data = self._verified(entry.name, entry.bytes, entry.digest, "segment")
            return decode_segment(data, what, columns=columns, filters=filters,
                                  run_ids=run_ids, whole=whole)  # fmt: skip
        if columns is None:
            columns = query_columns(self._footer_names(entry), None)
        source, groups, wanted = read_part(self.data / entry.name, entry, columns, run_ids)
        return decode_rows(source, what, columns=wanted, filters=filters, groups=groups)

    def _footer_names(self, entry: SegmentEntry) -> list[str]:
        """The columns of a segment (its footer read first if not cached)."""
        source, _, _ = read_part(self.data / entry.name, entry, [], None)
        return list(source.schema_arrow.names)

    def _verified(self, name: str, size: int, expected: str, what: str) -> bytes:
        path = self.data / name
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            raise CorruptionError(
                f"{what} {path} of results table {self.strategy} is missing (removed by hand, "
                "or by a cleanup with a grace period shorter than a read); restore it from a "
                "backup, or re-run the query"
            ) from None
        algorithm, _ = split_digest(expected)
        check(f"{what} of results table {self.strategy}", path, size, expected, len(data),
              digest(data, algorithm))  # fmt: skip
        return data

    def rows(
        self, manifest: TableManifest, run_ids: Iterable[str], *, tables: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The stored rows (``ROW_COLUMNS``) of those of ``run_ids`` in ``manifest``; with
        ``tables``, each carries its tables' bytes too where its segment has a run index (read
        in the same open; :meth:`load_tables` verifies them)."""
        wanted = set(run_ids)
        if not wanted:
            return {}
        low, high = min(wanted), max(wanted)
        out: dict[str, dict[str, Any]] = {}
        for entry in manifest.segments:
            if not entry.overlaps(low, high):
                continue
            mine = sorted(i for i in wanted if entry.holds(i) and i not in out)
            if mine:
                out.update(self._rows_of(entry, mine, tables))
        return out

    def _rows_of(
        self, entry: SegmentEntry, mine: list[str], tables: bool
    ) -> dict[str, dict[str, Any]]:
        import pyarrow.compute as pc

        side = entry.sidecar
        if side is not None and side.index is not None:
            path = self.data / side.name
            try:
                found, data = read_index_rows(path, side.name, side.bytes, side.digest,
                                              side.index, mine, tables=tables)  # fmt: skip
            except FileNotFoundError:
                raise CorruptionError(
                    f"sidecar {path} of results table {self.strategy} is missing (removed by "
                    "hand, or by a cleanup with a grace period shorter than a read); restore "
                    "it from a backup, or re-run the query"
                ) from None
            for run_id, row in found.items():
                row["created_at"] = id_time(run_id)
                row["segment"] = entry
                row["_bytes"] = {n: data[f"{run_id}/{n}"] for n in TABLES
                                 if f"{run_id}/{n}" in data}  # fmt: skip
            return found
        table = self.read_segment(entry, columns=ROW_COLUMNS, run_ids=mine)
        table = table.filter(pc.is_in(table.column("run_id"), pa.array(mine)))
        out = {}
        for row in table.to_pylist():
            row["segment"] = entry
            out[row["run_id"]] = row
        return out

    def load_tables(self, row: Mapping[str, Any]) -> dict[str, pa.Table]:
        """A stored row's tables, each one's byte range read from the sidecar and verified."""
        entry: SegmentEntry = row["segment"]
        out: dict[str, pa.Table] = {}
        for name in TABLES:
            offset = row.get(f"table.{name}.offset")
            if offset is None:
                continue
            if entry.sidecar is None:
                raise CorruptionError(
                    f"run {row['run_id']} of results table {self.strategy} names a {name} "
                    f"but its segment {entry.name} has no sidecar; restore from a backup"
                )
            size, expected = int(row[f"table.{name}.bytes"]), str(row[f"table.{name}.digest"])
            path = self.data / entry.sidecar.name
            what = f"table {name!r} of run {row['run_id']}"
            data = (row.get("_bytes") or {}).get(name)
            if data is None:
                try:
                    data = read_range(path, int(offset), size)
                except FileNotFoundError:
                    raise CorruptionError(f"{what} is missing: {path} was removed") from None
            algorithm, _ = split_digest(expected)
            check(what, path, size, expected, len(data), digest(data, algorithm))
            out[name] = decode_table(data, f"{what} ({path})")
        return out

    # --- writing ----------------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        if not self._made:
            ensure_dir(self.data)
            self._made = True

    def commit(
        self, runs: Sequence[PreparedRun], *, chosen: set[str]
    ) -> tuple[list[str], dict[str, dict[str, Any]], set[str]]:
        """Commit ``runs`` as one segment. Runs whose ids are in ``chosen`` (chosen by the
        caller) and already stored are compared (InvalidDataError if they differ) and not
        written again; runs with other ids (drawn at random) whose id is taken are not
        written either. Returns (ids committed now, stored rows of chosen ids, taken drawn
        ids)."""
        self._ensure_dirs()
        base = self.manifest() or TableManifest(0, self.strategy)
        seen = {s.name for s in base.segments}
        stored: dict[str, dict[str, Any]] = {}
        taken: set[str] = set()
        todo = list(runs)
        stored, taken = self._check_stored(base, todo, chosen)
        todo = [r for r in todo if r.run_id not in stored and r.run_id not in taken]
        while todo:
            entry = self._write(todo)
            try:
                self._publish(entry, seen)
            except _Recheck as again:
                self._discard(entry[0])
                fresh = TableManifest(
                    again.base.version, self.strategy,
                    tuple(s for s in again.base.segments if s.name not in seen),
                )  # fmt: skip
                seen |= {s.name for s in again.base.segments}
                found, lost = self._check_stored(fresh, todo, chosen)
                stored.update(found)
                taken |= lost
                todo = [r for r in todo if r.run_id not in found and r.run_id not in lost]
                continue
            except BaseException:
                self._discard(entry[0])
                raise
            return [r.run_id for r in todo], stored, taken
        return [], stored, taken

    def _publish(self, entry: tuple[SegmentEntry, list[tuple[str, bytes]]], seen: set[str]) -> None:
        """Write a new segment's files and commit the version that adds it; _Recheck if a
        segment this writer has not checked overlaps its run ids."""
        segment, files = entry

        def build(version: int, body: dict[str, Any] | None) -> dict[str, Any]:
            current = self.parse_manifest(version, body)
            if any(
                s.name not in seen and s.overlaps(segment.min_id, segment.max_id)
                for s in current.segments
            ):
                raise _Recheck(current)
            return TableManifest(version, self.strategy, (*current.segments, segment)).to_json()

        with BackgroundSyncs() as syncs:
            for name, payload in files:
                syncs.write_new(self.data / name, payload)
            self.log.commit(build, before_publish=syncs.wait)

    def _write(self, runs: Sequence[PreparedRun]) -> tuple[SegmentEntry, list[tuple[str, bytes]]]:
        encoded = encode_batch(runs, f"{HOST}:{os.getpid()}")
        return self._entry(encoded.table, encoded.segment, encoded.sidecar)

    def _entry(
        self, table: pa.Table, segment: bytes, sidecar: bytes
    ) -> tuple[SegmentEntry, list[tuple[str, bytes]]]:
        ids = table.column("run_id")
        stem = f"{ids[0].as_py()}-{secrets.token_hex(6)}"
        index, ref = encode_index(table, len(sidecar), self.algorithm)
        sidecar += index
        side = SidecarEntry(f"{stem}.arrows", len(sidecar), digest(sidecar, self.algorithm), ref)
        files = [(f"{stem}.parquet", segment), (side.name, sidecar)]
        low_ms, high_ms = created_range(table)
        footer = footer_of(segment)
        entry = SegmentEntry(
            name=files[0][0], rows=table.num_rows, bytes=len(segment),
            digest=digest(segment, self.algorithm), min_id=ids[0].as_py(),
            max_id=ids[-1].as_py(), min_created_ms=low_ms, max_created_ms=high_ms,
            metrics=metric_ranges(table), sidecar=side,
            footer=(len(footer), digest(footer, self.algorithm)),
        )  # fmt: skip
        return entry, files

    def _discard(self, entry: SegmentEntry) -> None:
        for name in entry.files():
            try:
                remove_file(self.data / name)
            except Exception as exc:  # noqa: BLE001 - cleanup removes it later; say so
                log.warning("could not remove uncommitted %s (cleanup will): %s", name, exc)

    def _check_stored(
        self, manifest: TableManifest, runs: Sequence[PreparedRun], chosen: set[str]
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """(stored rows of chosen ids, drawn ids that are taken) among ``runs``."""
        mine = {r.run_id: r for r in runs}
        found = self.rows(manifest, mine)
        taken = {i for i in found if i not in chosen}
        for run_id, row in found.items():
            if run_id in chosen:
                self._check_same(row, mine[run_id])
        return {i: r for i, r in found.items() if i in chosen}, taken

    def _check_same(self, row: Mapping[str, Any], run: PreparedRun) -> None:
        from efsray.store import jsonsafe

        stored = jsonsafe.loads(str(row["record"]).encode())
        differ = [
            k for k in sorted(set(comparable(stored)) | set(comparable(run.record)))
            if comparable(stored).get(k) != comparable(run.record).get(k)
        ]  # fmt: skip
        names = set(filter(None, str(row.get("tables") or "").split(",")))
        if names != set(run.tables):
            differ.append("tables")
        else:
            for name, (data, rows, dig) in run.tables.items():
                if row.get(f"table.{name}.rows") != rows:
                    differ.append(name)
                elif row.get(f"table.{name}.digest") != dig:
                    old = self.load_tables(row)[name]
                    if not old.equals(decode_table(data, name), check_metadata=False):
                        differ.append(name)
        if differ:
            raise InvalidDataError(
                f"run {run.run_id} of {self.strategy} already exists (results table "
                f"{self.directory}) with a different {', '.join(differ)}; a chosen run id must "
                "name exactly one result: derive it from everything that determines the "
                "result, or save without run_id to get a new run"
            )

    # --- merging ----------------------------------------------------------------------------

    def merge(self, *, max_merges: int = 8) -> int:
        """Merge runs of small segments (see the module docstring); returns how many merges
        were committed. Another writer's merge of the same segments wins cleanly."""
        done = 0
        for _ in range(max_merges):
            current = self.manifest()
            if current is None:
                return done
            rows = [s.rows for s in current.segments]
            found = find_run(rows, merge_factor=MERGE_FACTOR, max_rows=MAX_SEGMENT_ROWS,
                             tiered=True)  # fmt: skip
            if found is None:
                return done
            start, stop = found
            if self._merge(current.segments[start:stop]):
                done += 1
        return done

    def _merge(self, inputs: Sequence[SegmentEntry]) -> bool:
        tables, sidecars, bases = [], [], []
        offset = 0
        for entry in inputs:
            tables.append(self.read_segment(entry, whole=True))
            bases.append(offset)
            if entry.sidecar is not None:
                side = entry.sidecar
                data = self._verified(side.name, side.bytes, side.digest, "sidecar")
                sidecars.append(data[: side.tables_bytes])  # its run index is rebuilt
                offset += side.tables_bytes
        merged = merge_tables(tables, bases)
        entry, files = self._entry(merged, encode_rows(merged), b"".join(sidecars))
        names = {s.name for s in inputs}
        with BackgroundSyncs() as syncs:
            for name, payload in files:
                syncs.write_new(self.data / name, payload)

            def build(version: int, body: dict[str, Any] | None) -> dict[str, Any] | None:
                current = self.parse_manifest(version, body)
                present = [s for s in current.segments if s.name in names]
                if len(present) != len(names):
                    return None  # another writer merged them first
                kept: list[SegmentEntry] = []
                for s in current.segments:
                    if s.name == inputs[0].name:
                        kept.append(entry)
                    elif s.name not in names:
                        kept.append(s)
                return TableManifest(version, self.strategy, tuple(kept)).to_json()

            try:
                committed = self.log.commit(build, before_publish=syncs.wait)
            except BaseException:
                self._discard(entry)
                raise
        if committed is None:
            self._discard(entry)
            return False
        log.debug("merged %d segments of %s into %s", len(inputs), self.strategy, entry.name)
        return True

    # --- retention (efsray.store.results.retention) --------------------------------------

    def vacuum(self, grace_cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        """See :func:`efsray.store.results.retention.vacuum`."""
        from efsray.store.results.retention import vacuum

        return vacuum(self, grace_cutoff, dry_run=dry_run)

    def prune(self, older_than: float, *, grace_cutoff: float, dry_run: bool) -> tuple[int, int]:
        """See :func:`efsray.store.results.retention.prune`."""
        from efsray.store.results.retention import prune

        return prune(self, older_than, grace_cutoff=grace_cutoff, dry_run=dry_run)
