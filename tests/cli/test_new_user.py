"""Issue 20's defects, each as a new user met it: every one failed before its fix."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from efsray.config import mask_dsn
from efsray.deadline import run_in_child


def _daily_equity_csv(path: Path, n: int = 300) -> Path:
    """Weekday-only daily bars, the shape of a US stock's history."""
    idx = pd.bdate_range("2022-01-03", periods=n, tz="UTC")
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, n)))
    frame = pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e3},
        index=idx,
    )
    frame.to_csv(path)  # pandas' default: the index first, unnamed
    return path


def test_malformed_connection_string_is_masked(cli, monkeypatch) -> None:
    monkeypatch.setenv("NEON_CONNECTION_STRING", "u:SECRETPW@host")
    res = cli("db", "status")
    assert res.code == 2
    assert "SECRETPW" not in res.err and "u:***@host" in res.err


@settings(deadline=None)  # a loaded CI machine: no per-example deadline
@given(st.text(alphabet="XYZ#?/:!%'", min_size=3).filter(lambda p: p[0] != "'" and "X" in p))
@example("//X")  # "u://X@host" read as a URL of scheme 'u' showed it (found by CI)
def test_mask_dsn_never_shows_a_password(password: str) -> None:
    for dsn in (
        f"u:{password}@host",
        f"postgresql://u:{password}@host/db",
        f"host=h user=u password={password}",
        password,
    ):
        assert password not in mask_dsn(dsn), dsn


def test_env_file_not_utf8(cli, tmp_path: Path) -> None:
    env = tmp_path / "latin1.env"
    env.write_bytes(b"EFS_MOUNT_PATH=/tmp/caf\xe9\n")
    res = cli("config", "--env-file", env)
    assert res.code == 2 and "not UTF-8" in res.err and "line 1" in res.err


@pytest.mark.parametrize("timeout", [math.inf, math.nan, 0.0, -1.0])
def test_deadline_refuses_an_unusable_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be"):
        run_in_child("tests.test_deadline:echo", {}, timeout=timeout)


def test_user_text_is_not_turned_into_emoji(cli, tmp_path: Path) -> None:
    assert cli("init", "--root", tmp_path / "s").code == 0
    res = cli("backtest", "--local", "--grid", "fast=a:b:c", "--root", tmp_path / "s")
    assert res.code == 2 and "fast=a:b:c" in res.err and "\U0001f171" not in res.err


@pytest.fixture
def equity_store(cli, tmp_path: Path) -> Path:
    root = tmp_path / "s"
    csv = _daily_equity_csv(tmp_path / "GOOG.csv")
    assert cli("data", "ingest", csv, "-s", "GOOG", "-t", "1d", "--root", root).code == 0
    return root


def test_backtest_json_when_the_grid_skips_points(cli, equity_store: Path) -> None:
    res = cli(
        "backtest", "--local", "--timeframe", "1d", "--grid", "fast=10|30,slow=20",
        "--root", equity_store, "--json",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert res.json()["rejected"] == [{"params": {"fast": 30, "slow": 20}, "reason": "fast < slow"}]


def _sharpe(cli, root: Path, *extra: str) -> tuple[float, float]:
    res = cli(
        "backtest", "--local", "--timeframe", "1d", "--grid", "fast=10,slow=30",
        "--root", root, "--json", *extra,
    )  # fmt: skip
    assert res.code == 0, res.err
    body = res.json()
    return body["ranking"][0]["sharpe"], body["periods_per_year"]


def test_daily_stock_bars_annualize_over_252_days(cli, equity_store: Path) -> None:
    auto, auto_periods = _sharpe(cli, equity_store)
    crypto, crypto_periods = _sharpe(cli, equity_store, "--calendar", "24/7")
    explicit, explicit_periods = _sharpe(cli, equity_store, "--periods-per-year", "252")
    assert (auto_periods, crypto_periods, explicit_periods) == (252, 365, 252)
    assert auto == pytest.approx(explicit)
    assert auto / crypto == pytest.approx(math.sqrt(252 / 365))


def test_ranked_table_keeps_parameters_whole_in_a_pipe(cli, equity_store: Path) -> None:
    res = cli(
        "backtest", "--local", "--timeframe", "1d", "--root", equity_store,
        "--grid", "fast=10|12,slow=30|40",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "fast=10 slow=30" in res.out and "fast=12 slow=40" in res.out
    assert max(len(line) for line in res.out.splitlines()) <= 80
