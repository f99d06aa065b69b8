"""The sweep journal: one immutable record per grid point, created exactly once.

A sweep is identified by a hash of everything that determines its results (strategy, grid
points, symbols and the market-data versions read, costs, engine version), so re-running the
same sweep on the same data finds its records and skips the work, and a changed input is a
new sweep. Under ``results/sweeps/<sweep_id>/``:

```
sweep.json                      the sweep's definition (created once)
points/<symbol>/b-<hash>.json   a batch of records, one per (symbol, parameter set): params,
                                metrics, the market-data version read, an equity curve
attempts/<run>/<task>.<n>       one file per attempt of a task in one run (retries show)
```

A file costs two fsyncs (~10-20 ms on a local disk or EFS), as much as a backtest, so records
are written in batches of a fixed number of consecutive grid points. The batches are a
function of the sweep alone (not of how it was cut into tasks), and a batch file is named by
the hash of its point keys, so every grid point has exactly one record in exactly one file
whatever the retries, reruns or cluster size. Batches are created with
:func:`efsray.store.nfs.create_exclusive` (temp file, fsync, ``link()``): a batch is complete
or absent, and of two writers of one batch (a retried task whose first attempt is not quite
dead, on another host) exactly one wins and the other finds the winner's records. Directory
listings are only an optimization (they can lag by up to a minute across NFS clients);
``link()``'s EEXIST is the source of truth.

This module is the one place that knows where sweep results live: when the store's
``results`` area offers caller-chosen run ids with create-if-absent semantics, the records can
move there without touching the sweep.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from efsray.errors import CorruptionError, InvalidNameError
from efsray.store import Store, validate_name
from efsray.store.nfs import create_exclusive, ensure_dir, is_temp_name, read_bytes

__all__ = ["RECORD_FORMAT", "SweepJournal", "canonical_json", "point_key", "writer_info"]

log = logging.getLogger("efsray.cluster")

RECORD_FORMAT = 1


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, exact floats) for hashing and records."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def point_key(params: Mapping[str, Any]) -> str:
    """A file-name-safe key of a parameter set: ``p-`` and 16 hex digits of its hash."""
    return "p-" + hashlib.sha256(canonical_json(dict(params))).hexdigest()[:16]


class SweepJournal:
    """Sweep records under ``<store root>/results/sweeps``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.layout.results / "sweeps"
        self._made: set[Path] = set()  # directories known to exist (each check is a round trip)

    def _ensure_dir(self, path: Path) -> None:
        if path not in self._made:
            ensure_dir(path)
            self._made.add(path)

    # --- paths ------------------------------------------------------------------------------

    def sweep_dir(self, sweep_id: str) -> Path:
        return self.root / validate_name("sweep id", sweep_id)

    # --- the sweep's definition -----------------------------------------------------------

    def write_spec(self, sweep_id: str, spec: Mapping[str, Any]) -> Path:
        """Record the sweep's definition once; a second writer must agree with the first."""
        directory = self.sweep_dir(sweep_id)
        self._ensure_dir(directory)
        path = directory / "sweep.json"
        payload = canonical_json(dict(spec))
        try:
            create_exclusive(path, payload)
        except FileExistsError:
            existing = json.loads(read_bytes(path))
            if canonical_json(existing) != payload:
                raise CorruptionError(
                    f"{path} records a different sweep under the same id {sweep_id!r}; "
                    "the store was edited by hand or the hash collided. Move it away."
                ) from None
        return path

    def read_spec(self, sweep_id: str) -> dict[str, Any]:
        return self._load(self.sweep_dir(sweep_id) / "sweep.json")

    # --- attempts ---------------------------------------------------------------------------

    def begin_attempt(self, sweep_id: str, run: str, task: str, info: Mapping[str, Any]) -> int:
        """Claim the next attempt number (0, 1, ...) of ``task`` in ``run``."""
        directory = self.sweep_dir(sweep_id) / "attempts" / validate_name("run id", run)
        self._ensure_dir(directory)
        validate_name("task key", task)
        payload = canonical_json(dict(info))
        for attempt in range(1000):
            try:
                create_exclusive(directory / f"{task}.{attempt}", payload)
                return attempt
            except FileExistsError:
                continue
        raise CorruptionError(f"task {task} of run {run} has 1000 attempts in {directory}")

    def attempts(self, sweep_id: str, run: str) -> dict[str, int]:
        """Attempts per task of one run, from a listing (informational)."""
        directory = self.sweep_dir(sweep_id) / "attempts" / run
        out: dict[str, int] = {}
        for name in _listdir(directory):
            task, _, n = name.rpartition(".")
            if n.isdigit():
                out[task] = max(out.get(task, 0), int(n) + 1)
        return out

    # --- point records, in batches -------------------------------------------------------

    def batch_dir(self, sweep_id: str, symbol: str) -> Path:
        return self.sweep_dir(sweep_id) / "points" / validate_name("symbol", symbol)

    def batch_path(self, sweep_id: str, symbol: str, keys: list[str]) -> Path:
        """Where the batch of these point keys lives: named by a hash of the keys."""
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        return self.batch_dir(sweep_id, symbol) / f"b-{digest}.json"

    def load_batches(self, sweep_id: str, symbol: str) -> dict[str, list[dict[str, Any]]]:
        """The batches of ``symbol`` visible in a listing (may lag on NFS), by file name."""
        directory = self.batch_dir(sweep_id, symbol)
        return {
            name: self.load_batch(directory / name)
            for name in _listdir(directory)
            if name.endswith(".json")
        }

    def save_batch(
        self, sweep_id: str, symbol: str, records: list[dict[str, Any]]
    ) -> tuple[Path, list[dict[str, Any]], bool]:
        """Create the batch file of ``records``; returns ``(path, records, created)``.

        When the batch already exists (an earlier attempt, or a concurrent one on another
        host, got there first) nothing is written and the stored records are returned: they
        must be for the same parameter sets.
        """
        keys = [r["key"] for r in records]
        path = self.batch_path(sweep_id, symbol, keys)
        self._ensure_dir(path.parent)
        payload = {"format": RECORD_FORMAT, "kind": "backtest-batch", "records": records}
        try:
            create_exclusive(path, canonical_json(payload))
            return path, records, True
        except FileExistsError:
            stored = self.load_batch(path)
            if [r.get("key") for r in stored] != keys:
                raise CorruptionError(
                    f"{path} holds other parameter sets than the batch named after them; "
                    "move the sweep directory away and re-run"
                ) from None
            return path, stored, False

    def load_sweep(self, sweep_id: str) -> list[dict[str, Any]]:
        """Every record of a sweep visible in a listing, sorted by symbol and key."""
        points = self.sweep_dir(sweep_id) / "points"
        out = []
        for symbol in _listdir(points):
            for records in self.load_batches(sweep_id, symbol).values():
                out.extend(records)
        return sorted(out, key=lambda r: (r["symbol"], r["key"]))

    def debris(self, sweep_id: str) -> list[Path]:
        """Temporary files left by writers that died mid-write (cleanup removes them)."""
        points = self.sweep_dir(sweep_id) / "points"
        out = []
        for symbol in _listdir(points):
            directory = points / symbol
            out += [directory / n for n in os.listdir(directory) if is_temp_name(n)]
        return sorted(out)

    def sweeps(self) -> list[str]:
        """Ids of the sweeps in the journal (from a listing)."""
        return [n for n in _listdir(self.root) if n.startswith("sw-")]

    def prune(self, cutoff: float, *, dry_run: bool = False) -> tuple[list[str], int, int]:
        """Remove whole sweeps in which nothing changed since ``cutoff`` (seconds since the
        epoch): no batch, attempt or definition newer. A sweep still running or re-run since
        keeps everything. Returns (sweep ids removed, files, bytes); ``dry_run`` removes
        nothing."""
        removed, files, size = [], 0, 0
        for sweep_id in self.sweeps():
            directory = self.sweep_dir(sweep_id)
            newest, count, nbytes = 0.0, 0, 0
            for dirpath, _, names in os.walk(directory):
                for name in names:
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    newest = max(newest, st.st_mtime)
                    count += 1
                    nbytes += st.st_size
            if count == 0 or newest >= cutoff:
                continue
            removed.append(sweep_id)
            files += count
            size += nbytes
            if not dry_run:
                # Rename first (atomic): readers see the sweep whole or not at all.
                doomed = directory.with_name(f".efsray-tmp.{sweep_id}.pruned")
                try:
                    os.rename(directory, doomed)
                except FileNotFoundError:
                    continue
                shutil.rmtree(doomed, ignore_errors=True)
        return removed, files, size

    def load_batch(self, path: Path) -> list[dict[str, Any]]:
        value = self._load(path)
        records = value.get("records")
        if value.get("kind") != "backtest-batch" or not isinstance(records, list):
            raise CorruptionError(f"{path} is not a batch of backtest records")
        return records

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        raw = read_bytes(path)
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptionError(f"{path} is not valid JSON ({exc}); it was damaged") from None
        if not isinstance(value, dict):
            raise CorruptionError(f"{path} does not hold a JSON object")
        return value


def writer_info() -> dict[str, Any]:
    """Who wrote a record: host, pid, time (UTC)."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }


def _listdir(path: Path) -> list[str]:
    """Names in ``path`` that could be ours (no temporary files, no hidden debris)."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            validate_name("name", name)
        except InvalidNameError:
            continue
        out.append(name)
    return sorted(out)
