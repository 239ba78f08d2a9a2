"""The web chat widget: its API from another origin, identity by HMAC only, and a visitor
in real Chromium on a page of another origin."""

import contextlib
import hashlib
import hmac
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from rapport import bus
from rapport.channels.webchat import views as webchat_views
from rapport.channels.webchat.models import Visitor
from rapport.config import Settings
from rapport.conversations.models import Conversation
from rapport.db import Database, utcnow
from rapport.jobs.worker import Worker
from rapport.realtime import service as realtime
from tests.conftest import auth, on_both_backends
from tests.factories import World
from tests.standin import serving
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in

SECRET = "widget-hmac-secret"
HOST_PAGE = "http://shop.example"


@pytest.fixture
def chat(client: TestClient, world: World) -> dict[str, str]:
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Chat",
            "channel": "webchat",
            "settings": {
                "hmac_secret": SECRET,
                "reply_time": "five minutes",
                "allowed_origins": [HOST_PAGE, "http://127.0.0.1"],
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return {"id": r.json()["id"], "token": r.json()["public_token"]}


def start(client: TestClient, chat: dict[str, str], **body: object) -> dict:  # type: ignore[type-arg]
    r = client.post(
        f"/widget/api/{chat['token']}/session", json=body, headers={"Origin": HOST_PAGE}
    )
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == HOST_PAGE
    return r.json()  # type: ignore[no-any-return]


def say(client: TestClient, chat: dict[str, str], visitor: str, text: str) -> dict:  # type: ignore[type-arg]
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": text},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor},
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_page_of_an_origin_the_inbox_does_not_allow_is_refused(
    client: TestClient, chat: dict[str, str]
) -> None:
    r = client.post(
        f"/widget/api/{chat['token']}/session", json={}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403
    pre = client.options(
        f"/widget/api/{chat['token']}/messages",
        headers={"Origin": HOST_PAGE, "Access-Control-Request-Method": "POST"},
    )
    assert (
        pre.status_code == 204
        and "X-Rapport-Visitor" in pre.headers["access-control-allow-headers"]
    )


def test_a_visitor_keeps_their_history_and_sees_only_their_own(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    a = start(client, chat, name="Ann")
    b = start(client, chat, name="Ben")
    say(client, chat, a["visitor_token"], "hello from Ann")
    say(client, chat, b["visitor_token"], "hello from Ben")
    again = start(client, chat, visitor_token=a["visitor_token"])
    assert (
        again["visitor_id"] == a["visitor_id"] and again["config"]["reply_time"] == "five minutes"
    )
    history = client.get(
        f"/widget/api/{chat['token']}/messages",
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": a["visitor_token"]},
    ).json()
    assert [m["text"] for m in history] == ["hello from Ann"]
    forged = client.get(
        f"/widget/api/{chat['token']}/messages",
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": "v_forged"},
    )
    assert forged.status_code == 404


def test_the_history_is_the_newest_messages_and_a_poll_gets_those_after_one(
    client: TestClient, world: World, chat: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The history was the chat's first 500 messages: a long chat's newest never showed.
    monkeypatch.setattr(webchat_views, "HISTORY_LIMIT", 3)
    a = start(client, chat, name="Ann")
    sent = [say(client, chat, a["visitor_token"], f"message {i}") for i in range(5)]
    headers = {"Origin": HOST_PAGE, "X-Rapport-Visitor": a["visitor_token"]}
    url = f"/widget/api/{chat['token']}/messages"
    assert [m["text"] for m in client.get(url, headers=headers).json()] == [
        "message 2",
        "message 3",
        "message 4",
    ]
    # What a widget without a socket polls for: the messages after the newest it shows.
    reply(client, world, sent[0]["conversation_id"], "An agent's answer")
    after = client.get(url, params={"after": sent[3]["id"]}, headers=headers).json()
    assert [m["text"] for m in after] == ["message 4", "An agent's answer"]
    assert client.get(url, params={"after": after[-1]["id"]}, headers=headers).json() == []
    # Another visitor's message is nothing to count from.
    b = start(client, chat, name="Ben")
    theirs = say(client, chat, b["visitor_token"], "hello from Ben")
    r = client.get(url, params={"after": theirs["id"]}, headers=headers)
    assert r.status_code == 404


def test_a_typed_email_never_joins_a_visitor_to_a_known_customer(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    known = world.acme.opened.customer
    v = start(client, chat, name="Mallory", email="customer@acme.example")
    msg = say(client, chat, v["visitor_token"], "show me my orders")
    conv = client.get(
        f"/api/v1/conversations/{msg['conversation_id']}", headers=auth(world.bob)
    ).json()
    assert conv["customer_id"] != known.id


@pytest.mark.parametrize(
    "typed",
    ["a@x.example,b@y.example", "a@x.example; b@y.example", "Ann <a@x.example>", "a@localhost"],
)
def test_a_typed_email_is_one_address_or_refused(
    client: TestClient, world: World, chat: dict[str, str], database: Database, typed: str
) -> None:
    # It is the To of the replies a visitor who left gets: a list typed here was their To.
    r = client.post(
        f"/widget/api/{chat['token']}/session",
        json={"name": "Ann", "email": typed},
        headers={"Origin": HOST_PAGE},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "email: not an email address"
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).select_from(Visitor)) == 0
    v = start(client, chat, name="Ann", email=" Ann@Example.ORG ")
    with database.session(write=False) as db:
        assert db.scalar(select(Visitor.email).where(Visitor.id == v["visitor_id"])) == (
            "ann@example.org"
        )


def test_a_valid_hmac_makes_the_visitor_that_customer_and_a_forged_one_does_not(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    cid = world.acme.opened.customer.id
    client.post(
        f"/api/v1/customers/{cid}/identities",
        json={"kind": "external", "value": "user-42", "verified": True},
        headers=auth(world.bob),
    )
    good = hmac.new(SECRET.encode(), b"user-42", hashlib.sha256).hexdigest()
    v = start(client, chat, user_id="user-42", user_hash=good)
    assert v["verified"] is True
    msg = say(client, chat, v["visitor_token"], "it's me")
    assert (
        client.get(
            f"/api/v1/conversations/{msg['conversation_id']}", headers=auth(world.bob)
        ).json()["customer_id"]
        == cid
    )
    forged = start(client, chat, user_id="user-42", user_hash="0" * 64)
    assert forged["verified"] is False
    msg = say(client, chat, forged["visitor_token"], "it's me too")
    assert (
        client.get(
            f"/api/v1/conversations/{msg['conversation_id']}", headers=auth(world.bob)
        ).json()["customer_id"]
        != cid
    )


def history_of(client: TestClient, chat: dict[str, str], visitor: str) -> list[str]:
    r = client.get(
        f"/widget/api/{chat['token']}/messages",
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": visitor},
    )
    assert r.status_code == 200, r.text
    return [m["text"] for m in r.json()]


def test_a_signed_in_visitor_is_resumed_only_with_the_proof_of_the_same_user(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    def proof(user: str) -> dict[str, str]:
        return {
            "user_id": user,
            "user_hash": hmac.new(SECRET.encode(), user.encode(), "sha256").hexdigest(),
        }

    ann = start(client, chat, **proof("ann-1"))
    say(client, chat, ann["visitor_token"], "my order 123 goes to 1 Elm Street")
    token = ann["visitor_token"]
    # Ann signs out of the shop; the next person at the computer has her token in storage.
    anonymous = start(client, chat, visitor_token=token)
    assert anonymous["visitor_token"] != token and anonymous["visitor_id"] != ann["visitor_id"]
    assert anonymous["verified"] is False
    assert history_of(client, chat, anonymous["visitor_token"]) == []
    # Nor is a forged proof, or another user's, hers.
    for other in ({"user_id": "ann-1", "user_hash": "0" * 64}, proof("ben-2")):
        someone = start(client, chat, visitor_token=token, **other)
        assert someone["visitor_id"] != ann["visitor_id"]
        assert history_of(client, chat, someone["visitor_token"]) == []
    # Ann, signed in again, is herself.
    again = start(client, chat, visitor_token=token, **proof("ann-1"))
    assert again["visitor_token"] == token and again["verified"] is True
    assert history_of(client, chat, token) == ["my order 123 goes to 1 Elm Street"]
    # An anonymous visitor who signs in carries on their chat, as before.
    cat = start(client, chat)
    say(client, chat, cat["visitor_token"], "before signing in")
    signed = start(client, chat, visitor_token=cat["visitor_token"], **proof("cat-3"))
    assert signed["visitor_id"] == cat["visitor_id"] and signed["verified"] is True
    assert history_of(client, chat, cat["visitor_token"]) == ["before signing in"]


def note_then_reply(client: TestClient, world: World, conversation_id: str) -> None:
    """bob writes a private note, then answers "Hi Ann!"."""
    client.post(
        f"/api/v1/conversations/{conversation_id}/notes",
        json={"text": "internal only"},
        headers=auth(world.bob),
    )
    client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": "Hi Ann!"},
        headers=auth(world.bob),
    )


def test_the_visitor_socket_carries_agent_replies_but_never_notes(
    client: TestClient, world: World, chat: dict[str, str], database: Database, settings: Settings
) -> None:
    v = start(client, chat, name="Ann")
    msg = say(client, chat, v["visitor_token"], "hi")
    with client.websocket_connect(f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}") as ws:
        note_then_reply(client, world, msg["conversation_id"])
        event = ws.receive_json()
    assert event["type"] == "message.created" and event["payload"]["text"] == "Hi Ann!"
    assert event["payload"]["sender_name"] == "Bob" and "sender_id" not in event["payload"]
    Worker(database, settings).run_until_idle()
    out = client.get(
        f"/api/v1/conversations/{msg['conversation_id']}", headers=auth(world.bob)
    ).json()["messages"][-1]
    assert out["status"] == "sent"


def reply(client: TestClient, world: World, conversation_id: str, text: str) -> None:
    r = client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": text},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text


def customer_of(client: TestClient, world: World, conversation_id: str) -> str:
    r = client.get(f"/api/v1/conversations/{conversation_id}", headers=auth(world.bob))
    return str(r.json()["customer_id"])


def test_the_visitor_sees_typing_in_its_chat_only_and_no_internal_ids(
    client: TestClient, world: World, chat: dict[str, str], database: Database
) -> None:
    v = start(client, chat, name="Ann")
    conv = say(client, chat, v["visitor_token"], "hi")["conversation_id"]
    with database.session() as db:  # the same person also wrote by email
        email = Conversation(
            workspace_id=world.acme.workspace.id,
            customer_id=customer_of(client, world, conv),
            inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
            last_activity_at=utcnow(),
        )
        db.add(email)
        db.flush()
        email_id = email.id
    with client.websocket_connect(f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}") as ws:
        for typed_in in (email_id, conv):
            r = client.post(f"/api/v1/conversations/{typed_in}/typing", headers=auth(world.bob))
            assert r.status_code == 204
        event = ws.receive_json()
    assert event["type"] == "agent.typing" and event["payload"] == {"conversation_id": conv}


def test_agents_see_the_visitor_typing_in_the_conversation_they_type_in(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    # The event named the inbox and the customer only: every open conversation page showed
    # "The customer is typing", whichever conversation it was.
    v = start(client, chat, name="Ann")
    conv = say(client, chat, v["visitor_token"], "hi")["conversation_id"]
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        r = client.post(
            f"/widget/api/{chat['token']}/typing",
            headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": v["visitor_token"]},
        )
        assert r.status_code == 204
        event = ws.receive_json()
    assert event["type"] == "visitor.typing"
    assert event["payload"]["conversation_id"] == conv


def test_once_a_merge_is_undone_a_visitor_no_longer_gets_the_other_persons_replies(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    ann, ben = start(client, chat, name="Ann"), start(client, chat, name="Ben")
    anns = say(client, chat, ann["visitor_token"], "hi from Ann")["conversation_id"]
    bens = say(client, chat, ben["visitor_token"], "hi from Ben")["conversation_id"]
    r = client.post(
        f"/api/v1/customers/{customer_of(client, world, anns)}/merge",
        json={"merged_id": customer_of(client, world, bens)},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    url = f"/widget/ws/{chat['token']}?visitor={ann['visitor_token']}"
    with client.websocket_connect(url) as ws:
        reply(client, world, bens, "one person, two chats")  # merged: both are Ann's
        assert ws.receive_json()["payload"]["text"] == "one person, two chats"
        undo = client.post(
            f"/api/v1/customer-merges/{r.json()['id']}/undo", headers=auth(world.bob)
        )
        assert undo.status_code == 200, undo.text
        reply(client, world, bens, "for Ben only")
        reply(client, world, anns, "for Ann")
        assert ws.receive_json()["payload"]["text"] == "for Ann"


def noise(database: Database, world: World, n: int) -> None:
    """``n`` events of the workspace that are none of the visitor's, in one commit."""
    with database.session() as db:
        for i in range(n):
            realtime.emit(db, workspace_id=world.acme.workspace.id, type="noise", payload={"n": i})


def test_a_visitor_back_after_a_busy_hour_gets_the_reply_they_missed(
    client: TestClient, world: World, chat: dict[str, str], database: Database
) -> None:
    # The widget's replay read one page (1,000 events) of the whole workspace's outbox:
    # a reply past it was never sent, and later live events hid it for good.
    v = start(client, chat, name="Ann")
    conv = say(client, chat, v["visitor_token"], "hi")["conversation_id"]
    with database.session(write=False) as db:
        left_at = realtime.latest_id(db, workspace_id=world.acme.workspace.id)
    noise(database, world, 900)
    reply(client, world, conv, "the answer you missed")
    url = f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}&last_event_id={left_at}"
    with client.websocket_connect(url) as ws:
        reply(client, world, conv, "and a live one")
        texts = [ws.receive_json()["payload"]["text"] for _ in range(2)]
    # Their own "hi" again (committed a moment before they left: the widget skips an id
    # it has), then the reply they missed, before the live one.
    assert texts == ["hi", "the answer you missed"]


def test_a_visitor_back_after_more_than_a_page_of_events_reads_the_history_again(
    client: TestClient, world: World, chat: dict[str, str], database: Database
) -> None:
    # A replay read the workspace's events a page at a time, for whoever asked: an
    # anonymous visitor's last_event_id=1 had it read a week of them. Past one page the
    # widget reads its own history instead, which has what it missed.
    v = start(client, chat, name="Ann")
    conv = say(client, chat, v["visitor_token"], "hi")["conversation_id"]
    with database.session(write=False) as db:
        left_at = realtime.latest_id(db, workspace_id=world.acme.workspace.id)
    noise(database, world, 1100)
    reply(client, world, conv, "the answer you missed")
    for last in (left_at, 1):
        url = f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}&last_event_id={last}"
        with client.websocket_connect(url) as ws:
            assert ws.receive_json()["type"] == "reset"
    headers = {"Origin": HOST_PAGE, "X-Rapport-Visitor": v["visitor_token"]}
    history = client.get(f"/widget/api/{chat['token']}/messages", headers=headers).json()
    assert [m["text"] for m in history] == ["hi", "the answer you missed"]


def test_a_visitor_whose_socket_fell_behind_still_gets_the_reply(
    client: TestClient, world: World, chat: dict[str, str], database: Database
) -> None:
    # A burst of the workspace's events fills the socket's queue, and the bus drops what
    # does not fit: the visitor's socket reads the rest from the outbox, as agents' do.
    v = start(client, chat, name="Ann")
    conv = say(client, chat, v["visitor_token"], "hi")["conversation_id"]
    with client.websocket_connect(f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}") as ws:
        noise(database, world, 1500)
        reply(client, world, conv, "after the burst")
        assert ws.receive_json()["payload"]["text"] == "after the burst"


def test_a_visitor_away_longer_than_the_outbox_keeps_events_reloads_the_history(
    client: TestClient, world: World, chat: dict[str, str], database: Database
) -> None:
    from sqlalchemy import delete, select

    from rapport.realtime.models import StreamEvent

    v = start(client, chat, name="Ann")
    say(client, chat, v["visitor_token"], "hi")
    say(client, chat, v["visitor_token"], "anyone?")
    with database.session() as db:
        ids = sorted(db.scalars(select(StreamEvent.id)))
        db.execute(delete(StreamEvent).where(StreamEvent.id < ids[-1]))  # as pruning does
    url = f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}&last_event_id={ids[0]}"
    with client.websocket_connect(url) as ws:
        assert ws.receive_json() == {"type": "reset", "last_event_id": ids[-1]}


def test_a_visitor_resuming_from_no_number_starts_afresh(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    # "²" passed str.isdigit(), then int() raised and the socket closed with an error.
    v = start(client, chat, name="Ann")
    conv = say(client, chat, v["visitor_token"], "hi")["conversation_id"]
    url = f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}&last_event_id=%C2%B2"
    with client.websocket_connect(url) as ws:
        reply(client, world, conv, "live")
        assert ws.receive_json()["payload"]["text"] == "live"


class _Host(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(type(self).page)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host_page() -> Iterator[tuple[str, type[_Host]]]:
    handler = type("H", (_Host,), {"page": b""})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        # "localhost" rather than 127.0.0.1: a different origin from the Rapport server.
        yield f"http://localhost:{server.server_port}", handler


def embedded(
    client: TestClient,
    world: World,
    live_server: LiveServer,
    host_page: tuple[str, type[_Host]],
    attrs: str = "",
    **settings: object,
) -> dict:  # type: ignore[type-arg]
    """A web chat inbox that allows the host page's origin, and its widget on that page
    (``attrs``: more attributes of the script tag)."""
    origin, handler = host_page
    made = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Shop chat",
            "channel": "webchat",
            "settings": {
                "allowed_origins": [origin],
                "ask_name": False,
                "ask_email": False,
                **settings,
            },
        },
        headers=auth(world.alice),
    ).json()
    handler.page = (
        f'<!doctype html><html><body><h1>Shop</h1><script src="{live_server.url}/widget.js" '
        f'data-token="{made["public_token"]}" {attrs} async></script></body></html>'
    ).encode()
    return made  # type: ignore[no-any-return]


@on_both_backends
def test_a_visitor_chats_from_another_origin_in_chromium(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    origin = host_page[0]
    made = embedded(client, world, live_server, host_page, hmac_secret=SECRET)
    page = browser.new_page()
    page.goto(origin)
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Do you ship to Lisbon?")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=Do you ship to Lisbon?")
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": made["id"]}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{convs[0]['id']}/messages",
        json={"text": "Yes, in 3 days."},
        headers=auth(world.bob),
    )
    page.wait_for_selector("#rapport-widget >> css=.m.out >> text=Yes, in 3 days.", timeout=10_000)
    # The chat is open and the reply on screen: the agent sees it read.
    conv_url = f"/api/v1/conversations/{convs[0]['id']}"
    for _ in range(50):
        messages = client.get(conv_url, headers=auth(world.bob)).json()["messages"]
        if messages[-1]["status"] == "read":
            break
        page.wait_for_timeout(100)
    assert messages[-1]["status"] == "read"
    # The agent sends a file: it arrives live, and the visitor downloads exactly it.
    invoice = b"%PDF-1.4\n% the visitor's invoice\n"
    up = client.post(
        f"{conv_url}/uploads",
        files={"file": ("invoice.pdf", invoice, "application/pdf")},
        headers=auth(world.bob),
    ).json()
    client.post(
        f"{conv_url}/messages",
        json={"text": "Your invoice.", "attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    )
    agent_file = "#rapport-widget >> css=.m.out .file >> text=invoice.pdf"
    page.wait_for_selector(agent_file, timeout=10_000)
    with page.expect_download() as download:
        page.click(agent_file)
    assert download.value.suggested_filename == "invoice.pdf"
    assert Path(download.value.path()).read_bytes() == invoice
    # A file, sent from the widget's paperclip.
    page.set_input_files(
        "#rapport-widget >> css=input[type=file]",
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": b"\x89PNG fake"}],
    )
    page.wait_for_selector("#rapport-widget >> css=.m.in .file >> text=photo.png")
    page.screenshot(path=str(ARTIFACTS / "widget.png"))
    page.reload()
    page.click("#rapport-widget >> css=.launcher")
    page.wait_for_selector("#rapport-widget >> css=.m.out >> text=Yes, in 3 days.")
    assert page.locator("#rapport-widget >> css=.m.in").count() == 2


@pytest.mark.parametrize("first", ["slow", "lost"])
def test_a_message_sent_before_the_widget_has_its_session_goes_once_it_has_one(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
    first: str,
) -> None:
    # A quick visitor (or a slow server) sent before the widget's first request for a session
    # was answered: the message went without a visitor, was refused, and was put back in the
    # box without a word (CI saw it once, in the team's own try page). And a first request
    # lost on the way (offline a moment) left the widget without a session until a reload.
    origin = host_page[0]
    made = embedded(client, world, live_server, host_page)
    page = browser.new_page()
    asked: list = []  # type: ignore[type-arg]

    def session(route) -> None:  # type: ignore[no-untyped-def]
        asked.append(route)
        if len(asked) > 1:
            route.continue_()
        elif first == "lost":
            route.abort("internetdisconnected")

    page.route("**/session", session)
    page.goto(origin)
    for _ in range(100):
        if asked:
            break
        page.wait_for_timeout(50)
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Are you open on Sunday?")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_timeout(300)  # the send has been tried, the session is not there yet
    if first == "slow":
        asked[0].continue_()
    page.wait_for_selector(
        "#rapport-widget >> css=.m.in >> text=Are you open on Sunday?", timeout=10_000
    )
    assert len(asked) == (2 if first == "lost" else 1)
    assert page.input_value("#rapport-widget >> css=textarea") == ""
    assert page.text_content("#rapport-widget >> css=.typing") == ""
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": made["id"]}, headers=auth(world.bob)
    ).json()["items"]
    assert len(convs) == 1


def test_a_returning_visitor_whose_history_could_not_be_read_still_gets_it_and_replies(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    # The history read failing once (offline a moment) left the widget without its socket:
    # no history, and no reply arrived until the page was reloaded.
    origin = host_page[0]
    made = embedded(client, world, live_server, host_page)
    chat = {"id": made["id"], "token": made["public_token"]}
    v = client.post(
        f"/widget/api/{chat['token']}/session", json={"name": "Ann"}, headers={"Origin": origin}
    ).json()
    msg = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "Is my order on its way?"},
        headers={"Origin": origin, "X-Rapport-Visitor": v["visitor_token"]},
    ).json()
    page = browser.new_page()
    page.add_init_script(
        f"localStorage.setItem('rapport.visitor.{chat['token']}', '{v['visitor_token']}')"
    )
    reads: list[str] = []

    def messages(route) -> None:  # type: ignore[no-untyped-def]
        reads.append(route.request.method)
        if route.request.method == "GET" and reads.count("GET") == 1:
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/messages", messages)
    page.goto(origin)
    page.click("#rapport-widget >> css=.launcher")
    page.wait_for_selector(
        "#rapport-widget >> css=.m.in >> text=Is my order on its way?", timeout=10_000
    )
    reply(client, world, msg["conversation_id"], "Yes, it left today.")
    page.wait_for_selector(
        "#rapport-widget >> css=.m.out >> text=Yes, it left today.", timeout=10_000
    )
    assert reads.count("GET") == 2


def test_where_no_socket_can_open_the_widget_polls_and_replies_still_come(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    # Behind a proxy that drops WebSockets the widget kept trying its socket and never
    # showed an agent's reply.
    origin = host_page[0]
    made = embedded(client, world, live_server, host_page)
    page = browser.new_page()
    page.add_init_script(
        "window.WebSocket = function () {"
        "  var ws = {}; setTimeout(function () { ws.onclose({ code: 1006 }); }, 20); return ws;"
        "};"
    )
    page.goto(origin)
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Anyone there?")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=Anyone there?")
    (conv,) = client.get(
        "/api/v1/conversations", params={"inbox_id": made["id"]}, headers=auth(world.bob)
    ).json()["items"]
    reply(client, world, conv["id"], "Yes, here.")
    page.wait_for_selector("#rapport-widget >> css=.m.out >> text=Yes, here.", timeout=15_000)
    reply(client, world, conv["id"], "And once more.")
    page.wait_for_selector("#rapport-widget >> css=.m.out >> text=And once more.", timeout=15_000)
    # Each message once, in order.
    texts = page.locator("#rapport-widget >> css=.m").all_text_contents()
    assert len(texts) == 3 and texts[0] == "Anyone there?"
    assert texts[1].endswith("Yes, here.") and texts[2].endswith("And once more.")


def test_a_forged_hmac_in_the_page_does_not_make_the_visitor_a_known_customer(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    origin = host_page[0]
    known = world.acme.opened.customer.id
    client.post(
        f"/api/v1/customers/{known}/identities",
        json={"kind": "external", "value": "user-7", "verified": True},
        headers=auth(world.bob),
    )
    forged = f'data-user-id="user-7" data-user-hash="{"0" * 64}"'
    made = embedded(client, world, live_server, host_page, forged, hmac_secret=SECRET)
    page = browser.new_page()
    page.goto(origin)
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "I am user 7, show me my orders")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in")
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": made["id"]}, headers=auth(world.bob)
    ).json()["items"]
    assert len(convs) == 1 and convs[0]["customer_id"] != known


def test_an_email_the_chat_refuses_is_said_in_the_pre_chat_form_in_chromium(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    embedded(client, world, live_server, host_page, ask_email=True)
    page = browser.new_page()
    page.goto(host_page[0])
    page.click("#rapport-widget >> css=.launcher")
    # The browser's own check takes it; ours does not (no dotted domain).
    page.fill("#rapport-widget >> css=.pre [name=email]", "ann@localhost")
    page.click("#rapport-widget >> css=.pre .send")
    page.wait_for_selector("#rapport-widget >> text=Please check your email address.")
    assert page.locator("#rapport-widget >> css=.pre").is_visible()
    page.fill("#rapport-widget >> css=.pre [name=email]", "ann@example.org")
    page.click("#rapport-widget >> css=.pre .send")
    page.wait_for_selector("#rapport-widget >> css=.say", state="visible")
    assert page.locator("#rapport-widget >> css=.typing").inner_text() == ""


def test_a_signed_in_users_chat_is_not_shown_signed_out_and_is_there_again_in_chromium(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    origin, handler = host_page
    proof = hmac.new(SECRET.encode(), b"ann-1", hashlib.sha256).hexdigest()
    embedded(
        client,
        world,
        live_server,
        host_page,
        f'data-user-id="ann-1" data-user-hash="{proof}"',
        hmac_secret=SECRET,
    )
    signed_in = handler.page
    signed_out = signed_in.replace(f' data-user-id="ann-1" data-user-hash="{proof}"'.encode(), b"")
    page = browser.new_page()
    page.goto(origin)
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Ann's order goes to 1 Elm Street")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=1 Elm Street")
    # Signed out (or a page of the site that does not say who is signed in): not her chat.
    handler.page = signed_out
    page.reload()
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Someone else at this computer")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=Someone else")
    assert page.locator("#rapport-widget >> css=.m.in").count() == 1
    # Signed in again: her own chat, as she left it.
    handler.page = signed_in
    page.reload()
    page.click("#rapport-widget >> css=.launcher")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=1 Elm Street", timeout=10_000)
    assert page.locator("#rapport-widget >> css=.m.in").all_inner_texts() == [
        "Ann's order goes to 1 Elm Street"
    ]


def test_a_reply_to_a_visitor_who_left_goes_to_the_email_they_gave_unless_they_opted_out(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    from datetime import timedelta

    from aiosmtpd.controller import Controller
    from sqlalchemy import update

    from rapport.channels.webchat.models import Visitor
    from rapport.db import utcnow
    from tests.channels.email.test_email import Outbox
    from tests.web.conftest import free_port

    box, port = Outbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mail = client.post(
            "/api/v1/inboxes",
            json={
                "name": "Mail",
                "channel": "email",
                "settings": {
                    "address": "chat@acme.test",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": port,
                    "smtp_security": "none",
                },
            },
            headers=auth(world.alice),
        ).json()
        chat = client.post(
            "/api/v1/inboxes",
            json={"name": "Chat", "channel": "webchat", "settings": {"email_inbox_id": mail["id"]}},
            headers=auth(world.alice),
        ).json()
        token = chat["public_token"]
        v = client.post(
            f"/widget/api/{token}/session", json={"name": "Ann", "email": "ann@example.org"}
        ).json()
        msg = client.post(
            f"/widget/api/{token}/messages",
            json={"text": "hello?"},
            headers={"X-Rapport-Visitor": v["visitor_token"]},
        ).json()
        # Ann is still here: the reply reaches her widget, and no email is sent.
        client.post(
            f"/api/v1/conversations/{msg['conversation_id']}/messages",
            json={"text": "Hi Ann"},
            headers=auth(world.bob),
        )
        Worker(database, settings).run_until_idle()
        assert box.messages == []
        # She closed the tab ten minutes ago: the next reply goes by email as well.
        with database.session() as db:
            db.execute(update(Visitor).values(last_seen_at=utcnow() - timedelta(minutes=10)))
        client.post(
            f"/api/v1/conversations/{msg['conversation_id']}/messages",
            json={"text": "Your order shipped."},
            headers=auth(world.bob),
        )
        Worker(database, settings).run_until_idle()
        assert (
            len(box.messages) == 1
            and b"ann@example.org" in box.messages[0]
            and b"Your order shipped." in box.messages[0]
        )
        # She opted out of email: the chat still gets replies, her mailbox no more.
        conv = client.get(
            f"/api/v1/conversations/{msg['conversation_id']}", headers=auth(world.bob)
        ).json()
        client.post(
            f"/api/v1/customers/{conv['customer_id']}/consents",
            json={"channel": "email", "purpose": "all", "granted": False},
            headers=auth(world.bob),
        ).raise_for_status()
        r = client.post(
            f"/api/v1/conversations/{msg['conversation_id']}/messages",
            json={"text": "Anything else?"},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        Worker(database, settings).run_until_idle()
        assert len(box.messages) == 1
    finally:
        controller.stop()


def test_the_team_tries_the_chat_on_a_page_of_rapport_itself(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    made = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Site chat",
            "channel": "webchat",
            "settings": {"ask_name": False, "ask_email": False},
        },
        headers=auth(world.alice),
    ).json()
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, live_server, "alice@acme.test", "/app/settings")
    page.click(f'a[href="/app/inboxes/{made["id"]}/try"]')
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Testing our chat")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=Testing our chat")
    # Styled under this page's policy, which allows no inline styles; nothing refused.
    assert page.eval_on_selector(
        "#rapport-widget", "e => getComputedStyle(e.shadowRoot.querySelector('.launcher')).position"
    ) in ("fixed", "absolute")
    assert not [e for e in errors if "Content Security Policy" in e]
    page.screenshot(path=str(ARTIFACTS / "try-widget.png"))
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": made["id"]}, headers=auth(world.bob)
    ).json()["items"]
    assert len(convs) == 1
    # Only webchat inboxes have such a page, and only for their own workspace.
    other = f"{live_server.url}/app/inboxes/{world.acme.inbox.id}/try"  # type: ignore[union-attr]
    assert page.goto(other).status == 404


def test_a_reply_that_missed_the_bus_still_reaches_the_visitor(
    client: TestClient, world: World, chat: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With several processes an agent's reply may be committed by one whose publish never
    # reached Redis: the visitor's quiet socket reads the outbox and gets it anyway (and,
    # as live, never a note).
    v = start(client, chat, name="Ann")
    msg = say(client, chat, v["visitor_token"], "hi")
    the_bus = bus.get_bus()
    monkeypatch.setattr(the_bus, "quiet", 0.05)  # as with Redis, sooner (a visitor: x4)
    with client.websocket_connect(f"/widget/ws/{chat['token']}?visitor={v['visitor_token']}") as ws:
        monkeypatch.setattr(the_bus, "publish", lambda event: None)  # never heard here
        note_then_reply(client, world, msg["conversation_id"])
        event = ws.receive_json()
    assert event["type"] == "message.created" and event["payload"]["text"] == "Hi Ann!"


@pytest.mark.parametrize("user_hash", ["é" * 64, "０" * 64], ids=["accented", "fullwidth"])
def test_a_non_ascii_hmac_is_a_forged_one(
    client: TestClient, chat: dict[str, str], user_hash: str
) -> None:
    # Compared as text, a non-ASCII hash raised (a 500) instead of failing to match.
    v = start(client, chat, user_id="user-42", user_hash=user_hash)
    assert v["verified"] is False


def next_message(ws, seconds: float = 20) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """What the socket says next, read on a thread: a socket that says nothing more (the
    failure these tests catch) must fail the test, not hang it."""
    said: list[dict] = []  # type: ignore[type-arg]

    def read() -> None:
        with contextlib.suppress(Exception):  # the test failed and closed the socket
            said.append(ws.receive())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert said, "the socket stayed open and silent"
    return said[0]


def erase(client: TestClient, world: World, customer_id: str) -> None:
    r = client.delete(f"/api/v1/customers/{customer_id}", headers=auth(world.alice))
    assert r.status_code == 204, r.text


def test_erasing_a_customer_closes_their_visitor_socket_and_refuses_its_token(
    client: TestClient, world: World, chat: dict[str, str]
) -> None:
    # The visitor's socket stayed open after the erasure (still listening for replies to
    # a customer who no longer existed), and reconnecting with the dead token got a bare
    # refusal the widget took for a network error, retrying it forever.
    ann, ben = start(client, chat, name="Ann"), start(client, chat, name="Ben")
    conv = say(client, chat, ann["visitor_token"], "forget me")["conversation_id"]
    bens = say(client, chat, ben["visitor_token"], "I stay")["conversation_id"]
    url = f"/widget/ws/{chat['token']}?visitor={ann['visitor_token']}"
    with (
        client.websocket_connect(url) as ws,
        client.websocket_connect(
            f"/widget/ws/{chat['token']}?visitor={ben['visitor_token']}"
        ) as bs,
    ):
        erase(client, world, customer_of(client, world, conv))
        closed = next_message(ws)
        assert closed["type"] == "websocket.close"
        assert (closed["code"], closed["reason"]) == (4404, "visitor erased")
        reply(client, world, bens, "Ben's socket goes on")
        assert bs.receive_json()["payload"]["text"] == "Ben's socket goes on"
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url) as ws:
        ws.receive_json()
    assert (refused.value.code, refused.value.reason) == (4404, "unknown visitor")
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "still here?"},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ann["visitor_token"]},
    )
    assert r.status_code == 404


