"""The agents' websocket: live events of their own workspace, and nothing missed on reconnect."""

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect

from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.models import Job
from rapport.realtime import service
from tests.conftest import auth
from tests.factories import PASSWORD, World
from tests.web.conftest import LiveServer, free_port

REDIS_URL = os.environ.get("RAPPORT_TEST_REDIS_URL")


def post(client: TestClient, world: World, ext: str, text: str = "hi") -> dict:  # type: ignore[type-arg]
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": text, "from": {"email": f"{ext}@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def next_of(ws, kind: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    while (event := ws.receive_json())["type"] != kind:
        pass
    return event  # type: ignore[no-any-return]


def test_an_agent_receives_a_message_the_moment_it_is_stored(
    client: TestClient, world: World
) -> None:
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello"
        stored = post(client, world, "live-1", "where is my parcel?")
        event = next_of(ws, "message.created")
    assert (
        event["payload"]["id"] == stored["id"] and event["payload"]["text"] == "where is my parcel?"
    )
    assert event["id"] > hello["last_event_id"]


def test_a_token_in_the_query_string_works_for_browsers_and_bad_ones_are_refused(
    client: TestClient, world: World
) -> None:
    with client.websocket_connect(f"/api/v1/stream?token={world.bob}") as ws:
        assert ws.receive_json()["type"] == "hello"
    for url in ("/api/v1/stream", "/api/v1/stream?token=rpt_forged"):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url) as ws:
            ws.receive_json()
        assert refused.value.code == 1008


def test_another_workspace_never_sees_the_event(client: TestClient, world: World) -> None:
    with client.websocket_connect("/api/v1/stream", headers=auth(world.mallory)) as ws:
        ws.receive_json()
        post(client, world, "secret-1", "acme only")
        # Something of Globex's own, so the socket has something to say.
        client.post(
            f"/api/v1/conversations/{world.globex.opened.conversation.id}/notes",
            json={"text": "globex note"},
            headers=auth(world.mallory),
        )
        event = next_of(ws, "message.created")
    assert event["payload"]["text"] == "globex note"


def test_reconnecting_with_the_last_event_id_replays_what_was_missed_in_order(
    client: TestClient, world: World
) -> None:
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        last = ws.receive_json()["last_event_id"]
    # The agent is away (a train tunnel) while three messages arrive.
    missed = [post(client, world, f"away-{i}", f"message {i}")["id"] for i in range(3)]
    with client.websocket_connect(
        f"/api/v1/stream?last_event_id={last}", headers=auth(world.bob)
    ) as ws:
        replayed = []
        while len(replayed) < 3:
            event = ws.receive_json()
            # Recent events at or below ``last`` come again (stragglers): the client
            # already has them and skips them by id.
            if event["type"] == "message.created" and event["id"] > last:
                replayed.append(event)
        post(client, world, "back-1", "live again")
        live = next_of(ws, "message.created")
    assert [e["payload"]["id"] for e in replayed] == missed
    ids = [e["id"] for e in replayed]
    assert ids == sorted(ids) and live["id"] > ids[-1]


def test_a_page_gets_what_committed_between_its_render_and_its_socket(
    client: TestClient, world: World
) -> None:
    # A page's socket began from whatever the outbox held when it opened: a message stored
    # while the page was loading (after its render, before its socket) never reached it.
    before = post(client, world, "before-render", "already on the page")
    client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    page = client.get("/app/inbox").text
    rendered = int(re.search(r'data-last-event-id="(\d+)"', page)[1])  # type: ignore[index]
    loading = post(client, world, "while-loading", "stored while the page loads")
    url = f"/api/v1/stream?last_event_id={rendered}&from_page=1"
    with client.websocket_connect(url, headers=auth(world.bob)) as ws:
        first = ws.receive_json()
        # What the page already shows is not sent again (no recent events at or below it).
        assert first["type"] != "hello" and first["id"] > rendered
        event = first if first["type"] == "message.created" else next_of(ws, "message.created")
        assert event["payload"]["id"] == loading["id"] != before["id"]
        post(client, world, "live-after", "and live after")
        assert next_of(ws, "message.created")["payload"]["text"] == "and live after"


