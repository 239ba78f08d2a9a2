"""Realtime events: written to the outbox in the caller's transaction, published on commit."""

from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import delete, func, insert, or_, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from rapport.bus import Event, get_bus
from rapport.db import Database, commit_hooks, drain, on_commit, utcnow
from rapport.realtime.models import StreamEvent


@dataclass(eq=False)
class Emitted:
    """An event a transaction emitted: stored (and numbered) as the transaction commits,
    with every other event it emitted, then published; as a commit hook, it publishes."""

    workspace_id: str
    type: str
    payload: dict[str, Any]
    id: int | None = None
    created_at: datetime | None = None
    # Set when stored: the events stored together are then published together (``store``).
    stored_with: "list[Emitted] | None" = field(default=None, repr=False)

    def __call__(self) -> None:
        if self.stored_with is None:
            get_bus().publish(as_dict(self))
        elif self.stored_with[0] is self:  # the first of its insert publishes them all
            get_bus().publish_many([as_dict(e) for e in self.stored_with])


def emit(db: Session, *, workspace_id: str, type: str, payload: dict[str, Any]) -> Emitted:
    """Record an event in this transaction; the bus publishes it once the transaction commits."""
    event = Emitted(workspace_id=workspace_id, type=type, payload=payload)
    # Kept among the transaction's commit hooks: a savepoint that rolls back takes it away.
    on_commit(db, event)
    return event


# Said on the bus, never stored, never sent to a client: these web chat visitors are gone
# (their customer erased), and their sockets close in every process.
VISITORS_ERASED = "visitors.erased"


def close_visitors(db: Session, *, workspace_id: str, visitor_ids: list[str]) -> None:
    """Once this transaction commits, close these visitors' sockets in every process."""
    if not visitor_ids:
        return

    def publish() -> None:
        get_bus().publish(
            {
                "id": 0,
                "workspace_id": workspace_id,
                "type": VISITORS_ERASED,
                "payload": {"visitor_ids": visitor_ids},
                "created_at": utcnow().isoformat(),
            }
        )

    on_commit(db, publish)


_INSERT = insert(StreamEvent)
_NUMBERED = _INSERT.returning(StreamEvent.id, sort_by_parameter_order=True)
_LAST = select(func.max(StreamEvent.id))


def store(db: Session, rows: Sequence[dict[str, Any]] = ()) -> list[int]:
    """Store, in one multi-row insert, the events this transaction emitted that are not
    stored yet, then ``rows`` (events written directly, as ingest does: ``workspace_id``,
    ``type``, ``payload``, ``created_at``); the ids of ``rows``, in order. Ids increase in
    the order the events were emitted."""
    # Inside a savepoint the emitted events wait: stored there, a rollback of the savepoint
    # would take back the rows of events emitted before it, which would still be published.
    waiting = (
        []
        if db.in_nested_transaction()
        else [h for h in commit_hooks(db) if isinstance(h, Emitted) and h.id is None]
    )
    if not waiting and not rows:
        return []
    now = utcnow()
    for e in waiting:
        e.created_at = now
    values = [
        {"workspace_id": e.workspace_id, "type": e.type, "payload": e.payload, "created_at": now}
        for e in waiting
    ]
    ids = _insert(db.connection(), [*values, *rows])
    for e, event_id in zip(waiting, ids, strict=False):
        e.id, e.stored_with = event_id, waiting
    return ids[len(waiting) :]


def _insert(conn: Any, rows: list[dict[str, Any]]) -> list[int]:
    if conn.dialect.name != "sqlite":
        return list(conn.execute(_NUMBERED, rows).scalars())
    # SQLite cannot number a multi-row insert's RETURNING rows in order (SQLAlchemy would
    # insert them one statement each); it numbers new rows max(id) + 1, + 2, ... and nobody
    # else writes in between: a writer that started meanwhile makes this insert fail.
    last = conn.execute(_LAST).scalar() or 0
    conn.execute(_INSERT, rows)
    return list(range(last + 1, last + 1 + len(rows)))


