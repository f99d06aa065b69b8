"""Where a sweep's results live, and the little bookkeeping a sweep keeps beside them.

Every grid point's result is a run in the store's results (``store.results``, strategy =
the sweep's strategy), saved under a run id derived from the sweep and the point, so that it
is saved exactly once whatever the retries, re-runs or cluster size:

- the sweep id is a hash of everything that determines the results (strategy, grid points,
  symbols and the market-data versions read, costs, engine version): re-running the same
  sweep on the same data derives the same ids and finds its results; a changed input is a
  new sweep;
- a run id's time part is the sweep's creation time (recorded once, in its definition
  file) plus the point's index in the sweep, in milliseconds: the ids of a task's points,
  which it commits in batches, form one contiguous range of the results table that no other
  task's batch overlaps, so a batch's idempotency check reads at most the segments of its
  own range, and loading a run by id finds its segment from the manifest's id ranges;
- the random part is a hash of (sweep id, symbol, point key)
  (:func:`efsray.store.ids.derive`);
- ``store.results.save_batch`` with chosen ids is idempotent: of two writers of one point
  (a retried task whose first attempt is not quite dead, on another host) exactly one
  commits the run and the other gets the stored one.

Under ``results/sweeps/<sweep_id>/``:

```
sweep.json                  the definition and its creation time (created once, exclusively)
attempts/<run>/<task>.<n>   one file per attempt of a task with work to do (retries show)
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from efsray.errors import CorruptionError, InvalidNameError
from efsray.store import Store, validate_name
from efsray.store.checkpoints import lstat_or_none, remove_tree
from efsray.store.ids import derive
from efsray.store.nfs import create_exclusive, ensure_dir, list_dir, read_bytes, walk

__all__ = [
    "SweepJournal",
    "canonical_json",
    "point_key",
    "result_id",
    "sweep_result_ids",
    "writer_info",
]

log = logging.getLogger("efsray.cluster")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, exact floats) for hashing and records."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def point_key(params: Mapping[str, Any]) -> str:
    """A file-name-safe key of a parameter set: ``p-`` and 16 hex digits of its hash."""
    return "p-" + hashlib.sha256(canonical_json(dict(params))).hexdigest()[:16]


def result_id(
    sweep_id: str, created_at: dt.datetime, index: int, size: int, symbol: str, key: str
) -> str:
    """The run id of the result of point ``key`` on ``symbol``, the ``index``-th of the
    ``size`` points of sweep ``sweep_id`` created at ``created_at`` (see the module
    docstring)."""
    if not 0 <= index < size:
        raise ValueError(f"point index {index} is outside the sweep's {size} points")
    start = created_at.replace(microsecond=created_at.microsecond // 1000 * 1000)
    when = start + dt.timedelta(milliseconds=index)
    return derive(when, f"{sweep_id}/{symbol}/{key}")


def sweep_result_ids(definition: Mapping[str, Any], sweep_id: str) -> list[str]:
    """Every result id of a recorded sweep (its definition as :meth:`SweepJournal.read_spec`
    returns it), in sweep order: symbols sorted, then the grid's points in grid order."""
    created = dt.datetime.fromisoformat(str(definition["created_at"]))
    keys = [point_key(p) for p in definition["points"]]
    size = len(keys) * len(definition["market"])
    return [
        result_id(sweep_id, created, n * len(keys) + i, size, symbol, key)
        for n, symbol in enumerate(sorted(definition["market"]))
        for i, key in enumerate(keys)
    ]


class SweepJournal:
    """Sweep definitions and attempts under ``<store root>/results/sweeps``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.layout.results / "sweeps"
        self._made: set[Path] = set()  # directories known to exist (each check is a round trip)

    def _ensure_dir(self, path: Path) -> None:
        if path not in self._made:
            ensure_dir(path)
            self._made.add(path)

    def sweep_dir(self, sweep_id: str) -> Path:
        return self.root / validate_name("sweep id", sweep_id)

    # --- the sweep's definition -----------------------------------------------------------

    def write_spec(self, sweep_id: str, spec: Mapping[str, Any]) -> dt.datetime:
        """Record the sweep's definition once, with its creation time; returns that time
        (the first writer's, for every later run of the same sweep). A second writer must
        agree with the first on the definition."""
        directory = self.sweep_dir(sweep_id)
        self._ensure_dir(directory)
        path = directory / "sweep.json"
        now = dt.datetime.now(dt.UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        definition = dict(spec)
        try:
            create_exclusive(path, canonical_json({**definition, "created_at": now.isoformat()}))
            return now
        except FileExistsError:
            pass
        existing = self._load(path)
        created = existing.pop("created_at", None)
        if canonical_json(existing) != canonical_json(definition) or not isinstance(created, str):
            raise CorruptionError(
                f"{path} records a different sweep under the same id {sweep_id!r}; "
                "the store was edited by hand or the hash collided. Move it away."
            )
        try:
            return dt.datetime.fromisoformat(created)
        except ValueError:
            raise CorruptionError(f"{path} has a bad creation time {created!r}") from None

    def read_spec(self, sweep_id: str) -> dict[str, Any]:
        """The definition of a sweep, with its ``created_at``."""
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

    # --- housekeeping -----------------------------------------------------------------------

    def sweeps(self) -> list[str]:
        """Ids of the recorded sweeps (from a listing)."""
        return [n for n in _listdir(self.root) if n.startswith("sw-")]

    def prune(self, cutoff: float, *, dry_run: bool = False) -> tuple[list[str], int, int]:
        """Remove the bookkeeping of sweeps untouched since ``cutoff`` (seconds since the
        epoch) whose results are all gone (removed by the store's retention): a definition
        outlives its results, so that a re-run finds them under the same ids. Returns (sweep
        ids removed, files, bytes); ``dry_run`` removes nothing."""
        removed, files, size = [], 0, 0
        for sweep_id in self.sweeps():
            directory = self.sweep_dir(sweep_id)
            newest, count, nbytes = 0.0, 0, 0
            for dirpath, _, names in walk(directory):
                for name in names:
                    st = lstat_or_none(os.path.join(dirpath, name))
                    if st is None:
                        continue
                    newest = max(newest, st.st_mtime)
                    count += 1
                    nbytes += st.st_size
            if count == 0 or newest >= cutoff or self._has_results(sweep_id):
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
                remove_tree(doomed, None)
        return removed, files, size

    def _has_results(self, sweep_id: str) -> bool:
        try:
            definition = self.read_spec(sweep_id)
            ids = sweep_result_ids(definition, sweep_id)
            strategy = str(definition["strategy"])
        except FileNotFoundError:
            return False  # attempts without a definition: nothing can find their results
        except (CorruptionError, KeyError, TypeError, ValueError) as exc:
            log.warning("keeping sweep %s: its definition is unreadable (%s)", sweep_id, exc)
            return True
        return bool(self.store.results.existing(strategy, ids))

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
    """Who is working: host, pid, time (UTC)."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }


def _listdir(path: Path) -> list[str]:
    """Names in ``path`` that could be ours (no temporary files, no hidden debris)."""
    out = []
    for name in list_dir(path):
        try:
            validate_name("name", name)
        except InvalidNameError:
            continue
        out.append(name)
    return sorted(out)
