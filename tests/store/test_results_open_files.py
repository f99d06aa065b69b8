"""Descriptors of committed files kept open between reads (efsray.store.results.open_files):
bounded in number and time, never the cause of an error, closed before this process
removes their file. Open descriptors are counted in /proc/self/fd."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from efsray.errors import CorruptionError
from efsray.store import Store
from efsray.store.nfs import PositionalReader
from efsray.store.results.open_files import OPEN_FILES, OpenFiles
from tests.store import _results_workers as rw


def _open_under(root: Path) -> list[str]:
    """What this process's descriptors under ``root`` point to."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            out.append(target)
    return out


def _files(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / f"f{i}"
        path.write_bytes(bytes([i]) * 100)
        paths.append(path)
    return paths


def _first_byte(reader: PositionalReader) -> int:
    return reader.pread(0, 1)[0]


def test_kept_in_number_and_time(tmp_path: Path) -> None:
    paths = _files(tmp_path, 5)
    files = OpenFiles(size=2, linger=0.3)
    for i, path in enumerate(paths):
        assert files.read(path, _first_byte) == i
    assert len(_open_under(tmp_path)) == 2  # the two used last
    assert files.read(paths[4], _first_byte) == 4  # on the kept descriptor
    deadline = time.monotonic() + 10
    while _open_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _open_under(tmp_path) == [] and len(files) == 0  # closed a linger after last use


def test_a_kept_descriptor_that_fails_is_dropped_and_the_read_runs_again(tmp_path: Path) -> None:
    [path] = _files(tmp_path, 1)
    files = OpenFiles(size=4, linger=60)
    readers: list[PositionalReader] = []

    def read(reader: PositionalReader) -> int:
        readers.append(reader)
        if len(readers) == 2:  # the kept descriptor: as if its file were gone (ESTALE, EBADF)
            raise CorruptionError("stale")
        return _first_byte(reader)

    assert files.read(path, read) == 0
    assert files.read(path, read) == 0  # failed on the kept one, then read on a new open
    assert len(readers) == 3 and readers[2] is not readers[0]
    assert len(_open_under(tmp_path)) == 1  # the failed one closed, the new one kept
    path.unlink()
    files.clear()
    with pytest.raises(FileNotFoundError):  # a new open's errors are the caller's
        files.read(path, read)
    assert _open_under(tmp_path) == []


def test_concurrent_reads_share_descriptors_and_leak_none(tmp_path: Path) -> None:
    paths = _files(tmp_path, 6)
    files = OpenFiles(size=3, linger=60)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for k in range(300):
                i = (seed * 7 + k) % len(paths)
                assert files.read(paths[i], _first_byte) == i
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_open_under(tmp_path)) <= 3
    files.clear()
    assert _open_under(tmp_path) == []


def test_a_vacuum_closes_the_descriptors_of_what_it_removes(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.results.merge_after_commit = False
    for b in range(4):
        store.results.save_batch("sweep", rw.batch_runs(b, 20))
    OPEN_FILES.clear()
    reader = Store(tmp_path / "store").results
    for b in range(4):  # every sidecar read, so kept open
        assert reader.load(rw.run_id(b, 3), strategy="sweep").info.metrics["batch"] == b
    reader.query("sweep", where=["sharpe>=0"])  # every segment too
    assert len(_open_under(tmp_path)) == 8
    assert store.results.merge("sweep") == 1
    assert store.results.vacuum("sweep", grace=0)[0] > 8  # 4 segments, 4 sidecars, versions
    assert _open_under(tmp_path) == []  # no descriptor of a removed file (NFS: .nfsXXXX)
    for b in range(4):  # found in the latest version
        assert reader.load(rw.run_id(b, 5), strategy="sweep").info.metrics["i"] == 5
    OPEN_FILES.clear()
