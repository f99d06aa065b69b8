"""Committed files kept open for a second between positional reads.

A load by id read the run's index block through one open: a lookup, an open, a read and a
close, 4 server operations on the EFS-like mount where the read is the only one the load
needs (the fence is cached; the close waits for a flush there). A committed segment or
sidecar never changes (unique names, written whole before the manifest naming it), so a
descriptor opened once serves every later read of it: the loads of a loop, the repeats of
a query. :class:`OpenFiles` keeps up to ``size`` descriptors, each for ``linger`` seconds
after its last use, then closes it (a background thread; none runs while none is kept).

What stays as it was:

- every byte read is still checked against its digest by the caller, before it is used;
- a kept descriptor that fails (ESTALE or EBADF: the file was removed by another host; or
  any error, a damaged file's included) is closed and the read runs again on a new open by
  name, whose errors are the caller's (a file gone raises FileNotFoundError, so a load
  finds a merged-away run in the latest version, as before);
- the linger (1 s) is far below any grace period (vacuum 600 s, cleanup 1 h): a removal by
  another process of this host meets a descriptor kept here (on NFS: a ``.nfsXXXX`` silly
  rename) only for a file read in the last second, as it could meet a read in flight; a
  removal by this process (vacuum, retention) closes the file's descriptor first
  (:meth:`OpenFiles.forget`);
- an unmount waits for the kept descriptors (at most a linger): tests clear
  :data:`OPEN_FILES` before their simulated mount goes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from efsray.store.nfs import PositionalReader, reading

__all__ = ["LINGER_S", "OPEN_FILES", "OpenFiles"]

log = logging.getLogger("efsray.store")

T = TypeVar("T")
# seconds a descriptor stays open after its last use: a loop's loads, a query's repeats; short,
# as an open descriptor keeps its mount busy (an unmount waits for it) and its file's space
LINGER_S = 1.0


@dataclass(slots=True, eq=False)
class _Kept:
    reader: PositionalReader
    used: float = field(default_factory=time.monotonic)
    users: int = 0
    dropped: bool = False  # close when its last user is done


class OpenFiles:
    """Up to ``size`` files kept open by path, each ``linger`` seconds after its last use;
    thread-safe."""

    def __init__(self, size: int = 128, linger: float = LINGER_S) -> None:
        self.size = size
        self.linger = linger
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._closer: threading.Thread | None = None

    def read(self, path: Path, func: Callable[[PositionalReader], T]) -> T:
        """``func(reader)`` with ``path`` open: on a kept descriptor if there is one (on a
        new one if that fails), else on a new one, kept afterwards. Errors of a new open
        are :func:`efsray.store.nfs.reading`'s: ESTALE retried, FileNotFoundError passed."""
        key = str(path)
        kept = self._lease(key)
        if kept is not None:
            broken = True  # also on an interrupt: never reused, closed
            try:
                value = func(kept.reader)
                broken = False
            except Exception as exc:  # noqa: BLE001 - read again on a new open, below
                log.debug("kept descriptor of %s failed (%s); re-opening", path, exc)
            finally:
                self._give_back(key, kept, broken=broken)
            if not broken:
                return value

        def fresh() -> T:
            reader = PositionalReader(path)
            try:
                value = func(reader)
            except BaseException:
                _shut(reader)
                raise
            self._keep(key, reader)
            return value

        return reading(path, fresh)

    def forget(self, path: Path) -> None:
        """Close the descriptor kept for ``path`` (once idle): the file is being removed."""
        with self._lock:
            kept = self._kept.pop(str(path), None)
            doomed = [] if kept is None else self._drop(kept)
        _shut_all(doomed)

    def clear(self) -> None:
        """Close every kept descriptor (those in use once their read is done)."""
        with self._lock:
            doomed = [r for k in self._kept.values() for r in self._drop(k)]
            self._kept.clear()
        _shut_all(doomed)

    def __len__(self) -> int:
        return len(self._kept)

    # --- inside the lock (descriptors are closed outside it: a close can be slow) --------

    @staticmethod
    def _drop(kept: _Kept) -> list[PositionalReader]:
        """Mark ``kept`` dropped; the reader to close now if nobody uses it."""
        kept.dropped = True
        return [kept.reader] if kept.users == 0 else []

    def _lease(self, key: str) -> _Kept | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                kept.users += 1
                self._kept.move_to_end(key)
            return kept

    def _give_back(self, key: str, kept: _Kept, *, broken: bool = False) -> None:
        with self._lock:
            kept.users -= 1
            kept.used = time.monotonic()
            if broken and self._kept.get(key) is kept:
                del self._kept[key]
                kept.dropped = True
            done = kept.dropped and kept.users == 0
        if done:
            _shut(kept.reader)

    def _keep(self, key: str, reader: PositionalReader) -> None:
        doomed: list[PositionalReader] = []
        with self._lock:
            if self.size <= 0 or self.linger <= 0:
                doomed.append(reader)
            else:
                old = self._kept.pop(key, None)
                if old is not None:  # two threads opened it at once: keep the newer
                    doomed += self._drop(old)
                self._kept[key] = _Kept(reader)
                while len(self._kept) > self.size:
                    doomed += self._drop(self._kept.popitem(last=False)[1])
                if self._closer is None:
                    self._closer = threading.Thread(
                        target=self._close_idle, name="efsray-open-files", daemon=True
                    )
                    self._closer.start()
                self._wake.notify()
        _shut_all(doomed)

    def _close_idle(self) -> None:
        """The background closer: closes descriptors idle for ``linger`` seconds; ends when
        none is kept (the next :meth:`_keep` starts another)."""
        while True:
            with self._lock:
                now = time.monotonic()
                doomed: list[PositionalReader] = []
                for key, kept in list(self._kept.items()):
                    if kept.users == 0 and now - kept.used >= self.linger:
                        del self._kept[key]
                        doomed += self._drop(kept)
                if not self._kept and not doomed:
                    self._closer = None
                    return
                if not doomed:
                    idle = [k.used for k in self._kept.values() if k.users == 0]
                    first = min(idle, default=now)  # all in use: look again a linger later
                    self._wake.wait(max(0.05, first + self.linger - now))
            _shut_all(doomed)

    def _after_fork(self) -> None:
        """In a forked child: the parent's lock may be held and its closer is not there;
        the child's copies of the descriptors are closed."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closer = None
        kept, self._kept = self._kept, OrderedDict()
        _shut_all([k.reader for k in kept.values()])


def _shut_all(readers: list[PositionalReader]) -> None:
    for reader in readers:
        _shut(reader)


def _shut(reader: PositionalReader) -> None:
    """Close a read-only descriptor; its errors mean nothing for what was read (and
    verified) through it: a mount gone since (ENOTCONN) must not stop the closer."""
    try:
        reader.__exit__(None, None, None)
    except OSError as exc:
        log.debug("closing %s: %s", reader.path, exc)


OPEN_FILES = OpenFiles()
os.register_at_fork(after_in_child=OPEN_FILES._after_fork)
