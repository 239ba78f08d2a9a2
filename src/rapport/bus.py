"""The event bus: fans committed events out to the websockets of every process.

In-process by default; with ``RAPPORT_REDIS_URL`` every process publishes to one Redis
channel and delivers what it hears there, so a websocket on one process sees what another
process committed. Redis never holds the only copy: the events are rows in
``stream_events``, and a client that reconnects replays from there.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson

log = logging.getLogger(__name__)


def channel(url: str, name: str) -> str:
    """The pub/sub channel ``name`` of the installation on the Redis at ``url``. Pub/sub
    ignores Redis's database numbers, so the number is part of the name: two installations
    given one Redis server and databases of their own never hear each other's events (whose
    workspace ids would otherwise be taken for their own)."""
    import redis.connection

    db = redis.connection.parse_url(url).get("db", 0)  # type: ignore[no-untyped-call, unused-ignore]
    return f"rapport:{db}:{name}"


# Seconds without trying Redis after a publish failed there.
RETRY_AFTER = 5.0
# Seconds an agent's socket hears nothing before it reads the outbox for what missed the
# bus: another process's event (without Redis, every other process's; with it, one whose
# publish failed).
QUIET_SECONDS = 15.0
Event = dict[str, Any]
# What is said (who is viewing, typing) is kept this long for the pages that poll, at most
# SAID_MAX a workspace.
SAID_SECONDS = 15.0
SAID_MAX = 500


class Subscription:
    """One websocket's view of one workspace's events."""

    def __init__(self, workspace_id: str, maxsize: int = 1000) -> None:
        self.workspace_id = workspace_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        # Set when the client fell too far behind; it then replays from the outbox.
        self.overflowed = False

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    async def listen(
        self, client: "asyncio.Task[None]", *, quiet: float | None
    ) -> AsyncIterator[Event | None]:
        """The events heard, while ``client`` (the task reading the socket) runs; and, if
        ``quiet`` is given, ``None`` every ``quiet`` seconds, for the caller to read the
        outbox: an event that missed the bus (another process's, published while Redis was
        away, or while this process's subscription reconnected) then arrives late instead
        of never. Every ``quiet`` seconds whatever else is heard: a busy workspace (agents'
        presence pings, typing) must not put the reading off for good."""
        getter: asyncio.Future[Any] | None = None
        loop = asyncio.get_running_loop()
        due = loop.time() + quiet if quiet is not None else None
        try:
            while not client.done():
                getter = getter or asyncio.ensure_future(self.queue.get())
                wait = None if due is None else max(0.0, due - loop.time())
                done, _ = await asyncio.wait(
                    {getter, client}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if client in done:
                    return
                if getter in done:
                    event, getter = getter.result(), None
                    yield event
                if due is not None and loop.time() >= due:
                    due = loop.time() + quiet  # type: ignore[operator]
                    yield None
        finally:
            if getter is not None:
                getter.cancel()


class LocalBus:
    """Delivers events to the subscribers of this process."""

    # How long a quiet socket waits before it reads the outbox (``Subscription.listen``);
    # never for a bare bus (a command's, a test's), ``make_bus`` sets it for a server.
    quiet: float | None = None

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        # What was said lately (events with no id: who is viewing, typing), per workspace,
        # for the pages that poll (no socket to hear it on): (when heard, event).
        self._said: dict[str, deque[tuple[float, Event]]] = {}
        self._swept = 0.0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self._loop = None

    def publish(self, event: Event) -> None:
        """Hand a committed event to the bus; safe to call from any thread."""
        self._deliver_threadsafe(event)

    def publish_many(self, events: Sequence[Event]) -> None:
        """Hand a transaction's committed events to the bus, in order."""
        for event in events:
            self.publish(event)

    def _deliver_threadsafe(self, event: Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    def _deliver(self, event: Event) -> None:
        if not event["id"]:
            self._keep_said(event)
        for sub in tuple(self._subs.get(event["workspace_id"], ())):
            sub.offer(event)

    def _keep_said(self, event: Event) -> None:
        # The wall clock, not this process's own: a page's next poll may reach another.
        now = time.time()
        with self._lock:
            said = self._said.setdefault(event["workspace_id"], deque(maxlen=SAID_MAX))
            said.append((now, event))
            if now > self._swept + SAID_SECONDS:  # the quiet workspaces' go
                self._swept = now
                for quiet in [w for w, d in self._said.items() if d[-1][0] < now - SAID_SECONDS]:
                    del self._said[quiet]

    def said(self, workspace_id: str, *, heard_after: float) -> tuple[list[Event], float]:
        """What this process heard said in the workspace (events with no id) after
        ``heard_after`` (seconds since the epoch, as last returned; 0 for the last
        SAID_SECONDS), and the time to ask after next."""
        now = time.time()
        since = max(heard_after, now - SAID_SECONDS)
        with self._lock:
            kept = list(self._said.get(workspace_id, ()))
        return [e for at, e in kept if at > since], now

    @contextlib.contextmanager
    def subscribe(self, workspace_id: str) -> Iterator[Subscription]:
        sub = Subscription(workspace_id)
        with self._lock:
            self._subs.setdefault(workspace_id, set()).add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._subs.get(workspace_id, set())
                subs.discard(sub)
                if not subs:
                    self._subs.pop(workspace_id, None)


class RedisBus(LocalBus):
    """Publishes through Redis pub/sub so that every process delivers every event."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis

        self._url = url
        self._channel = channel(url, "events")
        self.quiet = QUIET_SECONDS  # another process's event may miss Redis
        # Events are published from request and ingest threads: a Redis that stops answering
        # must cost them a second once, not hang them (the client waits forever by default).
        self._sync = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        await super().start()
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await super().stop()

    def publish(self, event: Event) -> None:
        self.publish_many((event,))

    def publish_many(self, events: Sequence[Event]) -> None:
        """In one round trip to Redis however many (a bulk change's thousands): one each
        would cost the caller a round trip per event."""
        if not events:
            return
        if time.monotonic() >= self._retry_at:
            try:
                with self._sync.pipeline(transaction=False) as pipe:
                    for event in events:
                        pipe.publish(self._channel, orjson.dumps(event))
                    pipe.execute()
                return
            except Exception:
                # Not tried again for a while: each try could cost the caller a timeout.
                self._retry_at = time.monotonic() + RETRY_AFTER
                log.warning("redis publish failed", extra={"event": "bus.publish_failed"})
        # This process's own subscribers still hear them; the events are committed in the
        # outbox, where the other processes' quiet sockets find them (``Subscription.listen``).
        for event in events:
            self._deliver_threadsafe(event)

    async def _listen(self) -> None:
        import redis.asyncio as aredis

        while True:
            client = aredis.Redis.from_url(self._url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._ready.set()
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        self._deliver(orjson.loads(msg["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("redis subscription lost; retrying", extra={"event": "bus.retry"})
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis 8
                    await client.aclose()


_current: LocalBus = LocalBus()


def get_bus() -> LocalBus:
    return _current


def set_bus(bus: LocalBus) -> None:
    global _current
    _current = bus


def make_bus(redis_url: str | None) -> LocalBus:
    """Redis's bus when there is one; else this process's own, whose sockets read the
    outbox every ``QUIET_SECONDS`` as with Redis: other processes write events this one
    never hears (``rapport smtp``'s mail, a ``rapport worker``'s bot answers and
    deliveries, a command's import), and it cannot know whether any run."""
    if redis_url:
        return RedisBus(redis_url)
    local = LocalBus()
    local.quiet = QUIET_SECONDS
    return local
