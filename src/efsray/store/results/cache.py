"""Parsed parts of committed files, kept by (file name, digest): such a file never changes,
so an entry never goes stale; the cache only saves round trips (footers of segments, fences
of run indexes). Least recently used entries leave first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["PartCache"]

T = TypeVar("T")


class PartCache(Generic[T]):
    """Up to ``size`` parsed parts by (file name, digest); thread-safe."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], T] = OrderedDict()
        self._size = size

    def get(self, key: tuple[str, str]) -> T | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: T) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
