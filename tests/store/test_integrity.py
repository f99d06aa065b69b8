"""Integrity: a damaged byte of any stored file is a CorruptionError on every read path that
reads it, never wrong data (issue 17.4).

Every byte of every manifest kind is flipped in turn; segments (Arrow IPC and Parquet, small
ones read whole and big ones whose tail reads only the last blocks) are flipped in each
position class: header, data buffers, footer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from efsray.errors import CorruptionError
from efsray.store import EFSDataManager, Store
from efsray.store.blocks import CHECKSUM_BLOCK
from efsray.store.checkpoints import CheckpointStore
from efsray.store.market import MarketDataStore
from tests.store._bars import batch

SERIES = ("AAPL", "1m")


def _flip(path: Path, offset: int, mask: int = 0x01) -> bytes:
    """Flip bits of the byte at ``offset``; return the original content."""
    original = path.read_bytes()
    path.chmod(0o644)  # stored files are read-only (root ignores that; other users do not)
    damaged = bytearray(original)
    damaged[offset] ^= mask
    path.write_bytes(bytes(damaged))
    return original


def _manifest(store: Store, version: int = 1) -> Path:
    path = store.layout.series_dir(*SERIES) / f"versions/000000/v{version:012d}.json"
    assert path.is_file()
    return path


def _segment(store: Store) -> Path:
    (seg,) = (store.layout.series_dir(*SERIES) / "segments").glob("seg-*")
    return seg


def _fresh(store: Store, fmt: str = "arrow") -> MarketDataStore:
    """A market store with empty caches, as another process would read."""
    return MarketDataStore(store.layout, segment_format=fmt)  # type: ignore[arg-type]


def _market_reads(store: Store) -> dict[str, Callable[[], Any]]:
    def seed_face() -> Any:
        manager = EFSDataManager(str(store.layout.root))
        return asyncio.run(manager.load_market_data(*SERIES, limit=50))

    return {
        "full read": lambda: _fresh(store).read(*SERIES),
        "range": lambda: _fresh(store).read(*SERIES, start=0, end=2**62),
        "tail": lambda: _fresh(store).tail(*SERIES, 50),
        "pandas": lambda: _fresh(store).read(*SERIES, output="pandas"),
        "info": lambda: _fresh(store).info(*SERIES),
        "compact": lambda: _fresh(store).compact(*SERIES),
        "seed's face": seed_face,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_every_byte_of_a_market_manifest_is_verified(store: Store) -> None:
    store.market.append(*SERIES, batch(0, 5000))
    path = _manifest(store)
    raw = path.read_bytes()
    assert raw.startswith(b'{"checksum":"xxh3-64:')
    for offset in range(len(raw)):
        for mask in (0x01, 0x20):
            _flip(path, offset, mask)
            with pytest.raises(CorruptionError, match="damaged"):
                _fresh(store).info(*SERIES)
            path.write_bytes(raw)
    assert _fresh(store).read(*SERIES).num_rows == 5000


def test_an_edited_row_count_is_caught_by_every_read_path(store: Store) -> None:
    store.market.append(*SERIES, batch(0, 5000))
    path = _manifest(store)
    raw = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(raw.replace(b'"rows":5000', b'"rows":5001'))
    for what, read in _market_reads(store).items():
        with pytest.raises(CorruptionError, match=str(path.name)):
            read()
        assert what


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_segment_flips_in_header_data_and_footer_are_caught(store: Store, fmt: str) -> None:
    market = MarketDataStore(store.layout, segment_format=fmt)  # type: ignore[arg-type]
    market.append(*SERIES, batch(0, 5000))
    seg = _segment(store)
    size = seg.stat().st_size
    assert size < CHECKSUM_BLOCK  # one block: every read path reads it whole
    positions = {
        "magic": 0,
        "header": 12,
        "first data": size // 8,
        "middle": size // 2,
        "last data": size - 600,
        "footer": size - 40,
        "footer length": size - 9,
        "end magic": size - 1,
    }
    for where, offset in positions.items():
        original = _flip(seg, offset)
        for what, read in _market_reads(store).items():
            if what in ("info", "compact"):
                continue  # the manifest only; one segment has nothing to merge with
            with pytest.raises(CorruptionError, match=seg.name) as caught:
                read()
            assert "checksum" in str(caught.value), (where, what)
        seg.write_bytes(original)
    assert _fresh(store).read(*SERIES).equals(batch(0, 5000))


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_a_big_segments_tail_verifies_the_blocks_it_reads(store: Store, fmt: str) -> None:
    """A tail of a big segment reads its footer and last batches only: those blocks are
    verified; a damaged block it does not read cannot change its answer, and every full read
    still catches it."""
    market = MarketDataStore(store.layout, segment_format=fmt)  # type: ignore[arg-type]
    rows = 300_000
    bars = _random_bars(rows)  # incompressible: a big Parquet file too
    market.append(*SERIES, bars)
    seg = _segment(store)
    size = seg.stat().st_size
    assert size > 5 * CHECKSUM_BLOCK
    expected = bars.slice(rows - 100)
    for offset in (size - 1, size - 30, size - CHECKSUM_BLOCK // 2):  # footer, last data
        original = _flip(seg, offset)
        with pytest.raises(CorruptionError, match="checksum"):
            _fresh(store, fmt).tail(*SERIES, 100)
        with pytest.raises(CorruptionError, match="checksum"):
            _fresh(store, fmt).read(*SERIES)
        seg.write_bytes(original)
    for offset in (0, 100, CHECKSUM_BLOCK + 5):  # header and early data: not the tail's
        original = _flip(seg, offset)
        assert _fresh(store, fmt).tail(*SERIES, 100).equals(expected)
        with pytest.raises(CorruptionError, match="checksum"):
            _fresh(store, fmt).read(*SERIES)
        seg.write_bytes(original)


def test_compaction_verifies_its_inputs(store: Store) -> None:
    market = MarketDataStore(store.layout, auto_compact=False)
    market.append(*SERIES, batch(0, 1000))
    market.append(*SERIES, batch(1, 1000))
    first = min((store.layout.series_dir(*SERIES) / "segments").glob("seg-*"), key=_mtime)
    original = _flip(first, first.stat().st_size // 2)
    with pytest.raises(CorruptionError, match=first.name):
        MarketDataStore(store.layout).compact(*SERIES)
    first.write_bytes(original)
    assert MarketDataStore(store.layout).compact(*SERIES) is not None
    assert _fresh(store).read(*SERIES).num_rows == 2000


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def _random_bars(n: int) -> pa.Table:
    table = batch(0, n)
    rng = np.random.default_rng(17)
    close = 100 + rng.random(n)
    prices = {"open": close, "high": close + 1, "low": close - 1, "close": close}
    for name, values in {**prices, "volume": rng.random(n)}.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(values))
    return table


def test_a_truncated_or_extended_segment_is_caught(store: Store) -> None:
    store.market.append(*SERIES, batch(0, 5000))
    seg = _segment(store)
    original = seg.read_bytes()
    for damaged in (original[:-1], original + b"\0"):
        seg.write_bytes(damaged)
        for what, read in _market_reads(store).items():
            if what in ("info", "compact"):
                continue  # the manifest only; one segment has nothing to merge with
            with pytest.raises(CorruptionError, match=seg.name):
                read()
    seg.write_bytes(original)


def test_every_byte_of_checkpoint_and_alias_manifests_is_verified(store: Store) -> None:
    cps = store.checkpoints
    cps.save("m", b"weights" * 100, metadata={"loss": 0.5})
    cps.set_alias("m", "best", 1)
    model = store.layout.checkpoints / "m"
    manifests = {  # fresh stores: no manifest cached
        "checkpoint": (
            model / "versions/000000/v000000000001.json",
            lambda: CheckpointStore(store.layout).info("m", 1),
        ),
        "aliases": (
            model / "refs/versions/000000/v000000000001.json",
            lambda: CheckpointStore(store.layout).aliases("m"),
        ),
    }
    for what, (path, read) in manifests.items():
        raw = path.read_bytes()
        assert raw.startswith(b'{"checksum":"xxh3-64:'), what
        for offset in range(len(raw)):
            _flip(path, offset)
            with pytest.raises(CorruptionError, match="damaged"):
                read()
            path.write_bytes(raw)
    assert cps.load_bytes("m", alias="best")[0] == b"weights" * 100


def test_checkpoint_data_flips_are_caught(store: Store) -> None:
    info = store.checkpoints.save("m", b"weights" * 1000)
    path = Path(info.path)
    size = path.stat().st_size
    for offset in (0, size // 2, size - 1):
        original = _flip(path, offset)
        with pytest.raises(CorruptionError, match="checksum"):
            store.checkpoints.load_bytes("m")
        path.write_bytes(original)


def _as_written_before_checksums(path: Path) -> None:
    """Rewrite a market manifest as efsray wrote it before checksums existed."""
    manifest = json.loads(path.read_bytes())
    path.chmod(0o644)
    del manifest["checksum"]
    for entry in manifest["segments"]:
        del entry["xxh3_64"]
    path.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())


def test_stores_written_before_checksums_stay_readable(store: Store) -> None:
    """A manifest without a checksum (it begins {"format":) and segments without block
    checksums are read as before, checked by size; ``verified`` tells them apart."""
    store.market.append(*SERIES, batch(0, 5000))
    _as_written_before_checksums(_manifest(store))
    assert _fresh(store).read(*SERIES).equals(batch(0, 5000))
    assert _fresh(store).tail(*SERIES, 10).num_rows == 10
    _, vlog = _fresh(store)._series(*SERIES)
    assert vlog.verified(1) is False
    info = _fresh(store).append(*SERIES, batch(1, 10, start_minute=5000))
    assert vlog.verified(info.version) is True
    assert _fresh(store).read(*SERIES).num_rows == 5010


def test_verify_checks_every_byte_and_reports_old_parts(store: Store) -> None:
    store.market.append(*SERIES, batch(0, 5000))
    report = _fresh(store).verify(*SERIES)
    assert report.fully_checksummed and report.segments == 1 and report.version == 1
    seg = _segment(store)
    original = _flip(seg, seg.stat().st_size // 3)
    with pytest.raises(CorruptionError, match=seg.name):
        _fresh(store).verify(*SERIES)
    seg.write_bytes(original)
    _as_written_before_checksums(_manifest(store))
    old = _fresh(store).verify(*SERIES)
    assert not old.manifest_checksummed and old.segments_without_checksums == 1
    assert not old.fully_checksummed
    seg.unlink()
    with pytest.raises(CorruptionError, match="missing"):
        _fresh(store).verify(*SERIES)
