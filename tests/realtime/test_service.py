"""The outbox: how a transaction's events are stored, numbered and published."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from rapport import bus
from rapport.db import Database, savepoint, utcnow
from rapport.realtime import service as realtime
from rapport.realtime.models import StreamEvent
from tests.conftest import postgresql_only
from tests.factories import World


class Heard(bus.LocalBus):
    """A bus that keeps what is published, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture
def heard() -> Iterator[Heard]:
    heard = Heard()
    bus.set_bus(heard)
    yield heard
    bus.set_bus(bus.LocalBus())


@contextmanager
def inserts_into_the_outbox(database: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO STREAM_EVENTS"):
            statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)


def test_a_transaction_stores_its_many_events_in_one_insert_in_the_order_emitted(
    database: Database, world: World, heard: Heard
) -> None:
    # Each event was an ORM row of its own, inserted one statement at a time on SQLite:
    # a removed agent's 3,000 released conversations (6,000 events) took 6,000 inserts.
    ws = world.acme.workspace.id
    with inserts_into_the_outbox(database) as inserts, database.session() as db:
        emitted = [
            realtime.emit(db, workspace_id=ws, type="conversation.updated", payload={"n": n})
            for n in range(300)
        ]
        db.flush()
        assert heard.events == []  # nothing is published before the commit
    assert len(inserts) == 1
    ids = [e.id for e in emitted]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids)
    assert [e["id"] for e in heard.events] == ids
    assert [e["payload"]["n"] for e in heard.events] == list(range(300))
    with database.session(write=False) as db:
        stored = db.execute(
            select(StreamEvent.id, StreamEvent.payload).where(StreamEvent.id.in_(ids))
        ).all()
    assert sorted((r.id, r.payload["n"]) for r in stored) == list(zip(ids, range(300), strict=True))


def test_a_savepoint_rolled_back_takes_its_events_with_it_and_the_others_are_stored(
    database: Database, world: World, heard: Heard
) -> None:
    ws = world.acme.workspace.id
    with database.session() as db:
        before = realtime.emit(db, workspace_id=ws, type="test.before", payload={})
        with pytest.raises(RuntimeError), savepoint(db):
            realtime.emit(db, workspace_id=ws, type="test.undone", payload={})
            raise RuntimeError("a rule's action failed")
        with savepoint(db):
            kept = realtime.emit(db, workspace_id=ws, type="test.kept", payload={})
        after = realtime.emit(db, workspace_id=ws, type="test.after", payload={})
    assert [e["type"] for e in heard.events] == ["test.before", "test.kept", "test.after"]
    assert before.id is not None and kept.id is not None and after.id is not None
    assert before.id < kept.id < after.id
    with database.session(write=False) as db:
        types = set(db.scalars(select(StreamEvent.type).where(StreamEvent.workspace_id == ws)))
    assert "test.undone" not in types and {"test.before", "test.kept"} <= types


def test_a_transaction_that_rolls_back_stores_and_publishes_none_of_its_events(
    database: Database, world: World, heard: Heard
) -> None:
    ws = world.acme.workspace.id
    with pytest.raises(RuntimeError), database.session() as db:
        realtime.emit(db, workspace_id=ws, type="test.undone", payload={})
        raise RuntimeError("rolled back")
    with database.session(write=False) as db:
        assert db.scalar(select(StreamEvent.id).where(StreamEvent.type == "test.undone")) is None
    assert heard.events == []


@postgresql_only
def test_a_long_transactions_event_is_numbered_as_it_commits_not_when_emitted(
    database: Database, world: World, heard: Heard
) -> None:
    # An event took its id when its transaction flushed: one emitted early in a long
    # transaction came out below the ids committed meanwhile, a straggler that replays
    # could send again only within a minute.
    ws = world.acme.workspace.id
    with database.session() as long:
        early = realtime.emit(long, workspace_id=ws, type="test.long", payload={})
        long.flush()
        with database.session() as short:
            meanwhile = realtime.emit(short, workspace_id=ws, type="test.short", payload={})
    assert early.id is not None and meanwhile.id is not None
    assert early.id > meanwhile.id
    assert [e["type"] for e in heard.events] == ["test.short", "test.long"]


def test_events_stored_directly_inside_a_savepoint_leave_the_emitted_ones_to_the_commit(
    database: Database, world: World, heard: Heard
) -> None:
    # Storing rows directly (as ingest does) stored the events emitted so far with them:
    # inside a savepoint that then rolled back, an event emitted before it lost its row
    # and was published all the same, under an id the outbox never had.
    ws = world.acme.workspace.id
    with database.session() as db:
        before = realtime.emit(db, workspace_id=ws, type="test.before", payload={})
        with pytest.raises(RuntimeError), savepoint(db):
            row = {"workspace_id": ws, "type": "test.direct", "payload": {}, "created_at": utcnow()}
            realtime.store(db, [row])
            raise RuntimeError("rolled back")
    assert [e["type"] for e in heard.events] == ["test.before"]
    with database.session(write=False) as db:
        stored = db.get(StreamEvent, before.id)
        assert stored is not None and stored.type == "test.before"
