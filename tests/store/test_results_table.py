"""The results table: batches, idempotency, concurrent writers, SIGKILL mid-batch, byte flips,
filter pushdown, merges, retention, and DuckDB over the same files."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from efsray.errors import CorruptionError, InvalidDataError
from efsray.store import Store
from efsray.store.results.table import MAX_SEGMENT_ROWS, MERGE_FACTOR
from tests.store import _ckpt_workers as w
from tests.store import _results_workers as rw


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _data(store: Store, strategy: str = "sweep") -> Path:
    return store.layout.results / "tables" / strategy / "data"


def _files(store: Store, strategy: str = "sweep") -> dict[str, int]:
    table = store.layout.results / "tables" / strategy
    return {str(p): p.stat().st_ino for p in table.rglob("*") if p.is_file()}


def test_a_batch_is_one_segment_one_sidecar_one_version(store: Store) -> None:
    infos = store.results.save_batch("sweep", rw.batch_runs(0, 200))
    assert [i.run_id for i in infos] == [rw.run_id(0, i) for i in range(200)]
    names = sorted(p.suffix for p in _data(store).iterdir())
    assert names == [".arrows", ".parquet"]
    assert store.results.version("sweep") == 1
    frame = store.results.query("sweep", where=["sharpe>=0.1"], order_by="sharpe")
    assert list(frame["metrics.i"]) == list(range(100, 200))
    run = store.results.load(rw.run_id(0, 150))
    assert run.info.metrics == {"sharpe": 0.15, "batch": 0, "i": 150}
    assert run.info.params == {"fast": 150 % 7, "slow": 20}
    assert run.equity_curve["equity"].iloc[-1] == pytest.approx(2.5)


def test_a_retried_batch_commits_only_what_is_missing(store: Store) -> None:
    store.results.save_batch("sweep", rw.batch_runs(0, 10))
    before = _files(store)
    again = store.results.save_batch("sweep", rw.batch_runs(0, 10))  # the same batch
    assert [i.run_id for i in again] == [rw.run_id(0, i) for i in range(10)]
    assert _files(store) == before  # nothing written
    # a retry of a bigger batch (the killed attempt had committed the first 10)
    runs = rw.batch_runs(0, 10) + [r for r in rw.batch_runs(0, 25)][10:]
    store.results.save_batch("sweep", runs)
    frame = store.results.query("sweep")
    assert sorted(frame["run_id"]) == sorted(rw.run_id(0, i) for i in range(25))
    assert store.results.version("sweep") == 2
    # the same id with another result is refused, and nothing of that batch is committed
    changed = rw.batch_runs(0, 3) + rw.batch_runs(1, 3)
    changed[1] = {**changed[1], "metrics": {"sharpe": 9.0}}
    with pytest.raises(InvalidDataError, match=f"run {rw.run_id(0, 1)} of sweep already exists"):
        store.results.save_batch("sweep", changed)
    assert store.results.existing("sweep", [rw.run_id(1, 0)]) == set()
    with pytest.raises(InvalidDataError, match="twice"):
        store.results.save_batch("sweep", rw.batch_runs(2, 2) * 2)


def test_concurrent_writers_of_batches(tmp_path: Path) -> None:
    """6 processes commit 4 batches of 60 runs each at once: 4 of them distinct batches, 2
    of them the same batches as others (a retried task racing its first attempt). Every
    run is stored once, every writer gets the stored run, versions have no gaps."""
    root = tmp_path / "store"
    Store(root)
    ctx = w.fork_context()
    go = ctx.Event()
    plans = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [3, 2, 1, 0],
             [15, 9, 4, 12]]  # fmt: skip
    procs, pipes = [], []
    for batches in plans:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=rw.save_batches, args=(str(root), batches, 60, go, send))
        p.start()
        procs.append(p)
        pipes.append(recv)
    go.set()
    answers = w.gather(pipes, procs, timeout=300)
    for batches, answer in zip(plans, answers, strict=True):
        assert answer == [[rw.run_id(b, i) for i in range(60)] for b in batches]
    store = Store(root)
    frame = store.results.query("sweep")
    assert len(frame) == 16 * 60 == frame["run_id"].nunique()
    versions = sorted(
        int(p.name[1:-5]) for p in (root / "results/tables/sweep/versions").rglob("v*.json")
    )
    assert versions == list(range(1, len(versions) + 1))
    for b in (0, 7, 15):
        run = store.results.load(rw.run_id(b, 59))
        assert run.info.metrics["batch"] == b and len(run.equity_curve) == 50


def test_sigkill_mid_batch_leaves_nothing_visible_and_the_retry_completes(
    tmp_path: Path,
) -> None:
    """A process commits batches until SIGKILL lands (a random moment, 5 times over): every
    batch is visible whole or not at all; re-running every batch then commits each run once,
    and cleanup removes what the killed writers left."""
    root = tmp_path / "store"
    Store(root)
    ctx = w.fork_context()
    rng = random.Random(7)
    size = 40
    for _ in range(5):
        theirs, ours = ctx.Pipe(duplex=False)
        p = ctx.Process(target=rw.save_batches_forever, args=(str(root), size, ours))
        p.start()
        ours.close()
        # Kill after a random number of the writer's commits (however slow the machine is to
        # start it), then part-way into the next batch: at the next commit's message, or at a
        # random instant before it, whichever comes first (both waits are on the pipe).
        for _ in range(rng.randint(1, 3)):
            assert theirs.poll(120), "the writer committed nothing in 120 s"
            theirs.recv()
        theirs.poll(rng.uniform(0.0, 0.5))
        os.kill(p.pid, signal.SIGKILL)
        theirs.close()
        p.join(10)
        store = Store(root)
        frame = store.results.query("sweep")
        counts = frame.groupby("metrics.batch")["run_id"].count()
        assert set(counts) <= {size}, f"a partial batch is visible: {counts.to_dict()}"
        assert frame["run_id"].nunique() == len(frame)
    committed = set(Store(root).results.query("sweep")["metrics.batch"].astype(int))
    assert committed, "no batch committed before the kills: the test proved nothing"
    store = Store(root)
    top = max(committed) + 2
    for b in range(top):
        store.results.save_batch("sweep", rw.batch_runs(b, size))
    frame = store.results.query("sweep")
    assert len(frame) == top * size == frame["run_id"].nunique()
    report = store.cleanup(3650, grace=0)
    assert not report.errors
    named = set()  # every file some kept version names (merge inputs stay with their versions)
    for manifest in (root / "results/tables/sweep/versions").rglob("v*.json"):
        for seg in json.loads(manifest.read_text())["segments"]:
            named |= {seg["name"], *([seg["sidecar"]["name"]] if seg["sidecar"] else [])}
    assert {p.name for p in _data(store).iterdir()} == named  # the killed writers' files: gone
    assert not [p for p in (root / "results").rglob(".efsray-tmp.*")]
    assert len(store.results.query("sweep")) == top * size


def _flip(path: Path, offset: int) -> bytes:
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(damaged))
    return data


def _chunk(segment: Path, column: str) -> tuple[int, int]:
    """(offset, length) of ``column``'s chunk in the first row group of ``segment``."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(segment)
    chunk = meta.row_group(0).column(meta.schema.to_arrow_schema().names.index(column))
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
        start = chunk.dictionary_page_offset
    return start, chunk.total_compressed_size