@sa_event.listens_for(Session, "before_commit")
def _store_emitted(db: Session) -> None:
    # Stored at the last moment, whatever the transaction did meanwhile: one insert for
    # its events however many (a removed agent's thousands of released conversations),
    # and ids taken as it commits, so that a long transaction's events do not come out
    # with ids (and times) far below the ones committed while it ran (see stragglers).
    # Its changes are flushed first: ``before_commit`` comes before the commit's own
    # flush, and a row lock that flush waited for (a colleague's transaction holding the
    # conversation) held an id taken but uncommitted as long, while later ones committed.
    # A savepoint's release is signalled as a commit too: its events wait for the whole.
    if not db.in_nested_transaction():
        db.flush()
        store(db)


def as_dict(event: StreamEvent | Emitted) -> dict[str, Any]:
    return {
        "id": event.id,
        "workspace_id": event.workspace_id,
        "type": event.type,
        "payload": event.payload,
        "created_at": (event.created_at or utcnow()).isoformat(),
    }


# Event ids are allocated when an event is inserted, not when its transaction commits: on
# PostgreSQL, where writers run side by side, id 10 can become visible after id 11. The
# gap is short (emitted events are inserted as their transaction commits; ingest inserts
# its own within a short group commit), but a client may see 11 in it and then be away
# for any time. A replay therefore also returns the events at or below the client's last
# id stored up to STRAGGLER_SECONDS before that last one (before it, not before now: a
# client back after two minutes got none of them), and clients (and each connection)
# ignore ids they have already seen.
STRAGGLER_SECONDS = 60


PAGE = 1000
# The highest id an event can have (a 64-bit integer): a client's larger one is no id.
MAX_ID = 2**63 - 1


def client_id(raw: str | None) -> int | None:
    """An event id a client sent (``last_event_id``, a pending id): None unless plain ASCII
    digits (isdigit() alone takes "²") within 64 bits (a larger number reached the
    database and killed the socket)."""
    if not raw or not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def client_ids(raw: str) -> frozenset[int]:
    """The event ids a client lists (comma-separated ``pending``), at most as many as a page
    names; what is no id (``client_id``) is left out."""
    ids = (client_id(p) for p in raw.split(",")[:PENDING_CAP])
    return frozenset(i for i in ids if i is not None)


def since(
    db: Session,
    *,
    workspace_id: str,
    after_id: int,
    pending: Collection[int] = (),
    limit: int = PAGE,
) -> list[StreamEvent]:
    """The workspace's events after ``after_id``, and those of the ``pending`` ids (at or
    below it, not committed when the client last read: see ``pending_ids``) that have
    committed since, oldest first. A page's socket and a poll both read what follows
    what they have with it."""
    after = StreamEvent.id > after_id
    named = [i for i in pending if i <= after_id][:PENDING_CAP]
    rows = db.scalars(
        select(StreamEvent)
        .where(
            StreamEvent.workspace_id == workspace_id,
            or_(after, StreamEvent.id.in_(named)) if named else after,
        )
        .order_by(StreamEvent.id)
        .limit(limit)
    )
    return list(rows)


def stragglers(
    db: Session, *, workspace_id: str, up_to_id: int, limit: int = PAGE
) -> list[StreamEvent]:
    """The events at or below ``up_to_id`` stored shortly before it: those may have
    committed after the client saw ``up_to_id`` (see STRAGGLER_SECONDS)."""
    seen_at = db.scalar(
        select(StreamEvent.created_at)
        .where(StreamEvent.workspace_id == workspace_id, StreamEvent.id <= up_to_id)
        .order_by(StreamEvent.id.desc())
        .limit(1)
    )
    if seen_at is None:
        return []
    # Times come from each writer's clock: one ahead of ours does not narrow the window.
    edge = min(seen_at, utcnow()) - timedelta(seconds=STRAGGLER_SECONDS)
    rows = db.scalars(
        select(StreamEvent)
        .where(
            StreamEvent.workspace_id == workspace_id,
            StreamEvent.id <= up_to_id,
            StreamEvent.created_at >= edge,
        )
        .order_by(StreamEvent.id.desc())
        .limit(limit)
    )
    return sorted(rows, key=lambda e: e.id)


