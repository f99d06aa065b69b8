"""Pure functions of the connector: binary COPY encoding, connection strings, symbol lists
(property tests; no server needed)."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.connector import build_conninfo
from efsray.connector.pgcopy import PG_EPOCH_NS, encode_bars
from efsray.connector.sync import parse_symbols
from efsray.errors import DatabaseError, InvalidDataError, InvalidNameError


def _decode(payload: bytes) -> list[tuple[object, ...]]:
    """A plain reference reader of PostgreSQL's binary COPY format."""
    assert payload[:11] == b"PGCOPY\n\xff\r\n\x00"
    pos = 11 + 8
    rows = []
    while True:
        (count,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        if count == -1:
            assert pos == len(payload)
            return rows
        row: list[object] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", payload, pos)
            pos += 4
            row.append(payload[pos : pos + length])
            pos += length
        rows.append(tuple(row))


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=100, deadline=None)
@given(
    micros=st.lists(st.integers(-(2**50), 2**50), min_size=0, max_size=30, unique=True),
    values=st.data(),
    prefix=st.lists(st.text(min_size=0, max_size=12), max_size=2),
)
def test_encode_bars_matches_the_reference_reader(
    micros: list[int], values: st.DataObject, prefix: list[str]
) -> None:
    n = len(micros)
    cols = {
        name: values.draw(st.lists(finite, min_size=n, max_size=n))
        for name in ("open", "high", "low", "close", "volume")
    }
    table = pa.table(
        {
            "timestamp": pa.array([m * 1000 for m in micros], pa.timestamp("ns", tz="UTC")),
            **{k: pa.array(v, pa.float64()) for k, v in cols.items()},
        }
    )
    rows = _decode(encode_bars(table, tuple(prefix)))
    assert len(rows) == n
    for i, row in enumerate(rows):
        texts = [field.decode() for field in row[: len(prefix)]]
        assert texts == prefix
        ts = struct.unpack(">q", row[len(prefix)])[0]
        assert ts * 1000 + PG_EPOCH_NS == micros[i] * 1000
        got = [struct.unpack(">d", f)[0] for f in row[len(prefix) + 1 :]]
        assert got == [cols[k][i] for k in ("open", "high", "low", "close", "volume")]


def test_encode_refuses_sub_microsecond_timestamps() -> None:
    table = pa.table(
        {
            "timestamp": pa.array([1_000, 2_001], pa.timestamp("ns", tz="UTC")),
            **{k: pa.array(np.ones(2)) for k in ("open", "high", "low", "close", "volume")},
        }
    )
    with pytest.raises(InvalidDataError, match="1 bar\\(s\\) have sub-microsecond"):
        encode_bars(table)


@settings(max_examples=100, deadline=None)
@given(
    sslmode=st.sampled_from([None, "disable", "allow", "prefer", "require", "verify-full"]),
    app=st.sampled_from([None, "mine", "x y"]),
    password=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
)
def test_conninfo_keeps_what_the_url_says_and_adds_the_rest(
    sslmode: str | None, app: str | None, password: str
) -> None:
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    query = "&".join(
        f"{k}={quote(v)}" for k, v in (("sslmode", sslmode), ("application_name", app)) if v
    )
    url = f"postgresql://alice:{quote(password, safe='')}@db.example.com:5433/neondb"
    got = conninfo_to_dict(build_conninfo(url + (f"?{query}" if query else "")))
    assert got["sslmode"] == (sslmode or "require")
    assert got["application_name"] == (app or "efsray")
    assert got["password"] == password
    assert (got["host"], got["port"], got["dbname"]) == ("db.example.com", "5433", "neondb")


def test_conninfo_errors_hide_the_password() -> None:
    with pytest.raises(DatabaseError) as err:
        build_conninfo("postgresql://alice:%zzTopSecret@db/x")
    assert "TopSecret" not in str(err.value)


@given(st.lists(st.from_regex(r"[A-Z][A-Z0-9.]{0,8}", fullmatch=True), max_size=6))
def test_parse_symbols(names: list[str]) -> None:
    assert parse_symbols(" , ".join(names)) == names
    assert parse_symbols("*") == "*"
    assert parse_symbols("") == []


def test_parse_symbols_refuses_path_like_names() -> None:
    with pytest.raises(InvalidNameError):
        parse_symbols("AAPL,../etc")


@given(st.text(max_size=80))
def test_application_name_setting(value: str) -> None:
    from efsray.config import load_settings
    from efsray.errors import ConfigError

    ok = 1 <= len(value) <= 63 and all(" " <= c <= "~" for c in value)
    try:
        got = load_settings(neon_application_name=value).neon_application_name
    except ConfigError as exc:
        assert not ok
        assert "NEON_APPLICATION_NAME" in str(exc)
    else:
        assert ok and got == value


@given(st.lists(st.text(alphabet="ABC ,", max_size=5), max_size=5))
def test_sync_symbols_setting_is_normalized(parts: list[str]) -> None:
    from efsray.config import load_settings

    raw = ",".join(parts)
    got = load_settings(neon_sync_symbols=raw).neon_sync_symbols
    if raw.strip() in ("", "*"):
        assert got == raw.strip()
    else:
        assert got == ",".join(p.strip() for p in raw.strip().split(",") if p.strip())
        assert " ," not in got and ", " not in got


def test_timeouts_and_ports_are_validated() -> None:
    from efsray.config import load_settings
    from efsray.errors import ConfigError

    for bad in (
        {"neon_connect_timeout": 0},
        {"neon_pool_timeout": -1},
        {"neon_sync_port": 70000},
        {"neon_sync_interval": 0},
        {"neon_sync_host": "not a host"},
    ):
        with pytest.raises(ConfigError, match=next(iter(bad)).upper()):
            load_settings(**bad)
