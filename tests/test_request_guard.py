"""Every request is held to a bounded body and kept free of NUL characters before a route
reads it (rapport.guard); what a provider or a mail sends with a NUL in it is kept."""

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rapport import guard
from rapport.config import Settings
from rapport.conversations.models import Message
from rapport.customers.models import Customer
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from tests.conftest import auth
from tests.factories import PASSWORD, World


def problem(r, status: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()  # type: ignore[no-any-return]


def count(database: Database, model: type) -> int:
    with database.session(write=False) as db:
        return db.scalar(select(func.count()).select_from(model)) or 0


def test_a_nul_in_a_url_is_refused(client: TestClient, world: World) -> None:
    agent = auth(world.bob)
    customer_id = world.acme.opened.customer.id
    for url in (
        f"/api/v1/customers/{customer_id}%00",
        "/api/v1/customers?q=kim%00",
        "/api/v1/search?q=%00",
        "/api/v1/conversations?label=a%00b",
    ):
        assert "NUL" in problem(client.get(url, headers=agent), 400)["detail"]


def test_a_nul_in_json_or_form_text_is_refused_and_nothing_stored(
    client: TestClient, world: World, database: Database
) -> None:
    admin = auth(world.alice)
    customers, messages = count(database, Customer), count(database, Message)
    body = b'{"name": "Kim\\u0000", "email": "kim@example.com"}'
    json_headers = admin | {"content-type": "application/json"}
    problem(client.post("/api/v1/customers", content=body, headers=json_headers), 422)
    # The API channel's fast path reads its body after the guard, like every route.
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    post = b'{"text": "a\\u0000b", "from": {"email": "kim@example.com"}}'
    url = f"/api/v1/inboxes/{inbox_id}/messages"
    problem(client.post(url, content=post, headers=auth(world.bob) | json_headers), 422)
    form = {"content-type": "application/x-www-form-urlencoded"}
    problem(client.post("/api/v1/auth/login", content=b"email=a%00b&password=x", headers=form), 422)
    assert (count(database, Customer), count(database, Message)) == (customers, messages)
    # A backslash followed by the letters u0000 is text like any other.
    escaped = b'{"text": "C:\\\\u0000 is a path", "from": {"email": "kim@example.com"}}'
    r = client.post(url, content=escaped, headers=auth(world.bob) | json_headers)
    assert r.status_code == 201, r.text
    assert r.json()["text"] == "C:\\u0000 is a path"


def test_what_a_provider_sends_with_a_nul_is_kept(
    database: Database, settings: Settings, world: World
) -> None:
    """The ingest path stores it: PostgreSQL with U+FFFD where the NUL was (it refuses NUL in
    text and in JSON), SQLite as it came."""
    msg = InboundMessage(
        inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
        external_id="wamid.\x00",
        handles=[],
        text="order\x00 42",
        sender_name="K\x00im",
        subject="re\x00",
        meta={"headers": {"x-odd": "a\x00b"}},
    )
    with database.session() as db:
        stored = receive(db, msg, settings=settings)
    with database.session(write=False) as db:
        row = db.get(Message, stored.message.id)
        customer = db.get(Customer, stored.customer.id)
    assert row is not None and customer is not None
    nul = "\x00" if database.is_sqlite else "\ufffd"
    assert row.text == f"order{nul} 42"
    assert customer.name == f"K{nul}im"
    assert row.meta["headers"]["x-odd"] == "a\ufffdb"  # JSON: the same on both


def test_a_body_over_its_routes_limit_is_refused_unread(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = auth(world.alice)
    big = b'{"name": "' + b"x" * guard.DEFAULT_LIMIT + b'"}'
    json_headers = admin | {"content-type": "application/json"}
    detail = problem(client.post("/api/v1/customers", content=big, headers=json_headers), 413)
    assert detail["detail"] == "a request here is at most 4 MB"
    # Provider webhooks too, before their signature is checked (it covers the whole body).
    hook = client.post("/webhooks/whatsapp/anything", content=b"x" * (guard.WEBHOOK_LIMIT + 1))
    problem(hook, 413)

    # A body streamed without a length is cut off at the limit.
    monkeypatch.setattr(guard, "IMPORT_LIMIT", 1000)

    def chunks() -> Iterator[bytes]:
        yield b"name,email\n"
        for i in range(100):
            yield f"Kim {i},kim{i}@example.com\n".encode()

    csv = admin | {"content-type": "text/csv"}
    problem(client.post("/api/v1/customer-files/import", content=chunks(), headers=csv), 413)


def test_an_api_attachment_is_at_most_10_mb(client: TestClient, world: World) -> None:
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    data = base64.b64encode(b"\x00" * (10 * 1024 * 1024 + 1)).decode()
    body = {
        "text": "see attached",
        "from": {"email": "kim@example.com"},
        "attachments": [{"filename": "big.bin", "data_base64": data}],
    }
    r = client.post(f"/api/v1/inboxes/{inbox_id}/messages", json=body, headers=auth(world.bob))
    assert "at most 10 MB" in str(problem(r, 422)["errors"])


def test_a_websocket_client_sending_more_than_a_small_message_is_cut_off(
    settings: Settings, database: Database, world: World
) -> None:
    # Rapport's sockets only talk to the client; what a client sends is read and ignored.
    # A small message leaves the socket working, a big one closes it (1009) unread, instead
    # of the server's default of 16 MB a message, 32 messages queued, per socket.
    websockets = pytest.importorskip("websockets.sync.client", reason="websockets not installed")
    from websockets.exceptions import ConnectionClosed

    from tests.web.conftest import LiveServer

    with LiveServer(settings, database) as server:
        url = f"ws://127.0.0.1:{server.port}/api/v1/stream"
        with websockets.connect(url, additional_headers=auth(world.bob)) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            ws.send("x" * 1000)
            r = httpx.post(
                f"{server.url}/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
                json={"external_id": "ws-1", "text": "still there?", "from": {"email": "w@x.org"}},
                headers=auth(world.bob),
            )
            assert r.status_code == 201, r.text
            while (event := json.loads(ws.recv(timeout=10)))["type"] != "message.created":
                pass
            assert event["payload"]["text"] == "still there?"
            ws.send("x" * (guard.WEBSOCKET_MESSAGE_LIMIT + 1))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_what_holds_someones_data_is_kept_by_no_cache_and_public_pages_may_be(
    client: TestClient, world: World
) -> None:
    # Signed out on a shared computer, Back showed the inbox from the browser's cache.
    conv = world.acme.opened.conversation
    r = client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"  # the answer to a sign-in names the member
    for url in (
        "/app/inbox",
        f"/app/conversations/{conv.id}",
        f"/api/v1/conversations/{conv.id}",
        "/api/v1/auth/me",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        assert page.headers["cache-control"] == "no-store", url
    client.cookies.clear()
    up = client.post(
        f"/api/v1/conversations/{conv.id}/uploads",
        files={"file": ("a.txt", b"hello", "text/plain")},
        headers=auth(world.bob),
    )
    assert up.headers["cache-control"] == "no-store"
    # Public pages and files say what they say, or nothing.
    assert client.get("/widget.js").headers["cache-control"] == "public, max-age=300"
    for url in ("/login", "/static/app.css", "/healthz"):
        assert client.get(url).headers.get("cache-control") != "no-store", url


def test_a_stranger_sends_no_more_than_any_route_takes_where_members_may_send_more(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API channel's posts take 64 MB and an import 100 MB: read whole before the route
    # looked at who was asking, a few strangers' connections took gigabytes.
    looked_at: list[int] = []  # the bodies the guard read whole, by size
    carries_nul = guard.carries_nul

    def counted(body: bytes, content_type: str) -> bool:
        looked_at.append(len(body))
        return carries_nul(body, content_type)

    monkeypatch.setattr(guard, "carries_nul", counted)
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    url = f"/api/v1/inboxes/{inbox_id}/messages"
    big = b" " * guard.DEFAULT_LIMIT + b"{}"
    for headers in ({}, {"Authorization": "Bearer rpt_forged"}):
        r = client.post(url, content=big, headers=headers | {"content-type": "application/json"})
        assert problem(r, 401)["detail"] == "sign in or send a bearer token"
    ndjson = {"content-type": "application/x-ndjson"}
    problem(client.post("/api/v1/customer-files/import", content=big, headers=ndjson), 401)

    # Streamed without a length, a stranger's is cut off at the default limit.
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b" " * (1024 * 1024)

    json_only = {"content-type": "application/json"}
    problem(client.post(url, content=chunks(), headers=json_only), 413)
    assert looked_at == []
    # A member's post of more than 4 MB is read and stored.
    attachment = base64.b64encode(b"y" * (guard.DEFAULT_LIMIT * 4 // 5)).decode()
    body = {
        "text": "a file",
        "from": {"email": "kim@example.com"},
        "attachments": [{"filename": "a.bin", "data_base64": attachment}],
    }
    r = client.post(url, json=body, headers=auth(world.bob))
    assert r.status_code == 201, r.text[:300]
    assert looked_at[-1] > guard.DEFAULT_LIMIT
    # A small post is not asked who sends it before the route: nothing changes for it.
    assert client.post(url, json={"text": "hi"}).status_code == 401


def test_what_a_stranger_may_call_takes_a_small_body(client: TestClient, world: World) -> None:
    # Each of a stranger's connections had the server hold 4 MB for a body none reads.
    over = b'{"text": "' + b" " * guard.SMALL_LIMIT + b'"}'
    json_headers = {"content-type": "application/json"}
    for url in (
        "/widget/api/anything/messages",
        "/widget/api/anything/session",
        "/api/v1/auth/login",
        "/api/v1/auth/password-reset",
        "/api/v1/invitations/accept",
    ):
        r = client.post(url, content=over, headers=json_headers)
        assert problem(r, 413)["detail"] == "a request here is at most 128 KB", url
    events = b'{"batch": [], "x": "' + b" " * guard.EVENTS_LIMIT + b'"}'
    problem(client.post("/api/v1/events/batch", content=events, headers=json_headers), 413)
    # A chat message of 10,000 characters, each an emoji written as JSON escapes, fits.
    emoji = b'{"text": "' + b"\\ud83d\\ude00" * 10_000 + b'"}'
    r = client.post("/widget/api/anything/messages", content=emoji, headers=json_headers)
    assert r.status_code != 413
    # The widget's files keep the form limit.
    form = {"content-type": "multipart/form-data; boundary=x"}
    r = client.post("/widget/api/anything/attachments", content=b"--x--", headers=form)
    assert r.status_code != 413