class Seen:
    """The ids one connection has sent, bounded: replays and the live feed overlap."""

    def __init__(self, size: int = 10_000) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._size = size
        self.highest = 0
        # What the page showed before its socket opened (``seen_from_now``): a catch-up
        # never sends it again, but heard live it committed after the socket subscribed,
        # so the page cannot have it.
        self.shown: set[int] = set()
        # A rendered page shows every event up to its newest but those pending as it
        # rendered (``from_page``).
        self.page_up_to = 0
        self.page_pending: frozenset[int] = frozenset()

    def from_page(self, up_to_id: int, pending: frozenset[int]) -> None:
        """The socket serves a page that shows every event up to ``up_to_id`` but the
        ``pending`` ones: no catch-up sends those others (an old change would undo a newer
        one the page drew)."""
        self.highest = max(self.highest, up_to_id)
        self.page_up_to, self.page_pending = up_to_id, pending

    def add(self, event_id: int, *, live: bool = False) -> bool:
        """Remember the id; False when it was already sent (or, unless heard ``live``,
        shown by the page)."""
        if event_id in self._ids or (not live and self._shown(event_id)):
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        self.highest = max(self.highest, event_id)
        return True

    def _shown(self, event_id: int) -> bool:
        return event_id in self.shown or (
            event_id <= self.page_up_to and event_id not in self.page_pending
        )


def _page(
    database: Database,
    workspace_id: str,
    after_id: int,
    *,
    pending: Collection[int] = (),
    stragglers_too: bool = False,
) -> list[dict[str, Any]]:
    with database.session(write=False) as db:
        rows = (
            stragglers(db, workspace_id=workspace_id, up_to_id=after_id)
            if stragglers_too
            else since(db, workspace_id=workspace_id, after_id=after_id, pending=pending)
        )
        return [as_dict(e) for e in rows]


async def missed(
    database: Database,
    workspace_id: str,
    after_id: int,
    *,
    pending: Collection[int] | None = None,
) -> AsyncIterator[Event]:
    """Everything the outbox holds that a client who saw ``after_id`` may have missed: the
    events of the ``pending`` ids it names that have committed since (a page names those
    pending as it rendered), or when it names none the recent stragglers at or below
    ``after_id``; then every event after it, a page at a time (however busy the workspace
    was meanwhile). The caller skips ids it has already sent."""
    if pending is None:
        for event in await run_in_threadpool(
            partial(_page, database, workspace_id, after_id, stragglers_too=True)
        ):
            yield event
    below = sorted(pending or ())
    while True:
        events = await run_in_threadpool(
            partial(_page, database, workspace_id, after_id, pending=below)
        )
        for event in events:
            yield event
        if len(events) < PAGE:
            return
        last = events[-1]["id"]
        if last > after_id:
            after_id, below = last, []
        else:  # a page of pending ones alone (a page smaller than the ids named)
            below = [i for i in below if i > last]


def seen_from_now(database: Database, workspace_id: str) -> Seen:
    """A new socket's memory, read once it has subscribed: every event the outbox holds
    now, recent stragglers included, is marked as shown (the page it serves already shows
    them), so that a later catch-up (the socket quiet, or fallen behind) sends none of them
    again. What the socket hears live is sent all the same: it committed after the socket
    subscribed (marking it sent lost the events of those few milliseconds)."""
    seen = Seen()
    with database.session(write=False) as db:
        seen.highest = latest_id(db, workspace_id=workspace_id)
        seen.shown.update(
            e.id for e in stragglers(db, workspace_id=workspace_id, up_to_id=seen.highest)
        )
    return seen