@pytest.mark.parametrize("where", ["metric", "record", "footer", "last"])
def test_a_flipped_byte_that_a_read_uses_is_a_corruption_error(store: Store, where: str) -> None:
    """A query reads the filter's and the asked columns' chunks, the connector's sync
    (``iter_infos``) the records', both the footer: a flipped byte in what they read fails
    its page CRC or the footer's digest in the manifest. (A load by id reads the sidecar's
    run index, not the segment: see the next tests.)"""
    store.results.save_batch("sweep", rw.batch_runs(0, 30))
    [segment] = store.results.files("sweep")
    size = segment.stat().st_size
    metric, record = _chunk(segment, "metrics.sharpe"), _chunk(segment, "record")
    offset = {"metric": metric[0] + metric[1] - 3, "record": record[0] + record[1] // 2,
              "footer": size - 12, "last": size - 1}[where]  # fmt: skip
    original = _flip(segment, offset)
    fresh = Store(store.root)
    if where != "record":
        with pytest.raises(CorruptionError, match="checksum"):
            fresh.results.query("sweep", where=["sharpe>=0"], columns=["sharpe"])
    if where != "metric":
        with pytest.raises(CorruptionError, match="checksum"):
            list(Store(store.root).results.iter_infos())
    assert fresh.results.load(rw.run_id(0, 3), strategy="sweep").info.run_id == rw.run_id(0, 3)
    segment.write_bytes(original)
    assert len(Store(store.root).results.query("sweep")) == 30


