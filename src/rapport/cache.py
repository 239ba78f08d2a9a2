"""Per-process caches whose entries expire: for what the hot path asks on every message or
request (has this workspace rules for this event? SLA policies? trained triage models? who
holds this token?) and that changes rarely.

What one process forgets, every process forgets: the ingest writer process hears it from
the server with each batch (``RELAY``), and with ``RAPPORT_REDIS_URL`` the other servers
and workers hear it over Redis (``BROADCAST``, wired by ``RedisForgetting``). Without
Redis, other processes see a change within the entry's time to live.

The change that makes a process forget usually commits a moment later; a value loaded in
between would be the old one. So a forgotten key is not cached again for ``HOLD`` seconds:
it is read afresh each time until then (or, for a cache made with ``held_ttl``, kept that
fraction of a second at most).

Reads and writes are single dict operations, atomic under the interpreter lock, so threads
(the ingest writer, the event loop, job workers) share one cache; only forgetting takes a
lock, and a value loaded while anything was forgotten is returned but not kept.
"""

import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

import orjson

from rapport import bus

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Seconds a forgotten key is read afresh instead of cached (its change commits meanwhile).
HOLD = 2.0


# name -> the caches of that name in this process (an app's principal cache is one per app).
_CACHES: dict[str, "weakref.WeakSet[TtlCache[Any, Any]]"] = {}


class Once(Generic[V]):
    """What ``load`` returns, loaded by one thread only and kept for the process (a model,
    a TLS context). functools.cache holds no lock: two threads warming up at once (the
    app's warm-up and the first message) each loaded the model, seconds and its memory
    twice."""

    def __init__(self, load: Callable[[], V]) -> None:
        self.__wrapped__ = load
        self._lock = threading.Lock()
        self._loaded: list[V] = []

    def __call__(self) -> V:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._loaded.append(self.__wrapped__())
        return self._loaded[0]

    def cache_clear(self) -> None:
        """Load again on the next call."""
        with self._lock:
            self._loaded.clear()


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, *, name: str, max_items: int = 0, held_ttl: float = 0.0) -> None:
        self.ttl = ttl
        self.name = name
        self.max_items = max_items  # 0: no bound (the caller's keys are few)
        # While a key is held, what is loaded is kept this long (0: not at all, read afresh
        # each time). For a cache read per message whose value may be a moment old after a
        # change (a workspace's trained models), not for who may do what.
        self.held_ttl = held_ttl
        self._items: dict[K, tuple[float, V]] = {}
        self._held: dict[K, float] = {}
        self._held_all = 0.0
        self.drops = 0  # how many times anything was dropped: a value loaded across one
        self._lock = threading.Lock()
        _CACHES.setdefault(name, weakref.WeakSet()).add(self)

    def found(self, key: K) -> tuple[bool, V | None]:
        """(True, the live value), or (False, None) when there is none (never loads)."""
        item = self._items.get(key)
        if item is not None and item[0] > time.monotonic():
            return True, item[1]
        return False, None

    def peek(self, key: K) -> V | None:
        """The live value, or ``None`` when there is none (never loads)."""
        return self.found(key)[1]

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The live value, else ``load()``'s, kept for ``ttl`` seconds."""
        item = self._items.get(key)
        if item is not None and item[0] > time.monotonic():
            return item[1]
        drops = self.drops
        value = load()
        self.put(key, value, loaded_after=drops)
        return value

    def put(self, key: K, value: V, *, loaded_after: int | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds, unless ``key`` was forgotten a moment ago (its
        change may not have committed yet) or anything was forgotten since ``loaded_after``
        (the ``drops`` count when the value was read): then it may be the old one."""
        now = time.monotonic()
        if loaded_after is not None and loaded_after != self.drops:
            return
        ttl = self.ttl
        if self._held_all > now or (self._held and self._held.get(key, 0.0) > now):
            if not self.held_ttl:
                return
            ttl = min(self.ttl, self.held_ttl)
        if self.max_items and len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (now + ttl, value)

    def forget(self, key: K | None) -> None:
        """The value changed (``None``: every value): this process and every other forget it."""
        self.drop(key)
        RELAY.record(self.name, key)
        BROADCAST.send(self.name, key)

    def drop(self, key: Hashable | None) -> None:
        """Forget ``key`` (``None``: everything) here, and hold it for ``HOLD`` seconds."""
        with self._lock:  # the Redis listener and request threads may drop at once
            self.drops += 1
            now = time.monotonic()
            if key is None:
                self._items.clear()
                self._held_all = now + HOLD
                return
            mine = cast(K, key)
            self._items.pop(mine, None)
            self._held = {k: t for k, t in self._held.items() if t > now}
            self._held[mine] = now + HOLD


class Relay:
    """What this process forgot, for the ingest writer process, which keeps the same caches.

    Each forgotten key is passed on with every batch for ``window`` seconds, not once: the
    change that caused it commits a moment after the forget, and the writer, reloading in
    between, would otherwise keep the old value for a whole time to live."""

    def __init__(self, window: float = HOLD) -> None:
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


class Broadcast:
    """What this process forgot, for every other process: ``RedisForgetting`` sets
    ``publish``."""

    def __init__(self) -> None:
        self.publish: Callable[[str, Hashable | None], None] | None = None

    def send(self, name: str, key: Hashable | None) -> None:
        publish = self.publish
        if publish is not None:
            publish(name, key)


BROADCAST = Broadcast()


def forget_heard(name: str, key: Hashable | None) -> None:
    """What another process forgot (``None``: everything in that cache): forget it here,
    and in this server's ingest writer process."""
    for cache in list(_CACHES.get(name, ())):
        cache.drop(key)
    RELAY.record(name, key)


def forget_relayed(keys: list[tuple[str, Hashable]]) -> None:
    """In the writer process: forget what the server passed on."""
    for name, key in keys:
        forget_heard(name, key)


class RedisForgetting:
    """Every process that shares a Redis tells the others what it forgot, and forgets what
    they tell it: a thread of its own listens on one pub/sub channel, another publishes
    (so a request that forgets never waits on Redis).

    A message lost while Redis is unreachable costs at most the entry's time to live."""

    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._channel = bus.channel(url, "forget")
        self._sender = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._origin = os.urandom(8).hex()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 10) -> None:
        self._threads = [
            threading.Thread(target=self._listen, name="rapport-forget-listen", daemon=True),
            threading.Thread(target=self._send, name="rapport-forget-send", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._ready.wait(timeout)
        BROADCAST.publish = self.publish

    def stop(self) -> None:
        if BROADCAST.publish == self.publish:
            BROADCAST.publish = None
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(5)
        self._client.close()
        self._sender.close()

    def publish(self, name: str, key: Hashable | None) -> None:
        self._outbox.put(orjson.dumps({"cache": name, "key": key, "from": self._origin}))

    def _send(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._sender.publish(self._channel, message)
            except Exception:
                log.warning("redis publish failed", extra={"event": "cache.forget_publish_failed"})

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis 8
            try:
                pubsub.subscribe(self._channel)
                self._ready.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        heard = orjson.loads(message["data"])
                        if heard.get("from") != self._origin:
                            forget_heard(str(heard["cache"]), heard.get("key"))
            except Exception:
                log.warning("redis subscription lost; retrying", extra={"event": "cache.retry"})
                self._stop.wait(1)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