def _beyond(database: Database, workspace_id: str, after_id: int, count: int) -> bool:
    """Whether more than ``count`` of the workspace's events follow ``after_id``."""
    with database.session(write=False) as db:
        further = db.scalar(
            select(StreamEvent.id)
            .where(StreamEvent.workspace_id == workspace_id, StreamEvent.id > after_id)
            .order_by(StreamEvent.id)
            .offset(count)
            .limit(1)
        )
    return further is not None


def gone(database: Database, after_id: int) -> bool:
    """Whether the event a client last saw has been pruned from the outbox (KEPT_DAYS):
    what followed it may be gone too, and cannot be replayed."""
    with database.session(write=False) as db:
        return pruned(db, after_id)


def pruned(db: Session, after_id: int) -> bool:
    """``gone``, in the caller's session."""
    oldest = db.scalar(select(func.min(StreamEvent.id)))
    return after_id > 0 and oldest is not None and after_id + 1 < oldest


# A poll (a page's way to follow the workspace where no socket opens) has no connection to
# remember what it sent, nor a bus to hear a late commit on. Like a page as it renders, it
# tells its client the ids at or below its cursor that no row held as it read (``pending``:
# taken by transactions not committed yet, on PostgreSQL where ids commit out of order),
# and the next poll names them: it returns those that have committed since, however late.
# Besides, the cursor moves only past events stored POLL_SETTLE_SECONDS ago, so a
# straggler beyond the ids a poll names (``PENDING_WINDOW``, ``PENDING_CAP``) still lies
# after the cursor when it shows if it committed within those seconds. So each event comes
# in a few polls running, and the client ignores ids it has.
POLL_SETTLE_SECONDS = 10


@dataclass(frozen=True)
class Polled:
    events: list[StreamEvent]
    cursor: int  # the next poll's ``after``
    pending: list[int]  # the next poll's ``pending``: ids at or below ``cursor`` to come
    more: bool  # a page was full: poll again at once


def poll(
    db: Session, *, workspace_id: str, after_id: int, pending: Collection[int] | None
) -> Polled:
    """The workspace's events after ``after_id`` and those of the ``pending`` ids that have
    committed since (``since``: what a page's socket is sent first); a client that names
    none (``None``: it followed a socket, which knows no pending ids) gets the recent
    stragglers at or below ``after_id`` too, as a socket's reconnect does. Then where the
    next poll starts, and the ids below that it names. ``db`` reads one snapshot
    (``one_snapshot``)."""
    fetched = since(db, workspace_id=workspace_id, after_id=after_id, pending=pending or ())
    rows = fetched
    if pending is None:
        older = stragglers(db, workspace_id=workspace_id, up_to_id=after_id)
        rows = older + fetched
    edge = utcnow() - timedelta(seconds=POLL_SETTLE_SECONDS)
    cursor = after_id
    newer = [e for e in rows if e.id > after_id]
    for event in newer:
        if event.created_at > edge:
            break
        cursor = event.id
    more = len(fetched) == PAGE
    if more and cursor == after_id and newer:  # a page of events in a few seconds: on past them
        cursor = newer[-1].id
    # Read in the snapshot the events were: an id that commits in between is either among
    # the events or still pending, never neither.
    return Polled(rows, cursor, pending_ids(db, up_to_id=cursor), more)


def one_snapshot(db: Session) -> None:
    """The session's reads from now on see the database as of one moment (the first read):
    PostgreSQL's REPEATABLE READ, which a read never fails under; a SQLite read transaction
    does so already. Before anything else in the session's transaction."""
    if db.get_bind().dialect.name != "sqlite":
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})


