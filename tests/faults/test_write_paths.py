"""EIO, ENOSPC and ESTALE at every operation of every store write path (see _harness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from efsray.errors import EfsrayError
from efsray.simfs import SimFSConfig, SimFSProcess
from efsray.store import Store
from tests.faults._harness import Tally, explore
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


class _MarketPath:
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

    def open(self, root: Path) -> None:
        return None

    def run(self, store: None, root: Path) -> None:
        super().run(Store(root, auto_compact=False), root)


WRITE_PATHS = [AppendPath(), CompactPath()]
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