def test_a_visitor_socket_that_missed_the_erasure_on_the_bus_closes_at_its_heartbeat(
    client: TestClient, world: World, chat: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The word to close travels on the bus, which may lose it (Redis away): the socket's
    # heartbeat finds the visitor gone all the same.
    from rapport.channels.webchat import views

    monkeypatch.setattr(views, "HEARTBEAT_SECONDS", 0.1)
    ann = start(client, chat, name="Ann")
    conv = say(client, chat, ann["visitor_token"], "forget me")["conversation_id"]
    monkeypatch.setattr(bus.get_bus(), "publish", lambda event: None)  # the bus loses it all
    with client.websocket_connect(
        f"/widget/ws/{chat['token']}?visitor={ann['visitor_token']}"
    ) as ws:
        erase(client, world, customer_of(client, world, conv))
        closed = next_message(ws)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4404)


@pytest.mark.redis
def test_with_redis_an_erasure_closes_the_visitor_socket_through_the_shared_bus(
    settings: Settings, database: Database, world: World
) -> None:
    # With Redis the word reaches this process only through Redis, as it reaches every other.
    from rapport.app import create_app

    redis_url = os.environ.get("RAPPORT_TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    app = create_app(settings.model_copy(update={"redis_url": redis_url}), database=database)
    try:
        with TestClient(app) as client:
            assert isinstance(bus.get_bus(), bus.RedisBus)
            made = client.post(
                "/api/v1/inboxes",
                json={"name": "Chat", "channel": "webchat", "settings": {}},
                headers=auth(world.alice),
            )
            room = {"id": made.json()["id"], "token": made.json()["public_token"]}
            ann = start(client, room, name="Ann")
            conv = say(client, room, ann["visitor_token"], "forget me")["conversation_id"]
            url = f"/widget/ws/{room['token']}?visitor={ann['visitor_token']}"
            with client.websocket_connect(url) as ws:
                erase(client, world, customer_of(client, world, conv))
                closed = next_message(ws)
            assert (closed["type"], closed["code"]) == ("websocket.close", 4404)
    finally:
        bus.set_bus(bus.LocalBus())


def test_an_erased_visitors_open_widget_forgets_them_and_starts_afresh_in_chromium(
    live_server: LiveServer,
    browser,
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # type: ignore[no-untyped-def]
) -> None:
    # The widget took any close for a network error: with its visitor erased it knocked
    # again with the dead token forever, their chat still on the screen.
    origin = host_page[0]
    made = embedded(client, world, live_server, host_page)
    key = f"rapport.visitor.{made['public_token']}"
    page = browser.new_page()
    page.goto(origin)
    page.click("#rapport-widget >> css=.launcher")
    page.fill("#rapport-widget >> css=textarea", "Please forget me")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=Please forget me")
    token = page.evaluate(f"localStorage.getItem('{key}')")
    (conv,) = client.get(
        "/api/v1/conversations", params={"inbox_id": made["id"]}, headers=auth(world.bob)
    ).json()["items"]
    erase(client, world, conv["customer_id"])
    page.wait_for_function(
        f"(old) => localStorage.getItem('{key}') && localStorage.getItem('{key}') !== old",
        arg=token,
        timeout=15_000,
    )
    assert page.locator("#rapport-widget >> css=.m").count() == 0
    page.fill("#rapport-widget >> css=textarea", "A new visitor")
    page.click("#rapport-widget >> css=.say .send")
    page.wait_for_selector("#rapport-widget >> css=.m.in >> text=A new visitor")


def erase_when_noted(monkeypatch: pytest.MonkeyPatch, database: Database, visitor_id: str) -> None:
    """The visitor's customer is erased at the moment the view notes the visitor seen,
    after the message was stored: as an erasure committing in between would."""
    from rapport.channels.webchat import views
    from rapport.channels.webchat.models import Visitor
    from rapport.customers.models import Customer
    from rapport.privacy.erasure import erase_customer

    def erasing() -> object:
        monkeypatch.setattr(views, "utcnow", utcnow)  # once
        with database.session() as db:
            visitor = db.get(Visitor, visitor_id)
            assert visitor is not None and visitor.customer_id is not None
            customer = db.get(Customer, visitor.customer_id)
            assert customer is not None
            erase_customer(db, customer=customer)
        return utcnow()

    monkeypatch.setattr(views, "utcnow", erasing)


def test_a_message_stored_just_before_its_customer_is_erased_is_answered_201(
    client: TestClient,
    chat: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The view read the visitor row, then wrote it: an erasure committing in between left
    # the write with no row (StaleDataError on PostgreSQL), and the widget got a 500 for a
    # message that was stored.
    ann = start(client, chat, name="Ann")
    say(client, chat, ann["visitor_token"], "hello")
    erase_when_noted(monkeypatch, database, ann["visitor_id"])
    assert say(client, chat, ann["visitor_token"], "and goodbye")["text"] == "and goodbye"

    ben = start(client, chat, name="Ben")
    say(client, chat, ben["visitor_token"], "hello")
    erase_when_noted(monkeypatch, database, ben["visitor_id"])
    r = client.post(
        f"/widget/api/{chat['token']}/attachments",
        data={"text": "my receipt"},
        files={"file": ("receipt.txt", b"paid", "text/plain")},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ben["visitor_token"]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["text"] == "my receipt"
    # The visitor is gone: the next message is refused, as for any erased visitor.
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "still here?"},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ben["visitor_token"]},
    )
    assert r.status_code == 404


