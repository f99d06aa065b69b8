"""Round trips per store operation on the EFS-like mount (issue 18.2), counted by simfs with
an EFS client's attribute cache (3 s, acregmin) and normalized to what an NFS client sends:
one READ or WRITE per 1 MiB (rsize/wsize) of each file, one CLOSE per close() (FUSE's
``flush``; its ``release`` is the same close), and an fsync only where it is a COMMIT: after
a file of more than one WRITE (the Linux client syncs a file that fits one WRITE by sending it
FILE_SYNC; the QEMU guests' mountstats show no COMMIT in 20 appends). Counts are
deterministic but for lookups (the kernel's cache clock), hence small margins on the bounds.

The budgets of issue 18 met here: tail(1000) and full reads repeated in one process. Not met
(docs/store.md says why, and which invariant each missing round trip buys): appends, first
reads, checkpoint saves, and a checkpoint load by one more (the directory revalidation that
lets a reader see another client's commit at once); their bounds below guard the measured
figures against regressions. The figure of record is the Linux client's own count, in the
QEMU guests (docs/store.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from efsray.simfs import SimFSProcess
from efsray.store import Store
from tests.store._bars import batch

MiB = 1 << 20
APPENDS = 20


@pytest.fixture
def efs(simfs_factory: Callable[..., SimFSProcess]) -> SimFSProcess:
    return simfs_factory(profile="none", attr_timeout=3.0)


def _nfs_ops(fs: SimFSProcess, call: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``call``; its server operations as an NFS client would send them, and by kind."""
    fs.control.start_trace()
    call()
    trace = fs.control.stop_trace()
    kinds: dict[str, int] = {}
    io_paths: dict[tuple[str, str], None] = {}
    commits: list[str] = []
    for kind, path, *_ in trace:
        if kind in ("read", "write"):
            io_paths[(kind, path)] = None
        elif kind == "fsync":
            commits.append(path)
        else:
            kinds[kind] = kinds.get(kind, 0) + 1
    for kind, path in io_paths:
        kinds[kind] = kinds.get(kind, 0) + max(1, -(-_size(fs, path) // MiB))
    for path in commits:  # a COMMIT only after several (UNSTABLE) WRITEs
        if _size(fs, path) > MiB:
            kinds["fsync"] = kinds.get("fsync", 0) + 1
    return sum(kinds.values()), kinds


def _size(fs: SimFSProcess, path: str) -> int:
    backing = fs.backing / path.lstrip("/")
    return backing.stat().st_size if backing.is_file() else 1  # a temp file: small


def _series(efs: SimFSProcess) -> Store:
    store = Store(efs.path / "store")
    for i in range(3):
        store.market.append("SPY", "1m", batch(i, 5000))
    return store


def test_append_round_trips(efs: SimFSProcess) -> None:
    store = _series(efs)
    total = 0
    for i in range(3, 3 + APPENDS):  # merges included: amortized over the appends
        ops, _ = _nfs_ops(efs, lambda i=i: store.market.append("SPY", "1m", batch(i, 5000)))
        total += ops
    per_append = total / APPENDS
    print(f"append of 5,000 bars: {per_append:.1f} server operations")
    # budget 12: not met (docs/store.md: where they go); ~5 of them free a merge's inputs
    # at once (a redirect linked under each input's name, then its removal)
    assert per_append <= 30


def test_tail_round_trips(efs: SimFSProcess) -> None:
    _series(efs)
    reader = Store(efs.path / "store")
    first, kinds = _nfs_ops(efs, lambda: reader.market.tail("SPY", "1m", 1000))
    again, _ = _nfs_ops(efs, lambda: reader.market.tail("SPY", "1m", 1000))
    print(f"tail(1000): first {first} {kinds}, repeated {again}")
    assert again <= 4  # the budget: segments by name, manifests by version, HEAD not read
    assert first <= 14  # HEAD, directory, manifest, probe, one segment: open/read/close each


def test_full_read_round_trips(efs: SimFSProcess) -> None:
    _series(efs)
    reader = Store(efs.path / "store")
    segments = reader.market.info("SPY", "1m").segments
    first, kinds = _nfs_ops(efs, lambda: reader.market.read("SPY", "1m"))
    again, _ = _nfs_ops(efs, lambda: reader.market.read("SPY", "1m"))
    print(f"full read of {segments} segments: first {first} {kinds}, repeated {again}")
    assert again <= segments + 3
    assert first <= 3 * segments + 8  # open, read, close a segment; HEAD and the manifest


def test_checkpoint_round_trips(efs: SimFSProcess) -> None:
    store = Store(efs.path / "store")
    payload = bytes(range(256)) * 4096  # 1 MiB: one WRITE, one READ
    store.checkpoints.save("m", payload)
    save, kinds = _nfs_ops(efs, lambda: store.checkpoints.save("m", payload))
    load, _ = _nfs_ops(efs, lambda: store.checkpoints.load_bytes("m"))
    cold, _ = _nfs_ops(efs, lambda: Store(efs.path / "store").checkpoints.load_bytes("m"))
    print(f"checkpoint 1 MiB: save {save} {kinds}, load {load}, load by a new store {cold}")
    assert load <= 4 + 1 + 1  # budget 4 + size/rsize, and the directory's revalidation
    assert cold <= 15  # opening the store reads its marker too
    assert save <= 28  # budget 10 + size/wsize: not met (docs/store.md)


def test_the_normalization_counts_whole_wsize_writes(efs: SimFSProcess, tmp_path: Path) -> None:
    """3 MiB written in pieces is three WRITEs to an NFS client, whatever FUSE saw."""
    path = efs.path / "f"

    def write() -> None:
        with open(path, "wb") as f:
            for _ in range(48):
                f.write(b"x" * (64 << 10))

    _, kinds = _nfs_ops(efs, write)
    assert kinds["write"] == 3 and kinds["create"] == 1
