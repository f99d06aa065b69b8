"""The simulated filesystem's shared state: counters, armed faults and hangs, latency.

Every FUSE handler calls :meth:`OpBoard.enter` first. ``enter`` counts the operation, blocks
while a hang rule holds it, raises the injected error if a fault rule fires, and otherwise
sleeps the profile's latency. The control server reads and changes the same board from its
own thread; one lock guards the counters and rules, and nothing sleeps or blocks while
holding it.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from efsray.simfs.faults import FaultRule, HangRule
from efsray.simfs.profiles import LatencyProfile

__all__ = ["OpBoard"]

log = logging.getLogger("efsray.simfs")

_TRACE_LIMIT = 100_000


def _matches(ops: frozenset[str] | None, pattern: str, op: str, paths: tuple[str, ...]) -> bool:
    if ops is not None and op not in ops:
        return False
    return any(fnmatch.fnmatchcase(p, pattern) for p in paths)


@dataclass(slots=True)
class _ArmedFault:
    id: int
    rule: FaultRule
    seen: int = 0
    fired: int = 0

    def exhausted(self) -> bool:
        return self.rule.times is not None and self.fired >= self.rule.times

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.rule.to_dict(), "seen": self.seen, "fired": self.fired}


@dataclass(slots=True)
class _ArmedHang:
    id: int
    rule: HangRule
    seen: int = 0

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, **self.rule.to_dict(), "seen": self.seen}


@dataclass(slots=True)
class _Gate:
    """One hang episode: operations wait on ``event`` until :meth:`OpBoard.release`."""

    event: threading.Event = field(default_factory=threading.Event)


class OpBoard:
    """Counters, fault rules, hang rules and the latency profile of one mount. Thread-safe."""

    def __init__(
        self,
        profile: LatencyProfile,
        *,
        seed: int | None = None,
        caller_pid: Callable[[], int] | None = None,
    ) -> None:
        """``caller_pid`` tells which process made the current request (FUSE's context);
        it names the processes blocked by a hang."""
        self._caller_pid = caller_pid
        self._hung_pids: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._hung_changed = threading.Condition(self._lock)
        self._profile = profile
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not cryptography
        self._ops: Counter[str] = Counter()
        self._faults_fired: Counter[str] = Counter()
        self._bytes_read = 0
        self._bytes_written = 0
        self._open_append = 0
        self._renames_rejected = 0
        self._faults: list[_ArmedFault] = []
        self._hangs: list[_ArmedHang] = []
        self._gate = _Gate()
        self._hung_now = 0
        self._next_id = 1
        self._closed = False
        self._trace: list[tuple[str, ...]] | None = None

    # --- called by the FUSE handlers -----------------------------------------------------
    def enter(self, op: str, *paths: str) -> None:
        """Count ``op`` on ``paths``; hang, fail (raise ``OSError``) or delay it as armed."""
        with self._lock:
            self._ops[op] += 1
            if self._trace is not None and len(self._trace) < _TRACE_LIMIT:
                self._trace.append((op, *paths))
            gate = self._hang_gate(op, paths)
            if gate is not None:
                pid = self._caller_pid() if self._caller_pid is not None else 0
                self._hung_pids[pid] += 1
                self._hung_now += 1
                self._hung_changed.notify_all()
        if gate is not None:
            try:
                gate.event.wait()
            finally:
                with self._lock:
                    self._hung_now -= 1
                    self._hung_pids[pid] -= 1
                    if self._hung_pids[pid] <= 0:
                        del self._hung_pids[pid]
                    self._hung_changed.notify_all()
        with self._lock:
            error = self._fault_for(op, paths)
            delay = self._profile.delay(op, self._rng) if op != "readdir" else 0.0
        if delay > 0:
            time.sleep(delay)  # the simulated network round trip, not synchronisation
        if error is not None:
            log.info("injecting %s into %s %s", error.error, op, " -> ".join(paths))
            raise OSError(error.errno, f"simfs injected {error.error}")

    def readdir_delay(self, entries: int) -> None:
        """Charge a listing of ``entries`` names: one round trip per READDIR reply."""
        with self._lock:
            delay = self._profile.delay("readdir", self._rng, entries)
        if delay > 0:
            time.sleep(delay)  # the simulated network round trips

    def add_bytes(self, *, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self._bytes_read += read
            self._bytes_written += written

    def note_append_open(self) -> None:
        with self._lock:
            self._open_append += 1

    def note_rejected_rename(self) -> None:
        """A rename with renameat2 flags, refused locally (no round trip, not in ``ops``)."""
        with self._lock:
            self._renames_rejected += 1

    def count_only(self, op: str, *paths: str) -> None:
        """Count ``op`` without hanging, failing or delaying it (release, releasedir)."""
        with self._lock:
            self._ops[op] += 1

    def _hang_gate(self, op: str, paths: tuple[str, ...]) -> _Gate | None:
        if self._closed:
            return None
        hit = False
        for armed in self._hangs:
            if _matches(armed.rule.ops, armed.rule.path, op, paths):
                armed.seen += 1
                hit = hit or armed.seen >= armed.rule.nth
        return self._gate if hit else None

    def _fault_for(self, op: str, paths: tuple[str, ...]) -> FaultRule | None:
        chosen: FaultRule | None = None
        for armed in self._faults:
            if armed.exhausted() or not _matches(armed.rule.ops, armed.rule.path, op, paths):
                continue
            armed.seen += 1
            if chosen is not None or armed.seen < armed.rule.nth:
                continue
            p = armed.rule.probability
            if p is not None and self._rng.random() >= p:
                continue
            armed.fired += 1
            chosen = armed.rule
            self._faults_fired[f"{op}:{chosen.error}"] += 1
        return chosen

    # --- called by the control server ----------------------------------------------------
    def counters(self, *, reset: bool = False) -> dict[str, Any]:
        """The counters (and, with ``reset``, zero them in the same atomic step)."""
        with self._lock:
            snapshot = {
                "ops": dict(sorted(self._ops.items())),
                "bytes_read": self._bytes_read,
                "bytes_written": self._bytes_written,
                "open_append": self._open_append,
                "renames_rejected": self._renames_rejected,
                "faults_injected": dict(sorted(self._faults_fired.items())),
                "hung_now": self._hung_now,
                "hung_pids": sorted(self._hung_pids),
            }
            if reset:
                self._ops.clear()
                self._faults_fired.clear()
                self._bytes_read = self._bytes_written = self._open_append = 0
                self._renames_rejected = 0
        return snapshot

    def arm_fault(self, rule: FaultRule) -> int:
        with self._lock:
            armed = _ArmedFault(self._next_id, rule)
            self._next_id += 1
            self._faults.append(armed)
            return armed.id

    def clear_faults(self, rule_id: int | None = None) -> int:
        """Disarm one fault rule (by id) or all of them; returns how many were removed."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if rule_id is not None and f.id != rule_id]
            return before - len(self._faults)

    def arm_hang(self, rule: HangRule) -> int:
        with self._lock:
            if self._gate.event.is_set():
                self._gate = _Gate()
            armed = _ArmedHang(self._next_id, rule)
            self._next_id += 1
            self._hangs.append(armed)
            return armed.id

    def release(self) -> int:
        """Disarm every hang and let every blocked operation go on; returns how many waited."""
        with self._lock:
            waiting = self._hung_now
            self._hangs.clear()
            self._gate.event.set()
            self._gate = _Gate()
            return waiting

    def wait_hung(self, count: int, timeout: float) -> int:
        """Wait until at least ``count`` operations are blocked; returns the number blocked."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._hung_now < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._hung_changed.wait(remaining)
            return self._hung_now

    def start_trace(self) -> None:
        """Record every operation (kind and paths) that ``enter`` sees, in order, from now."""
        with self._lock:
            self._trace = []

    def stop_trace(self) -> list[tuple[str, ...]]:
        """Stop recording; return the operations recorded (at most 100,000)."""
        with self._lock:
            trace, self._trace = self._trace or [], None
            return trace

    def set_profile(self, profile: LatencyProfile) -> None:
        with self._lock:
            self._profile = profile

    @property
    def profile(self) -> LatencyProfile:
        with self._lock:
            return self._profile

    def rules(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [f.describe() for f in self._faults],
                "hangs": [h.describe() for h in self._hangs],
            }

    def close(self) -> None:
        """Release every hang for good (shutting down): nothing blocks from now on."""
        with self._lock:
            self._closed = True
            self._hangs.clear()
            self._gate.event.set()
