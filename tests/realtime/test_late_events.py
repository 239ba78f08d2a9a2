"""Events that commit out of id order, or in another process, still reach an open page."""

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from rapport.bus import get_bus
from rapport.db import Database
from rapport.realtime.models import StreamEvent
from rapport.realtime.service import as_dict
from tests.conftest import auth, postgresql_only
from tests.factories import PASSWORD, World
from tests.realtime.test_stream import post


def test_a_straggler_committed_after_the_page_rendered_reaches_its_socket(
    client: TestClient, world: World, database: Database
) -> None:
    # On PostgreSQL id 10 can commit after id 11. A page rendered while 10 was still
    # uncommitted shows 11 (data-last-event-id=11) but not 10; its socket opened with
    # from_page=1, which skipped every straggler at or below 11: event 10 never arrived.
    # The page now names the ids pending as it rendered, and those are sent.
    ws_id = world.acme.workspace.id
    post(client, world, "s1")
    with database.session(write=False) as db:
        last = db.scalar(select(StreamEvent.id).order_by(StreamEvent.id.desc()).limit(1))
    # "early" (last+2) commits first; "late" (last+1) was inserted before it, still open.
    with database.session() as db:
        db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
        if not database.is_sqlite:
            db.execute(
                text("SELECT setval(pg_get_serial_sequence('stream_events', 'id'), :n)"),
                {"n": last + 2},
            )
    client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    page = client.get("/app/inbox").text
    rendered = int(re.search(r'data-last-event-id="(\d+)"', page)[1])  # type: ignore[index]
    assert rendered == last + 2
    # The page has rendered (without "late"); now "late" commits, before the socket opens.
    with database.session() as db:
        early = db.get(StreamEvent, last + 2)
        assert early is not None
        db.add(
            StreamEvent(
                id=last + 1,
                workspace_id=ws_id,
                type="test.late",
                payload={},
                created_at=early.created_at - timedelta(milliseconds=5),
            )
        )
    with database.session() as db:
        get_bus().publish(as_dict(db.get(StreamEvent, last + 1)))  # nobody listens yet
    pending = re.search(r'data-pending-event-ids="([\d,]*)"', page)[1]  # type: ignore[index]
    assert str(last + 1) in pending.split(",")
    url = f"/api/v1/stream?last_event_id={rendered}&from_page=1&pending={pending}"
    with client.websocket_connect(url, headers=auth(world.bob)) as ws:
        post(client, world, "after", "marker")
        got = [ws.receive_json()]
        while got[-1].get("payload", {}).get("text") != "marker":
            got.append(ws.receive_json())
    assert "test.late" in [e["type"] for e in got]


def test_a_server_with_its_own_worker_still_gets_events_of_a_separate_rapport_worker(
    settings, database: Database, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without Redis, `rapport serve` (its worker in process: the default) took itself for
    # the only writer of events: its sockets never read the outbox, so what a separate
    # `rapport worker` or `rapport smtp` commits (a bot's answer, a delivery status, an
    # email) reached no open socket until it reconnected.
    import time

    from rapport import bus
    from rapport.app import create_app
    from tests.realtime.test_stream import committed_elsewhere

    monkeypatch.setattr(bus, "QUIET_SECONDS", 0.2)  # as soon as it reads the outbox at all
    settings.worker_in_process = True  # the default of `rapport serve`
    app = create_app(settings, database=database)
    with TestClient(app) as client:
        try:
            with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
                assert ws.receive_json()["type"] == "hello"
                missed_id = committed_elsewhere(database, world)  # by `rapport worker`
                time.sleep(2)
                post(client, world, "marker", "marker")
                got = [ws.receive_json()]
                while got[-1].get("payload", {}).get("text") != "marker":
                    got.append(ws.receive_json())
        finally:
            bus.set_bus(bus.LocalBus())
    assert missed_id in [e.get("id") for e in got]


@postgresql_only
def test_an_event_whose_commit_waits_on_a_row_lock_is_not_lost_to_a_polling_page(
    client: TestClient, world: World, database: Database
) -> None:
    # Emitted events take their ids in before_commit, *before* SQLAlchemy's final flush of
    # the transaction's pending changes: a flush that then waits on a row lock (another
    # transaction holding the conversation) leaves the id allocated but uncommitted for as
    # long as the wait. Later ids commit meanwhile; once they are POLL_SETTLE_SECONDS old the
    # poll cursor moves past the waiting id, and the event is never polled.
    import threading
    import time

    from rapport.conversations.models import Conversation, Priority
    from rapport.realtime import service as realtime

    ws_id = world.acme.workspace.id
    conv_id = world.acme.opened.conversation.id
    cursor = client.get("/api/v1/events", headers=auth(world.bob)).json()["cursor"]
    locker = database.engine.connect()
    tx = locker.begin()
    locker.execute(text("SELECT id FROM conversations WHERE id = :id FOR UPDATE"), {"id": conv_id})

    def change() -> None:
        with database.session() as db:
            conv = db.get(Conversation, conv_id)
            assert conv is not None
            conv.priority = Priority.high  # flushed at commit, after the event's insert
            realtime.emit(db, workspace_id=ws_id, type="test.late", payload={})

    worker = threading.Thread(target=change)
    worker.start()
    time.sleep(0.5)  # its event is inserted; its UPDATE waits for the lock
    with database.session() as db:
        realtime.emit(db, workspace_id=ws_id, type="test.early", payload={})
    seen: list[dict] = []  # type: ignore[type-arg]
    deadline = time.monotonic() + realtime.POLL_SETTLE_SECONDS + 2
    while time.monotonic() < deadline:  # the page polls every few seconds
        page = client.get(f"/api/v1/events?after={cursor}", headers=auth(world.bob)).json()
        seen += page["events"]
        cursor = page["cursor"]
        time.sleep(1)
    tx.commit()  # the other transaction ends: the waiting one commits its event
    locker.close()
    worker.join(10)
    for _ in range(3):
        page = client.get(f"/api/v1/events?after={cursor}", headers=auth(world.bob)).json()
        seen += page["events"]
        cursor = page["cursor"]
    types = [e["type"] for e in seen]
    assert "test.early" in types
    with database.session(write=False) as db:
        late, early = (
            db.scalar(select(StreamEvent.id).where(StreamEvent.type == t))
            for t in ("test.late", "test.early")
        )
    # Its id was taken once the lock was had, as it committed: after the other's (it was
    # taken before the wait, and the poll's cursor had passed it by the time it committed).
    assert late is not None and early is not None and late > early
    assert "test.late" in types
