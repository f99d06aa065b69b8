"""``efsray results ls`` readable at 80 columns and in pipes, its usage errors, and
``efsray results migrate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from efsray.store import Store

METRICS = ("sharpe", "sortino", "total_return", "annualized_return", "max_drawdown",
           "win_rate", "trades", "calmar", "exposure", "turnover")  # fmt: skip


def _sweep_like(root: Path, n: int = 45) -> list[str]:
    store = Store(root)
    runs = [
        {"metrics": {m: (i + k) / 7 for k, m in enumerate(METRICS)},
         "params": {"fast": i, "slow": 30 + i, "entry_z": 1.5}}
        for i in range(n)
    ]  # fmt: skip
    return [info.run_id for info in store.results.save_batch("ma_crossover", runs)]


@pytest.mark.parametrize("bad", [["--limit", "-1"], ["--limit", "0"], ["--limit", "abc"]])
def test_a_bad_limit_is_a_usage_error(cli, tmp_path: Path, bad: list[str]) -> None:
    _sweep_like(tmp_path / "s", 3)
    result = cli("results", "ls", "--root", tmp_path / "s", *bad)
    assert result.code == 2 and "--limit" in result.err
    assert "Traceback" not in result.err and result.out == ""


def test_ls_has_a_default_limit_and_says_when_it_cut(cli, tmp_path: Path) -> None:
    ids = _sweep_like(tmp_path / "s")
    listed = cli("results", "ls", "--root", tmp_path / "s")
    assert listed.code == 0, listed.err
    shown = [line.split()[0] for line in listed.out.splitlines() if line.strip()[:2] == "01"]
    assert shown == sorted(ids)[:20]
    assert "20 runs shown; more match" in listed.out
    every = cli("results", "ls", "--root", tmp_path / "s", "--all", "--json").json()
    assert len(every) == 45
    assert "3 runs" in cli("results", "ls", "--root", tmp_path / "s", "-n", "3",
                           "--where", "sharpe<0.4").out  # fmt: skip
    picked = cli("results", "ls", "--root", tmp_path / "s", "-n", "2", "-c", "sharpe,params.fast")
    assert "params.fast" in picked.out and "sortino" not in picked.out
    wrong = cli("results", "ls", "--root", tmp_path / "s", "-c", "nope")
    assert wrong.code == 2 and "no column 'nope'" in wrong.err


def test_ls_fits_80_columns_in_a_pipe(tmp_path: Path) -> None:
    """Through a pipe (no terminal), with 10 metrics and 3 parameters: every line fits 80
    columns and every run id is whole (``results show`` needs it)."""
    ids = _sweep_like(tmp_path / "s", 5)
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "80", "PYTHONPATH": str(Path.cwd() / "src")}
    out = subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", "results", "ls", "--root", str(tmp_path / "s")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    if "No module named efsray.cli.app.__main__" in out.stderr or out.returncode != 0:
        out = subprocess.run(
            [sys.executable, "-c", "from efsray.cli.app import main; raise SystemExit(main())",
             "results", "ls", "--root", str(tmp_path / "s")],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for run_id in ids:
        assert any(line.split() and line.split()[0] == run_id for line in lines)
    assert any("sharpe" in line and "params" in line for line in lines)
    assert any("entry_z=1.5 fast=0" in line for line in lines)  # parameters fold, not cut


def test_migrate_command(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = Store(root)
    ids = [
        store.results.legacy.save("mom", metrics={"sharpe": i / 2}, params={"k": i},
                                  trades=pd.DataFrame({"x": [i, i + 1]})).run_id
        for i in range(7)
    ]  # fmt: skip
    damaged = Path(store.results.run_path("mom", ids[6]))
    damaged.write_text("{not json")
    dry = cli("results", "migrate", "--root", root, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    report = dry.json()
    assert report["found"] == 7 and report["migrated"] == 0 and len(report["skipped"]) == 1
    assert store.results.files("mom") == []
    done = cli("results", "migrate", "--root", root, "--batch-size", "4")
    assert done.code == 0, done.err
    assert "migrated 6 of 7 legacy runs" in done.out and "skipped" in done.out
    assert len(store.results.files("mom")) >= 1
    assert damaged.exists()  # a damaged run stays where it was
    listed = cli("results", "ls", "--root", root, "--json", "--all").json()
    assert sorted(r["run_id"] for r in listed) == sorted(ids[:6])
    fresh = Store(root)
    assert fresh.results.load(ids[2]).trades["x"].tolist() == [2, 3]
    again = cli("results", "migrate", "--root", root, "--json").json()
    assert again["migrated"] == 0 and again["found"] == 1  # only the damaged one is left


def test_cleanup_vacuums_the_results_tables(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    for _ in range(3):
        _sweep_like(root, 4)
    versions = root / "results" / "tables" / "ma_crossover" / "versions"
    assert len(list(versions.rglob("v*.json"))) >= 3
    args = ("cleanup", "--root", root, "--days", "36500", "--grace", "0", "--force", "--json")
    dry = cli(*args, "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.json()["areas"]["results"]["files"] >= 2
    assert len(list(versions.rglob("v*.json"))) >= 3
    done = cli(*args)
    assert done.code == 0, done.err
    assert done.json()["areas"]["results"] == dry.json()["areas"]["results"]
    assert len(list(versions.rglob("v*.json"))) == 1
    assert len(cli("results", "ls", "--root", root, "--json", "--all").json()) == 12
