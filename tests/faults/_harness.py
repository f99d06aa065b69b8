"""Inject a fault at every operation a store write performs, and judge each outcome.

For one write path (a :class:`WritePath`: market-data append, compact, checkpoint save,
result save, cleanup, ...):

1. ``prepare`` commits a known state; it is saved as the *golden* copy of the backing
   directory (the simulated server's disk).
2. A counting run performs the write once on a clean copy with the operation trace on: the
   trace lists, in order, every operation the write sends to the filesystem.
3. For each operation index ``i`` (see :func:`fault_plan`: every operation that changes
   something; every read-side operation too, unless there are more than READ_SAMPLES of them,
   as in cleanup, which lists and reads ~9 times more than it removes: then an even sample;
   and an even sample of the lookups, about ten times as many as all the rest) and each
   errno, the golden state is restored,
   a fault is armed to fire on exactly the ``i``-th operation, the write runs (traced, so the
   operation that actually failed is recorded even when the write's threads reorder its
   operations), and then:

   - the write either succeeded (a retry absorbed the fault: the store's, or the kernel's,
     which retries a path lookup once on ESTALE) or failed with an :class:`EfsrayError`:
     raised, or, for cleanup, listed in its report (cleanup carries on with the other
     areas); any other exception is a failure (``foreign``);
   - the path's ``check``: everything committed before is still there and reads back
     identical (nothing lost), the new change is there complete or not at all, and a write
     that returned is committed (an acknowledged write is never lost); a write that raised
     may still have committed (the fault hit after the commit point) and is tallied as such;
   - every file left behind that the golden state did not have is either committed (named
     by a manifest or a run file) or garbage for cleanup (temporary files, segments and
     checkpoint data directories no manifest references, Parquet files of runs that never
     committed);
   - then the store's cleanup runs (``Store.cleanup``, what ``efsray cleanup`` runs) with a
     zero grace period (these tests have no concurrent writers) on the backing directory,
     and the garbage must be gone while everything committed still reads back: the path's
     ``check_after_cleanup``.

Outcomes go to a :class:`Tally`, which the suite writes to ``build/fault-tally.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efsray.errors import EfsrayError
from efsray.simfs import OP_CATEGORY, OP_KINDS, SimFSProcess
from efsray.store import Store
from efsray.store.ids import is_id
from efsray.store.nfs import is_temp_name
from efsray.store.segment_moves import is_moved_name, moved_source

#: Operation kinds a fault is aimed at, one index at a time (lookups are sampled apart).
DATA_KINDS = sorted(OP_KINDS - {"getattr", "release", "releasedir"})
LOOKUP_SAMPLES = 12
READ_SAMPLES = 24
#: The cleanup after each case: no grace period (no writer is running), and old enough a
#: cutoff that nothing a write path committed qualifies (the cleanup path sets its own).
SWEEP_GRACE_S = 0.0
KEEP_ALL_DAYS = 3650.0


class WritePath:
    """One store write path, as :func:`explore` drives it. Subclasses fill in the methods."""

    name: str
    #: ``days`` of the cleanup run after each case.
    sweep_days: float = KEEP_ALL_DAYS

    def prepare(self, root: Path) -> None:
        """Commit the starting state under ``root`` (the backing directory, uncounted)."""
        raise NotImplementedError

    def open(self, root: Path) -> Any:
        """Set up what the write needs before faults are armed (usually a ``Store``)."""
        return None

    def run(self, opened: Any, root: Path) -> Sequence[BaseException] | None:
        """The write under test, on the mount (``root`` is the store root in the mount).

        Returns the errors the write reported without raising (cleanup's report), if any.
        """
        raise NotImplementedError

    def check(self, root: Path, raised: BaseException | None) -> bool:
        """Verify the state under ``root`` (backing); True if the new change is committed.

        Raises AssertionError when anything committed is lost or torn.
        """
        raise NotImplementedError

    def check_after_cleanup(
        self, root: Path, raised: BaseException | None, committed: bool
    ) -> None:
        """Verify the state after the cleanup that follows each case."""
        assert self.check(root, raised) == committed, "cleanup changed what is committed"


@dataclass
class Outcome:
    path: str
    error: str
    index: int
    op: tuple[str, ...]  # the operation that failed (the planned one if none did)
    fired: int
    result: str  # "retried" | "clean_error" | "known_issue" | "foreign_error" | "lost"
    committed: bool
    exception: str | None
    leftovers: int  # garbage files and directories the failed write left
    reported: bool = False  # the error came in cleanup's report, not as an exception
    swept: int = 0  # of the leftovers, how many the cleanup after the case removed


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def summary(self) -> dict[str, Any]:
        by: dict[str, dict[str, Any]] = {}
        for o in self.outcomes:
            row = by.setdefault(
                f"{o.path}:{o.error}",
                {
                    "cases": 0,
                    "faults_injected": 0,
                    "not_reached": 0,
                    "retried_ok": 0,
                    "clean_errors": 0,
                    "clean_errors_reported": 0,
                    "committed_despite_error": 0,
                    "returned_incomplete": 0,
                    "foreign_errors": 0,
                    "known_store_issue": 0,
                    "lost_or_corrupted": 0,
                    "cases_with_leftovers": 0,
                    "leftovers": 0,
                    "cleanups_after_case": 0,
                    "leftovers_removed_by_cleanup": 0,
                    "by_operation": Counter(),
                    "committed_despite_error_at": Counter(),
                },
            )
            row["cases"] += 1
            row["faults_injected"] += o.fired
            row["not_reached"] += o.fired == 0
            row["retried_ok"] += o.fired > 0 and o.result == "retried"
            row["clean_errors"] += o.result == "clean_error"
            row["clean_errors_reported"] += o.result == "clean_error" and o.reported
            row["committed_despite_error"] += o.result == "clean_error" and o.committed
            row["returned_incomplete"] += o.fired > 0 and o.result == "retried" and not o.committed
            row["foreign_errors"] += o.result == "foreign_error"
            row["known_store_issue"] += o.result == "known_issue"
            row["cases_with_leftovers"] += o.leftovers > 0
            row["leftovers"] += o.leftovers
            row["cleanups_after_case"] += o.result != "lost"
            row["leftovers_removed_by_cleanup"] += o.swept
            row["lost_or_corrupted"] += o.result == "lost"
            row["by_operation"][f"{o.op[0]}:{o.result}"] += 1
            if o.result == "clean_error" and o.committed:
                row["committed_despite_error_at"][" ".join(o.op)] += 1
        totals: Counter[str] = Counter()
        for row in by.values():
            row["by_operation"] = dict(sorted(row["by_operation"].items()))
            row["committed_despite_error_at"] = dict(row["committed_despite_error_at"])
            for key, value in row.items():
                if isinstance(value, int):
                    totals[key] += value
        return {"totals": dict(totals), "by_path_and_error": by}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        odd = [
            dataclasses.asdict(o)
            for o in self.outcomes
            if o.result in ("foreign_error", "known_issue")
        ]
        path.write_text(
            json.dumps(
                {**self.summary(), "known_issues": KNOWN_ISSUES, "not_efsray_errors": odd},
                indent=2,
            )
        )


#: Store issues already reported; each has a strict xfail test in test_write_paths.py that
#: turns red once the issue is fixed, so that its entry here is removed.
KNOWN_ISSUES: dict[str, str] = {}


def known_issue(exc: BaseException) -> str | None:
    """The KNOWN_ISSUES key that explains ``exc``, if any (judged from its traceback)."""
    if not isinstance(exc, OSError) or isinstance(exc, EfsrayError):
        return None
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    for (outer_file, _), (inner_file, inner_name) in itertools.pairwise(frames):
        if (
            inner_file.endswith("pathlib.py")
            and inner_name in ("exists", "is_dir", "is_file")
            and "efsray/store" in outer_file
        ):
            return "pathlib-check"
    return None


def restore(golden: Path, target: Path) -> None:
    """Make ``target`` (on the backing side: no FUSE, nothing counted) a copy of ``golden``.

    ``copytree`` keeps modification times, which cleanup's grace period is measured on."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(golden, target, symlinks=True)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def referenced_segments(root: Path) -> set[str]:
    """Segment files named by any committed market-data manifest under ``root``."""
    used: set[str] = set()
    ohlcv = root / "market_data"
    for manifest in ohlcv.rglob("v*.json"):
        if "versions" not in manifest.parts:
            continue
        data = json.loads(manifest.read_bytes())
        series = manifest.parent.parent.parent
        for seg in data.get("segments", []):
            used.add(str((series / "segments" / seg["file"]).relative_to(root)))
    return used


def referenced_checkpoint_data(root: Path) -> set[str]:
    """Checkpoint data directories (``models/checkpoints/<model>/data/<shard>/<id>``, relative
    to ``root``) named by a committed checkpoint manifest."""
    used: set[str] = set()
    models = root / "models" / "checkpoints"
    for manifest in models.glob("*/versions/*/v*.json"):
        data = json.loads(manifest.read_bytes())
        model_dir = manifest.parent.parent.parent
        used.add(str((model_dir / "data" / str(data["data"])).relative_to(root)))
    return used


def referenced_result_files(root: Path) -> set[str]:
    """Results-table files (``results/tables/<strategy>/data/<name>``, relative to ``root``)
    named by a committed manifest of the table."""
    used: set[str] = set()
    for manifest in (root / "results" / "tables").glob("*/versions/*/v*.json"):
        data = json.loads(manifest.read_bytes())
        table_dir = manifest.parent.parent.parent
        for segment in data.get("segments", []):
            names = [segment["name"]] + ([segment["sidecar"]["name"]] if segment.get("sidecar")
                                         else [])  # fmt: skip
            used.update(str((table_dir / "data" / n).relative_to(root)) for n in names)
    return used


@dataclass(frozen=True)
class Leftovers:
    garbage: list[str]  # what cleanup removes: temporary and unreferenced files, debris dirs
    unexplained: list[str]  # neither golden, committed, nor garbage: a store bug


def leftovers(golden: Path, root: Path) -> Leftovers:
    """Classify what ``root`` holds that ``golden`` did not."""
    golden_files = files_under(golden)
    new = files_under(root) - golden_files
    segments = referenced_segments(root)
    checkpoint_data = referenced_checkpoint_data(root)
    result_files = referenced_result_files(root)
    garbage, unexplained = [], []
    for name in sorted(new):
        path = Path(name)
        parts = path.parts
        if any(is_temp_name(p) for p in parts) or path.name.startswith(".fuse_hidden"):
            garbage.append(name)  # a temporary file, or a file in a temporary directory
        elif path.parent.name == "segments" and is_moved_name(path.name):
            if str(path.with_name(moved_source(path.name))) not in segments:
                garbage.append(name)  # a merge's redirect for an input no version names
        elif path.parent.name == "segments":
            if name not in segments:
                garbage.append(name)  # written, never committed: an unreferenced segment
        elif path.name == "HEAD" or ("versions" in parts and path.suffix == ".json"):
            continue  # a committed version (the write path checks it) and its hint
        elif parts[:2] == ("models", "checkpoints") and len(parts) > 6 and parts[3] == "data":
            if str(Path(*parts[:6])) not in checkpoint_data:
                garbage.append(name)  # a file of a save that never committed
        elif parts[:2] == ("results", "tables") and len(parts) == 5 and parts[3] == "data":
            if name not in result_files:
                garbage.append(name)  # a batch's segment or sidecar that never committed
        elif parts[:2] == ("results", "backtests") and path.suffix in (".json", ".parquet"):
            run_id = path.name.split(".", 1)[0]
            if not is_id(run_id):
                unexplained.append(name)
            elif (
                path.suffix == ".parquet" and not (root / path.with_name(f"{run_id}.json")).exists()
            ):
                garbage.append(name)  # a table of a run that never committed
        else:
            unexplained.append(name)
    # Debris directories: a save that failed before writing a file leaves its (empty) data
    # directory; a failed copy leaves its temporary staging directory.
    golden_dirs = {str(p.relative_to(golden)) for p in golden.rglob("*") if p.is_dir()}
    for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
        rel = str(directory.relative_to(root))
        if rel in golden_dirs:
            continue
        parts = Path(rel).parts
        if is_temp_name(directory.name) or (
            parts[:2] == ("models", "checkpoints")
            and len(parts) == 6
            and parts[3] == "data"
            and rel not in checkpoint_data
        ):
            garbage.append(rel + "/")
    return Leftovers(garbage, unexplained)


def sweep(write: WritePath, root: Path, golden: Path) -> int:
    """Run the store's cleanup on ``root`` (backing) with no grace period and check that it
    removed every leftover and kept everything committed. Returns the leftovers removed."""
    before = leftovers(golden, root).garbage
    report = Store(root, create=False).cleanup(write.sweep_days, grace=SWEEP_GRACE_S)
    assert not report.errors, f"cleanup failed on a healthy filesystem: {report.errors}"
    after = leftovers(golden, root)
    assert not after.garbage, f"cleanup left garbage: {after.garbage}"
    assert not after.unexplained, f"cleanup left unexplained files: {after.unexplained}"
    return len(before)


def _read_side(trace: list[tuple[str, ...]]) -> list[bool]:
    """For each operation: does it only read (a read, a listing, an open, or the close of a
    file opened for reading)? The rest change something or make it durable."""
    opened: dict[str, str] = {}
    out = []
    for op in trace:
        kind, path = op[0], op[1] if len(op) > 1 else ""
        if kind in ("open", "create"):
            opened[path] = kind
        out.append(
            OP_CATEGORY[kind] in ("read", "metadata", "readdir")
            or (kind == "flush" and opened.get(path) == "open")
        )
    return out


def fault_plan(trace: list[tuple[str, ...]]) -> list[tuple[list[str], int, tuple[str, ...]]]:
    """(kinds, n, operation): fail the n-th operation of ``kinds``. Every operation that
    changes something, every read-side operation unless there are more than READ_SAMPLES of
    them (then an even sample), and an even sample of LOOKUP_SAMPLES lookups."""
    data_ops = [t for t in trace if t[0] in DATA_KINDS]
    read_side = _read_side(data_ops)
    reads = [i for i, r in enumerate(read_side) if r]
    stride = max(1, -(-len(reads) // READ_SAMPLES))
    chosen = set(reads[::stride]) | {i for i, r in enumerate(read_side) if not r}
    plan = [(DATA_KINDS, i + 1, op) for i, op in enumerate(data_ops) if i in chosen]
    lookups = sum(1 for t in trace if t[0] == "getattr")
    stride = max(1, lookups // LOOKUP_SAMPLES)
    plan += [(["getattr"], i, ("getattr",)) for i in range(1, lookups + 1, stride)]
    return plan


def _fired_op(trace: list[tuple[str, ...]], kinds: Sequence[str], index: int) -> tuple[str, ...]:
    matching = [t for t in trace if t[0] in kinds]
    return matching[index - 1] if len(matching) >= index else ("?",)


def explore(
    fs: SimFSProcess,
    write: WritePath,
    error: str,
    tally: Tally,
    work: Path,
) -> list[Outcome]:
    """Fault every operation ``write`` performs with ``error``; returns the outcomes."""
    name = "store"
    backing_root = fs.backing / name
    mount_root = fs.path / name
    golden = work / f"golden-{write.name}"
    if not golden.exists():
        if backing_root.exists():
            shutil.rmtree(backing_root)
        write.prepare(backing_root)
        shutil.copytree(backing_root, golden, symlinks=True)

    # the counting run
    restore(golden, backing_root)
    fs.control.clear_faults()
    opened = write.open(mount_root)
    fs.control.start_trace()
    reported = write.run(opened, mount_root)
    trace = fs.control.stop_trace()
    assert not reported, f"{write.name} reported errors without faults: {reported}"
    assert write.check(backing_root, None), f"{write.name} did not commit without faults"
    plan = fault_plan(trace)

    outcomes = []
    for kinds, index, op in plan:
        restore(golden, backing_root)
        opened = write.open(mount_root)
        fs.control.reset()
        # A failed read of a page is retried by the kernel at once (readahead falls back to
        # a plain read): fail that retry too, or the store never sees read errors.
        fs.control.inject(error, ops=kinds, nth=index, times=2 if op[0] == "read" else 1)
        fs.control.start_trace()
        raised: BaseException | None = None
        reported = None
        try:
            reported = write.run(opened, mount_root)
        except Exception as exc:  # judged below: efsray errors are the clean ones
            raised = exc
        if reported:
            raised = reported[0]
        trace = fs.control.stop_trace()
        fired = fs.control.counters().faults_total
        fs.control.clear_faults()
        if fired:
            op = _fired_op(trace, kinds, index)
        where = f"{write.name}, {error} at #{index} {op}"
        try:
            committed = write.check(backing_root, raised)
        except AssertionError as exc:
            tally.add(Outcome(write.name, error, index, op, fired, "lost", False, repr(raised), 0))
            raise AssertionError(f"{where}: {exc}") from exc
        left = leftovers(golden, backing_root)
        assert not left.unexplained, (
            f"{where}: files left that cleanup would not remove: {left.unexplained}"
        )
        if raised is None:
            result = "retried"
        elif isinstance(raised, EfsrayError) and str(raised):
            result = "clean_error"
        elif known_issue(raised) is not None:
            result = "known_issue"
        else:
            result = "foreign_error"
        outcome = Outcome(
            path=write.name,
            error=error,
            index=index,
            op=op,
            fired=fired,
            result=result,
            committed=committed,
            exception=None if raised is None else f"{type(raised).__name__}: {raised}",
            leftovers=len(left.garbage),
            reported=bool(reported),
        )
        try:
            outcome.swept = sweep(write, backing_root, golden)
            write.check_after_cleanup(backing_root, raised, committed)
        except AssertionError as exc:
            outcome.result = "lost"
            tally.add(outcome)
            raise AssertionError(f"{where}, after cleanup: {exc}") from exc
        tally.add(outcome)
        outcomes.append(outcome)
    return outcomes
