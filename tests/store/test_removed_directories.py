"""A process remembers the directories it has made or seen (``nfs.ensure_dir``: no round trip
to ask again). When the store itself removes one (a sweep's bookkeeping pruned, a checkpoint's
data directory, a table by retention) or a whole store is made anew, the next write in that
process must make it again, not fail with ENOENT."""

from __future__ import annotations

import shutil
from pathlib import Path

from efsray.store import Store
from efsray.store.nfs import ensure_dir, write_new
from tests.store._bars import batch


def test_a_directory_removed_after_it_was_seen_is_made_again(tmp_path: Path) -> None:
    ensure_dir(tmp_path / "a" / "b" / "c")
    shutil.rmtree(tmp_path / "a")  # another process's retention, say
    ensure_dir(tmp_path / "a" / "b" / "c" / "d")  # mkdir of d: its parents are gone
    assert (tmp_path / "a" / "b" / "c" / "d").is_dir()
    shutil.rmtree(tmp_path / "a")
    write_new(tmp_path / "a" / "b" / "c" / "f", b"x")  # a create: the same
    assert (tmp_path / "a" / "b" / "c" / "f").read_bytes() == b"x"


def test_a_store_removed_and_created_again_in_one_process(tmp_path: Path) -> None:
    Store(tmp_path / "s").market.append("SPY", "1m", batch(0, 50))
    shutil.rmtree(tmp_path / "s")
    store = Store(tmp_path / "s")  # creates the tree anew: it must not trust what it saw
    assert all((tmp_path / "s" / sub).is_dir() for sub in ("market_data", "models", "results"))
    store.market.append("SPY", "1m", batch(1, 50))
    assert len(store.market.read("SPY", "1m")) == 50
