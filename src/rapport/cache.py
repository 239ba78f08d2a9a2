"""A per-process cache whose entries expire: for what the hot path asks of a workspace on
every message (has it rules for this event? SLA policies? trained triage models?) and that
changes rarely. The process that changes it forgets the entry at once; other processes see
the change within the entry's time to live, except the ingest writer process, to which the
server passes on what it forgot (``RELAY``).

Reads and writes are single dict operations, atomic under the interpreter lock, so threads
(the ingest writer, the event loop, job workers) share one cache without a lock of ours.
"""

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


_CACHES: dict[str, "TtlCache[Any, Any]"] = {}


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, *, name: str) -> None:
        self.ttl = ttl
        self.name = name
        self._items: dict[K, tuple[float, V]] = {}
        _CACHES[name] = self

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
        RELAY.record(self.name, key)


class Relay:
    """What this process forgot, for the ingest writer process, which keeps the same caches.

    Each forgotten key is passed on with every batch for ``window`` seconds, not once: the
    change that caused it commits a moment after the forget, and the writer, reloading in
    between, would otherwise keep the old value for a whole time to live."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.listening = False
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, Hashable], float] = {}

    def record(self, name: str, key: Hashable) -> None:
        if self.listening:
            with self._lock:
                self._keys[(name, key)] = time.monotonic() + self.window

    def pending(self) -> list[tuple[str, Hashable]]:
        now = time.monotonic()
        with self._lock:
            self._keys = {k: until for k, until in self._keys.items() if until > now}
            return list(self._keys)


RELAY = Relay()


def forget_relayed(keys: list[tuple[str, Hashable]]) -> None:
    """In the writer process: forget what the server passed on."""
    for name, key in keys:
        cache = _CACHES.get(name)
        if cache is not None:
            cache._items.pop(key, None)
