"""The store's backtest results and checkpoints synced to the database through `efsray sync`.

Needs the store's results and checkpoints parts (skips on a store without them)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from efsray.connector.sources import StoreCheckpoints, StoreRuns, checkpoint_source, run_source
from efsray.store import Store
from tests.connector.conftest import cli_env, efsray

pytestmark = pytest.mark.postgres


def _store(root: Path) -> Store:
    store = Store(root)
    if getattr(store, "results", None) is None or getattr(store, "checkpoints", None) is None:
        pytest.skip("this store has no results/checkpoints parts yet (issue 3)")
    return store


def test_sources_read_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    run = store.results.save(
        "mean-rev", metrics={"sharpe": 1.5}, params={"window": 20}, data_versions={"AAPL/1m": 3}
    )
    store.checkpoints.save("lstm", b"weights-1", {"loss": 0.5})
    store.checkpoints.save("lstm", b"weights-2", {"loss": 0.4})
    store.checkpoints.set_alias("lstm", "production", 1)
    runs = run_source(store)
    checkpoints = checkpoint_source(store)
    assert isinstance(runs, StoreRuns) and isinstance(checkpoints, StoreCheckpoints)
    [record] = list(runs.iter_runs(None))
    assert (record.run_id, record.strategy_id) == (run.run_id, "mean-rev")
    assert record.metrics == {"sharpe": 1.5} and record.market_data_versions == {"AAPL/1m": 3}
    assert record.store_path and not record.store_path.startswith("/")
    versions = list(checkpoints.iter_checkpoints(None))
    assert [(c.model_id, c.version) for c in versions] == [("lstm", 1), ("lstm", 2)]
    assert versions[0].size_bytes == len(b"weights-1") and versions[0].checksum
    assert list(checkpoints.iter_aliases()) == [("lstm", "production", 1)]


def test_sync_once_copies_runs_and_checkpoints_idempotently(pg_url: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    for k in range(30):
        store.results.save(f"strat-{k % 3}", metrics={"sharpe": k / 10}, params={"k": k})
    store.checkpoints.save("lstm", b"w1", {"loss": 0.5})
    store.checkpoints.save("lstm", b"w2", {"loss": 0.4})
    store.checkpoints.set_alias("lstm", "best", 2)
    env = cli_env(pg_url, root)
    first = efsray("sync", "--once", "--json", env=env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["runs_upserted"] == 30 and summary["checkpoints_upserted"] == 2
    second = json.loads(efsray("sync", "--once", "--json", env=env).stdout)
    assert second["rows_moved"] == 0

    store.checkpoints.set_alias("lstm", "best", 1)
    store.results.save("strat-0", metrics={"sharpe": 9.0})
    third = json.loads(efsray("sync", "--once", "--json", env=env).stdout)
    assert third["runs_upserted"] == 1
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from efsray.backtest_runs").fetchone() == (31,)
        assert conn.execute(
            "select version from efsray.checkpoint_aliases where alias = 'best'"
        ).fetchone() == (1,)
        top = conn.execute(
            "select strategy_id, (metrics->>'sharpe')::float from efsray.backtest_runs "
            "order by (metrics->>'sharpe')::float desc limit 1"
        ).fetchone()
    assert top == ("strat-0", 9.0)

    # Retention removes v1 (no alias, not the latest, keep-last 1, no grace): the catalog
    # keeps its row and marks it removed.
    from efsray.store.checkpoints import RetentionPolicy

    store.checkpoints.set_alias("lstm", "best", 2)
    pruned = store.checkpoints.prune("lstm", policy=RetentionPolicy(keep_last=1), grace=0)
    assert pruned.removed == (1,)
    fourth = json.loads(efsray("sync", "--once", "--json", env=env).stdout)
    assert fourth["checkpoints_marked_removed"] == 1
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "select version, removed_at is not null from efsray.checkpoints order by version"
        ).fetchall()
    assert rows == [(1, True), (2, False)]