def erase_now(database: Database, customer_id: str) -> None:
    from rapport.customers.models import Customer
    from rapport.privacy.erasure import erase_customer

    with database.session() as db:
        customer = db.get(Customer, customer_id)
        assert customer is not None
        erase_customer(db, customer=customer)


def held_by_anyone(database: Database, visitor_id: str) -> list[str]:
    """What is left of a visitor: customers named by its handle, and its own row."""
    from rapport.channels.webchat.models import Visitor
    from rapport.customers.models import Identity

    with database.session(write=False) as db:
        named = db.scalars(select(Identity.customer_id).where(Identity.value == visitor_id))
        return [*named, *db.scalars(select(Visitor.id).where(Visitor.id == visitor_id))]


def test_a_visitor_erased_while_their_message_is_on_its_way_does_not_come_back(
    client: TestClient,
    world: World,
    chat: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The view read the visitor, then handed the message to ingest: an erasure committing
    # in between left ingest a handle nobody had, and it made a new customer of it, with
    # the erased visitor's name and email, and the message.
    from rapport.channels.webchat import views

    ann = start(client, chat, name="Ann Erased", email="ann@example.com")
    conv = say(client, chat, ann["visitor_token"], "hello")["conversation_id"]
    customer_id = customer_of(client, world, conv)
    read = views._visitor_and_region

    def read_then_erased(*args: Any) -> Any:
        found = read(*args)
        erase_now(database, customer_id)
        return found

    monkeypatch.setattr(views, "_visitor_and_region", read_then_erased)
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "forget me"},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ann["visitor_token"]},
    )
    assert r.status_code == 404, r.text  # as for any erased visitor: the widget starts over
    assert held_by_anyone(database, ann["visitor_id"]) == []
    found = client.get("/api/v1/customers", params={"q": "Erased"}, headers=auth(world.bob))
    assert found.json()["items"] == []


