"""WhatsApp Cloud API: documented payloads, real signatures, a stand-in Graph API."""

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from rapport import ingest
from rapport.channels import whatsapp
from rapport.channels.models import UnparsedPayload
from rapport.cli import app as cli_app
from rapport.config import Settings
from rapport.conversations.models import Conversation, Message
from rapport.db import Database
from rapport.jobs.models import Job, JobState
from rapport.jobs.service import retry_all_dead
from rapport.jobs.worker import Worker
from tests.channels.test_providers import (
    SMS,
    deliver_now,
    left_out,
    long_text,
    twilio_post,
    utf16,
)
from tests.conftest import auth
from tests.factories import World, written_ago
from tests.standin import serving

APP_SECRET = "meta-app-secret-for-tests"


class Graph(BaseHTTPRequestHandler):
    """Stands in for graph.facebook.com: records calls, answers as the Cloud API does."""

    calls: list[tuple[str, dict[str, str], dict]] = []  # type: ignore[type-arg]
    answer = 200
    error: dict = {  # type: ignore[type-arg]
        "message": "(#131026) Message undeliverable",
        "type": "OAuthException",
        "code": 131026,
    }

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, dict(self.headers), body))
        status = type(self).answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if status == 200:
            out = {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": f"wamid.OUT{len(type(self).calls)}"}],
            }
        else:
            out = {"error": type(self).error}
        self.wfile.write(json.dumps(out).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def graph() -> Iterator[tuple[str, type[Graph]]]:
    handler = type("G", (Graph,), {"calls": [], "answer": 200, "error": Graph.error})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_port}/v21.0", handler


