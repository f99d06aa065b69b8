"""Backtest runs and the checkpoint catalog, store -> database, against the sync interface."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from efsray.connector import Database, PoolConfig, migrate
from efsray.connector.catalog import (
    CheckpointRecord,
    CheckpointSource,
    RunRecord,
    RunSource,
    sync_checkpoints,
    sync_runs,
)

pytestmark = pytest.mark.postgres

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


@dataclass
class ListRuns:
    """A RunSource over a list; records which ``since`` it was asked for."""

    runs: list[RunRecord] = field(default_factory=list)
    asked: list[dt.datetime | None] = field(default_factory=list)

    def iter_runs(self, since: dt.datetime | None) -> Iterable[RunRecord]:
        self.asked.append(since)
        return [r for r in self.runs if since is None or r.created_at >= since]


@dataclass
class ListCheckpoints:
    versions: list[CheckpointRecord] = field(default_factory=list)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)

    def iter_checkpoints(self, since: dt.datetime | None) -> Iterator[CheckpointRecord]:
        return iter([c for c in self.versions if since is None or c.created_at >= since])

    def iter_aliases(self) -> Iterable[tuple[str, str, int]]:
        return [(m, a, v) for (m, a), v in self.aliases.items()]

    def iter_versions(self) -> Iterable[tuple[str, int]]:
        return [(c.model_id, c.version) for c in self.versions]


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    with Database(PoolConfig(pg_url)) as database:
        with database.connection() as conn:
            migrate(conn)
        yield database


def _run(i: int, **kw: object) -> RunRecord:
    values: dict[str, object] = {
        "run_id": f"run-{i:04d}",
        "strategy_id": f"strat-{i % 3}",
        "created_at": T0 + dt.timedelta(minutes=i),
        "parameters": {"window": i, "fast": True},
        "metrics": {"sharpe": i / 10, "max_dd": float("nan")},
        "market_data_versions": {"AAPL/1m": 3},
    }
    values.update(kw)
    return RunRecord(**values)  # type: ignore[arg-type]


def _runs_table(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select run_id, strategy_id, parameters, metrics, synced_at "
            "from efsray.backtest_runs order by run_id"
        ).fetchall()


def test_sources_satisfy_the_interface() -> None:
    assert isinstance(ListRuns(), RunSource)
    assert isinstance(ListCheckpoints(), CheckpointSource)


def test_runs_sync_is_batched_idempotent_and_incremental(db: Database, pg_url: str) -> None:
    source = ListRuns([_run(i) for i in range(1234)])
    first = sync_runs(db, source, "store-a", batch_size=100)
    assert (first.records_seen, first.rows_changed) == (1234, 1234)
    rows = _runs_table(pg_url)
    assert len(rows) == 1234
    assert rows[5][3] == {"sharpe": 0.5, "max_dd": None}  # NaN has no jsonb form

    second = sync_runs(db, source, "store-a", batch_size=100)
    assert second.rows_changed == 0
    assert _runs_table(pg_url) == rows  # synced_at untouched: nothing rewritten
    # The second sync only asked for recent runs (watermark minus the lookback).
    assert source.asked[-1] == T0 + dt.timedelta(minutes=1233) - dt.timedelta(minutes=10)

    source.runs.append(_run(5000))
    source.runs[-2] = _run(1233, metrics={"sharpe": 9.0})  # a recent run re-scored
    third = sync_runs(db, source, "store-a")
    assert third.rows_changed == 2
    assert len(_runs_table(pg_url)) == 1235


def test_a_bad_record_is_skipped_and_reported(db: Database, pg_url: str) -> None:
    source = ListRuns([_run(1), _run(2, metrics={"bad": object()})])
    report = sync_runs(db, source, "s", batch_size=10)
    assert report.rows_changed == 1 and len(report.rejected) == 1
    assert "run-0002" in report.rejected[0]
    assert [r[0] for r in _runs_table(pg_url)] == ["run-0001"]
    naive = ListRuns([_run(3, created_at=dt.datetime(2024, 1, 1))])
    report = sync_runs(db, naive, "other-store")
    assert report.rows_changed == 0 and "naive" in report.rejected[0]


def test_checkpoints_and_moving_aliases(db: Database, pg_url: str) -> None:
    source = ListCheckpoints(
        [
            CheckpointRecord(
                "m1",
                v,
                T0 + dt.timedelta(hours=v),
                {"loss": 1 / v},
                100 * v,
                f"sha256:{v}",
                f"models/checkpoints/m1/v{v}",
            )
            for v in range(1, 6)
        ],
        {("m1", "production"): 3, ("m1", "best"): 5},
    )
    first = sync_checkpoints(db, source, "s")
    assert first.rows_changed == 5 and first.aliases_changed == 2
    assert sync_checkpoints(db, source, "s").rows_changed == 0
    assert sync_checkpoints(db, source, "s").aliases_changed == 0

    source.aliases[("m1", "production")] = 5  # the alias moves to an old version's neighbour
    del source.aliases[("m1", "best")]
    report = sync_checkpoints(db, source, "s")
    assert report.aliases_changed == 2
    with psycopg.connect(pg_url) as conn:
        aliases = conn.execute("select model_id, alias, version from efsray.checkpoint_aliases")
        assert aliases.fetchall() == [("m1", "production", 5)]
        meta = conn.execute(
            "select metadata->>'loss' from efsray.checkpoints where model_id='m1' and version=2"
        ).fetchone()
    assert meta == ("0.5",)

    removed = source.versions.pop(0)  # retention removed v1 from the store
    report = sync_checkpoints(db, source, "s")
    assert report.removed == 1 and report.rows_changed == 0
    assert sync_checkpoints(db, source, "s").removed == 0
    source.versions.insert(0, removed)  # and should it come back, it is present again
    assert sync_checkpoints(db, source, "s").removed == 1  # the mark is cleared
    with psycopg.connect(pg_url) as conn:
        gone = conn.execute("select count(*) from efsray.checkpoints where removed_at is not null")
        assert gone.fetchone() == (0,)
