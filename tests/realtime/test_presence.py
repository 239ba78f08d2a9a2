"""Who is viewing a conversation, who is typing in it: said over the agents' sockets, to
the workspace's other agents on that conversation, and never stored."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from websockets.sync.client import connect

from rapport import bus
from rapport.app import create_app
from rapport.auth.models import Role
from rapport.auth.service import Principal
from rapport.config import Settings
from rapport.db import Database
from rapport.realtime import presence
from rapport.realtime.models import StreamEvent
from tests.conftest import REDIS_URL, auth
from tests.factories import Window, World
from tests.realtime.test_stream import post
from tests.web.conftest import LiveServer


@contextmanager
def stream(live_server: LiveServer, token: str) -> Iterator[Any]:
    """An agent's socket on the live server, past its first word (each wait at most 10 s:
    what never comes fails the test instead of hanging it)."""
    url = live_server.url.replace("http", "ws", 1) + "/api/v1/stream"
    with connect(url, additional_headers=auth(token), open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))  # hello
        yield ws


def say(ws: Any, message: Any) -> None:
    ws.send(json.dumps(message))


def passing(ws: Any) -> dict[str, Any]:  # the next event that has no id (said, not stored)
    while (event := json.loads(ws.recv(timeout=10)))["id"] != 0:
        pass
    return event  # type: ignore[no-any-return]


def stored(database: Database) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(StreamEvent)) or 0)


def test_an_agents_socket_says_what_she_views_and_types_and_her_colleague_hears_it(
    live_server: LiveServer, world: World, database: Database
) -> None:
    # Viewing and typing went by a request each (every 15 s, every 3 s of typing, from
    # every page): over the socket the page already holds open now.
    conv = world.acme.opened.conversation.id
    before = stored(database)
    with stream(live_server, world.bob) as bob, stream(live_server, world.alice) as alice:
        say(bob, {"type": "viewing", "conversation_id": conv})
        assert passing(alice)["type"] == "agent.viewing"  # heard before she said which
        say(alice, {"type": "viewing", "conversation_id": conv})
        seen = passing(bob)
        assert seen["type"] == "agent.viewing"
        assert seen["payload"] == {
            "conversation_id": conv,
            "user_id": world.acme.users["alice"].id,
            "name": "Alice",
        }
        say(alice, {"type": "typing", "conversation_id": conv})
        typing = passing(bob)
        assert typing["type"] == "agent.typing"
        assert typing["payload"]["conversation_id"] == conv
        assert typing["payload"]["user_id"] == world.acme.users["alice"].id
    assert stored(database) == before  # said, never kept


def test_a_socket_on_one_conversation_hears_nothing_said_of_another(
    client: TestClient, live_server: LiveServer, world: World
) -> None:
    conv = world.acme.opened.conversation.id
    other = post(client, world, "other-conv", "another customer")["conversation_id"]
    assert other != conv
    with stream(live_server, world.bob) as bob, stream(live_server, world.alice) as alice:
        say(bob, {"type": "viewing", "conversation_id": conv})
        passing(alice)
        # Said in this order on one socket: had the first reached Bob it would come first.
        say(alice, {"type": "viewing", "conversation_id": other})
        say(alice, {"type": "typing", "conversation_id": other})
        say(alice, {"type": "viewing", "conversation_id": conv})
        first = passing(bob)
    assert first["type"] == "agent.viewing" and first["payload"]["conversation_id"] == conv


def test_a_page_that_closes_is_gone_from_its_colleagues_notice_at_once(
    live_server: LiveServer, world: World
) -> None:
    # Its last "viewing" stood for 40 s after the agent had left the conversation.
    conv = world.acme.opened.conversation.id
    with stream(live_server, world.bob) as bob:
        say(bob, {"type": "viewing", "conversation_id": conv})
        with stream(live_server, world.alice) as alice:
            say(alice, {"type": "viewing", "conversation_id": conv})
            assert passing(bob)["type"] == "agent.viewing"
        gone = passing(bob)
    assert gone["type"] == "agent.left"
    assert gone["payload"] == {"conversation_id": conv, "user_id": world.acme.users["alice"].id}


def test_a_viewer_is_seen_viewing_but_never_typing(live_server: LiveServer, world: World) -> None:
    conv = world.acme.opened.conversation.id
    with stream(live_server, world.bob) as bob, stream(live_server, world.victor) as victor:
        say(bob, {"type": "viewing", "conversation_id": conv})
        say(victor, {"type": "typing", "conversation_id": conv})
        say(victor, {"type": "viewing", "conversation_id": conv})
        first = passing(bob)
    assert first["type"] == "agent.viewing"
    assert first["payload"]["user_id"] == world.acme.users["victor"].id


def test_what_a_socket_says_that_is_no_presence_is_ignored_and_the_socket_goes_on(
    live_server: LiveServer, world: World
) -> None:
    conv = world.acme.opened.conversation.id
    with stream(live_server, world.bob) as bob, stream(live_server, world.alice) as alice:
        say(bob, {"type": "viewing", "conversation_id": conv})
        passing(alice)
        alice.send("not json {")
        alice.send(b"\x00\x01")
        for odd in (
            [1, 2],
            {"type": "viewing"},
            {"type": "viewing", "conversation_id": 42},
            {"type": "viewing", "conversation_id": "x" * 33},
            {"type": "viewing", "conversation_id": "no-such-conversation"},
            {"type": "shouting", "conversation_id": conv},
        ):
            say(alice, odd)
        say(alice, {"type": "viewing", "conversation_id": conv})
        first = passing(bob)
    assert first["type"] == "agent.viewing" and first["payload"]["conversation_id"] == conv


class Heard(bus.LocalBus):
    """A bus that keeps what is published."""

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


def principal(world: World, tenant: str, person: str, role: Role) -> Principal:
    t = getattr(world, tenant)
    user = t.users[person]
    return Principal(
        user_id=user.id,
        email=user.email,
        name=user.name,
        workspace_id=t.workspace.id,
        role=role,
        via="session",
        credential_id="s",
        csrf_token=None,
        mfa_passed=True,
        totp_enabled=False,
        require_2fa=False,
    )


def test_another_workspaces_conversation_is_never_said_to_be_viewed(
    world: World, database: Database, heard: Heard
) -> None:
    mallory = presence.Presence(principal(world, "globex", "mallory", Role.owner))
    for kind in ("viewing", "typing"):
        mallory.hear(database, {"type": kind, "conversation_id": world.acme.opened.conversation.id})
    assert heard.events == []
    mallory.hear(
        database, {"type": "viewing", "conversation_id": world.globex.opened.conversation.id}
    )
    assert [(e["workspace_id"], e["type"]) for e in heard.events] == [
        (world.globex.workspace.id, "agent.viewing")
    ]


def test_a_socket_that_says_too_much_at_once_is_cut_short(
    world: World, database: Database, heard: Heard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every message a request and a bus publish: a page (or a script) could flood every
    # colleague's socket in every process.
    bob = presence.Presence(principal(world, "acme", "bob", Role.agent))
    conv = world.acme.opened.conversation.id
    for _ in range(presence.BURST * 3):
        bob.hear(database, {"type": "typing", "conversation_id": conv})
    assert len(heard.events) == presence.BURST
    clock = presence.time.monotonic() + 2 / presence.PER_SECOND
    monkeypatch.setattr(presence.time, "monotonic", lambda: clock)
    for _ in range(5):
        bob.hear(database, {"type": "typing", "conversation_id": conv})
    assert len(heard.events) == presence.BURST + 2


def test_viewing_and_typing_by_request_are_limited_per_member(
    client: TestClient, world: World, heard: Heard
) -> None:
    # The requests a page whose socket cannot open says it by had no limit: one client
    # could flood every colleague's socket, in every process.
    conv = world.acme.opened.conversation.id

    def say_by_request(token: str, what: str) -> Any:
        return client.post(f"/api/v1/conversations/{conv}/{what}", headers=auth(token))

    window = Window(presence.REQUEST_WINDOW)
    for n in range(presence.REQUESTS):
        assert say_by_request(world.bob, ("viewing", "typing")[n % 2]).status_code == 204
    for what in ("viewing", "typing"):
        r = say_by_request(world.bob, what)
        assert r.status_code == 429, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert window.waits(r.headers["Retry-After"])
        assert r.json()["status"] == 429
    assert len(heard.events) == presence.REQUESTS  # the refused ones told nobody
    assert say_by_request(world.alice, "viewing").status_code == 204  # hers are her own


def test_the_requests_budget_is_one_across_processes_with_redis(
    settings: Settings, database: Database, world: World
) -> None:
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    settings.redis_url = REDIS_URL
    # Two web processes behind a load balancer: each request may go to either.
    one, two = (TestClient(create_app(settings, database=database)) for _ in range(2))
    conv = world.acme.opened.conversation.id
    for n in range(presence.REQUESTS):
        r = (one, two)[n % 2].post(f"/api/v1/conversations/{conv}/viewing", headers=auth(world.bob))
        assert r.status_code == 204, r.text
    r = one.post(f"/api/v1/conversations/{conv}/typing", headers=auth(world.bob))
    assert r.status_code == 429