def test_no_flipped_byte_of_a_segment_goes_unnoticed(store: Store) -> None:
    """Flip bytes of a 10-run segment in turn (every 11th: the test stays quick): every query
    and load by id either raises CorruptionError or returns exactly the stored runs (the
    byte was one it does not read, e.g. an unread column)."""
    from efsray.store.results.parts import FOOTERS

    store.results.save_batch("sweep", rw.batch_runs(0, 10))
    [segment] = store.results.files("sweep")
    original = segment.read_bytes()
    want = Store(store.root).results.query("sweep")
    want_info = Store(store.root).results.info(rw.run_id(0, 3), strategy="sweep")
    detected = 0
    try:
        for offset in range(0, len(original), 11):
            _flip(segment, offset)
            FOOTERS.clear()  # as a new process would
            fresh = Store(store.root).results
            try:
                assert fresh.query("sweep").equals(want), offset
                assert fresh.info(rw.run_id(0, 3), strategy="sweep") == want_info, offset
            except CorruptionError:
                detected += 1
            segment.write_bytes(original)
    finally:
        segment.write_bytes(original)
    assert detected > len(original) // 11 // 3  # most bytes are read by one of the two


def test_a_flipped_byte_in_a_sidecar_or_a_manifest_is_a_corruption_error(store: Store) -> None:
    store.results.save_batch("sweep", rw.batch_runs(0, 30))
    [sidecar] = _data(store).glob("*.arrows")
    original = _flip(sidecar, sidecar.stat().st_size // 2)
    broken = []
    for i in range(30):  # exactly the run whose table holds the byte fails; the others load
        try:
            Store(store.root).results.load(rw.run_id(0, i))
        except CorruptionError as exc:
            assert "equity_curve" in str(exc) and "checksum" in str(exc)
            broken.append(i)
    assert len(broken) == 1
    sidecar.write_bytes(original)
    [manifest] = (store.layout.results / "tables/sweep/versions").rglob("v*.json")
    text = manifest.read_text()
    body = json.loads(text)
    for edit in (
        lambda b: b.update(rows=b["rows"] + 1),
        lambda b: b["segments"][0].update(rows=b["segments"][0]["rows"] - 1),
        lambda b: b["segments"][0].update(digest="xxh3-128:" + "0" * 32),
        lambda b: b["segments"][0].update(bytes=b["segments"][0]["bytes"] + 1),
        lambda b: b.update(format="something-else"),
    ):
        changed = json.loads(text)
        edit(changed)
        manifest.write_text(json.dumps(changed))
        with pytest.raises(CorruptionError):
            Store(store.root).results.query("sweep")
    manifest.write_text(text)
    assert body["rows"] == 30 and len(Store(store.root).results.query("sweep")) == 30


def test_filters_skip_segments_without_reading_them(store: Store) -> None:
    """A segment whose recorded metric range cannot match is never opened: damage it, and
    a query that filters it out still works, while one that needs it fails loudly."""
    store.results.merge_after_commit = False
    for b in range(3):  # sharpe in [b, b + 0.049]
        store.results.save_batch("sweep", rw.batch_runs(b, 50))
    segments = store.results.files("sweep")
    assert len(segments) == 3
    first = next(s for s in segments if s.name.startswith(rw.run_id(0, 0)))
    first.write_bytes(b"garbage")
    fresh = Store(store.root)
    frame = fresh.results.query("sweep", where=["sharpe>=1"], columns=["sharpe", "params.fast"])
    assert len(frame) == 100 and list(frame.columns) == ["run_id", "metrics.sharpe", "params.fast"]
    assert len(fresh.results.query("sweep", where=[("sharpe", "<", 0)])) == 0
    assert fresh.results.load(rw.run_id(2, 7)).info.metrics["i"] == 7  # by id: one segment
    with pytest.raises(CorruptionError):
        fresh.results.query("sweep", where=["sharpe<0.5"])


def test_merges_bound_the_files_and_keep_every_run(store: Store) -> None:
    for b in range(MERGE_FACTOR * MERGE_FACTOR + 1):
        store.results.save_batch("sweep", rw.batch_runs(b, 20))
    segments = store.results.files("sweep")
    assert len(segments) < MERGE_FACTOR * 2 and MAX_SEGMENT_ROWS >= 20 * MERGE_FACTOR**2
    frame = store.results.query("sweep")
    assert len(frame) == (MERGE_FACTOR**2 + 1) * 20 == frame["run_id"].nunique()
    for b in (0, 9, MERGE_FACTOR**2):
        run = store.results.load(rw.run_id(b, 19))
        assert run.info.metrics["batch"] == b
        assert run.equity_curve["equity"].iloc[-1] == pytest.approx(1.19)
    # superseded segments stay as long as the versions that name them (superseded within
    # cleanup's grace, they are not vacuumed): old versions read
    stray = _data(store) / "01HWT0D7G0-never-committed.parquet"
    stray.write_bytes(b"PAR1 half")
    os.utime(stray, (0, 0))  # older than the grace: a killed writer's
    report = store.cleanup(3650, grace=3600)
    assert not report.errors and report.areas["results"].files == 1
    assert len(store.results.query("sweep", version=1)) == 20
    assert len(store.results.query("sweep")) == len(frame)


def test_duckdb_reads_exactly_the_files_of_a_version(store: Store) -> None:
    duckdb = pytest.importorskip("duckdb", reason="DuckDB is an optional extra")
    store.results.merge_after_commit = False
    for b in range(3):
        store.results.save_batch("sweep", rw.batch_runs(b, 50))
    store.results.merge("sweep")  # superseded segments stay on disk: a glob would count them
    files = [str(p) for p in store.results.files("sweep")]
    sql = (
        'SELECT count(*), max("metrics.sharpe") FROM read_parquet($files) '
        'WHERE "metrics.batch" >= 1'
    )
    count, best = duckdb.execute(sql, {"files": files}).fetchone()
    frame = store.results.query("sweep", where=["batch>=1"])
    assert count == len(frame) == 100 and best == frame["metrics.sharpe"].max()
    v1 = [str(p) for p in store.results.files("sweep", version=1)]
    assert duckdb.execute("SELECT count(*) FROM read_parquet($f)", {"f": v1}).fetchone() == (50,)


def test_retention_drops_old_segments_but_never_the_newest_run(store: Store) -> None:
    store.results.merge_after_commit = False
    for b in range(3):
        store.results.save_batch("sweep", rw.batch_runs(b, 5))
    report = store.cleanup(0, grace=0)  # everything is older than "now"
    assert not report.errors
    frame = store.results.query("sweep")
    assert list(frame["metrics.batch"].unique()) == [2]  # the newest run's segment stays
    assert len(store.results.files("sweep")) == 1


def test_a_big_table_of_sidecar_tables_loads_by_range(store: Store) -> None:
    trades = pd.DataFrame({"px": np.random.default_rng(3).normal(size=20_000)})
    info = store.results.save("sweep", metrics={"x": 1.0}, trades=trades)
    pd.testing.assert_frame_equal(store.results.load(info.run_id).trades, trades)
