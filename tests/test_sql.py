"""SQL over the store (efsray.sql, efsray data sql) and MarketDataStore.files, with the
examples of docs/sql.md run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pyarrow as pa
import pytest

from efsray.store import Store
from tests.store._bars import batch

duckdb = pytest.importorskip("duckdb", reason="the sql extra (duckdb) is not installed")

DOC = Path(__file__).resolve().parents[1] / "docs" / "sql.md"


def _series(root: Path, fmt: str, symbol: str = "AAPL") -> Store:
    """Two versions; the second re-writes the first's bars, so segments/ holds a superseded
    segment that a glob would count twice."""
    store = Store(root, segment_format=fmt)
    store.market.append(symbol, "1m", batch(0, 50))
    store.market.append(symbol, "1m", batch(0, 80))  # bars 0..49 again, then 30 new
    return store


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_files_are_exactly_one_version(tmp_path: Path, fmt: str) -> None:
    from efsray.sql import market_dataset, query

    store = _series(tmp_path / "s", fmt)
    on_disk = list((tmp_path / "s").rglob(f"segments/*.{fmt}"))
    latest, first = store.market.files("AAPL", "1m"), store.market.files("AAPL", "1m", 1)
    assert set(latest) | set(first) <= set(on_disk) and len(on_disk) > len(latest)
    assert all(p.exists() for p in latest)
    assert query(store, "SELECT count(*) AS n FROM market('AAPL', '1m')").to_pylist() == [{"n": 80}]
    one = query(store, "SELECT count(*) AS n FROM market('AAPL', '1m', 1)")
    assert one.to_pylist() == [{"n": 50}]
    expected = store.market.read("AAPL", "1m")
    got = market_dataset(store, "AAPL", "1m").to_table().sort_by("timestamp")
    assert got.select(expected.column_names).equals(expected)


def test_mixed_formats_and_a_column_added_later(tmp_path: Path) -> None:
    from efsray.sql import query

    Store(tmp_path / "s", segment_format="arrow").market.append("X", "1m", batch(0, 10))
    later = batch(10, 10).append_column("vwap", pa.array([1.0] * 10))
    store = Store(tmp_path / "s", segment_format="parquet")
    store.market.append("X", "1m", later)
    out = query(store, "SELECT count(*) AS n, count(vwap) AS v FROM market('X', '1m')")
    assert out.to_pylist() == [{"n": 20, "v": 10}]


def test_cli_sql_and_its_errors(cli, tmp_path: Path) -> None:
    _series(tmp_path / "s", "arrow")
    root = str(tmp_path / "s")
    res = cli(
        "data", "sql", "SELECT count(*) AS n FROM market('AAPL','1m')", "--root", root, "--json"
    )
    assert res.code == 0, res.err and res.json() == [{"n": 80}]
    bad = cli("data", "sql", "SELEC 1", "--root", root)
    assert bad.code == 2 and "syntax error" in bad.err
    missing = cli("data", "sql", "SELECT * FROM market('NOPE','1m')", "--root", root)
    assert missing.code == 3


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_python_examples_run(tmp_path: Path) -> None:
    pytest.importorskip("polars")
    store = _series(tmp_path / "efs", "arrow")
    _series(tmp_path / "efs", "arrow", symbol="MSFT")
    for code in _blocks("python"):
        code = code.replace('"/mnt/efs"', repr(str(store.root)))
        scope: dict[str, object] = {}
        exec(compile(code, str(DOC), "exec"), scope)
        assert scope["table"].to_pylist() == [{"bars": 80}]  # type: ignore[attr-defined]
        assert scope["frame"].height == 80  # type: ignore[attr-defined]
        assert len(scope["paths"]) >= 1  # type: ignore[arg-type]


def test_docs_cli_examples_run(cli, tmp_path: Path) -> None:
    store = _series(tmp_path / "efs", "arrow")
    _series(tmp_path / "efs", "arrow", symbol="MSFT")
    commands = [
        c for c in re.split(r"\n(?=efsray )", _blocks("bash")[0].strip()) if c.startswith("efsray")
    ]
    assert len(commands) == 3
    for command in commands:
        argv = shlex.split(command.replace("\n", " "))[1:]
        res = cli(*argv, "--root", str(store.root))
        assert res.code == 0, (command, res.err)