@pytest.fixture
def inbox(client: TestClient, world: World, graph: tuple[str, type[Graph]]) -> str:
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "WhatsApp",
            "channel": "whatsapp",
            "settings": {
                "phone_number_id": "106540352242922",
                "access_token": "EAAG-test-token",
                "app_secret": APP_SECRET,
                "verify_token": "my-verify-token",
                "api_base_url": graph[0],
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    assert sorted(r.json()["secrets_set"]) == ["access_token", "app_secret", "verify_token"]
    return str(r.json()["id"])


def message_event(
    wamid: str, text: str, wa_id: str = "16505551234", name: str = "Kerry Fisher"
) -> dict:  # type: ignore[type-arg]
    """The shape Meta documents for an inbound text message notification."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": wamid,
                                    "timestamp": str(int(time.time())),
                                    "text": {"body": text},
                                    "type": "text",
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def status_event(
    wamid: str, status: str, errors: list[dict] | None = None, timestamp: str | None = None
) -> dict:  # type: ignore[type-arg]
    value: dict = {
        "messaging_product": "whatsapp",  # type: ignore[type-arg]
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "statuses": [
            {
                "id": wamid,
                "status": status,
                "timestamp": timestamp or str(int(time.time())),
                "recipient_id": "16505551234",
            }
        ],
    }
    if errors:
        value["statuses"][0]["errors"] = errors
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }


def post_signed(client: TestClient, inbox: str, payload: dict, secret: str = APP_SECRET):  # type: ignore[no-untyped-def, type-arg]
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post(
        f"/webhooks/whatsapp/{inbox}",
        content=body,
        headers={"X-Hub-Signature-256": sig, "Content-Type": "application/json"},
    )


def count(database: Database, model: type) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]


def test_the_verification_handshake_echoes_the_challenge_for_our_token(
    client: TestClient, inbox: str
) -> None:
    ok = client.get(
        f"/webhooks/whatsapp/{inbox}",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "my-verify-token",
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    bad = client.get(
        f"/webhooks/whatsapp/{inbox}",
        params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "x"},
    )
    assert bad.status_code == 403


def test_a_signed_message_lands_in_a_conversation_and_a_retry_is_stored_once(
    client: TestClient, world: World, inbox: str, database: Database
) -> None:
    payload = message_event("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdBRDE", "Is my order on its way?")
    assert post_signed(client, inbox, payload).status_code == 200
    assert post_signed(client, inbox, payload).status_code == 200  # Meta retries
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["text"] for m in detail["messages"]] == ["Is my order on its way?"]
    customer = client.get(
        f"/api/v1/customers/{conv['customer_id']}", headers=auth(world.bob)
    ).json()
    assert customer["name"] == "Kerry Fisher" and customer["phone"] == "+16505551234"
    assert {i["kind"] for i in customer["identities"]} == {"whatsapp", "phone"}


@pytest.mark.parametrize("secret", ["wrong-secret", None])
def test_a_forged_or_missing_signature_is_refused_and_nothing_is_stored(
    client: TestClient, inbox: str, database: Database, secret: str | None
) -> None:
    before = count(database, Message)
    payload = message_event("wamid.FORGED", "give me a refund")
    if secret is None:
        r = client.post(f"/webhooks/whatsapp/{inbox}", json=payload)
    else:
        r = post_signed(client, inbox, payload, secret=secret)
    assert r.status_code == 401 and r.json()["type"].endswith("/bad-signature")
    assert count(database, Message) == before


def test_an_unreadable_payload_is_kept_raw_and_flagged(
    client: TestClient, inbox: str, database: Database
) -> None:
    r = post_signed(
        client, inbox, {"entry": [{"changes": [{"value": {"messages": [{"no": "from"}]}}]}]}
    )
    assert r.status_code == 200
    with database.session(write=False) as db:
        [row] = list(db.scalars(select(UnparsedPayload)))
    assert '"no": "from"' in row.body and "KeyError" in row.error


def test_one_unreadable_item_is_set_aside_and_the_others_of_its_call_are_stored(
    client: TestClient, world: World, inbox: str, database: Database
) -> None:
    payload = message_event("wamid.GOOD1", "first")
    value = payload["entry"][0]["changes"][0]["value"]
    bad = {k: v for k, v in value["messages"][0].items() if k != "from"} | {"id": "wamid.BAD"}
    good = {**value["messages"][0], "id": "wamid.GOOD2", "text": {"body": "second"}}
    value["messages"] += [bad, good]
    assert post_signed(client, inbox, payload).status_code == 200
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["text"] for m in detail["messages"]] == ["first", "second"]
    with database.session(write=False) as db:
        [row] = list(db.scalars(select(UnparsedPayload)))
    assert "wamid.BAD" in row.body and "wamid.GOOD" not in row.body
    assert "KeyError" in row.error


@pytest.mark.parametrize("timestamp", ["-5", "99999999999999999999", "253402300800", "soon"])
def test_a_message_with_a_time_that_is_none_is_stored_at_its_receipt(
    client: TestClient, world: World, inbox: str, database: Database, timestamp: str
) -> None:
    # Out of range, it raised (OverflowError, ValueError): a 500, and Meta sent the call
    # again for days; not a number, the message was set aside unread.
    payload = message_event("wamid.ODDTIME", "hello")
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = timestamp
    assert post_signed(client, inbox, payload).status_code == 200
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    [message] = detail["messages"]
    assert message["text"] == "hello" and "sent_at" not in message["meta"]
    assert count(database, UnparsedPayload) == 0


def test_an_error_of_the_number_or_app_is_logged_by_its_code(
    client: TestClient, inbox: str, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Meta's ``value.errors`` (a problem of the app or account, no message's) were dropped
    # without a word: nobody learnt why messages stopped coming or going.
    payload = status_event("wamid.X", "sent")
    value = payload["entry"][0]["changes"][0]["value"]
    del value["statuses"]
    value["errors"] = [  # as Meta documents it
        {
            "code": 130429,
            "title": "Rate limit hit",
            "message": "Rate limit hit",
            "error_data": {"details": "Too many messages sent to +16505551234"},
            "href": "/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ]
    with caplog.at_level(logging.WARNING, logger="rapport.channels.whatsapp"):
        assert post_signed(client, inbox, payload).status_code == 200
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "whatsapp.webhook_error"]
    assert record.levelno == logging.WARNING
    assert record.inbox_id == inbox and record.phone_number_id == "106540352242922"  # type: ignore[attr-defined]
    assert record.codes == [130429] and record.titles == ["Rate limit hit"]  # type: ignore[attr-defined]
    # Its details may quote a customer: not in the log.
    assert not any("6505551234" in repr(r.__dict__) for r in caplog.records)
    assert count(database, UnparsedPayload) == 0


def test_a_call_that_meets_a_conflict_twice_is_answered_503_and_its_retry_stores_each_item_once(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A race on a unique key that the writer meets on its second try too. It was answered
    # 409, which a provider does not send again: the customer's message was lost.
    payload = message_event("wamid.GOOD1", "first")
    value = payload["entry"][0]["changes"][0]["value"]
    bad = {k: v for k, v in value["messages"][0].items() if k != "from"} | {"id": "wamid.BAD"}
    good = {**value["messages"][0], "id": "wamid.GOOD2", "text": {"body": "second"}}
    value["messages"] += [bad, good]
    tries = []
    store = ingest.receive_batch

    def colliding(db: Any, msgs: list[Any], **kwargs: Any) -> Any:
        if any(m.external_id == "wamid.GOOD2" for m in msgs) and len(tries) < 2:
            tries.append(1)
            raise IntegrityError("INSERT INTO identities ...", {}, Exception("duplicate key"))
        return store(db, msgs, **kwargs)

    monkeypatch.setattr(ingest, "receive_batch", colliding)
    before = count(database, Message)
    r = post_signed(client, inbox, payload)
    assert (r.status_code, r.headers["retry-after"]) == (503, "1"), r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert len(tries) == 2 and count(database, Message) == before + 1
    assert post_signed(client, inbox, payload).status_code == 200  # Meta sends it again
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["text"] for m in detail["messages"]] == ["first", "second"]
    assert count(database, UnparsedPayload) == 1


def test_an_event_for_another_number_of_the_same_app_is_not_this_inboxs(
    client: TestClient, inbox: str, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # One Meta app has one callback URL for all its numbers: each inbox keeps its own.
    payload = message_event("wamid.OTHERNUMBER", "for the other shop")
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999999999"
    before = count(database, Message)
    with caplog.at_level(logging.WARNING):
        assert post_signed(client, inbox, payload).status_code == 200
    assert count(database, Message) == before
    assert left_out(caplog) == [["999999999"]]


def test_an_event_for_another_number_of_the_same_app_reaches_that_numbers_inbox(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The other number's inbox has no callback URL Meta calls (one per app): its events,
    # reaching this inbox, were left out and stored nowhere.
    settings = {
        "phone_number_id": "999999999",
        "access_token": "EAAG-other",
        "app_secret": APP_SECRET,
        "verify_token": "other-verify-token",
    }
    r = client.post(
        "/api/v1/inboxes",
        json={"name": "Other shop", "channel": "whatsapp", "settings": settings},
        headers=auth(world.alice),
    )
    other = str(r.json()["id"])
    payload = message_event("wamid.OTHERNUMBER", "for the other shop")
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999999999"
    with caplog.at_level(logging.WARNING):
        assert post_signed(client, inbox, payload).status_code == 200
    # Taken, it is not said to be left out (it was, by this inbox).
    assert left_out(caplog) == []
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": other}, headers=auth(world.bob)
    ).json()["items"]
    got = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["text"] for m in got["messages"]] == ["for the other shop"]
    assert (
        client.get(
            "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
        ).json()["items"]
        == []
    )


@pytest.mark.parametrize("cleared", [None, ""])
def test_a_cleared_app_secret_makes_every_call_unsigned(
    client: TestClient, world: World, inbox: str, database: Database, cleared: str | None
) -> None:
    # null used to be kept as the app secret "None", a key anyone can sign with.
    r = client.patch(
        f"/api/v1/inboxes/{inbox}",
        json={"settings": {"app_secret": cleared}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    assert "app_secret" not in r.json()["secrets_set"]
    before = count(database, Message)
    for key in ("None", ""):
        r = post_signed(client, inbox, message_event("wamid.FORGEDNONE", "refund me"), key)
        assert r.status_code == 401
    assert count(database, Message) == before
    r = client.patch(
        f"/api/v1/inboxes/{inbox}",
        json={"settings": {"app_secret": 42}},
        headers=auth(world.alice),
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("settings.app_secret (App secret): must be text")


def test_a_signature_header_of_any_text_is_refused_not_an_error(
    client: TestClient, inbox: str
) -> None:
    body = json.dumps(message_event("wamid.ACCENT", "hi")).encode()
    r = client.post(
        f"/webhooks/whatsapp/{inbox}",
        content=body,
        headers={"X-Hub-Signature-256": "sha256=é".encode(), "Content-Type": "application/json"},
    )
    assert r.status_code == 401


def test_a_reply_goes_to_the_graph_api_and_statuses_move_it(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    post_signed(client, inbox, message_event("wamid.IN1", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Hi Kerry!"},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    [(path, headers, body)] = graph[1].calls
    assert path == "/v21.0/106540352242922/messages"
    assert headers["Authorization"] == "Bearer EAAG-test-token"
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "Hi Kerry!"},
    }
    out = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert out["status"] == "sent" and out["external_id"] == "wamid.OUT1"
    post_signed(client, inbox, status_event("wamid.OUT1", "delivered"))
    post_signed(client, inbox, status_event("wamid.OUT1", "read"))
    post_signed(client, inbox, status_event("wamid.OUT1", "delivered"))  # late: never goes back
    out = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert out["status"] == "read"


def test_a_failed_status_after_read_leaves_the_reply_read(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    # Meta's callbacks arrive in any order: a failure reported after the customer read the
    # reply showed it as failed, with "Send again" offering to send it twice.
    post_signed(client, inbox, message_event("wamid.IN7", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    )
    Worker(database, settings).run_until_idle()
    error = {"code": 131026, "title": "Message undeliverable"}
    for status in ("read", "delivered", "sent"):
        post_signed(client, inbox, status_event("wamid.OUT1", status))
    post_signed(client, inbox, status_event("wamid.OUT1", "failed", [error]))
    out = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert out["status"] == "read" and out["error"] is None


def test_a_status_keeps_the_time_meta_gives_unless_it_cannot_be_this_messages(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    # Meta retries a callback for days: the time it came in is not when the customer read.
    post_signed(client, inbox, message_event("wamid.IN8", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    for text in ("one", "two"):
        client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"text": text},
            headers=auth(world.bob),
        )
        Worker(database, settings).run_until_idle()
    now = int(time.time())
    reports = [
        ("wamid.OUT1", "delivered", str(now - 90)),  # Meta's time: kept
        ("wamid.OUT1", "read", str(now + 86_400)),  # a day ahead: a wrong clock
        ("wamid.OUT2", "delivered", "1000000000"),  # 2001: before the message was written
        ("wamid.OUT2", "read", "soon"),  # not a time
    ]
    before = datetime.now(UTC).replace(microsecond=0)
    for wamid, status, timestamp in reports:
        post_signed(client, inbox, status_event(wamid, status, timestamp=timestamp))
    after = datetime.now(UTC)
    one, two = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-2:]
    assert one["status"] == two["status"] == "read"
    times = {
        (n, status): datetime.fromisoformat(at)
        for n, m in ((1, one), (2, two))
        for status, at in m["meta"]["status_at"].items()
    }
    assert times.pop((1, "delivered")) == datetime.fromtimestamp(now - 90, UTC)
    assert sorted(times) == [(1, "read"), (2, "delivered"), (2, "read")]
    assert all(before <= at <= after for at in times.values())  # when each came in


def test_a_failed_status_says_why_in_the_words_meta_gives(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    # The title alone ("Re-engagement message") did not say why: the details did, and
    # were dropped.
    post_signed(client, inbox, message_event("wamid.IN9", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    )
    Worker(database, settings).run_until_idle()
    details = (
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number."
    )
    error = {
        "code": 131047,
        "title": "Re-engagement message",
        "message": "Re-engagement message",
        "error_data": {"details": details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }
    post_signed(client, inbox, status_event("wamid.OUT1", "failed", [error]))
    out = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert out["status"] == "failed"
    assert out["error"] == f"131047: Re-engagement message ({details})"


def test_a_reply_meta_took_and_then_failed_is_sent_again_once_and_can_succeed(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    # Sent again, the old failed part stayed and failed the message at once; each click
    # then sent another copy.
    post_signed(client, inbox, message_event("wamid.IN8", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    reply = client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    ).json()
    Worker(database, settings).run_until_idle()
    post_signed(client, inbox, status_event("wamid.OUT1", "failed", [{"code": 131026}]))
    url = f"/api/v1/conversations/{conv['id']}/messages/{reply['id']}"
    assert client.get(url, headers=auth(world.bob)).json()["status"] == "failed"
    assert client.post(f"{url}/retry", headers=auth(world.bob)).status_code == 200
    Worker(database, settings).run_until_idle()
    got = client.get(url, headers=auth(world.bob)).json()
    assert got["status"] == "sent", got["error"]
    assert len(graph[1].calls) == 2
    post_signed(client, inbox, status_event("wamid.OUT2", "delivered"))
    assert client.get(url, headers=auth(world.bob)).json()["status"] == "delivered"
    # Sent now: not again.
    assert client.post(f"{url}/retry", headers=auth(world.bob)).status_code == 422


def test_a_refused_message_fails_with_the_providers_reason(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    graph[1].answer = 400
    post_signed(client, inbox, message_event("wamid.IN2", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    )
    Worker(database, settings).run_until_idle()
    out = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert out["status"] == "failed" and "131026" in out["error"]


def test_a_reply_longer_than_whatsapp_takes_goes_as_several_messages(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    # A text body takes at most 4096 characters: a longer reply was refused and failed.
    post_signed(client, inbox, message_event("wamid.IN4", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    text = long_text(1500)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": text}, headers=auth(world.bob)
    )
    Worker(database, settings).run_until_idle()
    bodies = [body["text"]["body"] for _, _, body in graph[1].calls]
    assert len(bodies) == 2 and all(utf16(b) <= 4096 for b in bodies)
    assert " ".join(bodies).split() == text.split()
    out = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert out["status"] == "sent" and out["external_id"] == "wamid.OUT2"


def test_a_rate_limit_meta_answers_with_a_400_is_tried_again_not_failed(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    # Meta answers its rate limits with a 400 and tells apps to act on the code: the reply
    # was failed for good, though a moment later it went.
    graph[1].answer = 400
    graph[1].error = {
        "message": "(#130429) Rate limit hit",
        "type": "OAuthException",
        "code": 130429,
        "error_data": {
            "messaging_product": "whatsapp",
            "details": "Cloud API message throughput has been reached.",
        },
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam",
    }
    post_signed(client, inbox, message_event("wamid.IN3", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    reply = client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    ).json()
    url = f"/api/v1/conversations/{conv['id']}/messages/{reply['id']}"
    job, _ = deliver_now(database, settings)
    out = client.get(url, headers=auth(world.bob)).json()
    assert out["status"] == "queued" and "130429" in out["error"], out
    graph[1].answer = 200
    job, _ = deliver_now(database, settings)
    out = client.get(url, headers=auth(world.bob)).json()
    assert out["status"] == "sent" and out["error"] is None
    assert job.state == JobState.done and len(graph[1].calls) == 2


def test_outside_the_24_hour_window_a_free_text_reply_is_refused(
    client: TestClient, world: World, inbox: str, database: Database
) -> None:
    post_signed(client, inbox, message_event("wamid.IN3", "hello"))
    conv = {"id": written_ago(database, "wamid.IN3", timedelta(hours=25))}
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Still there?"},
        headers=auth(world.bob),
    )
    assert r.status_code == 422 and "24 hours" in r.json()["detail"]
    note = client.post(
        f"/api/v1/conversations/{conv['id']}/notes",
        json={"text": "needs a template"},
        headers=auth(world.bob),
    )
    assert note.status_code == 201


def test_the_window_counts_from_the_last_message_through_the_number_not_from_an_sms(
    client: TestClient, world: World, inbox: str, database: Database, settings: Settings
) -> None:
    # Merged with the customer's SMS conversation, the WhatsApp conversation's last message
    # in was their SMS of an hour ago: a reply through WhatsApp, 30 hours after they last
    # wrote there, was let through, and Meta refused it.
    sms = client.post(
        "/api/v1/inboxes",
        json={
            "name": "SMS",
            "channel": "twilio_sms",
            "settings": {"account_sid": "AC0", "auth_token": "twilio-token"},
        },
        headers=auth(world.alice),
    ).json()["id"]
    post_signed(client, inbox, message_event("wamid.IN30", "where is my parcel?"))
    texted = SMS | {"From": "+16505551234", "MessageSid": "SM_1H", "Body": "hello?"}
    path = f"/webhooks/twilio_sms/{sms}"
    assert twilio_post(client, settings, path, texted, "twilio-token").status_code == 200
    by_whatsapp = written_ago(database, "wamid.IN30", timedelta(hours=30))
    by_sms = written_ago(database, "SM_1H", timedelta(hours=1))
    r = client.post(
        f"/api/v1/conversations/{by_whatsapp}/merge",
        json={"merged_id": by_sms},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text

    def reply(**body: str) -> Any:
        return client.post(
            f"/api/v1/conversations/{by_whatsapp}/messages",
            json={"text": "Still there?", **body},
            headers=auth(world.bob),
        )

    r = reply(inbox_id=inbox)
    assert r.status_code == 422 and "24 hours" in r.json()["detail"]
    # By SMS, where they last wrote, it goes; and through WhatsApp once they write there.
    r = reply()
    assert r.status_code == 201 and r.json()["inbox_id"] == sms
    assert post_signed(client, inbox, message_event("wamid.IN0", "any news?")).status_code == 200
    assert reply(inbox_id=inbox).status_code == 201


def test_a_reaction_does_not_open_the_window(
    client: TestClient, world: World, inbox: str, database: Database
) -> None:
    # The customer's last message in, a thumb, is no message of theirs to WhatsApp: the
    # window still counts from what they wrote 25 hours ago.
    post_signed(client, inbox, message_event("wamid.IN25", "thanks"))
    conv = written_ago(database, "wamid.IN25", timedelta(hours=25))
    event = message_event("wamid.R25", "")
    msg = event["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    msg.update({"type": "reaction", "reaction": {"message_id": "wamid.OUT1", "emoji": "👍"}})
    assert post_signed(client, inbox, event).status_code == 200
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Glad to help!"},
        headers=auth(world.bob),
    )
    assert r.status_code == 422 and "24 hours" in r.json()["detail"]


def test_media_location_and_reactions_are_readable(
    client: TestClient, world: World, inbox: str
) -> None:
    event = message_event("wamid.LOC", "")
    msg = event["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    msg.update(
        {
            "type": "location",
            "location": {
                "latitude": 38.9,
                "longitude": -77.0,
                "name": "Office",
                "address": "1 Main St",
            },
        }
    )
    post_signed(client, inbox, event)
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    last = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ][-1]
    assert (
        last["text"].startswith("[location] Office 1 Main St")
        and last["meta"]["location"]["latitude"] == 38.9
    )


def test_unsupported_system_and_order_messages_and_a_removed_reaction_read_as_what_they_are(
    client: TestClient, world: World, inbox: str
) -> None:
    # Each was "[unsupported]", "[system]", "[order]" or "[reaction] " with nothing more:
    # the agent could not tell what the customer had done.
    unsupported = {
        "type": "unsupported",
        "errors": [
            {
                "code": 131051,
                "title": "Message type unknown",
                "message": "Message type unknown",
                "error_data": {"details": "Message type is currently not supported."},
            }
        ],
    }
    body = "Kerry changed their phone number to a new number: 16505559999"
    system = {
        "type": "system",
        "system": {"body": body, "wa_id": "16505559999", "type": "user_changed_number"},
    }
    item = {"product_retailer_id": "SKU-1", "quantity": 2, "item_price": 10, "currency": "USD"}
    order = {
        "type": "order",
        "order": {"catalog_id": "C1", "text": "for Friday", "product_items": [item]},
    }
    removed = {"type": "reaction", "reaction": {"message_id": "wamid.OUT1"}}
    for n, content in enumerate([unsupported, system, order, removed]):
        event = message_event(f"wamid.K{n}", "")
        msg = event["entry"][0]["changes"][0]["value"]["messages"][0]
        msg.pop("text")
        msg.update(content)
        assert post_signed(client, inbox, event).status_code == 200
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    messages = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ]
    assert [m["text"] for m in messages] == [
        "[unsupported] 131051: Message type unknown (Message type is currently not supported.)",
        f"[system] {body}",
        "[order] 2 × SKU-1 for Friday",
        "[reaction removed]",
    ]
    assert messages[2]["meta"]["order"]["product_items"] == [item]


def test_a_reaction_does_not_reopen_a_resolved_conversation(
    client: TestClient, world: World, inbox: str
) -> None:
    # A thumb on our last message reopened the conversation, waiting for an answer.
    post_signed(client, inbox, message_event("wamid.IN7", "thanks, bye"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    event = message_event("wamid.R1", "")
    msg = event["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    msg.update({"type": "reaction", "reaction": {"message_id": "wamid.OUT1", "emoji": "👍"}})
    assert post_signed(client, inbox, event).status_code == 200
    after = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert after["messages"][-1]["text"] == "[reaction] 👍"
    assert after["status"] == "resolved"


def test_a_status_for_a_message_rapport_does_not_know_is_acknowledged_and_logged(
    client: TestClient, inbox: str, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # A message the number sent from elsewhere: the status is acknowledged (an error would
    # have Meta retry it for days), and was dropped without a word.
    with caplog.at_level(logging.INFO, logger="rapport.channels.deliver"):
        assert (
            post_signed(client, inbox, status_event("wamid.ELSEWHERE", "read")).status_code == 200
        )
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "webhook.report_unknown"]
    assert record.inbox_id == inbox  # type: ignore[attr-defined]
    assert count(database, UnparsedPayload) == 0


def test_a_flow_answer_reads_as_its_summary_and_keeps_the_answers(
    client: TestClient, world: World, inbox: str
) -> None:
    # A WhatsApp Flow's answer (interactive nfm_reply) has no button title: it was stored
    # as an empty message, the customer's answers lost.
    answers = '{"flow_token": "t1", "date": "2026-12-05"}'
    event = message_event("wamid.FLOW", "")
    msg = event["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    nfm = {"name": "flow", "body": "Sent", "response_json": answers}
    msg.update({"type": "interactive", "interactive": {"type": "nfm_reply", "nfm_reply": nfm}})
    assert post_signed(client, inbox, event).status_code == 200
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    [message] = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ]
    assert message["text"] == "Sent"
    assert message["meta"]["interactive"]["nfm_reply"]["response_json"] == answers


def number_change(wamid: str, old: str, new: str, shape: str = "user_changed_number") -> dict:  # type: ignore[type-arg]
    """Meta's system notice of a new number, from the old one: today's (the new id in
    ``wa_id``) or, before Graph API v12, ``customer_changed_number`` with ``new_wa_id``."""
    event = message_event(wamid, "", wa_id=old)
    value = event["entry"][0]["changes"][0]["value"]
    value.pop("contacts")  # system notices come without one
    msg = value["messages"][0]
    msg.pop("text")
    body = f"User Kerry Fisher changed from {old} to {new}"
    new_id = "new_wa_id" if shape == "customer_changed_number" else "wa_id"
    msg.update({"type": "system", "system": {"body": body, new_id: new, "type": shape}})
    return event


def customer_of(client: TestClient, world: World, inbox: str) -> dict:  # type: ignore[type-arg]
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    customer = client.get(f"/api/v1/customers/{conv['customer_id']}", headers=auth(world.bob))
    return customer.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("shape", ["user_changed_number", "customer_changed_number"])
def test_a_customer_who_changes_number_stays_one_customer_and_is_answered_on_the_new_one(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
    shape: str,
) -> None:
    # WhatsApp's notice of a new number was stored as text and nothing more: the customer's
    # next message, from the new number, made a stranger of them, a new customer with none
    # of their history, and replies in their old conversation went to the old number.
    post_signed(client, inbox, message_event("wamid.OLD1", "my order?", wa_id="16505551234"))
    for _ in range(2):  # Meta redelivers: applied once
        notice = number_change("wamid.SYS1", "16505551234", "16505559999", shape)
        assert post_signed(client, inbox, notice).status_code == 200
    new = message_event("wamid.NEW1", "it's me, new phone", wa_id="16505559999")
    assert post_signed(client, inbox, new).status_code == 200
    customer = customer_of(client, world, inbox)  # one conversation: the same customer's
    assert {(i["kind"], i["value"]) for i in customer["identities"]} == {
        ("whatsapp", "16505551234"),  # kept: the history was written from it
        ("phone", "+16505551234"),
        ("whatsapp", "16505559999"),
        ("phone", "+16505559999"),
    }
    assert customer["phone"] == "+16505559999"
    events = client.get(
        f"/api/v1/customers/{customer['id']}/timeline",
        params={"kind": "event"},
        headers=auth(world.bob),
    ).json()["items"]
    assert [(e["type"], e["data"].get("properties")) for e in events] == [
        ("number_changed", {"from": "16505551234", "to": "16505559999", "held_by": []})
    ]
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Noted your new number!"},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    [(_, _, body)] = graph[1].calls
    assert body["to"] == "16505559999"


def test_a_system_notice_is_recorded_but_does_not_reopen_or_wait_for_an_answer(
    client: TestClient, world: World, inbox: str, database: Database
) -> None:
    # WhatsApp's notice was stored as the customer's message: it reopened the resolved
    # conversation, left it waiting for an answer, and would start its SLA clocks and
    # wake the bot, though the customer said nothing.
    client.patch(
        f"/api/v1/inboxes/{inbox}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    post_signed(client, inbox, message_event("wamid.BYE", "thanks, bye", wa_id="16505551234"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    ).raise_for_status()
    with database.session(write=False) as db:
        jobs_before = set(db.scalars(select(Job.id)))
    notice = number_change("wamid.SYS3", "16505551234", "16505559999")
    assert post_signed(client, inbox, notice).status_code == 200
    after = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert after["messages"][-1]["text"].startswith("[system] User Kerry Fisher changed")
    assert after["status"] == "resolved"
    with database.session(write=False) as db:
        stored = db.get(Conversation, conv["id"])
        assert stored is not None and stored.waiting_since is None
        assert set(db.scalars(select(Job.id))) == jobs_before  # no rule, bot or routing
    # The number still moved: recorded is not ignored.
    assert "16505559999" in {i["value"] for i in customer_of(client, world, inbox)["identities"]}


def test_a_notice_of_a_new_number_and_a_message_from_it_in_one_batch_are_one_customer(
    client: TestClient, world: World, inbox: str, database: Database, settings: Settings
) -> None:
    # A group commit resolved every message's customer (step 2) before it applied the
    # notice (step 6): the new number's message, in the same batch, made a stranger of the
    # customer, and the notice then found the number taken: only a merge suggestion.
    post_signed(client, inbox, message_event("wamid.OLD4", "my order?", wa_id="16505551234"))
    box = SimpleNamespace(id=inbox, settings={"phone_number_id": "106540352242922"})
    events = [
        number_change("wamid.SYS4", "16505551234", "16505559999"),
        message_event("wamid.NEW4", "it's me, new phone", wa_id="16505559999"),
    ]
    msgs = [m for e in events for m in whatsapp.parse(e, inbox=box).messages]
    with database.session() as db:
        stored = ingest.receive_batch(db, msgs, settings=settings)
    assert not [s for s in stored if isinstance(s, BaseException)]
    customer = customer_of(client, world, inbox)  # one conversation: the same customer's
    assert {s.customer_id for s in stored} == {customer["id"]}  # type: ignore[union-attr]
    assert {(i["kind"], i["value"], i["verified"]) for i in customer["identities"]} == {
        ("whatsapp", "16505551234", True),
        ("phone", "+16505551234", True),
        ("whatsapp", "16505559999", True),
        ("phone", "+16505559999", True),
    }
    assert customer["phone"] == "+16505559999"
    [event] = client.get(
        f"/api/v1/customers/{customer['id']}/timeline",
        params={"kind": "event"},
        headers=auth(world.bob),
    ).json()["items"]
    assert event["data"]["properties"] == {
        "from": "16505551234",
        "to": "16505559999",
        "held_by": [],
    }
    assert client.get("/api/v1/merge-suggestions", headers=auth(world.bob)).json() == []


def test_a_new_number_another_customer_has_is_not_taken_but_put_to_duplicate_review(
    client: TestClient, world: World, inbox: str
) -> None:
    # Numbers are given to someone else after a while: a customer Rapport already knows by
    # the new number may be this one or a stranger. An agent decides, not the notice.
    post_signed(client, inbox, message_event("wamid.B1", "hello", wa_id="16505559999", name="B"))
    other = customer_of(client, world, inbox)
    post_signed(client, inbox, message_event("wamid.A1", "hi", wa_id="16505551234"))
    notice = number_change("wamid.SYS2", "16505551234", "16505559999")
    assert post_signed(client, inbox, notice).status_code == 200
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    [kerry] = [c["customer_id"] for c in convs if c["customer_id"] != other["id"]]
    mine = client.get(f"/api/v1/customers/{kerry}", headers=auth(world.bob)).json()
    assert {i["value"] for i in mine["identities"]} == {"16505551234", "+16505551234"}
    theirs = client.get(f"/api/v1/customers/{other['id']}", headers=auth(world.bob)).json()
    assert {i["value"] for i in theirs["identities"]} == {"16505559999", "+16505559999"}
    [suggestion] = client.get(
        "/api/v1/merge-suggestions", params={"customer_id": kerry}, headers=auth(world.bob)
    ).json()
    assert {suggestion["left_id"], suggestion["right_id"]} == {kerry, other["id"]}
    assert suggestion["status"] == "pending" and "changed number" in suggestion["reason"]
    [event] = client.get(
        f"/api/v1/customers/{kerry}/timeline", params={"kind": "event"}, headers=auth(world.bob)
    ).json()["items"]
    assert event["data"]["properties"]["held_by"] == [other["id"]]


def _dead_reply(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> tuple[str, str, str]:
    """A reply Meta refused within the window, its deliver job dead, and the customer's
    message moved to 25 hours ago: the conversation's, the message's and the job's ids."""
    graph[1].answer = 400
    post_signed(client, inbox, message_event("wamid.IN30", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    reply = client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "Hi"}, headers=auth(world.bob)
    ).json()
    Worker(database, settings).run_until_idle()
    with database.session(write=False) as db:
        dead = db.scalars(select(Job).where(Job.name == "deliver", Job.state == "dead")).one()
    graph[1].answer = 200  # Meta would take it now, but for the window
    written_ago(database, "wamid.IN30", timedelta(hours=25))
    return conv["id"], reply["id"], dead.id


def test_a_dead_reply_retried_outside_the_window_is_refused_as_sending_it_again_is(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The agent's "send again" checked the 24 hours; the admin's retry of the dead job
    # did not, and Meta refused it (131047) where the agent could have been told first.
    conv, mid, job_id = _dead_reply(client, world, inbox, database, settings, graph)
    url = f"/api/v1/conversations/{conv}/messages/{mid}"
    r = client.post(f"{url}/retry", headers=auth(world.bob))
    assert r.status_code == 422 and "24 hours" in r.json()["detail"]
    assert client.get(url, headers=auth(world.bob)).json()["status"] == "failed"
    cursor = client.get("/api/v1/events", headers=auth(world.bob)).json()["cursor"]
    r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["state"] == "dead" and "24 hours" in job["last_error"]
    Worker(database, settings).run_until_idle()
    assert len(graph[1].calls) == 1  # the first try alone: nothing more went to Meta
    got = client.get(url, headers=auth(world.bob)).json()
    assert got["status"] == "failed"
    assert got["error"].startswith("not sent again: ") and "24 hours" in got["error"]
    assert got["error"] == job["last_error"]
    # The agent's open page hears of it.
    events = client.get("/api/v1/events", params={"after": cursor}, headers=auth(world.bob)).json()[
        "events"
    ]
    assert [(e["type"], e["payload"]["error"]) for e in events] == [
        ("message.updated", got["error"])
    ]
    # Retrying every dead job counts it with those queued again no more than this did.
    with database.session() as db:
        assert retry_all_dead(db, workspace_id=world.acme.workspace.id) == 0
        assert db.get(Job, job_id).state == "dead"  # type: ignore[union-attr]
    assert client.get(url, headers=auth(world.bob)).json()["error"] == job["last_error"]
    # Nor does the command line's retry of it by id (it said "1 job queued again").
    monkeypatch.setenv("RAPPORT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RAPPORT_SECRET_KEY", settings.secret_key.get_secret_value())
    result = CliRunner().invoke(cli_app, ["jobs", "retry", job_id])
    assert result.exit_code == 1
    assert result.output == f"0 jobs queued again\njob {job_id} stays dead: {job['last_error']}\n"
    # Still dead, where an admin sees it, not lost: retried again once the customer
    # writes, it goes.
    post_signed(client, inbox, message_event("wamid.IN31", "still there?"))
    r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth(world.alice))
    assert r.json()["state"] == "queued"
    Worker(database, settings).run_until_idle()
    assert client.get(url, headers=auth(world.bob)).json()["status"] == "sent"
    assert len(graph[1].calls) == 2


def test_a_dead_reply_retried_within_the_window_goes_as_sending_it_again_does(
    client: TestClient,
    world: World,
    inbox: str,
    database: Database,
    settings: Settings,
    graph: tuple[str, type[Graph]],
) -> None:
    conv, mid, job_id = _dead_reply(client, world, inbox, database, settings, graph)
    written_ago(database, "wamid.IN30", timedelta(hours=23))
    r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth(world.alice))
    assert r.json()["state"] == "queued"
    Worker(database, settings).run_until_idle()
    url = f"/api/v1/conversations/{conv}/messages/{mid}"
    assert client.get(url, headers=auth(world.bob)).json()["status"] == "sent"
    # And so does the agent's, for another that failed.
    graph[1].answer = 400
    again = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "Hi again"}, headers=auth(world.bob)
    ).json()
    Worker(database, settings).run_until_idle()
    graph[1].answer = 200
    url = f"/api/v1/conversations/{conv}/messages/{again['id']}"
    assert client.post(f"{url}/retry", headers=auth(world.bob)).status_code == 200
    Worker(database, settings).run_until_idle()
    assert client.get(url, headers=auth(world.bob)).json()["status"] == "sent"