@pytest.mark.postgres
@pytest.mark.redis
def test_two_processes_on_postgresql_and_redis_deliver_each_others_events(
    pg_migrated: str, tmp_path: Path
) -> None:
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    websockets = pytest.importorskip("websockets.sync.client", reason="websockets not installed")
    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": pg_migrated,
        "RAPPORT_REDIS_URL": REDIS_URL,
        "RAPPORT_SECRET_KEY": secrets.token_urlsafe(40),
        "RAPPORT_LOG_LEVEL": "WARNING",
        "RAPPORT_DEMO": "0",
        # As deployed: each server stores through a writer process of its own.
        "RAPPORT_INGEST_PROCESS": "1",
    }
    cli = [sys.executable, "-m", "rapport.cli"]
    name = f"Scale {secrets.token_hex(3)}"
    made = subprocess.run(
        [
            *cli,
            "workspace",
            "create",
            name,
            "--owner",
            f"o-{name[-6:]}@scale.test",
            "--password",
            "a long password",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    token = subprocess.run(
        [*cli, "token", "create", "--workspace", name, "--email", f"o-{name[-6:]}@scale.test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    ports = [free_port(), free_port()]
    servers = [
        subprocess.Popen(
            [*cli, "serve", "--host", "127.0.0.1", "--port", str(p), "--no-worker"],
            env={**env, "RAPPORT_PUBLIC_URL": f"http://127.0.0.1:{p}"},
        )
        for p in ports
    ]
    try:
        for p in ports:
            deadline = time.monotonic() + 90  # a loaded machine (parallel tests) starts them slowly
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        headers = {"Authorization": f"Bearer {token}"}
        inbox = httpx.post(
            f"{b}/api/v1/inboxes", json={"name": "API", "channel": "api"}, headers=headers
        ).json()
        with websockets.connect(
            f"ws://127.0.0.1:{ports[0]}/api/v1/stream?token={token}", open_timeout=10
        ) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            stored = httpx.post(
                f"{b}/api/v1/inboxes/{inbox['id']}/messages",
                json={
                    "external_id": "x-1",
                    "text": "through B",
                    "from": {"email": "two@example.com"},
                },
                headers=headers,
                timeout=30,
            ).json()
            while True:
                event = json.loads(ws.recv(timeout=10))
                if event["type"] == "message.created":
                    break
        assert event["payload"]["id"] == stored["id"] and event["payload"]["text"] == "through B"

        # What one process changes, the other forgets at once (not after its caches' five
        # seconds): a token revoked through A no longer works at B, which had just cached it...
        # (A token is made from a browser or the command, not with another token.)
        second_token = subprocess.run(
            [*cli, "token", "create", "--workspace", name, "--email", f"o-{name[-6:]}@scale.test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        other = {"Authorization": f"Bearer {second_token}"}
        # The owner's tokens, oldest first: this one is the last.
        second = httpx.get(f"{a}/api/v1/tokens", headers=headers, timeout=30).json()[-1]
        assert httpx.get(f"{b}/api/v1/auth/me", headers=other, timeout=30).status_code == 200
        revoked = httpx.delete(f"{a}/api/v1/tokens/{second['id']}", headers=headers, timeout=30)
        assert revoked.status_code == 204
        time.sleep(0.3)  # Redis carries the word
        assert httpx.get(f"{b}/api/v1/auth/me", headers=other, timeout=30).status_code == 401
        # ... and a rule saved through A applies to the next message B's writer stores.
        made_rule = httpx.post(
            f"{a}/api/v1/automation-rules",
            json={
                "name": "r",
                "event": "message.received",
                "actions": [{"type": "add_label", "value": "heard"}],
            },
            headers=headers,
            timeout=30,
        )
        assert made_rule.status_code == 201, made_rule.text
        time.sleep(0.3)
        after = httpx.post(
            f"{b}/api/v1/inboxes/{inbox['id']}/messages",
            json={"external_id": "x-2", "text": "again", "from": {"email": "two@example.com"}},
            headers=headers,
            timeout=30,
        ).json()
        db = Database(pg_migrated)
        with db.session(write=False) as session:
            queued = session.scalars(select(Job.args).where(Job.name == "automation")).all()
        db.dispose()
        assert after["id"] in [q.get("message_id") for q in queued]

        # Who views and types in a conversation, said over a socket to one process, reaches
        # a colleague's socket on the other (through Redis), and her leaving too.
        link = subprocess.run(
            [*cli, "workspace", "invite", name, "--email", f"k-{name[-6:]}@scale.test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        joined = httpx.post(
            f"{a}/api/v1/invitations/accept",
            json={"token": link.split("#", 1)[1], "password": "a long password", "name": "Kim"},
            timeout=30,
        )
        assert joined.status_code == 201, joined.text
        kim = subprocess.run(
            [*cli, "token", "create", "--workspace", name, "--email", f"k-{name[-6:]}@scale.test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        conv = stored["conversation_id"]

        def passing(ws: Any) -> dict[str, Any]:
            while (said := json.loads(ws.recv(timeout=10)))["id"] != 0:
                pass
            return said  # type: ignore[no-any-return]

        with websockets.connect(
            f"ws://127.0.0.1:{ports[0]}/api/v1/stream?token={token}", open_timeout=10
        ) as owner:
            json.loads(owner.recv(timeout=10))
            owner.send(json.dumps({"type": "viewing", "conversation_id": conv}))
            with websockets.connect(
                f"ws://127.0.0.1:{ports[1]}/api/v1/stream?token={kim}", open_timeout=10
            ) as colleague:
                json.loads(colleague.recv(timeout=10))
                colleague.send(json.dumps({"type": "viewing", "conversation_id": conv}))
                viewing = passing(owner)
                assert viewing["type"] == "agent.viewing"
                assert viewing["payload"]["name"] == "Kim"
                colleague.send(json.dumps({"type": "typing", "conversation_id": conv}))
                assert passing(owner)["type"] == "agent.typing"
            assert passing(owner)["type"] == "agent.left"
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait(10)


def test_an_event_committed_after_a_later_one_still_reaches_the_agent(
    client: TestClient, world: World
) -> None:
    """Ids are allocated at insert, not at commit: on PostgreSQL id 10 can become visible
    after id 11. Neither the live feed nor a reconnect may lose it."""
    from rapport.bus import get_bus
    from rapport.realtime.models import StreamEvent
    from rapport.realtime.service import as_dict

    database = client.app.state.database  # type: ignore[attr-defined]
    ws_id = world.acme.workspace.id
    first = post(client, world, "s1")
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        last = ws.receive_json()["last_event_id"]
        assert last >= 1
        # Event "late" takes id last+1 but commits after "early" (id last+2) was delivered.
        with database.session() as db:
            db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
        with database.session() as db:
            early = db.get(StreamEvent, last + 2)
            get_bus().publish(as_dict(early))
        assert next_of(ws, "test.early")["id"] == last + 2
        with database.session() as db:
            db.add(StreamEvent(id=last + 1, workspace_id=ws_id, type="test.late", payload={}))
        with database.session() as db:
            get_bus().publish(as_dict(db.get(StreamEvent, last + 1)))
        assert next_of(ws, "test.late")["id"] == last + 1
    # A client that saw only "early" before dropping gets "late" on reconnect.
    with client.websocket_connect(
        f"/api/v1/stream?last_event_id={last + 2}", headers=auth(world.bob)
    ) as ws:
        replayed = [ws.receive_json()]
        while replayed[-1]["type"] != "test.late":
            replayed.append(ws.receive_json())
    assert all(e["id"] <= last + 2 for e in replayed)
    assert first["conversation_id"]


def test_ephemeral_events_keep_coming_after_the_first(client: TestClient, world: World) -> None:
    """Typing and viewing notices carry no id: each one reaches the other agents."""
    conv = post(client, world, "eph")["conversation_id"]
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        ws.receive_json()  # hello
        for _ in range(3):
            r = client.post(f"/api/v1/conversations/{conv}/viewing", headers=auth(world.alice))
            assert r.status_code == 204
            event = next_of(ws, "agent.viewing")
            assert event["payload"]["conversation_id"] == conv
            assert event["payload"]["name"] == "Alice"


def test_pruning_a_quiet_week_never_hands_out_an_event_id_again(
    client: TestClient, world: World, database: Database
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from rapport.db import utcnow
    from rapport.realtime.models import StreamEvent

    post(client, world, "quiet-1")
    with database.session() as db:
        newest = db.scalar(select(func.max(StreamEvent.id)))
        db.execute(update(StreamEvent).values(created_at=utcnow() - timedelta(days=8)))
        assert service.prune(db, older_than_days=7) > 0
        assert list(db.scalars(select(StreamEvent.id))) == [newest]  # the newest stays
    post(client, world, "quiet-2")
    with database.session(write=False) as db:
        assert db.scalar(select(func.min(StreamEvent.id))) == newest
        assert db.scalar(select(func.count()).select_from(StreamEvent)) > 1


def test_pruning_goes_oldest_first_a_chunk_per_transaction_and_keeps_the_young(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, update

    from rapport.db import utcnow
    from rapport.jobs import periodic
    from rapport.jobs.registry import JobContext
    from rapport.realtime.models import StreamEvent

    for n in range(6):
        post(client, world, f"old-{n}")
    with database.session() as db:
        db.execute(update(StreamEvent).values(created_at=utcnow() - timedelta(days=8)))
        aged = db.scalar(select(func.count()).select_from(StreamEvent))
    for n in range(3):
        post(client, world, f"young-{n}")
    with database.session(write=False) as db:
        young = set(
            db.scalars(
                select(StreamEvent.id).where(StreamEvent.created_at > utcnow() - timedelta(days=1))
            )
        )
    assert aged >= 6 and young
    with database.session() as db:
        assert service.prune(db, older_than_days=7, limit=4) == 4
    with database.session(write=False) as db:
        left = list(db.scalars(select(StreamEvent.id).order_by(StreamEvent.id)))
    assert len(left) == aged - 4 + len(young) and set(left) >= young
    periodic.prune_stream_events(
        JobContext(
            database=database,
            settings=settings,
            job_id="",
            attempt=1,
            workspace_id=None,
            max_attempts=8,
        )
    )
    with database.session(write=False) as db:
        assert set(db.scalars(select(StreamEvent.id))) == young


def committed_elsewhere(database: Database, world: World) -> int:
    """An event of Acme's (and one of Globex's) committed and never published here, as
    another process's that missed the bus; the id of Acme's."""
    from rapport.realtime.models import StreamEvent

    with database.session() as db:
        missed = StreamEvent(
            workspace_id=world.acme.workspace.id,
            type="conversation.updated",
            payload={"id": "elsewhere"},
        )
        other = StreamEvent(
            workspace_id=world.globex.workspace.id, type="conversation.updated", payload={}
        )
        db.add_all([missed, other])
        db.flush()
        return missed.id


def test_an_event_that_missed_the_bus_still_arrives_when_the_socket_is_quiet(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process commits an event while Redis is away (or this process's
    # subscription is reconnecting): it never reaches this process's bus. A quiet socket
    # reads the outbox, so the agent gets it, late instead of never.
    from rapport import bus
    from rapport.realtime.models import StreamEvent

    monkeypatch.setattr(bus.get_bus(), "quiet", 0.2)  # as with Redis, sooner
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        missed_id = committed_elsewhere(database, world)
        event = next_of(ws, "conversation.updated")
        assert event["id"] == missed_id and event["payload"] == {"id": "elsewhere"}
        live = post(client, world, "after-missed")
        assert next_of(ws, "message.created")["payload"]["id"] == live["id"]
    with database.session(write=False) as db:
        assert db.scalar(select(StreamEvent.id).where(StreamEvent.id == missed_id))


def test_a_missed_event_still_arrives_while_the_workspace_is_busy(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outbox was read only after a quiet spell, and any event heard started the spell
    # over: with agents' presence pings every few seconds a busy workspace was never quiet,
    # and an event that missed the bus never came. It is read on a fixed cadence now.
    from rapport import bus

    the_bus = bus.get_bus()
    monkeypatch.setattr(the_bus, "quiet", 0.2)
    conv = post(client, world, "busy-1")["conversation_id"]
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        missed_id = committed_elsewhere(database, world)
        for _ in range(100):  # someone keeps looking at a conversation, 20 times a second
            r = client.post(f"/api/v1/conversations/{conv}/viewing", headers=auth(world.alice))
            assert r.status_code == 204, r.text
            event = ws.receive_json()
            if event["id"] == missed_id:
                break
            assert event["type"] == "agent.viewing"
            time.sleep(0.05)
        else:
            raise AssertionError("the missed event never came while the pings went on")


def test_an_event_committed_while_a_new_socket_starts_still_reaches_it(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new socket subscribes, then marks what the outbox holds as shown by the page. An
    # event committed between the two was marked too, and dropped when heard: lost.
    from rapport.realtime import service as realtime

    latest = realtime.latest_id
    committed: list[int] = []

    def meanwhile(db: Any, *, workspace_id: str) -> int:
        if workspace_id == world.acme.workspace.id and not committed:
            with database.session() as other:
                event = realtime.emit(
                    other,
                    workspace_id=workspace_id,
                    type="conversation.updated",
                    payload={"id": "meanwhile"},
                )
            assert event.id is not None
            committed.append(event.id)
        return latest(db, workspace_id=workspace_id)

    monkeypatch.setattr(realtime, "latest_id", meanwhile)
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["last_event_id"] == committed[0]
        post(client, world, "after-start")
        event = ws.receive_json()
        assert (event["type"], event["id"]) == ("conversation.updated", committed[0])
        assert next_of(ws, "message.created")["payload"]["text"] == "hi"


def test_a_client_away_longer_than_the_outbox_keeps_events_is_told_to_reload(
    client: TestClient, world: World, database: Database
) -> None:
    # Resuming from an event pruned since (the outbox keeps a week) replayed what was left
    # and said nothing of what was gone: the page showed a partial picture as whole.
    from sqlalchemy import delete

    from rapport.realtime.models import StreamEvent

    for n in range(3):
        post(client, world, f"away-{n}")
    with database.session() as db:
        ids = sorted(db.scalars(select(StreamEvent.id)))
        db.execute(delete(StreamEvent).where(StreamEvent.id < ids[-1]))  # as pruning does
    url = f"/api/v1/stream?last_event_id={ids[0]}"
    with client.websocket_connect(url, headers=auth(world.bob)) as ws:
        assert ws.receive_json() == {"type": "reset"}
        assert ws.receive_json() == {"type": "hello", "last_event_id": ids[-1]}
    # Whoever saw the event just before the oldest kept one has missed nothing: replayed.
    url = f"/api/v1/stream?last_event_id={ids[-1] - 1}"
    with client.websocket_connect(url, headers=auth(world.bob)) as ws:
        assert ws.receive_json()["id"] == ids[-1]


def test_without_redis_a_server_reads_the_outbox_whether_its_worker_runs_inside_or_not(
    client: TestClient, settings: Settings, database: Database
) -> None:
    # `rapport serve --no-worker` beside `rapport worker`, without Redis: the workers'
    # events (deliveries, SLA, automation) never reach this process's bus, so its sockets
    # read the outbox every QUIET_SECONDS. With the worker inside, so they must too:
    # `rapport smtp`'s mail and a separate `rapport worker`'s events came only on reload.
    from rapport import bus
    from rapport.app import create_app

    assert not settings.worker_in_process and not settings.redis_url
    assert bus.get_bus().quiet == bus.QUIET_SECONDS
    alone = settings.model_copy(update={"worker_in_process": True})
    with TestClient(create_app(alone, database=database)):
        assert bus.get_bus().quiet == bus.QUIET_SECONDS


def test_a_socket_ends_once_its_token_is_revoked(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller was checked only when the socket opened: a revoked token, a member
    # removed or signed out everywhere kept receiving every message of the workspace.
    from rapport.realtime import views as stream_views

    monkeypatch.setattr(stream_views, "RECHECK_SECONDS", 0.1)
    [token] = client.get("/api/v1/tokens", headers=auth(world.bob)).json()
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        r = client.delete(f"/api/v1/tokens/{token['id']}", headers=auth(world.bob))
        assert r.status_code == 204, r.text
        time.sleep(0.5)  # a recheck or more
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": "after-revoke", "text": "hi", "from": {"email": "x@example.com"}},
            headers=auth(world.alice),
        )
        assert r.status_code == 201, r.text
        with pytest.raises(WebSocketDisconnect) as ended:
            ws.receive_json()
    assert ended.value.code == 1008


def test_an_event_committed_after_a_later_one_reaches_an_agent_back_minutes_later(
    client: TestClient, world: World, database: Database
) -> None:
    # Ids are allocated at insert: on PostgreSQL id 10 can commit after id 11 (ingest
    # stores its events mid-transaction). A replay sends such stragglers again, but only
    # those of the last 60 seconds *before the reconnect*: an agent who saw 11, dropped
    # before 10 committed and came back two minutes later never got 10.
    from datetime import timedelta

    from sqlalchemy import text

    from rapport.bus import get_bus
    from rapport.realtime.models import StreamEvent
    from rapport.realtime.service import as_dict

    ws_id = world.acme.workspace.id
    post(client, world, "s1")
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        last = ws.receive_json()["last_event_id"]
        with database.session() as db:
            db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
        with database.session() as db:
            get_bus().publish(as_dict(db.get(StreamEvent, last + 2)))
        assert next_of(ws, "test.early")["id"] == last + 2
    # The agent's laptop sleeps; meanwhile "late", inserted before "early", commits.
    with database.session() as db:
        early = db.get(StreamEvent, last + 2)
        assert early is not None
        db.add(
            StreamEvent(
                id=last + 1,
                workspace_id=ws_id,
                type="test.late",
                payload={},
                created_at=early.created_at - timedelta(seconds=1),
            )
        )
    with database.session() as db:  # two minutes pass before the agent is back
        for event in db.scalars(select(StreamEvent).where(StreamEvent.workspace_id == ws_id)):
            event.created_at -= timedelta(minutes=2)
        if not database.is_sqlite:  # the ids given by hand, as the sequence had given them
            db.execute(
                text("SELECT setval(pg_get_serial_sequence('stream_events', 'id'), :n)"),
                {"n": last + 2},
            )
    with client.websocket_connect(
        f"/api/v1/stream?last_event_id={last + 2}", headers=auth(world.bob)
    ) as ws:
        post(client, world, "back", "I am back")
        replayed = [ws.receive_json()]
        while replayed[-1]["payload"].get("text") != "I am back":
            replayed.append(ws.receive_json())
    assert "test.late" in [e["type"] for e in replayed]


@pytest.mark.parametrize("who", ["agent", "visitor"])
def test_a_client_gone_before_its_first_event_is_not_an_error(
    live_server: LiveServer,
    client: TestClient,
    world: World,
    who: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A page left at once (an agent clicking on within the app): the socket's first word went
    # to a client already gone, and the server logged "Exception in ASGI application".
    if who == "agent":
        path, headers = "/api/v1/stream", auth(world.bob)
    else:
        chat = client.post(
            "/api/v1/inboxes",
            json={"name": "Chat", "channel": "webchat"},
            headers=auth(world.alice),
        ).json()["public_token"]
        visitor = client.post(f"/widget/api/{chat}/session", json={}).json()["visitor_token"]
        path, headers = f"/widget/ws/{chat}?visitor={visitor}", {}
    asked = threading.Event()
    opening = service.opening

    async def slow_opening(*args: Any, **kwargs: Any) -> tuple[service.Seen, str]:
        asked.set()
        await asyncio.sleep(0.5)  # the client leaves meanwhile
        seen, _ = await opening(*args, **kwargs)
        return seen, "reset"  # a begin that says something on either socket

    monkeypatch.setattr(service, "opening", slow_opening)
    url = live_server.url.replace("http", "ws", 1) + path
    with connect(url, additional_headers=headers):
        assert asked.wait(10)
    time.sleep(1.5)
    assert "Exception in ASGI application" not in caplog.text
