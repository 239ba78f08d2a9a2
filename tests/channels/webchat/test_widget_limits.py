"""The widget's public API refuses what it must before doing anything: a page of an origin
the inbox does not allow, and a visitor (or a script) sending faster than a person."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from rapport import bus
from rapport.auth.ratelimit import RateLimiter
from rapport.channels.webchat import views as webchat_views
from rapport.channels.webchat.models import Visitor
from rapport.conversations.models import Message
from rapport.db import Database
from tests.channels.webchat.test_widget import (  # noqa: F401  (chat: a fixture)
    HOST_PAGE,
    chat,
    next_message,
    say,
    start,
)
from tests.conftest import auth
from tests.factories import Window, World
from tests.web.test_pages import sign_in

EVIL = "http://evil.example"


def visitors(database: Database) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(Visitor)) or 0)


def messages(database: Database, inbox_id: str) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).where(Message.inbox_id == inbox_id)) or 0)


def test_a_page_of_another_origin_makes_no_visitor_and_sends_nothing(
    client: TestClient,
    database: Database,
    chat: dict[str, str],  # noqa: F811
) -> None:
    r = client.post(f"/widget/api/{chat['token']}/session", json={}, headers={"Origin": EVIL})
    assert r.status_code == 403
    assert visitors(database) == 0
    visitor = start(client, chat)["visitor_token"]
    # The visitor's token, stolen into a page of another origin, sends nothing either.
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "from elsewhere"},
        headers={"Origin": EVIL, "X-Rapport-Visitor": visitor},
    )
    assert r.status_code == 403
    assert messages(database, chat["id"]) == 0


def test_an_allowed_origin_matches_however_the_admin_wrote_it(
    client: TestClient, world: World
) -> None:
    made = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Chat",
            "channel": "webchat",
            "settings": {"allowed_origins": ["https://Shop.example/", "http://a.example:8080/x"]},
        },
        headers=auth(world.alice),
    ).json()
    url = f"/widget/api/{made['public_token']}/session"
    for origin in ("https://shop.example", "http://a.example:8080"):
        assert client.post(url, json={}, headers={"Origin": origin}).status_code == 200, origin
    # Exact origins only: no other scheme, port, or host that merely ends the same way.
    for origin in (
        "http://shop.example",
        "https://shop.example:444",
        "https://evilshop.example",
        "https://shop.example.evil.test",
        "http://a.example",
    ):
        assert client.post(url, json={}, headers={"Origin": origin}).status_code == 403, origin


def test_the_widget_apis_errors_are_readable_by_the_page_that_asked(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
    app: object,
) -> None:
    # Without CORS headers a browser hides the answer: the widget took each error for the
    # network failing, and asked again for good.
    def readable(r: Any, status: int) -> None:
        assert r.status_code == status, r.text
        assert r.headers["access-control-allow-origin"] == HOST_PAGE
        assert "Origin" in r.headers["vary"]
        assert r.headers["content-type"] == "application/problem+json"

    api = f"/widget/api/{chat['token']}"
    visitor = start(client, chat)["visitor_token"]
    gone = {"Origin": HOST_PAGE, "X-Rapport-Visitor": "v_nobody"}
    readable(client.get(f"{api}/messages", headers=gone), 404)
    readable(client.post(f"{api}/messages", json={"text": ""}, headers=gone), 422)
    app.state.widget_limits.visitors = RateLimiter(limit=0, window=60)  # type: ignore[attr-defined]
    spent = client.post(f"{api}/session", json={}, headers={"Origin": HOST_PAGE})
    readable(spent, 429)
    assert spent.headers["access-control-expose-headers"] == "Retry-After"
    # The request guard's own refusal, before any route.
    big = client.post(
        f"{api}/attachments",
        content=b"x",
        headers={
            **gone,
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(64 * 1024 * 1024),
        },
    )
    readable(big, 413)
    # An answer keeps its own headers; the agents' API is left as it was.
    ok = client.get(f"{api}/messages", headers={**gone, "X-Rapport-Visitor": visitor})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == HOST_PAGE
    assert "access-control-expose-headers" not in ok.headers
    assert ok.headers["cache-control"] == "no-store"  # a visitor's chat: kept by no cache
    api_error = client.get("/api/v1/conversations", headers={"Origin": HOST_PAGE})
    assert api_error.status_code == 401
    assert "access-control-allow-origin" not in api_error.headers


def test_a_socket_from_a_page_of_another_origin_is_closed(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
) -> None:
    visitor = start(client, chat)["visitor_token"]
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect(
            f"/widget/ws/{chat['token']}?visitor={visitor}", headers={"Origin": EVIL}
        ) as ws,
    ):
        next_message(ws, seconds=5)  # a socket left open fails here, not hangs
    assert closed.value.code == 1008


def test_one_visitor_holds_only_so_many_sockets_open_at_once(
    client: TestClient,
    world: World,
    chat: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each socket hears every event of the workspace: one token opened in thousands of
    # sockets made each message cost as many lookups.
    monkeypatch.setattr(webchat_views, "SOCKETS_PER_VISITOR", 2)
    visitor = start(client, chat)["visitor_token"]
    conv = say(client, chat, visitor, "hi")["conversation_id"]
    url = f"/widget/ws/{chat['token']}?visitor={visitor}"
    with client.websocket_connect(url) as first, client.websocket_connect(url) as second:
        # The third is refused at the handshake: the widget polls meanwhile.
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url):
            pass
        assert refused.value.code == 1008
        # Another visitor's sockets are their own; the two open ones still hear replies.
        other = start(client, chat)["visitor_token"]
        with client.websocket_connect(f"/widget/ws/{chat['token']}?visitor={other}"):
            pass
        client.post(
            f"/api/v1/conversations/{conv}/messages",
            json={"text": "hello"},
            headers=auth(world.bob),
        )
        for ws in (first, second):
            assert json.loads(next_message(ws)["text"])["payload"]["text"] == "hello"
    # Closed, they make room again.
    with client.websocket_connect(url) as again:
        client.post(
            f"/api/v1/conversations/{conv}/messages",
            json={"text": "again"},
            headers=auth(world.bob),
        )
        assert json.loads(next_message(again)["text"])["payload"]["text"] == "again"


def test_a_visitor_sending_faster_than_a_person_is_held_back_and_others_are_not(
    client: TestClient,
    database: Database,
    chat: dict[str, str],  # noqa: F811
) -> None:
    flooder = start(client, chat)["visitor_token"]
    window = Window(60)
    for i in range(20):
        say(client, chat, flooder, f"message {i}")
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "one too many"},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": flooder},
    )
    assert r.status_code == 429 and window.waits(r.headers["retry-after"])
    assert r.json()["type"].endswith("rate-limited")
    files = client.post(
        f"/widget/api/{chat['token']}/attachments",
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": flooder},
    )
    assert files.status_code == 429
    assert messages(database, chat["id"]) == 20
    # Someone else in the same chat is not held back by them.
    say(client, chat, start(client, chat)["visitor_token"], "hello")


def test_a_visitor_sends_at_most_ten_files_in_ten_minutes(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
) -> None:
    visitor = start(client, chat)["visitor_token"]
    codes = [
        client.post(
            f"/widget/api/{chat['token']}/attachments",
            files={"file": (f"{i}.txt", b"hello", "text/plain")},
            headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor},
        ).status_code
        for i in range(11)
    ]
    assert codes == [201] * 10 + [429]


def test_one_address_makes_only_so_many_new_visitors_and_a_returning_one_still_comes_in(
    client: TestClient,
    database: Database,
    chat: dict[str, str],  # noqa: F811
    app: object,
) -> None:
    limits = app.state.widget_limits  # type: ignore[attr-defined]
    limits.visitors.limit = 3
    known = start(client, chat)["visitor_token"]
    start(client, chat)
    start(client, chat)
    r = client.post(f"/widget/api/{chat['token']}/session", json={}, headers={"Origin": HOST_PAGE})
    assert r.status_code == 429
    assert visitors(database) == 3
    assert start(client, chat, visitor_token=known)["visitor_token"] == known


def test_the_addresses_of_one_ipv6_network_share_its_budget_of_new_visitors(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
    app: object,
) -> None:
    app.state.widget_limits.visitors = RateLimiter(limit=3, window=3600)  # type: ignore[attr-defined]

    def session(host: str) -> int:
        from_there = TestClient(client.app, client=(host, 50000))
        url = f"/widget/api/{chat['token']}/session"
        return from_there.post(url, json={}, headers={"Origin": HOST_PAGE}).status_code

    # Each address of a subscriber's /64 was a new budget of 300 visitors an hour.
    assert [session(f"2001:db8:5:6::{n}") for n in range(1, 5)] == [200, 200, 200, 429]
    assert session("2001:db8:5:7::1") == 200


def test_new_visitors_from_one_address_share_its_budget_of_messages_and_files(
    client: TestClient,
    database: Database,
    chat: dict[str, str],  # noqa: F811
    app: object,
    world: World,
) -> None:
    # A script making a new visitor each time one's budget was spent had 300 budgets an hour.
    limits = app.state.widget_limits  # type: ignore[attr-defined]
    limits.address_messages = RateLimiter(limit=5, window=60)
    limits.address_files = RateLimiter(limit=2, window=600)
    headers = {"Origin": HOST_PAGE}
    codes = []
    for i in range(6):
        visitor = start(client, chat)["visitor_token"]
        codes.append(
            client.post(
                f"/widget/api/{chat['token']}/messages",
                json={"text": f"message {i}"},
                headers={**headers, "X-Rapport-Visitor": visitor},
            ).status_code
        )
    assert codes == [201] * 5 + [429]
    assert messages(database, chat["id"]) == 5
    limits.address_messages = RateLimiter(limit=100, window=60)
    files = [
        client.post(
            f"/widget/api/{chat['token']}/attachments",
            files={"file": (f"{i}.txt", b"hello", "text/plain")},
            headers={**headers, "X-Rapport-Visitor": start(client, chat)["visitor_token"]},
        ).status_code
        for i in range(3)
    ]
    assert files == [201, 201, 429]
    # Another chat's budget is its own.
    other = client.post(
        "/api/v1/inboxes",
        json={"name": "Other", "channel": "webchat", "settings": {}},
        headers=auth(world.alice),
    ).json()["public_token"]
    visitor = start(client, {"token": other})["visitor_token"]
    say(client, {"token": other}, visitor, "hello")


def test_a_visitor_typing_in_a_loop_reaches_agents_only_so_often(
    client: TestClient,
    chat: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each "typing" is an event to every agent's page of the workspace.
    visitor = start(client, chat)["visitor_token"]
    say(client, chat, visitor, "hi")
    shared = bus.get_bus()
    publish = shared.publish
    typed: list[dict[str, Any]] = []

    def counted(event: dict[str, Any]) -> None:
        if event["type"] == "visitor.typing":
            typed.append(event)
        publish(event)

    monkeypatch.setattr(shared, "publish", counted)
    headers = {"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor}
    codes = {
        client.post(f"/widget/api/{chat['token']}/typing", headers=headers).status_code
        for _ in range(70)
    }
    assert codes == {204} and len(typed) == 60
    # Read receipts share that budget, and are refused past it.
    r = client.post(
        f"/widget/api/{chat['token']}/read", json={"message_id": "x" * 32}, headers=headers
    )
    assert r.status_code == 429
    # Another visitor's budget is their own.
    other = start(client, chat)["visitor_token"]
    say(client, chat, other, "hello")
    client.post(
        f"/widget/api/{chat['token']}/typing",
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": other},
    )
    assert len(typed) == 61


def test_the_try_it_page_knows_rapport_is_allowed_however_the_admin_wrote_it(
    client: TestClient, world: World
) -> None:
    made = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Chat",
            "channel": "webchat",
            "settings": {"allowed_origins": ["http://TestServer/"]},
        },
        headers=auth(world.alice),
    ).json()
    sign_in(client, "alice@acme.test")
    page = client.get(f"/app/inboxes/{made['id']}/try")
    assert page.status_code == 200 and "to try it here" not in page.text
    url = f"/widget/api/{made['public_token']}/session"
    assert client.post(url, json={}, headers={"Origin": "http://testserver"}).status_code == 200
