"""EIO, ENOSPC and ESTALE at every operation of every store write path (see _harness):
market-data append, compact, opening the store, checkpoint save (bytes and a directory),
backtest result save, and cleanup; after each case, cleanup with no grace period removes
what the failed write left. Outcomes are tallied in build/fault-tally.json."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from efsray.errors import EfsrayError
from efsray.simfs import SimFSConfig, SimFSProcess
from efsray.store import RetentionPolicy, Store
from efsray.store.ids import derive, id_time, new_id
from efsray.store.nfs import TEMP_PREFIX
from efsray.store.results import ResultStore
from tests.faults._harness import Tally, WritePath, explore, files_under, leftovers
from tests.fixtures.simfs import require_fuse
from tests.store._bars import batch, batch_ids

pytestmark = pytest.mark.fuse

ROWS = 40
ERRORS = ["EIO", "ENOSPC", "ESTALE"]


def _ids_complete(table: pa.Table) -> set[int]:
    ids, counts = np.unique(batch_ids(table), return_counts=True)
    assert all(c == ROWS for c in counts), f"a torn batch: {dict(zip(ids, counts, strict=True))}"
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(ts) > 0), "duplicated or unsorted timestamps"
    return set(ids.tolist())


class _MarketPath(WritePath):
    """Shared checks: versions 1..V keep their batches; the newest is V or V+1."""

    name = "market"
    golden: dict[int, set[int]]

    def _golden(self, store: Store) -> None:
        history = store.market.history("SPY", "1m")
        self.golden = {
            h.version: _ids_complete(store.market.read("SPY", "1m", version=h.version))
            for h in history
        }

    def expected_new(self) -> set[int]:
        raise NotImplementedError

    def check(self, root: Path, raised: BaseException | None) -> bool:
        store = Store(root, create=False)
        last = max(self.golden)
        for version, ids in self.golden.items():
            got = _ids_complete(store.market.read("SPY", "1m", version=version))
            assert got == ids, f"committed version {version} changed: {got} != {ids}"
        latest = store.market.info("SPY", "1m").version
        assert latest in (last, last + 1), f"unexpected latest version {latest}"
        newest = _ids_complete(store.market.read("SPY", "1m"))
        if latest == last + 1:
            assert newest == self.expected_new(), "the new version is not old + new"
            return True
        assert raised is not None, "the write returned but its commit is missing (lost)"
        assert newest == self.golden[last]
        return False


class AppendPath(_MarketPath):
    name = "market-append"
    new_batch = 99

    def prepare(self, root: Path) -> None:
        store = Store(root, auto_compact=False)
        for i in range(3):
            store.market.append("SPY", "1m", batch(i, ROWS))
        self._golden(store)

    def open(self, root: Path) -> Store:
        return Store(root, auto_compact=False)

    def run(self, store: Store, root: Path) -> None:
        store.market.append("SPY", "1m", batch(self.new_batch, ROWS))

    def expected_new(self) -> set[int]:
        return self.golden[max(self.golden)] | {self.new_batch}


class CompactPath(_MarketPath):
    name = "market-compact"

    def prepare(self, root: Path) -> None:
        store = Store(root, auto_compact=False)
        for i in range(4):
            store.market.append("SPY", "1m", batch(i, ROWS))
        self._golden(store)

    def open(self, root: Path) -> Store:
        return Store(root, auto_compact=False)

    def run(self, store: Store, root: Path) -> None:
        info = store.market.compact("SPY", "1m")
        assert info is not None and info.segments == 1

    def expected_new(self) -> set[int]:
        return self.golden[max(self.golden)]


class OpenThenAppendPath(AppendPath):
    """Opening the store is part of the path: ``Store(root).market.append(...)``."""

    name = "store-open+append"

    def open(self, root: Path) -> Any:
        return None

    def run(self, store: Any, root: Path) -> None:
        super().run(Store(root, auto_compact=False), root)


# --- checkpoints ---------------------------------------------------------------------------

MODEL = "net"


def _payload(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class _CheckpointPath(WritePath):
    """Shared checks: every listed version loads and verifies (none lists but fails to load);
    versions 1..V are unchanged; the latest is V or V+1 and loads complete; a save that
    returned is there."""

    golden: dict[int, Any]  # version -> what loading it must give
    new_metadata: ClassVar[dict[str, int]] = {"step": 99}

    def open(self, root: Path) -> Store:
        return Store(root)

    def load(self, store: Store, version: int | None) -> tuple[Any, int]:
        """(content, version) of a version (None: the latest), verified while it is read."""
        raise NotImplementedError

    def expected_new(self) -> Any:
        raise NotImplementedError

    def check(self, root: Path, raised: BaseException | None) -> bool:
        store = Store(root, create=False)
        old = sorted(self.golden)
        last = old[-1]
        listed = [i.version for i in store.checkpoints.list(MODEL)]
        assert listed in (old, [*old, last + 1]), f"versions {listed}, expected {old} (+1)"
        for version in listed:
            try:
                got, _ = self.load(store, version)
            except EfsrayError as exc:
                raise AssertionError(f"version {version} lists but does not load: {exc}") from exc
            want = self.golden[version] if version in self.golden else self.expected_new()
            assert got == want, f"version {version} does not hold what was saved"
        latest, version = self.load(store, None)
        assert version == listed[-1], f"the latest is v{version}, the listing ends at {listed}"
        want = self.golden[version] if version in self.golden else self.expected_new()
        assert latest == want, f"the latest, v{version}, does not hold what was saved"
        if version == last + 1:
            assert store.checkpoints.info(MODEL).metadata == self.new_metadata
            return True
        assert raised is not None, "the save returned but its version is missing (lost)"
        return False


class CheckpointBytesPath(_CheckpointPath):
    name = "checkpoint-save-bytes"
    new_data = _payload("new", 200_000)

    def prepare(self, root: Path) -> None:
        store = Store(root)
        for i in range(3):
            store.checkpoints.save(MODEL, _payload(f"v{i}", 3000 + i), {"step": i})
        self.golden = {v: (_payload(f"v{v - 1}", 3000 + v - 1), {"step": v - 1}) for v in (1, 2, 3)}

    def run(self, store: Store, root: Path) -> None:
        store.checkpoints.save(MODEL, self.new_data, self.new_metadata)

    def load(self, store: Store, version: int | None) -> tuple[Any, int]:
        data, info = store.checkpoints.load_bytes(MODEL, version)
        return (data, info.metadata), info.version

    def expected_new(self) -> Any:
        return self.new_data, self.new_metadata


def _make_source(path: Path, seed: str) -> None:
    """A small Ray-like checkpoint directory: nested files and an empty directory."""
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "empty").mkdir()
    (path / "model.bin").write_bytes(_payload(seed + "m", 150_000))
    (path / "sub" / "optimizer.bin").write_bytes(_payload(seed + "o", 20_000))
    (path / "sub" / "deeper" / ".metadata.json").write_text(json.dumps({"seed": seed}))


def _tree(path: Path) -> tuple[dict[str, bytes], set[str]]:
    files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    dirs = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_dir()}
    return files, dirs


class CheckpointDirectoryPath(_CheckpointPath):
    """``save_directory`` of 3 files in 3 directories (copied up to 4 at once: the order of
    operations varies between runs, so each case records the operation that failed)."""

    name = "checkpoint-save-directory"

    def prepare(self, root: Path) -> None:
        # Sources live on the backing side beside the store: read without FUSE, uncounted.
        self.sources = root.parent / "checkpoint-sources"
        shutil.rmtree(self.sources, ignore_errors=True)
        for seed in ("a", "b", "new"):
            _make_source(self.sources / seed, seed)
        store = Store(root)
        for i, seed in enumerate(("a", "b")):
            store.checkpoints.save_directory(MODEL, self.sources / seed, {"step": i})
        self.golden = {
            v: (_tree(self.sources / seed), {"step": v - 1}) for v, seed in ((1, "a"), (2, "b"))
        }

    def run(self, store: Store, root: Path) -> None:
        store.checkpoints.save_directory(MODEL, self.sources / "new", self.new_metadata)

    def load(self, store: Store, version: int | None) -> tuple[Any, int]:
        if version is not None:  # in place, as Ray is handed it: every file verified first
            info = store.checkpoints.info(MODEL, version)
            where = store.checkpoints.path(MODEL, version)
            return (_tree(where), info.metadata), info.version
        with tempfile.TemporaryDirectory(prefix="efsray-restore-") as tmp:  # a verified copy
            info = store.checkpoints.load_directory(MODEL, Path(tmp) / "restore")
            return (_tree(Path(tmp) / "restore"), info.metadata), info.version

    def expected_new(self) -> Any:
        return _tree(self.sources / "new"), self.new_metadata


# --- backtest results ------------------------------------------------------------------------

STRATEGY = "momentum"
NEW_RUN = 99


def _run_spec(i: int) -> dict[str, Any]:
    """Everything run ``i`` saves: metrics, params, tags and both tables."""
    days = np.arange(30)
    return {
        "metrics": {"sharpe": 1.0 + i, "max_drawdown": -0.01 * i, "sortino": float("inf")},
        "params": {"lookback": 10 + i},
        "tags": {"run": i},
        "equity_curve": pd.DataFrame({"day": days, "equity": 100.0 + i + days * 0.5}),
        "trades": pd.DataFrame({"qty": [i, i + 1, -i], "price": [10.0, 11.0 + i, 9.5]}),
    }


def _check_run(store: Store, run_id: str, i: int) -> None:
    """Run ``run_id`` loads whole (every table, checksums verified) and holds run ``i``."""
    try:
        run = store.results.load(run_id, strategy=STRATEGY)
    except EfsrayError as exc:
        raise AssertionError(f"run {run_id} is visible but does not load whole: {exc}") from exc
    spec = _run_spec(i)
    assert run.info.metrics == spec["metrics"], f"run {run_id}: metrics {run.info.metrics}"
    assert run.info.params == spec["params"] and run.info.tags == spec["tags"]
    assert set(run.tables) == {"equity_curve", "trades"}, f"run {run_id}: {set(run.tables)}"
    for table in ("equity_curve", "trades"):
        pd.testing.assert_frame_equal(run.tables[table], spec[table])


def _runs(store: Store) -> list[str]:
    return [run_id for _, run_id, _ in store.results.run_files(STRATEGY)]


def _with_table_files(store: Store) -> Store:
    """``store`` with results that are not merged after a commit (a merge would add more
    operations to every write than the fault exploration needs)."""
    store.results = ResultStore(store.layout, merge=False)
    return store


class ResultSavePath(WritePath):
    """``store.results.save`` with both tables (embedded in the run's JSON): every run listed
    loads whole, no partial run is visible, the runs saved before are unchanged."""

    name = "result-save"
    golden: dict[str, int]  # run id -> i

    def _store(self, root: Path) -> Store:
        return Store(root)

    def prepare(self, root: Path) -> None:
        store = self._store(root)
        self.golden = {store.results.save(STRATEGY, **_run_spec(i)).run_id: i for i in range(3)}
        store.results.merge(STRATEGY)

    def open(self, root: Path) -> Store:
        return self._store(root)

    def run(self, store: Store, root: Path) -> None:
        store.results.save(STRATEGY, **_run_spec(NEW_RUN))

    def check(self, root: Path, raised: BaseException | None) -> bool:
        store = Store(root, create=False)
        runs = _runs(store)
        missing = set(self.golden) - set(runs)
        assert not missing, f"committed runs are gone: {missing}"
        new = set(runs) - set(self.golden)
        assert len(new) <= 1, f"one save, {len(new)} new runs: {new}"
        for run_id in runs:
            _check_run(store, run_id, self.golden.get(run_id, NEW_RUN))
        assert sorted(store.results.query(STRATEGY)["run_id"]) == sorted(runs)
        if new:
            return True
        assert raised is not None, "the save returned but its run is missing (lost)"
        return False


BATCH = range(10, 15)


def _batch_id(i: int) -> str:
    return derive(dt.datetime(2024, 5, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=i), f"b{i}")


class ResultBatchPath(ResultSavePath):
    """``store.results.save_batch`` of 5 runs under chosen ids (what a sweep task commits):
    the batch is visible whole or not at all, and retrying it after a failure commits each
    run exactly once."""

    name = "result-batch"

    def run(self, store: Store, root: Path) -> None:
        store.results.save_batch(STRATEGY, [{**_run_spec(i), "run_id": _batch_id(i)}
                                            for i in BATCH])  # fmt: skip

    def check(self, root: Path, raised: BaseException | None) -> bool:
        store = Store(root, create=False)
        runs = _runs(store)
        assert set(self.golden) <= set(runs), "committed runs are gone"
        new = set(runs) - set(self.golden)
        assert new in (set(), {_batch_id(i) for i in BATCH}), f"a partial batch: {new}"
        for run_id in self.golden:
            _check_run(store, run_id, self.golden[run_id])
        for i in BATCH if new else ():
            _check_run(store, _batch_id(i), i)
        if not new:
            assert raised is not None, "the batch returned but its runs are missing (lost)"
        return bool(new)


# --- cleanup ---------------------------------------------------------------------------------

LOSSES = {1: 0.5, 2: 0.1, 3: 0.3, 4: 0.4}  # 1 aliased, 2 the best, 3 goes, 4 the latest


class _ReportedErrors(logging.Handler):
    """The exceptions behind the errors a cleanup reports (it logs each one as it goes on)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(a for a in args if isinstance(a, BaseException))


class CleanupPath(WritePath):
    """``store.cleanup(days=0, grace=0)`` over every area, each with something to remove:

    - market data: two appends and a compaction; versions 1-2 and their segments go, 3 stays;
    - checkpoints: versions 1-4, alias ``prod`` on 1, keep-best-1 by loss (2), keep-last-1
      (4): 3 goes, and the data directory (with a temporary file) of a crashed save;
    - results: two runs, the older goes, and the table of a run that never committed;
    - logs: an old log file; temp: a crashed commit's temporary manifest and a crashed
      copy's staging directory.

    ``expected`` is what the same cleanup leaves without faults (run on a local copy). After a
    fault: nothing was created; everything in ``expected`` is there and reads back (nothing
    retention protects was removed); every listed market version, checkpoint and run reads
    whole. Then the cleanup after the case, the same cleanup again without faults, must
    finish the job: exactly ``expected`` remains.
    """

    name = "cleanup"
    sweep_days = 0.0

    def prepare(self, root: Path) -> None:
        store = Store(root, auto_compact=False)
        for i in range(2):
            store.market.append("SPY", "1m", batch(i, ROWS))
        store.market.compact("SPY", "1m")
        self.market = {
            h.version: _ids_complete(store.market.read("SPY", "1m", version=h.version))
            for h in store.market.history("SPY", "1m")
        }
        cps = store.checkpoints
        for v, loss in LOSSES.items():
            cps.save(MODEL, _payload(f"c{v}", 2000 + v), {"loss": loss})
        cps.set_alias(MODEL, "prod", 1)
        cps.set_retention(MODEL, RetentionPolicy(keep_last=1, keep_best=1, metric="loss",
                                                 mode="min"))  # fmt: skip
        crashed = new_id()
        debris = root / "models" / "checkpoints" / MODEL / "data" / crashed[:5] / crashed
        debris.mkdir(parents=True)
        (debris / "checkpoint.bin").write_bytes(b"half a checkpoint")
        (debris / f"{TEMP_PREFIX}optimizer.bin.host.1.abcd").write_bytes(b"half")
        self.runs = {store.results.save(STRATEGY, **_run_spec(i)).run_id: i for i in range(2)}
        never = new_id()
        when = id_time(never)
        minute = root / "results" / "backtests" / STRATEGY / f"{when:%Y-%m-%d}" / f"{when:%H%M}"
        minute.mkdir(parents=True, exist_ok=True)
        (minute / f"{never}.equity_curve.parquet").write_bytes(b"PAR1 never committed")
        staging = root / "models" / f"{TEMP_PREFIX}restore.abcd"  # a crashed copy_out
        (staging / "sub").mkdir(parents=True)
        (staging / "sub" / "model.bin").write_bytes(b"half a copy")
        (root / "logs").mkdir(exist_ok=True)
        (root / "logs" / "worker-1.log").write_text("old log\n")
        versions = root / "market_data" / "ohlcv" / "SPY" / "1m" / "versions" / "000000"
        (versions / f"{TEMP_PREFIX}v000000000004.json.host.1.abcd").write_text("{")
        self.golden_files = files_under(root)
        with tempfile.TemporaryDirectory(prefix="efsray-cleanup-") as tmp:
            copy = Path(tmp) / "store"
            shutil.copytree(root, copy, symlinks=True)
            report = Store(copy, create=False).cleanup(0, grace=0)
            assert not report.errors, report.errors
            empty = [a for a, r in report.areas.items() if r.files == 0]
            assert not empty, f"nothing to remove in {empty}: the test would prove nothing"
            self.expected = files_under(copy)

    def open(self, root: Path) -> Store:
        return Store(root, create=False)

    def run(self, store: Store, root: Path) -> list[BaseException]:
        handler = _ReportedErrors()
        logger = logging.getLogger("efsray.store")
        logger.addHandler(handler)
        try:
            report = store.cleanup(0, grace=0)
        finally:
            logger.removeHandler(handler)
        assert len(handler.errors) == len(report.errors), (report.errors, handler.errors)
        return handler.errors

    def check(self, root: Path, raised: BaseException | None) -> bool:
        files = files_under(root)
        # Retention of a results table commits a version without the dropped segments: the
        # only files cleanup may create.
        created = {f for f in files - self.golden_files
                   if not (f.startswith("results/tables/") and "/versions/" in f)}  # fmt: skip
        assert not created, f"cleanup created {sorted(created)}"
        removed = (self.expected - files) & self.golden_files  # (a results table's new
        # version, which a cleanup that failed earlier did not commit, was never there)
        assert not removed, f"cleanup removed what retention keeps: {sorted(removed)}"
        store = Store(root, create=False)
        # market data: a contiguous history ending at the latest, each version unchanged
        history = sorted(h.version for h in store.market.history("SPY", "1m"))
        assert history == list(range(history[0], 4)), f"history {history}"
        for v in history:
            got = _ids_complete(store.market.read("SPY", "1m", version=v))
            assert got == self.market[v], f"market version {v} changed"
        assert _ids_complete(store.market.read("SPY", "1m")) == self.market[3]
        # checkpoints: the protected versions are there; every listed one loads and verifies
        cps = store.checkpoints
        listed = [i.version for i in cps.list(MODEL)]
        assert {1, 2, 4} <= set(listed), f"a protected checkpoint version is gone: {listed}"
        for v in listed:
            try:
                data, info = cps.load_bytes(MODEL, v)
            except EfsrayError as exc:
                raise AssertionError(f"checkpoint v{v} lists but does not load: {exc}") from exc
            assert data == _payload(f"c{v}", 2000 + v) and info.metadata == {"loss": LOSSES[v]}
        assert cps.load_bytes(MODEL)[1].version == 4
        assert cps.load_bytes(MODEL, alias="prod")[1].version == 1
        # results: every listed run loads whole; the newest is kept
        runs = _runs(store)
        assert max(self.runs) in runs, "the newest run was removed"
        for run_id in runs:
            _check_run(store, run_id, self.runs[run_id])
        return files == self.expected

    def check_after_cleanup(
        self, root: Path, raised: BaseException | None, committed: bool
    ) -> None:
        assert self.check(root, raised), (
            "the cleanup run again did not finish the job: "
            f"{sorted(files_under(root) - self.expected)} remain"
        )


WRITE_PATHS = [
    AppendPath(),
    CompactPath(),
    CheckpointBytesPath(),
    CheckpointDirectoryPath(),
    ResultSavePath(),
    ResultBatchPath(),
    CleanupPath(),
]
_OPEN = OpenThenAppendPath()


@pytest.fixture(scope="module")
def fault_fs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFSProcess]:
    require_fuse()
    base = tmp_path_factory.mktemp("faults")
    (base / "mnt").mkdir()
    (base / "backing").mkdir()
    with SimFSProcess.start(SimFSConfig(mountpoint=base / "mnt", backing=base / "backing")) as fs:
        yield fs


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("write", WRITE_PATHS, ids=lambda w: w.name)
def test_fault_at_every_operation(
    fault_fs: SimFSProcess, write, error: str, fault_tally: Tally, tmp_path_factory
) -> None:
    work = tmp_path_factory.getbasetemp() / "fault-work"
    work.mkdir(exist_ok=True)
    outcomes = explore(fault_fs, write, error, fault_tally, work)
    foreign = [o for o in outcomes if o.result == "foreign_error"]  # known issues pass
    assert not foreign, "not an efsray error:\n" + "\n".join(
        f"  {o.error} at #{o.index} {o.op}: {o.exception}" for o in foreign
    )
    # A cleanup that failed somewhere says so (its report); one that returned clean is done.
    silent = [o for o in outcomes if o.result == "retried" and o.fired and not o.committed]
    assert not silent, "returned without an error, work left undone:\n" + "\n".join(
        f"  {o.error} at #{o.index} {o.op}" for o in silent
    )
    fired = sum(o.fired for o in outcomes)
    assert fired >= len(outcomes) * 0.9, f"only {fired} of {len(outcomes)} faults fired"


