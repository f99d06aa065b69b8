"""Inject a fault at every operation a store write performs, and judge each outcome.

For one write path (a :class:`WritePath`: market-data append, compact, ...):

1. ``prepare`` commits a known state; it is saved as the *golden* copy of the backing
   directory (the simulated server's disk).
2. A counting run performs the write once on a clean copy with the operation trace on: the
   trace lists, in order, every operation the write sends to the filesystem.
3. For each operation index ``i`` (every index for operations other than lookups; lookups,
   about ten times as many, at an even sample) and each errno, the golden state is restored,
   a fault is armed to fire on exactly the ``i``-th operation, the write runs, and then:

   - the write either succeeded (a retry absorbed the fault: the store's, or the kernel's,
     which retries a path lookup once on ESTALE) or raised an :class:`EfsrayError`; any
     other exception is a failure (``foreign``);
   - every version committed before is still readable and identical (nothing lost);
   - the newest version is the old one or the new one, complete; a write that returned is
     committed (an acknowledged write is never lost); a write that raised may still have
     committed (the fault hit after the commit point) and is tallied as such;
   - every file left behind that the golden state did not have is garbage the store's
     cleanup removes (temporary files, segments no manifest references).

Outcomes go to a :class:`Tally`, which the suite writes to ``build/fault-tally.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from efsray.errors import EfsrayError
from efsray.simfs import OP_KINDS, SimFSProcess
from efsray.store.nfs import is_temp_name

#: Operation kinds a fault is aimed at, one index at a time (lookups are sampled apart).
DATA_KINDS = sorted(OP_KINDS - {"getattr", "release", "releasedir"})
LOOKUP_SAMPLES = 12


class WritePath(Protocol):
    name: str

    def prepare(self, root: Path) -> None:
        """Commit the starting state under ``root`` (the backing directory, uncounted)."""

    def open(self, root: Path) -> Any:
        """Set up what the write needs before faults are armed (usually a ``Store``)."""

    def run(self, opened: Any, root: Path) -> None:
        """The write under test, on the mount (``root`` is the store root in the mount)."""

    def check(self, root: Path, raised: BaseException | None) -> bool:
        """Verify the state under ``root`` (backing); True if the new change is committed.

        Raises AssertionError when anything committed is lost or torn.
        """


@dataclass
class Outcome:
    path: str
    error: str
    index: int
    op: tuple[str, ...]
    fired: int
    result: str  # "retried" | "clean_error" | "known_issue" | "foreign_error" | "lost"
    committed: bool
    exception: str | None
    leftovers: int


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
                    "committed_despite_error": 0,
                    "foreign_errors": 0,
                    "known_store_issue": 0,
                    "lost_or_corrupted": 0,
                    "cases_with_leftovers": 0,
                    "by_operation": Counter(),
                    "committed_despite_error_at": Counter(),
                },
            )
            row["cases"] += 1
            row["faults_injected"] += o.fired
            row["not_reached"] += o.fired == 0
            row["retried_ok"] += o.fired > 0 and o.result == "retried"
            row["clean_errors"] += o.result == "clean_error"
            row["committed_despite_error"] += o.result == "clean_error" and o.committed
            row["foreign_errors"] += o.result == "foreign_error"
            row["known_store_issue"] += o.result == "known_issue"
            row["cases_with_leftovers"] += o.leftovers > 0
            row["lost_or_corrupted"] += o.result == "lost"
            row["by_operation"][f"{o.op[0]}:{o.result}"] += 1
            if o.result == "clean_error" and o.committed:
                row["committed_despite_error_at"][" ".join(o.op)] += 1
        totals = Counter()
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
    """Make ``target`` (on the backing side: no FUSE, nothing counted) a copy of ``golden``."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(golden, target, symlinks=True)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def referenced_segments(root: Path) -> set[str]:
    """Segment files named by any committed manifest under ``root``."""
    used: set[str] = set()
    for manifest in root.rglob("v*.json"):
        if "versions" not in manifest.parts:
            continue
        data = json.loads(manifest.read_bytes())
        series = manifest.parent.parent.parent
        for seg in data.get("segments", []):
            used.add(str((series / "segments" / seg["file"]).relative_to(root)))
    return used


def unexplained_leftovers(golden: Path, root: Path) -> tuple[int, list[str]]:
    """(garbage files, files that are neither golden, committed, nor garbage cleanup removes)."""
    new = files_under(root) - files_under(golden)
    referenced = referenced_segments(root)
    garbage, unexplained = 0, []
    for name in sorted(new):
        path = Path(name)
        if is_temp_name(path.name) or path.name.startswith(".fuse_hidden"):
            garbage += 1
        elif path.parent.name == "segments" and name not in referenced:
            garbage += 1  # written, never committed: cleanup's "unreferenced segment"
        elif path.name == "HEAD" or ("versions" in path.parts and path.suffix == ".json"):
            continue  # a committed version (checked by the write path) and its hint
        elif path.parent.name == "segments":
            continue  # referenced by a committed manifest
        else:
            unexplained.append(name)
    return garbage, unexplained


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
    write.run(opened, mount_root)
    trace = fs.control.stop_trace()
    assert write.check(backing_root, None), f"{write.name} did not commit without faults"
    data_ops = [t for t in trace if t[0] in DATA_KINDS]
    lookups = sum(1 for t in trace if t[0] == "getattr")
    stride = max(1, lookups // LOOKUP_SAMPLES)
    plan = [(DATA_KINDS, i, op) for i, op in enumerate(data_ops, 1)]
    plan += [(["getattr"], i, ("getattr",)) for i in range(1, lookups + 1, stride)]

    outcomes = []
    for kinds, index, op in plan:
        restore(golden, backing_root)
        opened = write.open(mount_root)
        fs.control.reset()
        # A failed read of a page is retried by the kernel at once (readahead falls back to
        # a plain read): fail that retry too, or the store never sees read errors.
        fs.control.inject(error, ops=kinds, nth=index, times=2 if op[0] == "read" else 1)
        raised: BaseException | None = None
        try:
            write.run(opened, mount_root)
        except Exception as exc:  # judged below: efsray errors are the clean ones
            raised = exc
        fired = fs.control.counters().faults_total
        fs.control.clear_faults()
        try:
            committed = write.check(backing_root, raised)
        except AssertionError as exc:
            tally.add(Outcome(write.name, error, index, op, fired, "lost", False, repr(raised), 0))
            raise AssertionError(f"{write.name}, {error} at #{index} {op}: {exc}") from exc
        garbage, unexplained = unexplained_leftovers(golden, backing_root)
        assert not unexplained, (
            f"{write.name}, {error} at {op}: files left that cleanup would not remove: "
            f"{unexplained}"
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
            leftovers=garbage,
        )
        tally.add(outcome)
        outcomes.append(outcome)
    return outcomes
