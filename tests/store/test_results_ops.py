"""Round trips of a load by id on the EFS-like mount, counted by simfs (profile none, an EFS
client's 3 s attribute cache): every request the kernel sends, reads as the FUSE client
sends them (up to 128 KiB each, where an NFS client's rsize is 1 MiB: never fewer here).
A load reads the run's block of the sidecar's run index and its tables in one open
(:mod:`efsray.store.results.index`), the fence of that index once per segment; a sidecar
read in the last seconds is still open (:mod:`efsray.store.results.open_files`): its loads
are the two reads alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from efsray.simfs import SimFSProcess
from efsray.store import Store
from efsray.store.results.index import FENCES
from efsray.store.results.open_files import OPEN_FILES
from efsray.store.results.parts import FOOTERS
from tests.store import _results_workers as rw


def _ops(fs: SimFSProcess, call: Callable[[], Any]) -> tuple[int, dict[str, int], int]:
    """(server operations but releases, by kind, bytes read) of ``call``."""
    fs.control.reset()
    call()
    counted = fs.control.reset()
    kinds = {k: v for k, v in counted.ops.items() if v and k not in ("release", "releasedir")}
    return sum(kinds.values()), kinds, counted.bytes_read


@pytest.fixture
def efs(
    simfs_factory: Callable[..., SimFSProcess], monkeypatch: pytest.MonkeyPatch
) -> Iterator[SimFSProcess]:
    monkeypatch.setattr(OPEN_FILES, "linger", 60.0)  # a loaded machine: no close between
    yield simfs_factory(profile="none", attr_timeout=3.0)
    OPEN_FILES.clear()  # before the mount goes: an open file keeps it busy


def _runs(batch: int, size: int) -> list[dict[str, Any]]:
    curve = pd.DataFrame({"equity": np.linspace(1.0, 1.2, 250)})
    return [{**r, "equity_curve": curve} for r in rw.batch_runs(batch, size)]


def test_a_load_by_id_reads_one_index_block_and_the_runs_tables(efs: SimFSProcess) -> None:
    store = Store(efs.path / "store")
    for b in range(4):  # merged into one segment of 2,000 runs: 32 index blocks
        store.results.save_batch("sweep", _runs(b, 500))
    assert len(store.results.files("sweep")) == 1
    FENCES.clear()
    FOOTERS.clear()
    reader = Store(efs.path / "store").results
    first = rw.run_id(0, 7)
    reader.load(first, strategy="sweep")  # the manifest and the fence, read once
    for run_id in (rw.run_id(1, 123), rw.run_id(3, 499)):
        OPEN_FILES.clear()  # the sidecar read more than a few seconds ago
        ops, kinds, nbytes = _ops(efs, lambda r=run_id: reader.load(r, strategy="sweep"))
        print(f"load {run_id}, sidecar closed: {ops} {kinds}, {nbytes} bytes read")
        run = reader.load(run_id, strategy="sweep")
        assert run.info.run_id == run_id and len(run.equity_curve) == 250
        # no version probe (a run never changes: the manifest this process knows answers),
        # the sidecar's revalidation, open, a READ of the run's index block, a READ of its
        # tables, close
        assert kinds.get("read", 0) == 2 and kinds.get("open", 0) == 1, kinds
        assert ops <= 5, kinds
        assert nbytes <= 32 << 10  # (the row group's columns were ~186 KB)
    for run_id in (rw.run_id(2, 5), rw.run_id(0, 300)):  # the sidecar still open
        ops, kinds, nbytes = _ops(efs, lambda r=run_id: reader.load(r, strategy="sweep"))
        print(f"load {run_id}, sidecar open: {ops} {kinds}, {nbytes} bytes read")
        assert kinds == {"read": 2}, kinds  # the run's index block, its tables: nothing else
        assert nbytes <= 32 << 10


def test_a_repeated_query_reads_only_column_chunks(efs: SimFSProcess) -> None:
    """A query again within seconds: no lookup, open or close of its segments, only the
    READs of their wanted column chunks (footers cached, segments still open)."""
    store = Store(efs.path / "store")
    store.results.merge_after_commit = False
    for b in range(3):
        store.results.save_batch("sweep", rw.batch_runs(b, 200))
    reader = Store(efs.path / "store").results
    reader.query("sweep", where=["sharpe>=1"], columns=["sharpe"])
    ops, kinds, _ = _ops(efs, lambda: reader.query("sweep", where=["sharpe>=1"],
                                                   columns=["sharpe"]))  # fmt: skip
    print(f"query again: {ops} {kinds}")
    # the version probe (the latest manifest), then at most one READ per segment (its
    # wanted columns are adjacent; none while the client's page cache holds them)
    assert not {"open", "flush", "getattr"} & set(kinds), kinds
    assert kinds.get("read", 0) <= 3 and ops <= 5, kinds
