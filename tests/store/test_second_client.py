"""A second client's stale negative lookup must not make a log look empty.

Two simfs mounts of one backing directory are two clients of one server, each with its own
kernel caches. The reader's mount caches lookups (negative ones included) for longer than a
test lasts, like an NFS client trusts a negative dentry until the directory's attributes
expire (acdirmin..acdirmax, 30-60 s on EFS): a version the reader probed before it existed
stays invisible to it for the whole test, deterministically.

The sequence (docs/store.md, "What a second client sees"): the reader sees version 1, which
makes it probe version 2 (absent, now cached as absent); the writer commits version 2 and
HEAD = 2; a new handle on the reader reads HEAD = 2 and cannot open version 2. It must then
answer version 1 (what it can see), never "nothing".
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from efsray.errors import StorageError
from efsray.simfs import SimFSProcess
from efsray.store import Store
from efsray.store.nfs import VersionLog
from tests.store import _ckpt_workers as w
from tests.store._bars import batch, batch_ids

CACHE = 600.0  # seconds: the reader's negative lookups outlive the test

pytestmark = pytest.mark.fuse


@pytest.fixture
def clients(simfs_factory: Callable[..., SimFSProcess], tmp_path: Path) -> tuple[Path, Path]:
    """(writer's store root, reader's store root): one store through two mounts."""
    backing = tmp_path / "backing"
    backing.mkdir()
    writer = simfs_factory(backing=backing, attr_timeout=CACHE)
    reader = simfs_factory(backing=backing, attr_timeout=CACHE)
    return writer.path / "store", reader.path / "store"


def _invisible_to_reader(reader_root: Path, path: Path) -> bool:
    """True if ``path`` (in the backing store) exists but the reader's mount cannot open it:
    the precondition of the bug, checked so that the test cannot pass vacuously."""
    try:
        with open(reader_root / path, "rb"):
            return False
    except FileNotFoundError:
        return True


def test_market_read_falls_back_to_the_version_the_reader_can_see(
    clients: tuple[Path, Path],
) -> None:
    writer_root, reader_root = clients
    writer = Store(writer_root)
    writer.market.append("SPY", "1m", batch(0))
    assert Store(reader_root).market.info("SPY", "1m").version == 1  # probes version 2
    assert writer.market.append("SPY", "1m", batch(1)).version == 2
    log = VersionLog(writer_root / "market" / "SPY" / "1m", "series SPY/1m")
    v2 = log.path(2).relative_to(writer_root)
    assert _invisible_to_reader(reader_root, v2), "the reader's mount did not cache v2 as absent"

    reader = Store(reader_root)  # a new handle: nothing known in process, HEAD says 2
    info = reader.market.info("SPY", "1m")
    assert info.version == 1
    table = reader.market.read("SPY", "1m")
    assert sorted(set(batch_ids(table))) == [0]
    assert reader.market.tail("SPY", "1m", 50).num_rows == 50

    # Later commits the reader never probed: it opens the one HEAD names (HEAD is rewritten
    # at every 4th version: 4) although 2 stays hidden. (Version 3 alone would not do: the
    # reader steps forward from HEAD = 1 and stops at the hidden 2. On NFS, opening the
    # directory before the probe makes 2 visible; FUSE's negative entries expire by time only.)
    assert writer.market.append("SPY", "1m", batch(2)).version == 3
    assert writer.market.append("SPY", "1m", batch(3)).version == 4
    assert Store(reader_root).market.info("SPY", "1m").version == 4
    assert sorted(set(batch_ids(Store(reader_root).market.read("SPY", "1m")))) == [0, 1, 2, 3]


def test_checkpoint_latest_version_is_never_none_after_one_was_seen(
    clients: tuple[Path, Path],
) -> None:
    writer_root, reader_root = clients
    writer = Store(writer_root).checkpoints
    writer.save(w.MODEL, w.payload("a", 4096), {"seed": "a", "size": 4096})
    assert Store(reader_root).checkpoints.latest_version(w.MODEL) == 1
    writer.save(w.MODEL, w.payload("b", 4096), {"seed": "b", "size": 4096})

    reader = Store(reader_root).checkpoints
    assert reader.latest_version(w.MODEL) == 1
    data, info = Store(reader_root).checkpoints.load_bytes(w.MODEL)
    assert (info.version, data) == (1, w.payload("a", 4096))


def test_version_log_falls_back_below_an_invisible_head(clients: tuple[Path, Path]) -> None:
    """The log itself, with several versions below the hidden one and no listing help
    needed: the answer is the newest that opens, and reading forward from it still works."""
    writer_root, reader_root = clients
    wlog = VersionLog(writer_root / "log", "test log")
    for i in range(3):
        wlog.commit(lambda base, _m, i=i: {"i": i, "base": base})
    rlog = VersionLog(reader_root / "log", "test log")
    found = rlog.latest()
    assert found is not None and found[0] == 3  # and probes version 4: absent
    wlog.commit(lambda base, _m: {"i": 3, "base": base})

    found = VersionLog(reader_root / "log", "test log").latest()
    assert found is not None
    version, manifest = found
    assert (version, manifest["i"]) == (3, 2)
    assert VersionLog(reader_root / "log", "test log").known_versions() == (3, [1, 2, 3])


def test_a_writer_on_the_stale_client_gets_a_retryable_error_not_a_fork(
    clients: tuple[Path, Path],
) -> None:
    """A commit from the lagging client: its base is version 1, version 2 exists on the
    server (link answers EEXIST) but stays invisible to it. It must neither overwrite nor
    skip version 2; it says what happened and that a retry will do."""
    writer_root, reader_root = clients
    wlog = VersionLog(writer_root / "log", "test log")
    wlog.commit(lambda base, _m: {"by": "writer", "base": base})
    rlog = VersionLog(reader_root / "log", "test log")
    assert rlog.latest() is not None  # version 1; probes version 2
    wlog.commit(lambda base, _m: {"by": "writer", "base": base})
    try:
        committed = VersionLog(reader_root / "log", "test log").commit(
            lambda base, _m: {"by": "reader", "base": base}
        )
    except StorageError as exc:
        assert exc.errno == errno.EEXIST
        assert "cache" in str(exc) and "retry" in str(exc).lower()
    else:  # the client saw version 2 after all: it must have built on it
        assert committed is not None and committed[0] == 3 and committed[1]["base"] == 2
    assert VersionLog(writer_root / "log", "test log").read(2)["by"] == "writer"
