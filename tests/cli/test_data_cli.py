from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from tests.store._bars import batch


def write_vendor_csv(path: Path) -> None:
    frame = batch(0, 30).to_pandas()
    frame["timestamp"] = (
        frame["timestamp"].dt.tz_convert("America/New_York").dt.strftime("%m/%d/%Y %H:%M:%S")
    )
    frame.rename(
        columns={
            "timestamp": "Date",
            "open": "Open",
            "high": "High",
            "low": "Low",
            "close": "Close",
            "volume": "Vol",
        }
    ).to_csv(path, index=False)


def test_init_ingest_show_ls_history_compact(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    assert cli("init", "--root", root).code == 0
    again = cli("init", "--root", root, "--json")
    assert again.code == 0 and again.json()["created"] is False

    parquet = tmp_path / "bars.parquet"
    pq.write_table(batch(0), parquet)
    res = cli("data", "ingest", parquet, "-s", "AAPL", "-t", "1m", "--root", root, "--json")
    assert res.code == 0, res.err
    assert res.json()["version"] == 1 and res.json()["rows_written"] == 100

    vendor = tmp_path / "vendor.csv"
    write_vendor_csv(vendor)
    res = cli(
        "data",
        "ingest",
        vendor,
        "-s",
        "MSFT",
        "-t",
        "1m",
        "--root",
        root,
        "--map",
        "Date=timestamp",
        "--tz",
        "America/New_York",
        "--timestamp-format",
        "%m/%d/%Y %H:%M:%S",
        "--json",
    )
    assert res.code == 0, res.err
    shown = cli("data", "show", "MSFT", "1m", "--root", root, "--json", "-n", "1").json()
    assert shown[0]["timestamp"] == batch(0, 30).column("timestamp")[-1].as_py().isoformat()

    gz = tmp_path / "bars.csv.gz"
    with gzip.open(gz, "wt") as f:
        batch(1).to_pandas().to_csv(f, index=False)
    assert cli("data", "ingest", gz, "-s", "AAPL", "-t", "1m", "--root", root).code == 0

    listed = cli("data", "ls", "--root", root, "--json").json()
    assert [(s["symbol"], s["rows"]) for s in listed] == [("AAPL", 200), ("MSFT", 30)]
    table = cli("data", "show", "AAPL", "1m", "--root", root, "--tail", "5")
    assert table.code == 0 and "AAPL/1m v2: 5 of 200 bars" in table.out
    ranged = cli(
        "data",
        "show",
        "AAPL",
        "1m",
        "--root",
        root,
        "--json",
        "--columns",
        "close",
        "--start",
        str(batch(0).column("timestamp")[10]),
        "--version",
        "1",
    )
    assert len(ranged.json()) == 90 and set(ranged.json()[0]) == {"timestamp", "close"}
    csv = cli("data", "show", "AAPL", "1m", "--root", root, "--csv", "-n", "3")
    assert csv.out.splitlines()[0].startswith('"timestamp"') and len(csv.out.splitlines()) == 4
    history = cli("data", "history", "AAPL", "1m", "--root", root, "--json").json()
    assert [h["version"] for h in history] == [2, 1]
    compact = cli("data", "compact", "--root", root, "--json")
    assert compact.code == 0 and [c["symbol"] for c in compact.json()] == ["AAPL"]
    assert cli("data", "compact", "AAPL", "--root", root).code == 2


def test_errors_are_messages_with_exit_codes(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    missing = cli("data", "show", "NOPE", "1m", "--root", root)
    assert missing.code == 4  # not an efsray store yet
    cli("init", "--root", root)
    missing = cli("data", "show", "NOPE", "1m", "--root", root)
    assert missing.code == 3 and "no market data for NOPE/1m" in missing.err
    bad = tmp_path / "bad.csv"
    pd.DataFrame(
        {
            "timestamp": ["2024-01-01"],
            "open": [1.0],
            "high": [0.5],
            "low": [0.9],
            "close": [1.0],
            "volume": [1.0],
        }
    ).to_csv(bad, index=False)
    res = cli("data", "ingest", bad, "-s", "AAPL", "-t", "1m", "--root", root)
    assert res.code == 2 and "high below max(open, close)" in res.err
    assert "Traceback" not in res.err
    res = cli("data", "ingest", bad, "-s", "../etc", "-t", "1m", "--root", root)
    assert res.code == 2 and "invalid symbol" in res.err
    res = cli("data", "ingest", tmp_path / "none.csv", "-s", "A", "-t", "1m", "--root", root)
    assert res.code == 2 and "does not exist" in res.err
    res = cli("data", "ingest", bad, "-s", "A", "-t", "1m", "--root", root, "--map", "nonsense")
    assert res.code == 2 and "SOURCE=TARGET" in res.err
    assert cli("data", "ls", "--root", root, "--json").json() == []


def test_demo_runs_and_is_safe_to_rerun(cli, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    first = cli("demo", "--root", root, "--symbols", "2", "--years", "0.2", "--json", "--local")
    assert first.code == 0, first.err
    second = cli("demo", "--root", root, "--symbols", "2", "--years", "0.2", "--json", "--local")
    series = second.json()["series"]
    assert [s["rows"] for s in series] == [s["rows"] for s in first.json()["series"]]
