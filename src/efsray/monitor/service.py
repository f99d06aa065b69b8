"""The long-running monitor: collect every ``interval`` seconds until told to stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from efsray.monitor.exporter import MonitorMetrics
from efsray.monitor.metrics import MountReport
from efsray.monitor.monitor import EFSPerformanceMonitor

__all__ = ["MonitorService"]

logger = logging.getLogger("efsray.monitor")


class MonitorService:
    """Run ``monitor.collect()`` every ``interval`` seconds and publish it to ``metrics``.

    Intervals are measured start to start. When ``stop`` is set the service returns
    promptly: a collection in progress is abandoned and its probe children are killed.
    """

    def __init__(
        self,
        monitor: EFSPerformanceMonitor,
        metrics: MonitorMetrics,
        *,
        interval: float,
        on_collection: Callable[[Sequence[MountReport]], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval={interval!r} must be > 0 seconds")
        self.monitor = monitor
        self.metrics = metrics
        self.interval = interval
        self.on_collection = on_collection
        self.collections = 0

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                started = time.monotonic()
                collecting = asyncio.ensure_future(self.monitor.collect())
                await asyncio.wait({collecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not collecting.done():
                    await self._abandon(collecting)
                    break
                reports = collecting.result()
                self.collections += 1
                self.metrics.update(reports, time.monotonic() - started)
                if self.on_collection is not None:
                    self.on_collection(reports)
                remaining = self.interval - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.wait({stopping}, timeout=remaining)
        finally:
            stopping.cancel()

    async def _abandon(self, collecting: asyncio.Future[list[MountReport]]) -> None:
        """Kill the running probes (again, for a child spawned meanwhile) until it ends."""
        killed = 0
        deadline = time.monotonic() + self.monitor.timeout + 5.0
        while not collecting.done() and time.monotonic() < deadline:
            killed += self.monitor.cancel_probes()
            await asyncio.wait({collecting}, timeout=0.1)
        if collecting.done() and not collecting.cancelled():
            collecting.exception()  # retrieved: reports of killed probes are not published
        removed = await asyncio.to_thread(self.monitor.cleanup) if killed else 0
        logger.info(
            "stopping: killed %d running probe(s), removed %d probe dir(s)", killed, removed
        )