def test_fault_at_every_operation_of_opening_the_store(
    fault_fs: SimFSProcess, fault_tally: Tally, tmp_path_factory
) -> None:
    for error in ERRORS:
        test_fault_at_every_operation(fault_fs, _OPEN, error, fault_tally, tmp_path_factory)


@pytest.mark.parametrize("error", ["EIO", "ENOSPC"])
def test_store_calls_on_a_failing_stat_raise_efsray_errors(
    fault_fs: SimFSProcess, error: str
) -> None:
    root = fault_fs.path / "known-issue"
    Store(root)
    for kinds in ("getattr",):
        fault_fs.control.inject(error, ops=kinds, nth=1)
        try:
            with pytest.raises(EfsrayError):
                Store(root).market.append("SPY", "1m", batch(1, ROWS))
        finally:
            fault_fs.control.clear_faults()


def test_efsray_cleanup_removes_what_writes_failed_at_their_commit_left(
    fault_fs: SimFSProcess, cli, tmp_path: Path
) -> None:
    """The command itself, on the mount: an append, a checkpoint save and a result save each
    fail at their commit point and leave files behind; ``efsray cleanup --grace 0`` (nothing
    old enough by ``--days``) removes every one and keeps every commit."""
    name = "cli-cleanup"
    store = _with_table_files(Store(fault_fs.path / name, auto_compact=False))
    store.market.append("SPY", "1m", batch(0, ROWS))
    store.checkpoints.save(MODEL, b"first")
    run_id = store.results.save(STRATEGY, **_run_spec(0)).run_id
    backing = fault_fs.backing / name
    golden = tmp_path / "golden"
    shutil.copytree(backing, golden, symlinks=True)

    failing = [
        (lambda: store.market.append("SPY", "1m", batch(1, ROWS)), [("link", "*/v*.json")]),
        (lambda: store.checkpoints.save(MODEL, b"second"), [("link", "*/v*.json")]),
        (  # the run's JSON is not linked, and its tables cannot be removed by the saver
            lambda: store.results.save(STRATEGY, **_run_spec(1)),
            [("link", "*.json"), ("unlink", "*.parquet")],
        ),
    ]
    for write, faults in failing:
        for ops, pattern in faults:
            fault_fs.control.inject("EIO", ops=ops, path=pattern, times=None)
        try:
            with pytest.raises(EfsrayError):
                write()
        finally:
            fault_fs.control.clear_faults()
    left = leftovers(golden, backing)
    assert not left.unexplained, left.unexplained
    areas = {p.split("/")[0] for p in left.garbage}
    assert areas == {"market_data", "models", "results"}, left.garbage

    done = cli(
        "cleanup",
        "--days",
        "3650",
        "--grace",
        "0",
        "--force",
        "--root",
        fault_fs.path / name,
        "--json",
    )
    assert done.code == 0, done.err
    report = done.json()
    assert report["errors"] == [] and report["files"] >= 3, report
    after = leftovers(golden, backing)
    assert after.garbage == [] and after.unexplained == [], after
    fresh = Store(fault_fs.path / name, create=False)
    assert _ids_complete(fresh.market.read("SPY", "1m")) == {0}
    assert fresh.checkpoints.load_bytes(MODEL)[0] == b"first"
    assert _runs(fresh) == [run_id]
    _check_run(fresh, run_id, 0)
