"""Moving runs from the legacy one-file-per-run layout into the results table.

``efsray results migrate`` reads each strategy's legacy runs in batches (every table's
checksum verified), commits each batch to the table under the runs' own ids, and only then
removes the batch's legacy files (JSON first, then table files), and at the end the empty
directories. Run ids are chosen ids, so a migration is idempotent: killed anywhere, it runs
again and commits only what it had not (a run already in the table is compared, not
rewritten), and until a run's legacy file is gone a query shows it once (the table's copy).
A damaged legacy run is skipped, left in place, and reported with the reason; a dry run
reads and reports without writing or removing anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from efsray.errors import CorruptionError, InvalidDataError, NotFoundError
from efsray.store import jsonsafe
from efsray.store.nfs import remove_empty_dir
from efsray.store.results.format import PreparedRun, encode_table
from efsray.store.results.legacy_files import (
    _decode_table,
    _read_record,
    _remove_empty_dirs,
    _remove_run,
    _table_bytes,
)
from efsray.store.results.records import TABLES, RunSpec, make_record

if TYPE_CHECKING:
    from efsray.store.results.store import ResultStore

__all__ = ["MigrationReport", "migrate"]

log = logging.getLogger("efsray.store")


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a migration did (or, with ``dry_run``, would do)."""

    dry_run: bool
    strategies: tuple[str, ...] = ()
    found: int = 0  # legacy runs found
    migrated: int = 0  # committed to the table by this migration
    already: int = 0  # in the table already (an earlier, interrupted migration)
    removed_files: int = 0
    removed_bytes: int = 0
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (path, why)


def migrate(
    results: ResultStore,
    strategy: str | None = None,
    *,
    dry_run: bool = False,
    batch_size: int = 1000,
) -> MigrationReport:
    """Move the legacy runs of ``strategy`` (default: every strategy) into the table."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidDataError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    names = [strategy] if strategy else results.legacy.strategies()
    found = migrated = already = files = nbytes = 0
    skipped: list[tuple[str, str]] = []
    done: list[str] = []
    for name in names:
        runs = list(results.legacy.run_files(name))
        if not runs:
            continue
        done.append(name)
        found += len(runs)
        for start in range(0, len(runs), batch_size):
            batch = [path for _, _, path in runs[start : start + batch_size]]
            prepared, sources = _read_batch(results, name, batch, skipped)
            if dry_run or not prepared:
                continue
            table = results.table(name)
            ids = {r.run_id for r in prepared}
            committed, stored, _ = table.commit(prepared, chosen=ids)
            migrated += len(committed)
            already += len(stored)
            for path, table_files in sources:
                f, b = _remove_run(path.parent, path.stem, table_files, dry_run=False)
                files += f
                nbytes += b
        if not dry_run:
            base = results.layout.backtests / name
            _remove_empty_dirs(base, time.time() + 366 * 86400)
            remove_empty_dir(base)
            results.table(name).merge(max_merges=1000)
    return MigrationReport(
        dry_run, tuple(done), found, migrated, already, files, nbytes, tuple(skipped)
    )


def _read_batch(
    results: ResultStore, strategy: str, paths: Sequence[Path], skipped: list[tuple[str, str]]
) -> tuple[list[PreparedRun], list[tuple[Path, list[str]]]]:
    """The legacy runs at ``paths`` as prepared runs (damaged ones skipped, with why) and,
    for each, (its JSON path, its table files)."""
    prepared: list[PreparedRun] = []
    sources: list[tuple[Path, list[str]]] = []
    for path in paths:
        run_id = path.stem
        try:
            record = _read_record(path)
            entries = record.get("tables") or {}
            tables = {}
            for table_name, entry in entries.items():
                if table_name not in TABLES:
                    raise CorruptionError(f"unknown table {table_name!r}")
                data = _table_bytes(path, run_id, table_name, entry)
                arrow = _decode_table(path, run_id, table_name, entry, data)
                tables[table_name] = encode_table(table_name, arrow, results.algorithm)
            decoded = jsonsafe.decode(record)
            spec = RunSpec(
                metrics=decoded.get("metrics") or {},
                params=decoded.get("params") or {},
                data_versions=decoded.get("data_versions") or {},
                tags=decoded.get("tags") or {},
                extra=decoded.get("extra") or {},
                run_id=run_id,
            )
            prepared.append(PreparedRun(run_id, make_record(strategy, spec), tables))
        except NotFoundError:
            continue  # removed (by retention) since the listing
        except (CorruptionError, InvalidDataError) as exc:
            skipped.append((str(path), str(exc)))
            log.warning("not migrating %s: %s", path, exc)
            continue
        table_files = [str(e["file"]) for e in entries.values() if "file" in e]
        sources.append((path, table_files))
    return prepared, sources
