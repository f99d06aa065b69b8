"""Market data internals: the version log's HEAD hint and races, damaged segments.

The behaviour through the public API (round trips, ranges, tails, versions, merging,
compaction, names) is the conformance suite's, run on every backend
(tests/conformance/cases/market.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from efsray.errors import (
    CorruptionError,
)
from efsray.store import Store
from tests.store._bars import batch


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_latest_survives_a_removed_head_version_and_never_restarts_at_one(store: Store) -> None:
    from efsray.errors import StorageError
    from efsray.store.nfs import VersionLog

    for i in range(6):
        store.market.append("AAPL", "1m", batch(i))
    series = store.layout.series_dir("AAPL", "1m")
    (series / "HEAD").write_text("2\n")  # a stale hint
    for v in (1, 2, 3):  # retention removed the oldest versions, the hint's among them
        (series / f"versions/000000/v{v:012d}.json").unlink()
    fresh = Store(store.root)
    assert fresh.market.info("AAPL", "1m").version == 6
    vlog = VersionLog(series, "series AAPL/1m")
    assert vlog._gallop(2)[0] in (4, 6)
    # every manifest gone but HEAD still says 2: a writer must not start a second history
    for v in (4, 5, 6):
        (series / f"versions/000000/v{v:012d}.json").unlink()
    with pytest.raises(StorageError, match="HEAD names version 2"):
        Store(store.root).market.append("AAPL", "1m", batch(9))


def test_a_writer_that_loses_rebuilds_on_the_newest_version(tmp_path: Path) -> None:
    """Others commit five versions while a writer builds its change: it loses one race, then
    rebuilds on the newest version. Stepping one version at a time, a slower writer would lose
    every race to a faster one."""
    from efsray.store.nfs import VersionLog

    mine = VersionLog(tmp_path / "log", "test log")
    others = VersionLog(tmp_path / "log", "test log")
    others.commit(lambda v, m: {"n": 1})
    bases: list[int] = []

    def build(base_version: int, base: dict[str, object] | None) -> dict[str, object]:
        bases.append(base_version)
        if len(bases) == 1:
            for _ in range(5):
                others.commit(lambda v, m: {"n": 1})
        return {"n": 1}

    committed = mine.commit(build)
    assert committed is not None and committed[0] == 7
    assert bases == [1, 6]


@pytest.mark.parametrize("change", ["longer", "shorter"])
def test_a_damaged_segment_is_reported_by_every_read_path(tmp_path: Path, change: str) -> None:
    store = Store(tmp_path / "s", merge_factor=16)
    for i in range(3):  # 3 x 7.2 MB: a whole read to pandas takes the contiguous path
        store.market.append("AAPL", "1m", batch(i, n=150_000))
    segments = sorted((store.layout.series_dir("AAPL", "1m") / "segments").iterdir())
    victim = segments[1]
    data = victim.read_bytes()
    victim.write_bytes(data + b"!" if change == "longer" else data[:-1])
    for output in ("pandas", "polars", "arrow"):
        with pytest.raises(CorruptionError, match=rf"{victim.name} has \d+ bytes"):
            store.market.read("AAPL", "1m", output=output)  # type: ignore[arg-type]
