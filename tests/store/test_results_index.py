"""The run index at the end of a sidecar (efsray.store.results.index): every byte of it is
checked before it is used, and segments written before it stay readable, retryable and
mergeable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efsray.errors import CorruptionError, InvalidDataError, NotFoundError
from efsray.store import Store
from efsray.store.nfs import _with_checksum
from efsray.store.results.index import BLOCK_RUNS, FENCES
from efsray.store.results.manifest import TableManifest
from tests.store import _results_workers as rw

RUNS = 2 * BLOCK_RUNS + 5  # three blocks


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.results.merge_after_commit = False
    return store


def _manifest(store: Store) -> TableManifest:
    manifest = store.results.table("sweep").manifest()
    assert manifest is not None
    return manifest


def _flip(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[offset] ^= 0x01
    path.write_bytes(bytes(damaged))
    return data


def test_every_byte_of_the_index_is_checked(store: Store) -> None:
    """Flip each byte of the run index in turn (every 13th): a load by id of a run in the
    damaged block, or of any run when the fence is damaged, raises CorruptionError naming
    the checksum; runs of the other blocks load as stored."""
    store.results.save_batch("sweep", rw.batch_runs(0, RUNS))
    [segment] = _manifest(store).segments
    assert segment.sidecar is not None and segment.sidecar.index is not None
    index = segment.sidecar.index
    sidecar = store.results.table("sweep").data / segment.sidecar.name
    probes = [rw.run_id(0, i) for i in (0, BLOCK_RUNS + 3, RUNS - 1)]  # one per block
    want = {i: Store(store.root).results.info(i, strategy="sweep") for i in probes}
    fence_hits = block_hits = 0
    for offset in range(index.start, segment.sidecar.bytes, 13):
        original = _flip(sidecar, offset)
        FENCES.clear()  # as a new process would
        fresh = Store(store.root).results
        try:
            for run_id in probes:
                try:
                    assert fresh.info(run_id, strategy="sweep") == want[run_id], offset
                except CorruptionError as exc:
                    assert "checksum" in str(exc), exc
                    if offset >= index.offset:
                        fence_hits += 1
                    else:
                        block_hits += 1
        finally:
            sidecar.write_bytes(original)
    blocks = (index.offset - index.start) // 13
    assert block_hits >= blocks - 3  # each flip in a block fails exactly its block's probe
    assert fence_hits >= 3 * ((segment.sidecar.bytes - index.offset) // 13)  # every probe


def _drop_index(store: Store) -> None:
    """Rewrite the table's manifests as an efsray before the run index wrote them: no
    ``index`` in the sidecar entries (the files stay: the old reader ignores the bytes)."""
    for path in (store.layout.results / "tables/sweep/versions").rglob("v*.json"):
        body = json.loads(path.read_bytes())
        body.pop("checksum")
        for segment in body["segments"]:
            if segment.get("sidecar"):
                segment["sidecar"].pop("index", None)
        path.chmod(0o644)
        path.write_bytes(_with_checksum(body))
    FENCES.clear()


def test_segments_without_an_index_load_retry_and_merge(store: Store) -> None:
    for b in range(3):
        store.results.save_batch("sweep", rw.batch_runs(b, 40))
    _drop_index(store)
    old = Store(store.root).results
    old.merge_after_commit = False
    assert all(s.sidecar and not s.sidecar.index for s in _manifest(Store(store.root)).segments)
    run = old.load(rw.run_id(1, 7), strategy="sweep")  # through the Parquet row groups
    assert run.info.metrics["i"] == 7 and len(run.equity_curve) == 50
    assert [i.run_id for i in old.save_batch("sweep", rw.batch_runs(1, 40))] == [
        rw.run_id(1, i) for i in range(40)
    ]  # a retry: found in the old segment, compared, nothing written
    changed = rw.batch_runs(2, 40)
    changed[5]["metrics"] = {**changed[5]["metrics"], "sharpe": -1.0}
    with pytest.raises(InvalidDataError, match="different"):
        old.save_batch("sweep", changed)
    old.save_batch("sweep", rw.batch_runs(3, 40))  # a new segment, with its index
    before = _manifest(store).segments
    assert old.merge("sweep") == 1
    [merged] = _manifest(store).segments
    assert merged.rows == 160 and merged.sidecar and merged.sidecar.index is not None
    # the inputs' tables, then the merged run index (the new input's index left out)
    assert merged.sidecar.index.start == sum(s.sidecar.tables_bytes for s in before if s.sidecar)
    fresh = Store(store.root).results
    for b in range(4):
        for i in (0, 17, 39):
            run = fresh.load(rw.run_id(b, i), strategy="sweep")
            assert (run.info.metrics["batch"], run.info.metrics["i"]) == (b, i)
            assert run.equity_curve["equity"].iloc[-1] == pytest.approx(1.0 + i / 100)
    assert len(fresh.query("sweep")) == 160


def test_a_load_by_id_finds_runs_committed_since_and_merged_away(store: Store) -> None:
    """A load asks the manifest this process knows first: a run committed since by another
    writer, or a run whose segment a merge and a vacuum removed since, is found in the
    latest version all the same."""
    reader = Store(store.root).results
    for b in range(4):
        store.results.save_batch("sweep", rw.batch_runs(b, 20))
        assert reader.load(rw.run_id(b, 3), strategy="sweep").info.metrics["batch"] == b
    assert store.results.merge("sweep") == 1
    assert store.results.vacuum("sweep", grace=0)[0] > 0  # the inputs' files are gone
    for b in range(4):
        run = reader.load(rw.run_id(b, 5), strategy="sweep")
        assert (run.info.metrics["batch"], run.info.metrics["i"]) == (b, 5)
    store.results.save_batch("sweep", rw.batch_runs(4, 20))
    assert reader.info(rw.run_id(4, 19), strategy="sweep").metrics["i"] == 19
    with pytest.raises(NotFoundError):
        reader.info(rw.run_id(5, 0), strategy="sweep")
