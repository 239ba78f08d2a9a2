"""A per-process cache whose entries expire: for what the hot path asks of a workspace on
every message (has it rules for this event? SLA policies? trained triage models?) and that
changes rarely. The process that changes it forgets the entry at once; other processes see
the change within the entry's time to live.

Reads and writes are single dict operations, atomic under the interpreter lock, so threads
(the ingest writer, the event loop, job workers) share one cache without a lock of ours.
"""

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: dict[K, tuple[float, V]] = {}

    def peek(self, key: K) -> V | None:
        """The live value, or ``None`` when there is none (never loads)."""
        item = self._items.get(key)
        return item[1] if item is not None and item[0] > time.monotonic() else None

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The live value, else ``load()``'s, kept for ``ttl`` seconds."""
        item = self._items.get(key)
        if item is not None and item[0] > time.monotonic():
            return item[1]
        value = load()
        self._items[key] = (time.monotonic() + self.ttl, value)
        return value

    def forget(self, key: K) -> None:
        self._items.pop(key, None)