def test_a_visitor_whose_first_message_is_erased_at_once_goes_with_it(
    client: TestClient,
    world: World,
    chat: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A first message makes the customer; the view links the visitor to it only after. An
    # erasure in between found no visitor of the customer and left it, name and email, to
    # bring the handle back as a new customer with its next message.
    from rapport.channels.webchat import views
    from rapport.customers.models import Identity

    ben = start(client, chat, name="Ben Erased", email="ben@example.com")

    def erasing() -> object:
        monkeypatch.setattr(views, "utcnow", utcnow)  # once
        with database.session(write=False) as db:
            made = db.scalar(
                select(Identity.customer_id).where(Identity.value == ben["visitor_id"])
            )
        assert made is not None
        erase_now(database, made)
        return utcnow()

    monkeypatch.setattr(views, "utcnow", erasing)
    assert say(client, chat, ben["visitor_token"], "hello")["text"] == "hello"
    assert held_by_anyone(database, ben["visitor_id"]) == []
    r = client.post(
        f"/widget/api/{chat['token']}/messages",
        json={"text": "still here?"},
        headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ben["visitor_token"]},
    )
    assert r.status_code == 404
    assert held_by_anyone(database, ben["visitor_id"]) == []


def test_a_renamed_agent_shows_by_their_new_name_once_the_names_kept_expire(
    client: TestClient,
    world: World,
    chat: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Agents' names were kept for the life of the process: a renamed agent went on
    # answering under the old name in every customer's widget until a restart.
    from types import SimpleNamespace

    from sqlalchemy import update

    from rapport import cache
    from rapport.auth.models import User

    clock = [1_000_000.0]
    monkeypatch.setattr(cache, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    ann = start(client, chat, name="Ann")
    conv = say(client, chat, ann["visitor_token"], "hello")["conversation_id"]
    reply(client, world, conv, "hi, how can I help?")

    def names() -> list[str]:
        r = client.get(
            f"/widget/api/{chat['token']}/messages",
            headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ann["visitor_token"]},
        )
        assert r.status_code == 200, r.text
        return [m["sender_name"] for m in r.json() if m["direction"] == "out"]

    assert names() == ["Bob"]
    with database.session() as db:
        db.execute(update(User).where(User.name == "Bob").values(name="Robert"))
    assert names() == ["Bob"]  # kept a while: not a query per message shown
    clock[0] += 3600  # an hour later
    assert names() == ["Robert"]


def test_an_agent_who_renames_themself_shows_by_the_new_name_at_once(
    client: TestClient, world: World, chat: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names are kept a while for the widget; a rename through the account forgets it in
    # every process, so a visitor does not see the old name for the rest of that while.
    from types import SimpleNamespace

    from rapport import cache

    clock = [1_000_000.0]
    monkeypatch.setattr(cache, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    ann = start(client, chat, name="Ann")
    conv = say(client, chat, ann["visitor_token"], "hello")["conversation_id"]
    reply(client, world, conv, "hi, how can I help?")

    def names() -> list[str]:
        r = client.get(
            f"/widget/api/{chat['token']}/messages",
            headers={"Origin": HOST_PAGE, "X-Rapport-Visitor": ann["visitor_token"]},
        )
        assert r.status_code == 200, r.text
        return [m["sender_name"] for m in r.json() if m["direction"] == "out"]

    assert names() == ["Bob"]
    r = client.patch("/api/v1/auth/me", json={"name": "Robert"}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert names() == ["Robert"]  # the clock stood still: not kept any longer


def test_a_visitor_just_seen_connects_without_a_write(
    client: TestClient, chat: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every connect noted the visitor present in a write transaction, taking SQLite's one
    # write lock for each page a visitor opened, right after the session call had noted it.
    from datetime import timedelta

    from sqlalchemy import update

    from rapport.channels.webchat.models import Visitor

    writes: list[int] = []
    opened = database.write_session

    def counted() -> object:
        writes.append(1)
        return opened()

    ann = start(client, chat, name="Ann")
    url = f"/widget/ws/{chat['token']}?visitor={ann['visitor_token']}"
    monkeypatch.setattr(database, "write_session", counted)
    with client.websocket_connect(url):
        assert writes == []  # just seen by the session call: nothing to write
    writes.clear()

    long_ago = utcnow() - timedelta(hours=1)
    monkeypatch.setattr(database, "write_session", opened)
    with database.session() as db:
        db.execute(
            update(Visitor).where(Visitor.id == ann["visitor_id"]).values(last_seen_at=long_ago)
        )
    monkeypatch.setattr(database, "write_session", counted)
    with client.websocket_connect(url):
        assert writes == [1]  # away a while: noted present again at once
    with database.session(write=False) as db:
        seen = db.get(Visitor, ann["visitor_id"])
        assert seen is not None and seen.last_seen_at > long_ago


def test_the_chat_panel_closes_by_its_own_button_and_by_escape(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],
) -> None:
    # The panel closed only by the launcher beneath it, out of reach behind a phone's keyboard.
    expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect
    embedded(client, world, live_server, host_page)
    page = browser.new_page(viewport={"width": 390, "height": 700})
    page.goto(host_page[0])
    launcher = page.locator("#rapport-widget >> css=.launcher")
    panel = page.locator("#rapport-widget >> css=.panel")
    launcher.click()
    expect(panel).to_be_visible()
    expect(launcher).to_have_attribute("aria-expanded", "true")
    page.click("#rapport-widget >> css=button.close")
    expect(panel).to_be_hidden()
    expect(launcher).to_be_focused()
    launcher.click()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(launcher).to_have_attribute("aria-expanded", "false")
