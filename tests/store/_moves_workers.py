"""Child processes of tests/store/test_segment_moves.py: a writer whose appends merge often
(killed at random instants), and a reader of old and new versions racing it."""

from __future__ import annotations

import traceback
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import pyarrow as pa

from efsray.store import Store
from tests.store._bars import batch

SYMBOL, TIMEFRAME = "SPY", "1m"
ROWS = 40
FACTOR = 2  # every other append merges, and merges of merges follow: chains of redirects


def store(root: str) -> Store:
    return Store(Path(root), merge_factor=FACTOR)


def expected(version: int) -> pa.Table:
    """The series at ``version``: version v is batches 0..v-1, one append each."""
    return pa.concat_tables([batch(i, ROWS) for i in range(version)])


def append_forever(root: str, acks: Connection) -> None:
    """Append the next batch, one after another, until killed; sends each version."""
    s = store(root)
    latest = s.market.info(SYMBOL, TIMEFRAME).version if s.market.list_series() else 0
    while True:
        latest = s.market.append(SYMBOL, TIMEFRAME, batch(latest, ROWS)).version
        acks.send(latest)


def read_while_merging(root: str, stop: Event, out: Connection) -> None:
    """Read every version (full, range, tail) over and over until ``stop``; report the reads
    and the first failure (a traceback), if any."""
    reads, failure = 0, None
    try:
        while not stop.is_set():
            s = store(root)  # a fresh handle: nothing cached, every file read again
            latest = s.market.info(SYMBOL, TIMEFRAME).version
            for v in range(latest, 0, -max(1, latest // 6)):
                want = expected(v)
                got = s.market.read(SYMBOL, TIMEFRAME, version=v)
                assert got.equals(want), f"version {v}: full read differs"
                tail = s.market.tail(SYMBOL, TIMEFRAME, 7, version=v)
                assert tail.equals(want.slice(want.num_rows - 7)), f"version {v}: tail"
                reads += 2
    except BaseException:  # reported to the test, which fails with it
        failure = traceback.format_exc()
    out.send((reads, failure))


def sql_while_merging(root: str, stop: Event, out: Connection) -> None:
    """Query the latest version in DuckDB over and over until ``stop`` (each scan may race a
    merge that removes the files it resolved); report the queries and the first failure."""
    import math

    from efsray.sql import query

    queries, failure = 0, None
    try:
        s = store(root)
        while not stop.is_set():
            got = query(s, f"SELECT count(*) AS n, sum(close) AS s FROM market('{SYMBOL}', '1m')")
            row = got.to_pylist()[0]
            assert row["n"] % ROWS == 0, f"{row['n']} rows: not whole appends"
            want = pa.compute.sum(expected(row["n"] // ROWS)["close"]).as_py()
            assert math.isclose(row["s"], want, rel_tol=1e-12), (row, want)
            queries += 1
    except BaseException:  # reported to the test, which fails with it
        failure = traceback.format_exc()
    out.send((queries, failure))