async def opening(
    database: Database, workspace_id: str, last: int | None, *, replay_at_most: int | None = None
) -> tuple[Seen, str]:
    """A new socket's memory and how it begins: ``replay`` what followed the client's
    ``last`` event; ``fresh`` without one (its page shows what the outbox holds); ``reset``
    when ``last`` was pruned since (what followed cannot be replayed: the client reloads),
    or more than ``replay_at_most`` of the workspace's events followed it (an anonymous
    visitor's socket: ``last_event_id=1`` had it read a week of the workspace's events)."""
    if last is not None and not await run_in_threadpool(gone, database, last):
        far = replay_at_most is not None and await run_in_threadpool(
            partial(_beyond, database, workspace_id, last, replay_at_most)
        )
        if not far:
            seen = Seen()
            seen.highest = last
            return seen, "replay"
    seen = await run_in_threadpool(seen_from_now, database, workspace_id)
    return seen, "fresh" if last is None else "reset"


# How far below a page's newest event a render looks for ids no row holds yet, and how
# many of them it names at most (the nearest).
PENDING_WINDOW = 1000
PENDING_CAP = 200


def pending_ids(db: Session, *, up_to_id: int) -> list[int]:
    """The ids at or below ``up_to_id`` (of any workspace: one sequence numbers them all)
    that no row holds as the caller reads: each taken by a transaction that has not
    committed yet, and may still (a straggler), or that rolled back and never will.

    A page rendered with ``up_to_id`` shows every event below it but these: its socket is
    sent them if they come, and none of the others again. (On SQLite ids are taken in the
    order transactions commit: only rows deleted, by an erasure, leave ids never to come.)"""
    if up_to_id <= 0:
        return []
    low = max(up_to_id - PENDING_WINDOW, 0)
    present = set(
        db.scalars(select(StreamEvent.id).where(StreamEvent.id > low, StreamEvent.id <= up_to_id))
    )
    if present:  # ids below the oldest one kept were pruned, not pending
        low = max(low, min(present) - 1)
    return [i for i in range(up_to_id, low, -1) if i not in present][:PENDING_CAP]


def latest_id(db: Session, *, workspace_id: str) -> int:
    """The id of the newest event of a workspace (0 when none)."""
    value = db.scalar(
        select(StreamEvent.id)
        .where(StreamEvent.workspace_id == workspace_id)
        .order_by(StreamEvent.id.desc())
        .limit(1)
    )
    return int(value or 0)


# Rows pruned per transaction.
PRUNE_CHUNK = 5000
# Days an event is kept for a reconnecting client to ask for.
KEPT_DAYS = 7


def first_id_since(db: Session, at: datetime) -> int | None:
    """The id of the first event stored at or after ``at`` (any workspace's; ids follow time
    but for STRAGGLER_SECONDS), or None when none was."""
    return db.scalar(
        select(StreamEvent.id)
        .where(StreamEvent.created_at >= at)
        .order_by(StreamEvent.created_at)
        .limit(1)
    )


def expire(database: Database) -> None:
    """Prune every event older than KEPT_DAYS, a chunk per transaction (see ``prune``)."""
    drain(database, prune, chunk=PRUNE_CHUNK)


def prune(db: Session, *, older_than_days: int = KEPT_DAYS, limit: int = PRUNE_CHUNK) -> int:
    """Delete up to ``limit`` outbox rows older than a reconnecting client could still ask
    for, oldest first; returns how many (the caller repeats, a transaction each, while a
    whole chunk went: a week of events at once held SQLite's write lock for seconds).

    The newest row always stays: SQLite numbers a new row after the highest id present,
    so an emptied table would hand out ids that clients have already seen again."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    # Ids follow time: the old rows are the first ones, up to the first row young enough
    # to keep (found in the index on time), which bounds the scan. An event committed a
    # moment late sits past that edge and goes on the next pass.
    edge = first_id_since(db, cutoff)
    if edge is None:
        edge = db.scalar(select(func.max(StreamEvent.id)))  # the newest stays regardless
    if edge is None:
        return 0
    chunk = (
        select(StreamEvent.id)
        .where(StreamEvent.id < edge, StreamEvent.created_at < cutoff)
        .order_by(StreamEvent.id)
        .limit(limit)
    )
    result = db.execute(delete(StreamEvent).where(StreamEvent.id.in_(chunk)))
    return int(getattr(result, "rowcount", 0) or 0)
