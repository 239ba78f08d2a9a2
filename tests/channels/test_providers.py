"""Telegram, Twilio SMS and voice, Messenger and Instagram: documented payloads, real
signatures, and stand-ins for the providers' APIs."""

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from rapport.app import create_app
from rapport.channels.models import UnparsedPayload
from rapport.channels.twilio import segments, signature
from rapport.config import Settings
from rapport.conversations.models import Conversation, Message
from rapport.customers.models import Customer, Identity
from rapport.db import Database, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from tests.channels.email.test_email import Outbox, outbox  # noqa: F401
from tests.conftest import auth, heard_until_note, published_events
from tests.factories import World, written_ago
from tests.standin import serving


class Provider(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, str], bytes]] = []
    reply: dict = {}  # type: ignore[type-arg]
    status = 200
    raw: bytes | None = None  # an answer that is not JSON (a proxy's error page)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls.append((self.path, dict(self.headers), body))
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        # "{n}" in the reply is the call's number: each message sent gets an id of its own.
        answer = json.dumps(type(self).reply).replace("{n}", str(len(type(self).calls)))
        self.wfile.write(type(self).raw or answer.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[tuple[str, type[Provider]]]:
    handler = type("P", (Provider,), {"calls": [], "reply": {}})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_port}", handler


def make_inbox(client: TestClient, world: World, channel: str, settings: dict) -> str:  # type: ignore[type-arg]
    r = client.post(
        "/api/v1/inboxes",
        json={"name": channel, "channel": channel, "settings": settings},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def messages(database: Database) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(Message)) or 0)


def only_conversation(client: TestClient, world: World, inbox: str) -> dict:  # type: ignore[type-arg]
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    return client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()  # type: ignore[no-any-return]


def left_out(caplog: pytest.LogCaptureFixture) -> list[list[str]]:
    """The pages or numbers each warning of a call's events left out names."""
    return [
        r.accounts  # type: ignore[attr-defined]
        for r in caplog.records
        if "left out" in r.getMessage() and r.levelno == logging.WARNING
    ]


# --- Telegram ----------------------------------------------------------------------------

TG_UPDATE = {
    "update_id": 10000,
    "message": {
        "message_id": 1365,
        "date": 1441645532,
        "from": {
            "id": 1111111,
            "is_bot": False,
            "first_name": "Test",
            "last_name": "Lastname",
            "username": "Test",
        },
        "chat": {
            "id": 1111111,
            "type": "private",
            "first_name": "Test",
            "last_name": "Lastname",
            "username": "Test",
        },
        "text": "/start hello",
    },
}


def test_telegram_updates_need_the_secret_token_and_replies_use_send_message(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    url, handler = provider
    handler.reply = {"ok": True, "result": {"message_id": 1366}}
    inbox = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
    )
    before = messages(database)
    assert client.post(f"/webhooks/telegram/{inbox}", json=TG_UPDATE).status_code == 401
    assert (
        client.post(
            f"/webhooks/telegram/{inbox}",
            json=TG_UPDATE,
            headers={"X-Telegram-Bot-Api-Secret-Token": "guess"},
        ).status_code
        == 401
    )
    assert messages(database) == before
    for _ in range(2):  # Telegram redelivers until it gets a 200
        r = client.post(
            f"/webhooks/telegram/{inbox}",
            json=TG_UPDATE,
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
        )
        assert r.status_code == 200
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]] == ["/start hello"]
    # An edit carries its message's number: it used to be taken for a redelivery, dropped.
    edit = {**TG_UPDATE["message"], "text": "/start hello!", "edit_date": 1441645600}  # type: ignore[dict-item]
    for _ in range(2):
        r = client.post(
            f"/webhooks/telegram/{inbox}",
            json={"update_id": 10001, "edited_message": edit},
            headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
        )
        assert r.status_code == 200
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]] == ["/start hello", "(edited) /start hello!"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Hello from Rapport"},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    [(path, _, body)] = handler.calls
    assert path == "/bot123:ABC/sendMessage"
    assert json.loads(body) == {"chat_id": "1111111", "text": "Hello from Rapport"}
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "sent" and out["external_id"] == "1111111:1366"


def long_text(words: int) -> str:
    """An agent's long answer: sentences of words, paragraphs, an emoji now and then."""
    return " ".join(
        "word😀" if n % 50 == 49 else ("end.\n\nNew" if n % 100 == 99 else f"w{n}")
        for n in range(words)
    )


def sent_texts(
    calls: list[tuple[str, dict[str, str], bytes]],
    read: Callable[[dict], str],  # type: ignore[type-arg]
) -> list[str]:
    return [read(json.loads(body)) for _, _, body in calls]


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_a_reply_longer_than_telegram_takes_goes_as_several_messages(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # sendMessage takes 1-4096 characters: a longer reply was refused ("message is too
    # long") and failed for good.
    url, handler = provider
    handler.reply = {"ok": True, "result": {"message_id": "{n}"}}
    inbox = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
    )
    telegram_post(client, inbox, TG_UPDATE)
    conv = only_conversation(client, world, inbox)
    text = long_text(1500)
    assert utf16(text) > 4096
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": text},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    pieces = sent_texts(handler.calls, lambda body: str(body["text"]))
    assert len(pieces) == 2 and all(utf16(p) <= 4096 for p in pieces)
    assert " ".join(pieces).split() == text.split()  # every word, once, cut between words
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "sent" and out["external_id"] == "1111111:2"


def test_an_error_page_in_front_of_telegram_is_tried_again_and_said(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # The answer was read as JSON before its status: a proxy's HTML page failed the job
    # with a JSON error, the reply queued without a word, and dead with that error.
    url, handler = provider
    handler.status, handler.raw = 502, b"<html><center><h1>502 Bad Gateway</h1></center></html>"
    inbox = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
    )
    telegram_post(client, inbox, TG_UPDATE)
    conv = only_conversation(client, world, inbox)
    path = f"/api/v1/conversations/{conv['id']}/messages"
    client.post(path, json={"text": "Hello"}, headers=auth(world.bob))
    job, msg = deliver_now(database, settings)
    assert msg.status == "queued" and job.state == JobState.queued
    assert msg.error == "retrying (attempt 1 of 8 failed): Telegram answered 502"
    handler.status, handler.raw = 400, b"<html>Bad Request</html>"
    job, msg = deliver_now(database, settings)
    assert msg.status == "failed" and msg.error == "Telegram refused: <html>Bad Request</html>"


def telegram_inbox(client: TestClient, world: World) -> str:
    return make_inbox(client, world, "telegram", {"bot_token": "123:ABC", "secret_token": "s3cret"})


def telegram_post(client: TestClient, inbox: str, update: dict) -> None:  # type: ignore[type-arg]
    r = client.post(
        f"/webhooks/telegram/{inbox}",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
    )
    assert r.status_code == 200, r.text


def test_a_channels_own_posts_are_not_customer_messages(
    client: TestClient, world: World, database: Database
) -> None:
    # A bot that is an admin of a channel gets its posts. They were stored as a customer
    # (the channel) writing in, whose answer went to the channel: in public, to every reader.
    inbox = telegram_inbox(client, world)
    channel = {"id": -1001234567890, "type": "channel", "title": "Acme news"}
    post = {"message_id": 9, "date": 1441645532, "sender_chat": channel, "chat": channel}
    before = messages(database)
    telegram_post(client, inbox, {"update_id": 1, "channel_post": {**post, "text": "Sale!"}})
    edit = {**post, "text": "Sale! Today only", "edit_date": 1441645600}
    telegram_post(client, inbox, {"update_id": 2, "edited_channel_post": edit})
    assert messages(database) == before


def test_service_messages_are_not_customer_messages_and_other_contents_are_named(
    client: TestClient, world: World, database: Database
) -> None:
    # Someone joining a group, a pinned message, a new title: Telegram sends them as
    # messages without text. Each was stored as an empty customer message, waiting for an
    # answer.
    inbox = telegram_inbox(client, world)
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    group = {"id": -100222, "type": "supergroup", "title": "Fans"}
    service = [
        {"new_chat_members": [ann]},
        {"left_chat_member": ann},
        {"new_chat_title": "Fans of Acme"},
        {"pinned_message": {"message_id": 1, "date": 1441645532, "chat": group, "text": "hi"}},
    ]
    before = messages(database)
    for n, content in enumerate(service):
        message = {"message_id": n, "date": 1441645532, "from": ann, "chat": group, **content}
        telegram_post(client, inbox, {"update_id": n, "message": message})
    assert messages(database) == before
    private = {"id": 111, "type": "private", "first_name": "Ann"}
    poll = {"id": "5", "question": "Which colour?", "options": [], "total_voter_count": 0}
    note = {"file_id": "round", "file_unique_id": "r", "length": 240, "duration": 3}
    for n, content in enumerate([{"poll": poll}, {"video_note": note}], start=10):
        message = {"message_id": n, "date": 1441645532, "from": ann, "chat": private, **content}
        telegram_post(client, inbox, {"update_id": n, "message": message})
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]] == ["[poll] Which colour?", "[video_note]"]
    assert conv["messages"][1]["meta"]["telegram"]["file"] == {"file_id": "round"}


def test_a_document_or_sticker_reads_as_its_name_or_emoji(client: TestClient, world: World) -> None:
    # They read "[document]" and "[sticker]": which file, which emoji, the agent could not
    # tell without opening it.
    inbox = telegram_inbox(client, world)
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    private = {"id": 111, "type": "private", "first_name": "Ann"}
    document = {"file_id": "d", "file_unique_id": "d", "file_name": "invoice.pdf"}
    sticker = {"file_id": "s", "file_unique_id": "s", "type": "regular", "emoji": "\U0001f44d"}
    for n, content in enumerate([{"document": document}, {"sticker": sticker}]):
        message = {"message_id": n, "date": 1441645532, "from": ann, "chat": private, **content}
        telegram_post(client, inbox, {"update_id": n, "message": message})
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts == ["[document] invoice.pdf", "[sticker] \U0001f44d"]


def test_a_customer_who_wrote_in_a_group_is_answered_in_that_group(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # The reply went to the user's private chat (chat_id = their user id): it never showed
    # in the group, and Telegram refused it ("Forbidden: bot can't initiate conversation
    # with a user") unless they had started the bot.
    url, handler = provider
    handler.reply = {"ok": True, "result": {"message_id": "{n}"}}
    inbox = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
    )
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    group = {"id": -1001234567890, "type": "supergroup", "title": "Acme fans", "is_forum": True}
    private = {"id": 111, "type": "private", "first_name": "Ann"}

    def said(chat: dict, n: int, text: str, **more: object) -> None:  # type: ignore[type-arg]
        message = {"message_id": n, "date": 1441645532, "from": ann, "chat": chat, "text": text}
        telegram_post(client, inbox, {"update_id": n, "message": message | more})

    def reply(text: str) -> dict:  # type: ignore[type-arg]
        handler.calls.clear()
        conv = only_conversation(client, world, inbox)
        client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"text": text},
            headers=auth(world.bob),
        )
        Worker(database, settings).run_until_idle()
        [(path, _, body)] = handler.calls
        assert path == "/bot123:ABC/sendMessage"
        return json.loads(body)  # type: ignore[no-any-return]

    # In a forum's topic: answered in the topic, as a reply to what Ann wrote.
    said(group, 77, "Is the shop open today?", message_thread_id=5, is_topic_message=True)
    assert reply("Until 6 pm.") == {
        "chat_id": "-1001234567890",
        "message_thread_id": 5,
        "reply_parameters": {"message_id": 77, "allow_sending_without_reply": True},
        "text": "Until 6 pm.",
    }
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][0]["meta"]["telegram"]["chat_title"] == "Acme fans"
    out = conv["messages"][-1]
    assert out["status"] == "sent" and out["external_id"] == "-1001234567890:1"
    # Her next word comes privately: the answer goes where she last wrote.
    said(private, 3, "And tomorrow?")
    assert reply("From 9 am.") == {"chat_id": "111", "text": "From 9 am."}
    said(group, 80, "Thanks!")
    assert reply("You are welcome.")["chat_id"] == "-1001234567890"


@pytest.mark.parametrize("date", [-5, 10**20, 253402300800, "soon", 1.5])
def test_a_telegram_message_with_a_date_that_is_none_is_stored_at_its_receipt(
    client: TestClient, world: World, date: object
) -> None:
    # A date out of range (OverflowError, ValueError) was a 500, which Telegram sends again
    # and again; a text raised as well, and the whole call was set aside unread.
    inbox = telegram_inbox(client, world)
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    private = {"id": 111, "type": "private", "first_name": "Ann"}
    message = {"message_id": 1, "date": date, "from": ann, "chat": private, "text": "hi"}
    telegram_post(client, inbox, {"update_id": 1, "message": message})
    blocked = {
        "chat": private,
        "from": ann,
        "date": date,
        "old_chat_member": {"user": ann, "status": "member"},
        "new_chat_member": {"user": ann, "status": "kicked"},
    }
    telegram_post(client, inbox, {"update_id": 2, "my_chat_member": blocked})
    got = only_conversation(client, world, inbox)["messages"]
    assert [m["text"] for m in got] == ["hi", "[blocked the bot: replies cannot reach them]"]
    assert all("sent_at" not in m["meta"] for m in got)


def test_a_customer_who_blocks_the_bot_is_shown_in_the_conversation(
    client: TestClient, world: World
) -> None:
    # my_chat_member was dropped: agents kept replying to someone their replies could not
    # reach, and learnt it only from each failed send.
    inbox = telegram_inbox(client, world)
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    private = {"id": 111, "type": "private", "first_name": "Ann"}
    hello = {"message_id": 1, "date": 1441645532, "from": ann, "chat": private, "text": "hi"}
    telegram_post(client, inbox, {"update_id": 1, "message": hello})
    bot = {"id": 42, "is_bot": True, "first_name": "Acme"}

    def member(status: str, was: str, date: int) -> dict:  # type: ignore[type-arg]
        return {
            "chat": private,
            "from": ann,
            "date": date,
            "old_chat_member": {"user": bot, "status": was},
            "new_chat_member": {"user": bot, "status": status},
        }

    for _ in range(2):  # a redelivery is stored once
        telegram_post(
            client,
            inbox,
            {"update_id": 2, "my_chat_member": member("kicked", "member", 1441645600)},
        )
    telegram_post(
        client, inbox, {"update_id": 3, "my_chat_member": member("member", "kicked", 1441645700)}
    )
    group = {"id": -100222, "type": "supergroup", "title": "Fans"}
    in_group = {**member("left", "member", 1441645800), "chat": group}
    telegram_post(client, inbox, {"update_id": 4, "my_chat_member": in_group})
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]] == [
        "hi",
        "[blocked the bot: replies cannot reach them]",
        "[unblocked the bot]",
        "[removed the bot from the group “Fans”: replies there cannot be sent]",
    ]


def test_a_bot_removed_from_a_group_is_recorded_and_replies_there_refused_until_added_back(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # A group's my_chat_member was dropped: after an admin removed the bot, agents' replies
    # to the group were queued and each failed at Telegram ("bot was kicked from the
    # group chat"), and nothing in the conversation said why.
    url, handler = provider
    handler.reply = {"ok": True, "result": {"message_id": 7}}
    inbox = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
    )
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    group = {"id": -1001234567890, "type": "supergroup", "title": "Acme fans"}
    asked = {"message_id": 5, "date": 1441645532, "from": ann, "chat": group, "text": "Open?"}
    telegram_post(client, inbox, {"update_id": 1, "message": asked})
    bot = {"id": 42, "is_bot": True, "first_name": "Acme"}

    def member(status: str, was: str, date: int) -> dict:  # type: ignore[type-arg]
        return {
            "chat": group,
            "from": ann,
            "date": date,
            "old_chat_member": {"user": bot, "status": was},
            "new_chat_member": {"user": bot, "status": status},
        }

    for _ in range(2):  # a redelivery is stored once
        removed = member("kicked", "member", 1441645600)
        telegram_post(client, inbox, {"update_id": 2, "my_chat_member": removed})
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]] == [
        "Open?",
        "[removed the bot from the group “Acme fans”: replies there cannot be sent]",
    ]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Until 6 pm."},
        headers=auth(world.bob),
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/problems/unreachable")
    assert "removed from the Telegram group “Acme fans”" in r.json()["detail"]
    assert deliver_jobs(database) == []
    # Added back: replies go to the group again.
    telegram_post(
        client, inbox, {"update_id": 3, "my_chat_member": member("member", "left", 1441645700)}
    )
    assert only_conversation(client, world, inbox)["messages"][-1]["text"] == (
        "[added the bot to the group “Acme fans”]"
    )
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Until 6 pm."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    [(_, _, body)] = handler.calls
    assert json.loads(body)["chat_id"] == "-1001234567890"
    # A group the bot left that the customer never wrote in refuses nothing here.
    other = {**member("left", "member", 1441645800), "chat": {**group, "id": -100999}}
    telegram_post(client, inbox, {"update_id": 4, "my_chat_member": other})
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "See you."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text


def test_a_customer_who_blocked_the_bot_gets_no_reply_until_they_unblock_it(
    client: TestClient, world: World, database: Database
) -> None:
    # The block was a line in the conversation, but a reply was queued all the same, and
    # failed at Telegram ("bot was blocked by the user").
    inbox = telegram_inbox(client, world)
    ann = {"id": 111, "is_bot": False, "first_name": "Ann"}
    private = {"id": 111, "type": "private", "first_name": "Ann"}
    hello = {"message_id": 1, "date": 1441645532, "from": ann, "chat": private, "text": "hi"}
    telegram_post(client, inbox, {"update_id": 1, "message": hello})
    bot = {"id": 42, "is_bot": True, "first_name": "Acme"}

    def member(status: str, was: str, date: int) -> dict:  # type: ignore[type-arg]
        return {
            "chat": private,
            "from": ann,
            "date": date,
            "old_chat_member": {"user": bot, "status": was},
            "new_chat_member": {"user": bot, "status": status},
        }

    telegram_post(
        client, inbox, {"update_id": 2, "my_chat_member": member("kicked", "member", 1441645600)}
    )
    conv = only_conversation(client, world, inbox)

    def reply() -> int:
        return client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"text": "Hello?"},
            headers=auth(world.bob),
        ).status_code

    assert reply() == 422 and deliver_jobs(database) == []
    telegram_post(
        client, inbox, {"update_id": 3, "my_chat_member": member("member", "kicked", 1441645700)}
    )
    assert reply() == 201


# --- Twilio SMS ----------------------------------------------------------------------------


def twilio_post(
    client: TestClient, settings: Settings, path: str, params: dict[str, str], token: str
):  # type: ignore[no-untyped-def]
    sig = signature(token, settings.public_url.rstrip("/") + path, params)
    return client.post(
        path,
        content=urlencode(params),
        headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
    )


def twilio_inbox(
    client: TestClient, world: World, provider: tuple[str, type[Provider]]
) -> tuple[str, str, type[Provider]]:
    """A Twilio SMS inbox sending through the stand-in (each message gets SM_OUT_n): its
    id, its webhook path and the stand-in."""
    url, handler = provider
    handler.reply = {"sid": "SM_OUT_{n}", "status": "queued"}
    inbox = make_inbox(
        client,
        world,
        "twilio_sms",
        {
            "account_sid": "AC00000000000000000000000000000000",
            "auth_token": "twilio-token",
            "phone_number": "+14155550100",
            "api_base_url": url,
        },
    )
    return inbox, f"/webhooks/twilio_sms/{inbox}", handler


SMS = {
    "ToCountry": "US",
    "ToState": "CA",
    "SmsMessageSid": "SM5ef8732a3c49700934481addd5ce1659",
    "NumMedia": "0",
    "ToCity": "SAN FRANCISCO",
    "FromZip": "94105",
    "SmsSid": "SM5ef8732a3c49700934481addd5ce1659",
    "FromState": "CA",
    "SmsStatus": "received",
    "FromCity": "SAN FRANCISCO",
    "Body": "Where is my order?",
    "FromCountry": "US",
    "To": "+14155550100",
    "ToZip": "94108",
    "NumSegments": "1",
    "MessageSid": "SM5ef8732a3c49700934481addd5ce1659",
    "AccountSid": "AC00000000000000000000000000000000",
    "From": "+14155550123",
    "ApiVersion": "2010-04-01",
}


def test_twilio_sms_is_signed_over_url_and_parameters_and_statuses_follow(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    inbox, path, handler = twilio_inbox(client, world, provider)
    forged = twilio_post(client, settings, path, SMS, "not-the-token")
    assert forged.status_code == 401
    ok = twilio_post(client, settings, path, SMS, "twilio-token")
    assert ok.status_code == 200 and "<Response>" in ok.text
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][0]["text"] == "Where is my order?"
    long_text = "Ünïcödé " * 300  # non-GSM and longer than one Twilio message
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": long_text},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    assert len(handler.calls) == 2
    first = parse_qs(handler.calls[0][2].decode())
    assert (
        handler.calls[0][0]
        == "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json"
    )
    assert first["To"] == ["+14155550123"] and first["From"] == ["+14155550100"]
    assert first["StatusCallback"][0].endswith(path)
    assert "Basic" in handler.calls[0][1]["Authorization"]
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "sent" and out["meta"]["delivery"]["encoding"] == "UCS-2"
    status = {
        "MessageSid": "SM_OUT_1",
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "AccountSid": "AC00000000000000000000000000000000",
    }
    # The long text went as two messages: each reports, and the reply stands where the
    # least advanced one does.
    delivered = dict(status, MessageStatus="delivered", ErrorCode="")
    assert twilio_post(client, settings, path, delivered, "twilio-token").status_code == 200
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "sent"  # the second part has not arrived yet
    # A part that fails fails the reply, named: the customer missed part of it.
    failed = dict(status, MessageSid="SM_OUT_2")
    assert twilio_post(client, settings, path, failed, "twilio-token").status_code == 200
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "failed"
    # Named in Twilio's words, with its page: "Twilio error 30003" alone told the agent
    # nothing.
    assert out["error"] == (
        "part 2 of 2: Twilio error 30003: Unreachable destination handset "
        "(https://www.twilio.com/docs/api/errors/30003)"
    )


def test_an_sms_reply_of_emoji_is_cut_where_twilio_counts_its_limit(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Twilio takes 1600 characters in one message, an emoji counting twice: 1000 of them
    # went as one message Twilio refuses (21617), and the reply failed for good.
    inbox, path, handler = twilio_inbox(client, world, provider)
    twilio_post(client, settings, path, SMS, "twilio-token")
    conv = only_conversation(client, world, inbox)
    text = "Merci 👍👍👍 " * 150
    assert len(text) <= 1600 < utf16(text)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": text},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    bodies = [parse_qs(body.decode())["Body"][0] for _, _, body in handler.calls]
    assert len(bodies) == 2 and all(utf16(b) <= 1600 for b in bodies)
    assert " ".join(bodies).split() == text.split()
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "sent"


def test_an_sms_stop_is_recorded_without_waiting_for_an_answer(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Twilio blocks the number after STOP and answers it itself. The STOP reopened the
    # resolved conversation and left it waiting for a reply that could no longer be sent.
    inbox, path, _ = twilio_inbox(client, world, provider)
    assert twilio_post(client, settings, path, SMS, "twilio-token").status_code == 200
    conv = only_conversation(client, world, inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    for n, (body, extra) in enumerate([("Stop ", {}), ("quit", {"OptOutType": "STOP"})]):
        sid = f"SM_STOP_{n}"
        stop = dict(SMS, MessageSid=sid, SmsSid=sid, SmsMessageSid=sid, Body=body, **extra)
        assert twilio_post(client, settings, path, stop, "twilio-token").status_code == 200
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]][-2:] == ["Stop ", "quit"]
    assert conv["messages"][-1]["meta"]["sms"]["opt_out"] is True
    assert conv["status"] == "resolved" and waiting_since(database, conv["id"]) is None
    # "Yes" may answer an agent's question: without Twilio saying it was an opt-in, it is
    # a message like any other (nor does a keyword inside a sentence count).
    for sid, body in (("SM_Y", "Yes"), ("SM_S", "stop calling me please")):
        said = dict(SMS, MessageSid=sid, SmsSid=sid, SmsMessageSid=sid, Body=body)
        assert twilio_post(client, settings, path, said, "twilio-token").status_code == 200
    conv = only_conversation(client, world, inbox)
    assert not {"opt_in", "opt_out"} & set(conv["messages"][-1]["meta"]["sms"])
    assert conv["status"] == "open" and waiting_since(database, conv["id"]) is not None


@pytest.mark.parametrize(
    "body", ["CANCEL", " end ", "Quit", "optout", "REVOKE", "Stopall", "unsubscribe"]
)
def test_each_of_twilios_opt_out_keywords_withdraws_sms_consent_without_optouttype(
    client: TestClient,
    world: World,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    body: str,
) -> None:
    # Twilio blocks the number on each of its default opt-out keywords (the whole message,
    # in any case), whether or not it names one in OptOutType. Rapport knew only STOP,
    # STOPALL and UNSUBSCRIBE: after "Cancel" agents' replies were queued, and each failed
    # at Twilio (21610), while the conversation waited on an answer that could not go.
    inbox, path, _ = twilio_inbox(client, world, provider)
    assert twilio_post(client, settings, path, SMS, "twilio-token").status_code == 200
    text_in(client, settings, path, "SM_OUT", body)
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][-1]["meta"]["sms"]["opt_out"] is True
    assert sms_consents(client, world, conv["customer_id"])["all"] == (
        False,
        f"SMS keyword {body.strip().upper()}",
    )
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Sorry to see you go"},
        headers=auth(world.bob),
    )
    assert r.status_code == 409, r.text


def sms_consents(client: TestClient, world: World, customer: str) -> dict[str, tuple[bool, str]]:
    """The customer's SMS consent in force: purpose -> (granted, source)."""
    r = client.get(f"/api/v1/customers/{customer}/consents", headers=auth(world.bob))
    return {
        c["purpose"]: (c["granted"], c["source"])
        for c in r.json()["current"]
        if c["channel"] == "sms"
    }


def test_an_sms_stop_withdraws_the_customers_sms_consent_and_start_gives_it_back(
    client: TestClient,
    world: World,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Twilio refuses every message from the number after STOP, but the profile still
    # showed the customer's earlier consent: whatever checked it would have sent anyway.
    inbox, path, _ = twilio_inbox(client, world, provider)
    assert twilio_post(client, settings, path, SMS, "twilio-token").status_code == 200
    customer = only_conversation(client, world, inbox)["customer_id"]
    given = [("sms", "marketing", True), ("sms", "surveys", False), ("email", "marketing", True)]
    for channel, purpose, granted in given:
        r = client.post(
            f"/api/v1/customers/{customer}/consents",
            json={"channel": channel, "purpose": purpose, "granted": granted, "source": "form"},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text

    def text(sid: str, body: str, **extra: str) -> None:
        form = dict(SMS, MessageSid=sid, SmsSid=sid, SmsMessageSid=sid, Body=body, **extra)
        assert twilio_post(client, settings, path, form, "twilio-token").status_code == 200

    text("SM_STOP", "Stop ", OptOutType="STOP")
    text("SM_STOP", "Stop ", OptOutType="STOP")  # Twilio's retry records nothing more
    stopped = {
        "all": (False, "SMS keyword STOP"),
        "marketing": (False, "SMS keyword STOP"),
        "surveys": (False, "form"),
    }
    assert sms_consents(client, world, customer) == stopped
    history = client.get(f"/api/v1/customers/{customer}/consents", headers=auth(world.bob))
    assert len(history.json()["history"]) == len(given) + 2
    email = client.get(f"/api/v1/customers/{customer}/profile", headers=auth(world.bob))
    assert [c for c in email.json()["consents"] if c["channel"] == "email"][0]["granted"]
    # START gives back what the STOP took, not what the customer refused elsewhere.
    text("SM_START", "start", OptOutType="START")
    assert sms_consents(client, world, customer) == {
        "all": (True, "SMS keyword START"),
        "marketing": (True, "SMS keyword START"),
        "surveys": (False, "form"),
    }
    # UNSUBSCRIBE is an opt-out without Twilio naming it (OptOutType) too.
    text("SM_UNSUB", "UNSUBSCRIBE")
    assert sms_consents(client, world, customer)["all"] == (False, "SMS keyword UNSUBSCRIBE")


def text_in(client: TestClient, settings: Settings, path: str, sid: str, body: str) -> None:
    """The customer texts ``body`` (Twilio's message ``sid``) to the inbox at ``path``."""
    form = dict(SMS, MessageSid=sid, SmsSid=sid, SmsMessageSid=sid, Body=body)
    assert twilio_post(client, settings, path, form, "twilio-token").status_code == 200


def deliver_jobs(database: Database) -> list[JobState]:
    with database.session(write=False) as db:
        return list(db.scalars(select(Job.state).where(Job.name == "deliver")))


def test_an_agent_cannot_reply_by_sms_after_stop_until_start(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # The reply after a STOP was queued and sent: Twilio refused it (error 21610), and the
    # agent learnt only afterwards, from a failed badge, that the customer had opted out.
    inbox, path, handler = twilio_inbox(client, world, provider)
    text_in(client, settings, path, "SM_HI", "Where is my order?")
    text_in(client, settings, path, "SM_STOP", "STOP")
    conv = only_conversation(client, world, inbox)
    stored = messages(database)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "It ships tomorrow"},
        headers=auth(world.bob),
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/problems/no-consent")
    assert problem["detail"].startswith("Not sent: the customer opted out of SMS on ")
    assert "(SMS keyword STOP)" in problem["detail"]
    assert "once they send START" in problem["detail"]
    assert problem["channel"] == "sms" and problem["purpose"] == "all"
    assert problem["source"] == "SMS keyword STOP"
    assert messages(database) == stored and deliver_jobs(database) == []
    Worker(database, settings).run_until_idle()
    assert handler.calls == []
    # START: Twilio sends to the number again, and so does Rapport.
    text_in(client, settings, path, "SM_START", "START")
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "It ships tomorrow"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    assert len(handler.calls) == 1
    assert parse_qs(handler.calls[0][2].decode())["Body"] == ["It ships tomorrow"]
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "sent"


def test_a_send_twilio_refuses_as_unsubscribed_records_the_opt_out(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # The number had replied STOP before the inbox was connected (or through another tool
    # on it): Twilio refused each reply with error 21610, and Rapport went on queueing them,
    # each failing at Twilio, the panel saying nothing of the opt-out.
    inbox, path, handler = twilio_inbox(client, world, provider)
    text_in(client, settings, path, "SM_HI", "Where is my order?")
    conv = only_conversation(client, world, inbox)
    handler.status = 400
    handler.reply = {
        "code": 21610,
        "message": "Attempt to send to unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }
    r = answer(client, world, conv["id"], text="It ships tomorrow")
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    sent = only_conversation(client, world, inbox)["messages"][-1]
    assert sent["status"] == "failed" and "unsubscribed recipient" in sent["error"]
    assert deliver_jobs(database) == [JobState.dead]  # never tried again
    # Recorded as a keyword the customer sent to Twilio.
    consents = client.get(
        f"/api/v1/customers/{conv['customer_id']}/consents", headers=auth(world.bob)
    ).json()
    withdrawn = [c for c in consents["current"] if not c["granted"]]
    assert [(c["channel"], c["purpose"]) for c in withdrawn] == [("sms", "all")]
    source = withdrawn[0]["source"]
    assert (
        source == "SMS keyword at Twilio (error 21610: Attempt to send to unsubscribed recipient)"
    )
    # The next reply is refused before it is queued, saying why.
    calls = len(handler.calls)
    r = answer(client, world, conv["id"], text="Are you there?")
    assert r.status_code == 409 and r.json()["source"] == source
    Worker(database, settings).run_until_idle()
    assert len(handler.calls) == calls
    # START undoes it, as after a STOP Rapport saw.
    handler.status, handler.reply = 200, {"sid": "SM_OUT_{n}", "status": "queued"}
    text_in(client, settings, path, "SM_START", "START")
    r = answer(client, world, conv["id"], text="Welcome back")
    assert r.status_code == 201, r.text  # queued (sent once the inbox's sending rate allows)
    assert deliver_jobs(database) == [JobState.dead, JobState.queued]


def test_a_reply_queued_before_a_stop_is_not_sent_and_says_why(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # A reply still queued when the STOP came went to Twilio all the same.
    inbox, path, handler = twilio_inbox(client, world, provider)
    text_in(client, settings, path, "SM_HI", "Where is my order?")
    conv = only_conversation(client, world, inbox)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "It ships tomorrow"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    text_in(client, settings, path, "SM_STOP", "Stop")
    with published_events() as published:
        Worker(database, settings).run_until_idle()
    assert handler.calls == []
    reply = next(
        m for m in only_conversation(client, world, inbox)["messages"] if m["id"] == r.json()["id"]
    )
    assert reply["status"] == "failed"
    assert reply["error"].startswith("not sent: the customer opted out of SMS on ")
    assert reply["error"].endswith("(SMS keyword STOP)")
    # The agent's open thread hears why at once, not only after a reload.
    [event] = [e for e in published if e["type"] == "message.updated"]
    assert event["payload"]["status"] == "failed" and event["payload"]["error"] == reply["error"]
    assert deliver_jobs(database) == [JobState.done]  # decided, not an error to retry


def test_an_sms_stop_leaves_email_to_the_same_customer_alone(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    inbox, path, handler = twilio_inbox(client, world, provider)
    text_in(client, settings, path, "SM_HI", "Where is my order?")
    text_in(client, settings, path, "SM_STOP", "STOP")
    conv = only_conversation(client, world, inbox)
    with database.session() as db:
        db.execute(
            update(Customer)
            .where(Customer.id == conv["customer_id"])
            .values(email="ann@example.com")
        )
    mail = make_inbox(
        client,
        world,
        "email",
        {
            "address": "support@acme.test",
            "smtp_host": "127.0.0.1",
            "smtp_port": outbox[1],
            "smtp_security": "none",
        },
    )
    url = f"/api/v1/conversations/{conv['id']}/messages"
    sms = client.post(url, json={"text": "By SMS"}, headers=auth(world.bob))
    assert sms.status_code == 409, sms.text
    email = client.post(url, json={"text": "By email", "inbox_id": mail}, headers=auth(world.bob))
    assert email.status_code == 201, email.text
    Worker(database, settings).run_until_idle()
    assert handler.calls == [] and len(outbox[0].messages) == 1
    assert b"By email" in outbox[0].messages[0]
    # Their own no to email, told on the phone, is enforced the same way.
    r = client.post(
        f"/api/v1/customers/{conv['customer_id']}/consents",
        json={"channel": "email", "purpose": "all", "granted": False, "source": "phone call"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    email = client.post(url, json={"text": "Again", "inbox_id": mail}, headers=auth(world.bob))
    assert email.status_code == 409
    assert email.json()["detail"].startswith("Not sent: the customer opted out of email on ")
    assert email.json()["detail"].endswith(
        "(phone call). Once they agree to email again, record it under Consent in the customer "
        "panel (purpose all); until then, reply through another channel."
    )


def test_a_twilio_call_with_a_parameter_given_twice_is_verified_as_twilio_signs_it(
    client: TestClient,
    world: World,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Twilio signs every value of a repeated parameter, sorted; keeping only the last one
    # refused the call with 401, which Twilio does not retry: the message was lost.
    inbox, path, _ = twilio_inbox(client, world, provider)
    pairs = [*SMS.items(), ("Foo", "b"), ("Foo", "a")]
    sig = signature("twilio-token", settings.public_url.rstrip("/") + path, pairs)
    r = client.post(
        path,
        content=urlencode(pairs),
        headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert only_conversation(client, world, inbox)["messages"][0]["text"] == "Where is my order?"


@pytest.mark.parametrize("in_path", [True, False], ids=["root-in-path", "root-not-in-path"])
def test_a_twilio_call_under_a_root_path_is_verified_over_the_url_twilio_was_given(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    in_path: bool,
) -> None:
    # Behind a proxy's prefix (uvicorn --root-path /rapport), the ASGI path holds the root
    # path, which the public URL holds too: the URL checked was .../rapport/rapport/webhooks/...
    # and every call was refused with 401, which Twilio does not retry.
    inbox, path, _ = twilio_inbox(client, world, provider)
    prefixed = settings.model_copy(update={"public_url": "http://testserver/rapport/"})
    app = create_app(prefixed, database=database)
    with TestClient(app, root_path="/rapport") as behind:
        sig = signature("twilio-token", "http://testserver/rapport" + path, SMS)
        r = behind.post(
            "/rapport" + path if in_path else path,
            content=urlencode(SMS),
            headers={
                "X-Twilio-Signature": sig,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
    assert r.status_code == 200, r.text
    assert only_conversation(client, world, inbox)["messages"][0]["text"] == "Where is my order?"


@pytest.mark.parametrize(
    "public_url,signed_url",
    [
        ("https://rapport.example.com:8443", "https://rapport.example.com"),
        ("https://rapport.example.com", "https://rapport.example.com:443"),
    ],
    ids=["port-dropped", "default-port-given"],
)
def test_a_twilio_call_signed_with_or_without_the_port_is_verified(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    public_url: str,
    signed_url: str,
) -> None:
    # Twilio signs some requests with the URL's port and some without (its own libraries
    # accept both): one signed the other way was refused with 401, which Twilio does not
    # retry, and the customer's message was lost.
    inbox, path, _ = twilio_inbox(client, world, provider)
    behind = create_app(settings.model_copy(update={"public_url": public_url}), database=database)
    query = "?source=console"
    with TestClient(behind) as other:
        sig = signature("twilio-token", signed_url + path + query, SMS)
        r = other.post(
            path + query,
            content=urlencode(SMS),
            headers={
                "X-Twilio-Signature": sig,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert r.status_code == 200, r.text
        forged = signature("twilio-token", "https://elsewhere.example.com" + path + query, SMS)
        r = other.post(
            path + query,
            content=urlencode(SMS),
            headers={
                "X-Twilio-Signature": forged,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert r.status_code == 401
    assert only_conversation(client, world, inbox)["messages"][0]["text"] == "Where is my order?"


def test_a_report_that_comes_before_its_message_has_its_id_still_counts(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    from rapport.channels.deliver import REPORT_RETRIES
    from rapport.jobs.models import Job, JobState

    def reports(state: JobState) -> int:
        with database.session(write=False) as db:
            query = select(func.count()).where(Job.name == "delivery_report", Job.state == state)
            return int(db.scalar(query) or 0)

    def run_reports_now() -> None:  # the retries' wait, skipped
        with database.session() as db:
            waiting = select(Job).where(Job.state == JobState.queued, Job.name == "delivery_report")
            for job in db.scalars(waiting):
                job.run_at = job.run_at.replace(year=2000)
        Worker(database, settings).run_until_idle()

    inbox, path, _ = twilio_inbox(client, world, provider)
    assert twilio_post(client, settings, path, SMS, "twilio-token").status_code == 200
    conv = only_conversation(client, world, inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "On its way"},
        headers=auth(world.bob),
    )
    # Twilio's callback is faster than its answer to our send reached the database.
    delivered = {
        "MessageSid": "SM_OUT_1",
        "MessageStatus": "delivered",
        "AccountSid": "AC00000000000000000000000000000000",
    }
    assert twilio_post(client, settings, path, delivered, "twilio-token").status_code == 200
    assert reports(JobState.queued) == 1
    Worker(database, settings).run_until_idle()  # the send; the report waits its turn
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "sent"
    run_reports_now()
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "delivered"
    assert reports(JobState.queued) == 0

    # A report on a message Rapport never sent (from the number's own phone app, say):
    # while nothing is being sent it cannot be a send waiting for its id, and is dropped.
    other = dict(delivered, MessageSid="SM_SENT_ELSEWHERE")
    assert twilio_post(client, settings, path, other, "twilio-token").status_code == 200
    # Dropped, and its job's row not kept: it quoted the provider's report.
    assert reports(JobState.queued) == 0 and reports(JobState.done) == 0
    # While a send is under way (one waits for its turn) it is tried again, then dropped.
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Anything else?"},
        headers=auth(world.bob),
    )
    with database.session() as db:
        db.execute(
            update(Job).where(Job.name == "deliver").values(run_at=utcnow().replace(year=2100))
        )
    assert twilio_post(client, settings, path, other, "twilio-token").status_code == 200
    for _ in REPORT_RETRIES:
        assert reports(JobState.queued) == 1
        run_reports_now()
    assert reports(JobState.queued) == 0 and reports(JobState.dead) == 0
    assert reports(JobState.done) == 0


def test_sms_segments_follow_the_encoding() -> None:
    assert segments("hello") == ("GSM-7", 1)
    assert segments("a" * 161) == ("GSM-7", 2)
    # An extension character ({, €, ...) takes two septets: 80 of them fill one segment.
    assert segments("€" * 80) == ("GSM-7", 1) and segments("{" * 81) == ("GSM-7", 2)
    assert segments("Total: 10 €. " + "a" * 147) == ("GSM-7", 2)
    assert segments("héllo 😀") == ("UCS-2", 1)
    assert segments("ж" * 71) == ("UCS-2", 2)


# --- Twilio voice --------------------------------------------------------------------------


def test_calls_become_entries_and_a_missed_call_asks_for_a_call_back(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    inbox = make_inbox(
        client,
        world,
        "twilio_voice",
        {"account_sid": "AC1", "auth_token": "voice-token", "phone_number": "+14155550100"},
    )
    path = f"/webhooks/twilio_voice/{inbox}"
    base = {
        "CallSid": "CA42",
        "From": "+14155550177",
        "To": "+14155550100",
        "Direction": "inbound",
        "AccountSid": "AC1",
    }
    twilio_post(client, settings, path, {**base, "CallStatus": "no-answer"}, "voice-token")
    twilio_post(
        client,
        settings,
        path,
        {
            **base,
            "CallStatus": "completed",
            "RecordingUrl": "https://api.twilio.com/rec/RE1",
            "RecordingDuration": "31",
        },
        "voice-token",
    )
    twilio_post(
        client,
        settings,
        path,
        {**base, "CallStatus": "completed", "TranscriptionText": "Please call me about my invoice"},
        "voice-token",
    )
    conv = only_conversation(client, world, inbox)
    texts = [m["text"] for m in conv["messages"]]
    assert texts[0] == "[missed call] please call back"
    assert (
        texts[1].startswith("[voicemail]")
        and conv["messages"][1]["meta"]["call"]["duration_seconds"] == 31
    )
    assert texts[2] == "[call transcript] Please call me about my invoice"


def test_a_forwarded_call_is_recorded_as_answered_or_missed(
    client: TestClient, world: World, settings: Settings
) -> None:
    # The Dial's action reports the forwarding: an answered call came out as "[call] 0 s"
    # (its length is DialCallDuration), and a caller who hung up while the numbers rang as
    # a call of 0 s rather than a missed one.
    inbox = make_inbox(
        client,
        world,
        "twilio_voice",
        {"account_sid": "AC1", "auth_token": "voice-token", "forward_to": "+14155550111"},
    )
    path = f"/webhooks/twilio_voice/{inbox}"
    base = {"From": "+14155550177", "To": "+14155550100", "Direction": "inbound"}
    taken = {**base, "CallSid": "CA1", "CallStatus": "in-progress"}
    taken |= {"DialCallStatus": "completed", "DialCallDuration": "95"}
    gave_up = {**base, "CallSid": "CA2", "CallStatus": "completed", "DialCallStatus": "no-answer"}
    for form in (taken, gave_up):
        twilio_post(client, settings, path, form, "voice-token")
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts == ["[call] 95 s", "[missed call] please call back"]


def test_a_ringing_call_hears_what_the_inbox_says(
    client: TestClient, world: World, settings: Settings
) -> None:
    inbox = make_inbox(
        client,
        world,
        "twilio_voice",
        {
            "account_sid": "AC1",
            "auth_token": "voice-token",
            "phone_number": "+14155550100",
            "forward_to": "+14155550111, +14155550122",
            "ring_seconds": 15,
            "greeting": "Bonjour, laissez un message <s'il vous plaît>",
            "language": "fr-FR",
            "voicemail_seconds": 60,
        },
    )
    path = f"/webhooks/twilio_voice/{inbox}"
    ringing = {
        "CallSid": "CA77",
        "From": "+14155550177",
        "To": "+14155550100",
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    # The forwarded numbers ring first; Twilio comes back to the Dial's action, this same
    # webhook, once that call is over. Without an action it went on to the voicemail even
    # after someone had answered and hung up: the caller was asked to leave a message.
    webhook = settings.public_url.rstrip("/") + path
    twiml = twilio_post(client, settings, path, ringing, "voice-token").text
    assert (
        f'<Dial action="{webhook}" timeout="15" answerOnBridge="true">'
        "<Number>+14155550111</Number>" in twiml
    )
    assert "<Say" not in twiml and "<Record" not in twiml
    taken = {**ringing, "CallStatus": "in-progress", "DialCallStatus": "completed"}
    assert "<Response></Response>" in twilio_post(client, settings, path, taken, "voice-token").text
    missed = {**taken, "DialCallStatus": "no-answer"}
    twiml = twilio_post(client, settings, path, missed, "voice-token").text
    assert (
        '<Say language="fr-FR">Bonjour, laissez un message &lt;s\'il vous plaît&gt;</Say>' in twiml
    )
    # Twilio posts a transcript only to a transcribeCallback: this same webhook.
    assert f'<Record maxLength="60" transcribe="true" transcribeCallback="{webhook}"/>' in twiml
    assert "<Dial" not in twiml
    # The recording's own request (Record's default action) ends the call.
    left = {**ringing, "CallStatus": "completed", "RecordingUrl": "https://api.twilio.com/rec/RE1"}
    assert "<Response></Response>" in twilio_post(client, settings, path, left, "voice-token").text
    over = twilio_post(
        client, settings, path, {**ringing, "CallStatus": "completed"}, "voice-token"
    )
    assert "<Say" not in over.text and "<Response></Response>" in over.text


# --- Messenger and Instagram -------------------------------------------------------------


def meta_post(
    client: TestClient, channel: str, inbox: str, payload: dict, secret: str = "page-app-secret"
):  # type: ignore[no-untyped-def, type-arg]
    body = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post(
        f"/webhooks/{channel}/{inbox}",
        content=body,
        headers={"X-Hub-Signature-256": sig, "Content-Type": "application/json"},
    )


def meta_event(
    obj: str,
    item: dict,  # type: ignore[type-arg]
    *,
    page: str = "PAGE_ID",
    sender: str = "1254459154682919",
    time: int = 1458692752478,
) -> dict:  # type: ignore[type-arg]
    """Meta's documented webhook envelope (Messenger ``page``, ``instagram``) around one
    messaging item: a message, a delivery, a read."""
    return {
        "object": obj,
        "entry": [
            {
                "id": page,
                "time": time,
                "messaging": [{"sender": {"id": sender}, "recipient": {"id": page}, **item}],
            }
        ],
    }


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_meta_messages_are_signed_threaded_and_answered(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    obj: str,
) -> None:
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT1"}
    inbox = make_inbox(
        client,
        world,
        channel,
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
            "api_base_url": url,
        },
    )
    event = meta_event(
        obj,
        {
            "timestamp": 1458692752478,
            "message": {
                "mid": "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxq",
                "text": "hello, world!",
            },
        },
    )
    assert meta_post(client, channel, inbox, event, secret="forged").status_code == 401
    assert meta_post(client, channel, inbox, event).status_code == 200
    assert meta_post(client, channel, inbox, event).status_code == 200
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"]] == ["hello, world!"]
    hi = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Hi!"},
        headers=auth(world.bob),
    ).json()
    Worker(database, settings).run_until_idle()
    [(path, _, body)] = handler.calls
    assert path == "/me/messages?access_token=page-token"
    # Messenger echoes the metadata back: Rapport's own echo is known by it.
    mark = {"metadata": f"rapport:{hi['id']}"} if channel == "messenger" else {}
    assert json.loads(body) == {
        "recipient": {"id": "1254459154682919"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Hi!"} | mark,
    }
    delivery = meta_event(obj, {"delivery": {"mids": ["m_OUT1"], "watermark": 1}}, time=1)
    meta_post(client, channel, inbox, delivery)
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "delivered"
    # Messenger's read receipt names no message, only a moment: all sent up to it is read.
    now_ms = int(utcnow().timestamp() * 1000)
    meta_post(client, channel, inbox, meta_event(obj, {"read": {"watermark": now_ms}}))
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "read"
    # One app, one callback URL, several pages: another page's events are not this inbox's.
    other = meta_event(
        obj, {"timestamp": 1, "message": {"mid": "m_OTHER", "text": "hi"}}, page="OTHER_PAGE"
    )
    assert meta_post(client, channel, inbox, other).status_code == 200
    assert "hi" not in [m["text"] for m in only_conversation(client, world, inbox)["messages"]]


@pytest.mark.parametrize(
    "channel,obj,count,fits",
    [
        ("messenger", "page", 2, lambda p: utf16(p) <= 2000),
        ("instagram", "instagram", 3, lambda p: len(p.encode()) < 1000),
    ],
)
def test_a_reply_longer_than_the_send_api_takes_goes_as_several_messages(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    obj: str,
    count: int,
    fits: Callable[[str], bool],
) -> None:
    # Messenger takes 2000 characters, Instagram less than 1000: a longer reply was refused
    # and failed for good.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = make_inbox(
        client,
        world,
        channel,
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
            "api_base_url": url,
        },
    )
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello"}}
    meta_post(client, channel, inbox, meta_event(obj, hello))
    conv = only_conversation(client, world, inbox)
    text = long_text(500)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": text},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    pieces = sent_texts(handler.calls, lambda body: str(body["message"]["text"]))
    assert len(pieces) == count and all(fits(p) for p in pieces)
    assert " ".join(pieces).split() == text.split()
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "sent" and out["external_id"] == f"m_OUT{count}"
    # The message is read once its last part is.
    read = {"read": {"mid": f"m_OUT{count}"}}
    meta_post(client, channel, inbox, meta_event(obj, read, time=2))
    if channel == "instagram":
        assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "read"


def test_a_temporary_send_failure_meta_answers_with_a_400_is_tried_again(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Messenger's "Temporary send message failure. Please try again later" comes with a
    # 400: the reply was failed for good, though trying again sends it.
    url, handler = provider
    handler.status = 400
    handler.reply = {
        "error": {
            "message": "(#1200) Temporary send message failure. Please try again later",
            "type": "OAuthException",
            "code": 1200,
            "fbtrace_id": "BLBz/WZt8dN",
        }
    }
    inbox = make_inbox(
        client,
        world,
        "messenger",
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
            "api_base_url": url,
        },
    )
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello"}}
    meta_post(client, "messenger", inbox, meta_event("page", hello))
    conv = only_conversation(client, world, inbox)
    path = f"/api/v1/conversations/{conv['id']}/messages"
    client.post(path, json={"text": "Hi!"}, headers=auth(world.bob))
    _, msg = deliver_now(database, settings)
    assert msg.status == "queued" and "1200" in (msg.error or ""), msg.error
    handler.status, handler.reply = 200, {"recipient_id": "1", "message_id": "m_OUT1"}
    job, msg = deliver_now(database, settings)
    assert msg.status == "sent" and msg.external_id == "m_OUT1" and job.state == JobState.done


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_a_customer_with_two_ids_of_the_channel_is_answered_at_the_newest(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    obj: str,
) -> None:
    # The send took the first id of its kind among the customer's identities, loaded in no
    # set order: after a merge, an arbitrary one (here the older, as they were inserted).
    url, handler = provider
    handler.reply = {"message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, channel, url)
    convs = []
    for sender, mid in (("111", "m_OLD"), ("222", "m_NEW")):
        item = {"timestamp": 1, "message": {"mid": mid, "text": "hi"}}
        event = meta_event(obj, item, sender=sender)
        assert meta_post(client, channel, inbox, event).status_code == 200
        with database.session(write=False) as db:
            convs.append(
                db.scalars(
                    select(Conversation).join(Message).where(Message.external_id == mid)
                ).one()
            )
    older, newer = convs
    r = client.post(
        f"/api/v1/customers/{older.customer_id}/merge",
        json={"merged_id": newer.customer_id},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/conversations/{older.id}/messages", json={"text": "Hi!"}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    [(_, _, body)] = handler.calls
    assert json.loads(body)["recipient"] == {"id": "222"}


def page_inbox(
    client: TestClient, world: World, channel: str, name: str, page: str, url: str
) -> str:
    """A Messenger or Instagram inbox of its own page, with a token of its own."""
    settings = {"page_id": page, "page_access_token": f"token-{page}", "api_base_url": url}
    settings |= {"app_secret": "page-app-secret", "verify_token": "vt"}
    r = client.post(
        "/api/v1/inboxes",
        json={"name": name, "channel": channel, "settings": settings},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wrote(
    client: TestClient,
    database: Database,
    channel: str,
    inbox: str,
    *,
    page: str,
    sender: str,
    mid: str,
) -> Conversation:
    """The conversation a customer's message to the inbox's page (from their id there) is in."""
    obj = "page" if channel == "messenger" else "instagram"
    item = {"timestamp": 1, "message": {"mid": mid, "text": "hi"}}
    event = meta_event(obj, item, page=page, sender=sender)
    assert meta_post(client, channel, inbox, event).status_code == 200
    with database.session(write=False) as db:
        return db.scalars(
            select(Conversation).join(Message).where(Message.external_id == mid)
        ).one()


def sent_to(handler: type[Provider]) -> list[tuple[str, str]]:
    """(the page's token, the recipient's id) of each send the stand-in for Meta received."""
    return [
        (parse_qs(urlsplit(path).query)["access_token"][0], json.loads(body)["recipient"]["id"])
        for path, _, body in handler.calls
    ]


def answer(client: TestClient, world: World, conversation_id: str, **body: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": "Hi!", **body},
        headers=auth(world.bob),
    )


def identities_of(client: TestClient, world: World, customer_id: str) -> set[tuple[str, str]]:
    """(value, issuing inbox) of each of the customer's identities."""
    customer = client.get(f"/api/v1/customers/{customer_id}", headers=auth(world.bob)).json()
    return {(i["value"], i["inbox_id"]) for i in customer["identities"]}


@pytest.mark.parametrize("channel", ["messenger", "instagram"])
def test_a_customer_who_wrote_to_two_pages_is_answered_at_each_pages_id(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
) -> None:
    # Meta gives a person an id at each page and refuses a send through one page to
    # another's. Identities did not say which page issued them, and a send took the
    # customer's newest id whichever page it went through: here the shop's answer went to
    # the id of the help desk's page.
    url, handler = provider
    handler.reply = {"message_id": "m_OUT{n}"}
    shop = page_inbox(client, world, channel, "Shop", "PAGE_A", url)
    desk = page_inbox(client, world, channel, "Help desk", "PAGE_B", url)
    at_shop = wrote(client, database, channel, shop, page="PAGE_A", sender="111", mid="m_A")
    # The agent knows the person's id at the other page too (Meta's inbox shows it).
    r = client.post(
        f"/api/v1/customers/{at_shop.customer_id}/identities",
        json={"kind": channel, "value": "222", "verified": True},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    typed = r.json()
    at_desk = wrote(client, database, channel, desk, page="PAGE_B", sender="222", mid="m_B")
    assert at_desk.customer_id == at_shop.customer_id
    for conv in (at_shop, at_desk):
        assert answer(client, world, conv.id).status_code == 201
    Worker(database, settings).run_until_idle()
    assert sorted(sent_to(handler)) == [("token-PAGE_A", "111"), ("token-PAGE_B", "222")]
    # Typed in, the id's page was unknown; the customer's message through it told it.
    assert typed["inbox_id"] is None
    assert identities_of(client, world, at_shop.customer_id) == {("111", shop), ("222", desk)}


@pytest.mark.parametrize("channel", ["messenger", "instagram"])
def test_a_customer_merged_across_two_pages_is_answered_at_each_pages_id(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
) -> None:
    # Merged, the customer had an id of each page, and every reply went to the newest.
    url, handler = provider
    handler.reply = {"message_id": "m_OUT{n}"}
    shop = page_inbox(client, world, channel, "Shop", "PAGE_A", url)
    desk = page_inbox(client, world, channel, "Help desk", "PAGE_B", url)
    at_shop = wrote(client, database, channel, shop, page="PAGE_A", sender="111", mid="m_A")
    at_desk = wrote(client, database, channel, desk, page="PAGE_B", sender="222", mid="m_B")
    assert at_desk.customer_id != at_shop.customer_id
    r = client.post(
        f"/api/v1/customers/{at_shop.customer_id}/merge",
        json={"merged_id": at_desk.customer_id},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    for conv in (at_desk, at_shop):
        assert answer(client, world, conv.id).status_code == 201
    Worker(database, settings).run_until_idle()
    assert sorted(sent_to(handler)) == [("token-PAGE_A", "111"), ("token-PAGE_B", "222")]
    # Each id keeps its page.
    assert identities_of(client, world, at_shop.customer_id) == {("111", shop), ("222", desk)}


def test_a_reply_through_a_page_the_customer_never_wrote_to_is_refused(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Queued, it went to the id of another page, which Meta refuses: the agent learnt it
    # only from the failed message, and could have chosen the inbox the customer used.
    url, handler = provider
    handler.reply = {"message_id": "m_OUT{n}"}
    shop = page_inbox(client, world, "messenger", "Shop", "PAGE_A", url)
    desk = page_inbox(client, world, "messenger", "Help desk", "PAGE_B", url)
    conv = wrote(client, database, "messenger", shop, page="PAGE_A", sender="111", mid="m_A")
    before = messages(database)
    r = answer(client, world, conv.id, inbox_id=desk)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["type"].endswith("/not-this-page")
    assert "never wrote to the page of “Help desk”" in problem["detail"]
    assert "Reply through the inbox they wrote to: “Shop”." in problem["detail"]
    assert (problem["inbox_id"], problem["wrote_to"]) == (desk, [shop])
    # A customer who wrote to no page at all is told so.
    stranger = world.acme.opened.conversation.id
    r = answer(client, world, stranger, inbox_id=desk)
    assert r.status_code == 409 and r.json()["wrote_to"] == []
    assert "They wrote to no messenger page of yours" in r.json()["detail"]
    assert messages(database) == before
    # Through their own page it goes; and a reply queued for a page that is no longer
    # theirs when it is sent (their id's page learnt since) fails for good, saying why.
    assert answer(client, world, conv.id).status_code == 201
    with database.session() as db:
        db.execute(update(Identity).where(Identity.value == "111").values(inbox_id=desk))
    Worker(database, settings).run_until_idle()
    assert handler.calls == []
    with database.session(write=False) as db:
        failed = db.scalars(
            select(Message).where(Message.conversation_id == conv.id, Message.text == "Hi!")
        ).one()
        job = db.scalars(select(Job).where(Job.name == "deliver")).one()
    assert failed.status == "failed" and job.state == JobState.dead
    assert failed.error == (
        "the customer never wrote to this page (Shop), and messenger ids belong to the page "
        "that issued them: reply through the inbox they wrote to"
    )


def test_the_window_is_the_customers_with_the_page_the_reply_goes_through(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Meta's window is the person's with a page. It was read from the conversation
    # replied in: a reply through the shop's page, which they wrote to an hour ago, was
    # refused in their help desk conversation, quiet for 8 days; and one through the help
    # desk's page, 8 days quiet, went from the shop's conversation, for Meta to refuse.
    # (Past 24 hours a person's reply goes with the human agent tag, for 7 days.)
    url, handler = provider
    handler.reply = {"message_id": "m_OUT{n}"}
    shop = page_inbox(client, world, "messenger", "Shop", "PAGE_A", url)
    desk = page_inbox(client, world, "messenger", "Help desk", "PAGE_B", url)
    wrote(client, database, "messenger", desk, page="PAGE_B", sender="222", mid="m_B")
    wrote(client, database, "messenger", shop, page="PAGE_A", sender="111", mid="m_A")
    at_desk = written_ago(database, "m_B", timedelta(days=8))
    at_shop = written_ago(database, "m_A", timedelta(hours=1))
    with database.session(write=False) as db:
        customers = [db.get(Conversation, c).customer_id for c in (at_shop, at_desk)]  # type: ignore[union-attr]
    r = client.post(
        f"/api/v1/customers/{customers[0]}/merge",
        json={"merged_id": customers[1]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    for conv in (at_desk, at_shop):
        r = answer(client, world, conv, inbox_id=desk)
        assert r.status_code == 422 and "7 days" in r.json()["detail"], r.text
        assert answer(client, world, conv, inbox_id=shop).status_code == 201
    Worker(database, settings).run_until_idle()
    assert sent_to(handler) == [("token-PAGE_A", "111"), ("token-PAGE_A", "111")]


def meta_inbox(client: TestClient, world: World, channel: str, url: str = "") -> str:
    settings = {"page_id": "PAGE_ID", "page_access_token": "page-token"}
    settings |= {"app_secret": "page-app-secret", "verify_token": "vt"}
    return make_inbox(client, world, channel, settings | ({"api_base_url": url} if url else {}))


def texts_of(client: TestClient, world: World, inbox: str, token: str = "") -> list[str]:
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(token or world.bob)
    ).json()["items"]
    return sorted(
        m["text"]
        for c in convs
        for m in client.get(
            f"/api/v1/conversations/{c['id']}", headers=auth(token or world.bob)
        ).json()["messages"]
    )


def test_a_second_page_of_the_same_meta_app_gets_its_messages(
    client: TestClient, world: World, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # Meta subscribes an app, not a page: one callback URL, and each call may carry any
    # of its pages' events ("up to you to get the context from the payload"). A second
    # page's inbox had no URL Meta would call, and its events, reaching the first inbox,
    # were left out as another page's: never stored anywhere.
    def page(name: str, page_id: str, secret: str, token: str = "") -> str:
        settings = {"page_id": page_id, "page_access_token": f"{name}-token"}
        settings |= {"app_secret": secret, "verify_token": "vt"}
        r = client.post(
            "/api/v1/inboxes",
            json={"name": name, "channel": "messenger", "settings": settings},
            headers=auth(token or world.alice),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    first = page("Shop", "PAGE_A", "one-app-secret")
    second = page("Support", "PAGE_B", "one-app-secret")
    other_app = page("Jobs", "PAGE_C", "another-app-secret")
    theirs = page("Globex", "PAGE_B", "one-app-secret", world.mallory)  # another workspace
    entries = []
    for page_id, mid, text in (
        ("PAGE_A", "m_A", "to the shop"),
        ("PAGE_B", "m_B", "to support"),
        ("PAGE_C", "m_C", "to jobs"),
    ):
        item = {"timestamp": 1458692752478, "message": {"mid": mid, "text": text}}
        entries += meta_event("page", item, page=page_id)["entry"]
    call = {"object": "page", "entry": entries}
    for _ in range(2):  # Meta sends again what it is not sure of: stored once
        with caplog.at_level(logging.WARNING):
            r = meta_post(client, "messenger", first, call, secret="one-app-secret")
        assert r.status_code == 200
    # Only what no inbox took is said to be left out (each inbox said so of every other
    # page's entries, those its siblings took too), once a call.
    assert left_out(caplog) == [["PAGE_C"], ["PAGE_C"]]
    assert texts_of(client, world, first) == ["to the shop"]
    assert texts_of(client, world, second) == ["to support"]
    # Another app's page is not proved by this app's signature; another workspace's
    # inbox is not this one's to feed.
    assert texts_of(client, world, other_app) == []
    assert texts_of(client, world, theirs, world.mallory) == []


@pytest.mark.parametrize("at", [-5, 10**20, 253402300800000, "soon"])
def test_a_meta_item_with_a_time_that_is_none_is_stored_at_its_receipt(
    client: TestClient, world: World, database: Database, at: object
) -> None:
    # Out of range, it raised (OverflowError, ValueError): a 500, and Meta sent the call
    # again for days; not a number, the message was set aside unread. A delivery's moment
    # (watermark) that cannot be one names no message.
    inbox = meta_inbox(client, world, "messenger")
    said = meta_event("page", {"timestamp": at, "message": {"mid": "m_odd", "text": "hello"}})
    delivered = {"timestamp": at, "delivery": {"watermark": at}}
    said["entry"][0]["messaging"] += meta_event("page", delivered)["entry"][0]["messaging"]
    assert meta_post(client, "messenger", inbox, said).status_code == 200
    [message] = only_conversation(client, world, inbox)["messages"]
    assert message["text"] == "hello" and "sent_at" not in message["meta"]
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).select_from(UnparsedPayload)) == 0


def test_an_unsent_instagram_message_stores_nothing(
    client: TestClient, world: World, database: Database
) -> None:
    # Instagram tells when a customer unsends a message: the notice carried the mid and
    # no text, and was stored as an empty message (of a message Rapport never had, say).
    inbox = meta_inbox(client, world, "instagram")
    before = messages(database)
    unsent = {"timestamp": 1458692752478, "message": {"mid": "m_GONE", "is_deleted": True}}
    assert meta_post(client, "instagram", inbox, meta_event("instagram", unsent)).status_code == 200
    assert messages(database) == before


def test_a_gif_or_sticker_instagram_does_not_pass_on_and_a_story_mention_read_as_such(
    client: TestClient, world: World
) -> None:
    # Instagram sends only is_unsupported for a GIF or a sticker: it was stored as an
    # empty message, which told the agent nothing.
    inbox = meta_inbox(client, world, "instagram")
    gif = {"timestamp": 1458692752478, "message": {"mid": "m_GIF", "is_unsupported": True}}
    assert meta_post(client, "instagram", inbox, meta_event("instagram", gif)).status_code == 200
    [message] = only_conversation(client, world, inbox)["messages"]
    assert message["text"].startswith("[unsupported] ")
    # A story that mentions the account read '[story_mention]'.
    mention = {"type": "story_mention", "payload": {"url": "https://lookaside.fbsbx.com/s"}}
    item = {"timestamp": 1458692752479, "message": {"mid": "m_MENTION", "attachments": [mention]}}
    meta_post(client, "instagram", inbox, meta_event("instagram", item))
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts[-1] == "[mentioned you in their story]"


def waiting_since(database: Database, conversation_id: str) -> datetime | None:
    with database.session(write=False) as db:
        return db.scalar(
            select(Conversation.waiting_since).where(Conversation.id == conversation_id)
        )


def echo_event(obj: str, mid: str, text: str, *, to: str = "1254459154682919") -> dict:  # type: ignore[type-arg]
    """Meta's ``message_echoes`` item: the page is the sender, the customer the recipient."""
    event = meta_event(obj, {}, sender="PAGE_ID")
    item = event["entry"][0]["messaging"][0]
    item.update(
        recipient={"id": to},
        timestamp=int(utcnow().timestamp() * 1000),
        message={"is_echo": True, "app_id": 263902037430900, "mid": mid, "text": text},
    )
    return event


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_what_the_page_sends_from_another_tool_shows_as_sent_in_the_conversation(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    obj: str,
) -> None:
    # A page answers from Meta's own inbox (or another tool): Meta echoes the message. It
    # was dropped, so agents never saw what the customer had been told, and the
    # conversation still waited for an answer.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, channel, url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello?"}}
    meta_post(client, channel, inbox, meta_event(obj, hello))
    assert waiting_since(database, only_conversation(client, world, inbox)["id"]) is not None
    for _ in range(2):  # Meta redelivers: stored once
        echo = echo_event(obj, "m_ECHO1", "Hi, how can we help?")
        assert meta_post(client, channel, inbox, echo).status_code == 200
    conv = only_conversation(client, world, inbox)
    [first, answer] = conv["messages"]
    assert (first["direction"], first["text"]) == ("in", "hello?")
    assert (answer["direction"], answer["status"], answer["text"]) == (
        "out",
        "sent",
        "Hi, how can we help?",
    )
    assert answer["sender_type"] == "user" and waiting_since(database, conv["id"]) is None
    assert conv["first_response_at"] is not None
    # Meta also echoes what Rapport sends, at once, maybe before the send has stored the
    # id Meta answered with: while a send to this customer is under way, an unknown echo is
    # taken for it (recorded, it would be the message twice).
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Anything else?"},
        headers=auth(world.bob),
    )
    with database.session() as db:  # a worker has claimed the send
        db.execute(update(Job).where(Job.name == "deliver").values(state=JobState.running))
    echo = echo_event(obj, "m_OUT1", "Anything else?")
    assert meta_post(client, channel, inbox, echo).status_code == 200
    with database.session() as db:
        # Nor is it kept in a job to try again: what the customer was told stays out of the
        # jobs table, where an erasure does not reach.
        assert not [a for a in db.scalars(select(Job.args)) if "Anything else?" in str(a)]
        db.execute(update(Job).where(Job.name == "deliver").values(state=JobState.queued))
    Worker(database, settings).run_until_idle()  # the send: m_OUT1
    assert meta_post(client, channel, inbox, echo).status_code == 200  # and once it is known
    texts = [
        (m["direction"], m["text"]) for m in only_conversation(client, world, inbox)["messages"]
    ]
    assert texts == [
        ("in", "hello?"),
        ("out", "Hi, how can we help?"),
        ("out", "Anything else?"),
    ]
    # A message to someone who never wrote to this inbox has no conversation to go to.
    before = messages(database)
    stranger = echo_event(obj, "m_ECHO2", "Hello stranger", to="999")
    assert meta_post(client, channel, inbox, stranger).status_code == 200
    assert messages(database) == before


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_an_echo_during_a_send_is_taken_for_it_only_if_it_is_that_send(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    obj: str,
) -> None:
    # Any unknown echo that came while a send to the same customer was under way was
    # taken for that send and dropped: what a colleague wrote meanwhile from the Page
    # inbox on facebook.com was lost for good (Meta had its 200). And Rapport's own echo
    # that came while the send was not running (queued again after a timeout Meta had in
    # fact answered) was recorded as a second message, "sent elsewhere". Instagram's, which
    # names no message of ours, records its id for the send's: Meta has it, and it is not
    # sent again.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, channel, url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello?"}}
    meta_post(client, channel, inbox, meta_event(obj, hello))
    conv = only_conversation(client, world, inbox)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Anything else?"},
        headers=auth(world.bob),
    )
    ours = echo_event(obj, "m_OUT1", "Anything else?")
    if channel == "messenger":  # Messenger hands back the metadata the send gave it
        ours["entry"][0]["messaging"][0]["message"]["metadata"] = f"rapport:{r.json()['id']}"
        assert meta_post(client, channel, inbox, ours).status_code == 200  # not running yet
    with database.session() as db:  # a worker has claimed the send
        db.execute(update(Job).where(Job.name == "deliver").values(state=JobState.running))
    elsewhere = echo_event(obj, "m_PAGE1", "A colleague here: it ships today.")
    for event in (elsewhere, ours):
        assert meta_post(client, channel, inbox, event).status_code == 200
    with database.session() as db:
        db.execute(update(Job).where(Job.name == "deliver").values(state=JobState.queued))
    Worker(database, settings).run_until_idle()  # the send: m_OUT1
    if channel == "messenger":
        [sent] = sent_bodies(handler)
        assert sent["message"]["metadata"] == f"rapport:{r.json()['id']}"
    else:  # Instagram documents no metadata: its echo said Meta had it
        assert sent_bodies(handler) == []
    assert meta_post(client, channel, inbox, ours).status_code == 200  # known by its id now
    out = [
        (m["text"], m["meta"].get("sent_elsewhere", False), m["external_id"])
        for m in only_conversation(client, world, inbox)["messages"]
        if m["direction"] == "out"
    ]
    assert sorted(out) == [
        ("A colleague here: it ships today.", True, "m_PAGE1"),
        ("Anything else?", False, "m_OUT1"),
    ]


def instagram_echo(mid: str, text: str) -> dict:  # type: ignore[type-arg]
    """Instagram's echo as its documentation shows it: ``is_echo``, and no ``app_id`` or
    ``metadata`` to tell Rapport's sends from another app's."""
    event = echo_event("instagram", mid, text)
    del event["entry"][0]["messaging"][0]["message"]["app_id"]
    return event


def outbound(client: TestClient, world: World, inbox: str) -> list[tuple[str, bool, str | None]]:
    return [
        (m["text"], m["meta"].get("sent_elsewhere", False), m["external_id"])
        for m in only_conversation(client, world, inbox)["messages"]
        if m["direction"] == "out"
    ]


def test_an_instagram_echo_of_a_send_to_be_tried_again_is_that_send(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Instagram's echoes name no message of ours. One that came while the send was not
    # running (to be tried again after a timeout Meta had in fact answered) was stored as
    # another app's message, and again if Instagram's text was not quite ours (a quote
    # curled): the reply showed twice, and the retry sent it to the customer twice.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, "instagram", url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "open today?"}}
    meta_post(client, "instagram", inbox, meta_event("instagram", hello))
    conv = only_conversation(client, world, inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "We're open 9-5, anything else?"},
        headers=auth(world.bob),
    )
    echo = instagram_echo("m_IG1", "We’re open 9-5, anything else?")
    for _ in range(2):  # and Meta's redelivery
        assert meta_post(client, "instagram", inbox, echo).status_code == 200
    assert outbound(client, world, inbox) == [("We're open 9-5, anything else?", False, "m_IG1")]
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "sent"
    Worker(database, settings).run_until_idle()  # the retry: nothing left to send
    assert sent_bodies(handler) == []
    # Another app's message, a colleague's, is still its own.
    other = instagram_echo("m_IG2", "A colleague here: see you tomorrow!")
    assert meta_post(client, "instagram", inbox, other).status_code == 200
    assert outbound(client, world, inbox)[-1] == (
        "A colleague here: see you tomorrow!",
        True,
        "m_IG2",
    )


def test_an_instagram_echo_of_a_send_whose_id_was_not_answered_records_it(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Meta's answer named no message: the echo, which does, was stored as a second one.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919"}
    inbox = meta_inbox(client, world, "instagram", url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello?"}}
    meta_post(client, "instagram", inbox, meta_event("instagram", hello))
    conv = only_conversation(client, world, inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Hi, how can we help?"},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    assert outbound(client, world, inbox) == [("Hi, how can we help?", False, None)]
    echo = instagram_echo("m_IG1", "Hi, how can we help?")
    assert meta_post(client, "instagram", inbox, echo).status_code == 200
    assert outbound(client, world, inbox) == [("Hi, how can we help?", False, "m_IG1")]
    seen = meta_event("instagram", {"read": {"mid": "m_IG1"}})
    assert meta_post(client, "instagram", inbox, seen).status_code == 200
    assert only_conversation(client, world, inbox)["messages"][-1]["status"] == "read"


def test_a_copy_an_echo_left_of_a_send_is_taken_over_when_the_send_records_its_id(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # An echo stored as another app's message (before its send was known for it) has the
    # id Meta then answers the send with: storing it collided with the copy's, and the send
    # failed, was sent again, and collided again, until it was dead.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, "instagram", url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello?"}}
    meta_post(client, "instagram", inbox, meta_event("instagram", hello))
    echo = instagram_echo("m_OUT1", "Anything else?")
    assert meta_post(client, "instagram", inbox, echo).status_code == 200  # nothing of ours
    conv = only_conversation(client, world, inbox)
    copy = conv["messages"][-1]["id"]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Anything else?"},
        headers=auth(world.bob),
    )
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        Worker(database, settings).run_until_idle()  # Meta answers m_OUT1
        heard = heard_until_note(ws, client, world)
    # An open thread drops the copy (it showed the reply twice until a reload).
    assert [e["payload"] for e in heard if e["type"] == "message.deleted"] == [
        {"id": copy, "conversation_id": conv["id"]}
    ]
    assert len(sent_bodies(handler)) == 1
    assert outbound(client, world, inbox) == [("Anything else?", False, "m_OUT1")]
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][-1]["status"] == "sent"
    with database.session(write=False) as db:
        assert (
            db.scalar(select(Conversation.messages_count).where(Conversation.id == conv["id"])) == 2
        )


def test_a_delivery_in_the_same_call_as_its_echo_moves_it(client: TestClient, world: World) -> None:
    # Meta batches events: the delivery of a message the page sent elsewhere can come in
    # the same call as its echo. Statuses were applied first, found nothing, and were lost.
    inbox = meta_inbox(client, world, "messenger")
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello?"}}
    meta_post(client, "messenger", inbox, meta_event("page", hello))
    call = echo_event("page", "m_ECHO1", "Hi!")
    delivered = {"sender": {"id": "1254459154682919"}, "recipient": {"id": "PAGE_ID"}}
    delivered |= {"delivery": {"mids": ["m_ECHO1"], "watermark": 1458692752478}}
    call["entry"][0]["messaging"].append(delivered)
    assert meta_post(client, "messenger", inbox, call).status_code == 200
    sent = only_conversation(client, world, inbox)["messages"][-1]
    assert (sent["text"], sent["status"]) == ("Hi!", "delivered")


def status_times(client: TestClient, world: World, conv: str) -> dict[str, dict[str, datetime]]:
    """Each reply's ``meta.status_at`` as times, by its provider id."""
    got = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    return {
        m["external_id"]: {
            status: datetime.fromisoformat(at)
            for status, at in m["meta"].get("status_at", {}).items()
        }
        for m in got["messages"]
        if m["direction"] == "out"
    }


def page_replies(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    count: int,
) -> tuple[str, str]:
    """A customer's message to the page answered ``count`` times (m_OUT1, m_OUT2, ...), the
    answers written ten minutes ago: the inbox's id and the conversation's."""
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, channel, url)
    obj = "page" if channel == "messenger" else "instagram"
    hello = {
        "timestamp": int(utcnow().timestamp() * 1000),
        "message": {"mid": "m_IN1", "text": "hi"},
    }
    assert meta_post(client, channel, inbox, meta_event(obj, hello)).status_code == 200
    conv = only_conversation(client, world, inbox)["id"]
    for n in range(1, count + 1):
        answer(client, world, conv, text=f"Reply {n}")
        Worker(database, settings).run_until_idle()
    with database.session() as db:
        db.execute(
            update(Message)
            .where(Message.conversation_id == conv, Message.external_id.like("m_OUT%"))
            .values(created_at=utcnow() - timedelta(minutes=10))
        )
    return inbox, conv


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_a_messenger_receipt_keeps_its_own_time_not_the_watermark(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # Meta sends a call again for hours: its arrival is not when the customer had or read
    # the message. The item's timestamp is; the watermark only says which messages (those
    # sent before it), and read as a time it put every read at the moment of the send.
    inbox, conv = page_replies(client, world, database, settings, provider, "messenger", 3)
    now = utcnow().replace(microsecond=0)
    delivered_at, read_at = now - timedelta(minutes=8), now - timedelta(minutes=5)
    # message_deliveries as documented (mids and a watermark), with the item's time.
    delivery = {"delivery": {"mids": ["m_OUT1"], "watermark": ms(now - timedelta(minutes=10))}}
    # As in Meta's example, with no time of its own: its arrival stands.
    bare = {"delivery": {"mids": ["m_OUT2"], "watermark": ms(now - timedelta(minutes=10))}}
    # message_reads as documented: a timestamp, and everything sent up to the watermark.
    read = {"timestamp": ms(read_at), "read": {"watermark": ms(now - timedelta(minutes=9))}}
    # A time a day ahead is a wrong clock: its arrival stands.
    ahead = {"timestamp": ms(now + timedelta(days=1)), "delivery": {"mids": ["m_OUT3"]}}
    before = utcnow()
    for item in ({"timestamp": ms(delivered_at), **delivery}, bare, ahead, read):
        assert meta_post(client, "messenger", inbox, meta_event("page", item)).status_code == 200
    after = utcnow()
    times = status_times(client, world, conv)
    assert times.pop("m_OUT1") == {"delivered": delivered_at, "read": read_at}
    for receipt in times.values():  # delivered at the receipt's arrival, read at its time
        assert receipt["read"] == read_at and before <= receipt["delivered"] <= after


def test_an_instagram_seen_receipt_keeps_its_own_time(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    inbox, conv = page_replies(client, world, database, settings, provider, "instagram", 2)
    read_at = utcnow().replace(microsecond=0) - timedelta(minutes=4)
    # messaging_seen as documented: the item's timestamp, the message read named.
    seen = {"timestamp": ms(read_at), "read": {"mid": "m_OUT1"}}
    before = utcnow()
    assert meta_post(client, "instagram", inbox, meta_event("instagram", seen)).status_code == 200
    untimed = meta_event("instagram", {"read": {"mid": "m_OUT2"}})
    assert meta_post(client, "instagram", inbox, untimed).status_code == 200
    times = status_times(client, world, conv)
    assert times["m_OUT1"] == {"read": read_at}
    assert list(times["m_OUT2"]) == ["read"] and times["m_OUT2"]["read"] >= before


def test_a_file_the_page_sends_from_another_tool_is_fetched_like_a_customers(
    client: TestClient, world: World, database: Database
) -> None:
    # The echo of a photo the page sent read "[image]", and the photo was never fetched.
    inbox = meta_inbox(client, world, "messenger")
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "a photo?"}}
    meta_post(client, "messenger", inbox, meta_event("page", hello))
    echo = echo_event("page", "m_ECHO_IMG", "")
    photo = {"type": "image", "payload": {"url": "https://scontent.example.com/p.jpg"}}
    echo["entry"][0]["messaging"][0]["message"]["attachments"] = [photo]
    assert meta_post(client, "messenger", inbox, echo).status_code == 200
    sent = only_conversation(client, world, inbox)["messages"][-1]
    assert (sent["direction"], sent["text"]) == ("out", "[image]")
    with database.session(write=False) as db:
        jobs = db.scalars(select(Job).where(Job.name == "fetch_media")).all()
        assert [j.args["message_id"] for j in jobs] == [sent["id"]]


def test_a_shared_link_reads_as_one_and_its_page_is_not_fetched_as_a_file(
    client: TestClient, world: World, database: Database
) -> None:
    # A link the customer shares comes as a "fallback" attachment whose URL is the page it
    # points to: it read "[fallback]", and the page, whatever and wherever it is, was
    # downloaded and kept as a file of the message.
    inbox = meta_inbox(client, world, "messenger")
    link = {"url": "https://example.com/article", "title": "An article"}
    shared = [
        {"mid": "m_LINK1", "attachments": [{"type": "fallback", "payload": link}]},
        {
            "mid": "m_LINK2",
            "text": "look https://example.com/a",
            "attachments": [{"type": "fallback", "payload": {"url": "https://example.com/a"}}],
        },
    ]
    for message in shared:
        item = {"timestamp": 1458692752478, "message": message}
        assert meta_post(client, "messenger", inbox, meta_event("page", item)).status_code == 200
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts == ["[link] An article https://example.com/article", "look https://example.com/a"]
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).where(Job.name == "fetch_media")) == 0


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_a_button_the_customer_taps_is_what_they_said(
    client: TestClient, world: World, channel: str, obj: str
) -> None:
    # Get Started, the page's menu, an ice breaker: Meta sends a postback, which was
    # dropped, so a customer who asked for a person by the menu was never seen.
    inbox = meta_inbox(client, world, channel)
    tap = {"mid": "m_PB1", "title": "Talk to a person", "payload": "HUMAN"}
    for _ in range(2):  # a redelivery is stored once
        event = meta_event(obj, {"timestamp": 1458692752478, "postback": tap})
        assert meta_post(client, channel, inbox, event).status_code == 200
    [message] = only_conversation(client, world, inbox)["messages"]
    assert (message["direction"], message["text"]) == ("in", "Talk to a person")
    assert message["meta"]["postback"]["payload"] == "HUMAN"


def test_a_reaction_and_its_removal_read_as_on_whatsapp(client: TestClient, world: World) -> None:
    # They read "[reaction] ❤ (react)" and "[reaction]  (unreact)".
    inbox = meta_inbox(client, world, "messenger")
    love = {"reaction": "love", "emoji": "\u2764", "action": "react", "mid": "m_OUT1"}
    for reaction in (love, {"reaction": "love", "action": "unreact", "mid": "m_OUT1"}):
        event = meta_event("page", {"timestamp": 1458692752478, "reaction": reaction})
        assert meta_post(client, "messenger", inbox, event).status_code == 200
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts == ["[reaction] \u2764", "[reaction removed]"]


def test_a_reaction_given_and_taken_back_twice_is_recorded_each_time_and_a_redelivery_once(
    client: TestClient, world: World
) -> None:
    # The reaction's id was made of the message, the action and the emoji only: the second
    # "unreact" of the same emoji (and a second like) was taken for a redelivery of the
    # first and dropped, so the conversation showed a like that had been taken back.
    inbox = meta_inbox(client, world, "messenger")
    like = {"reaction": "like", "emoji": "\U0001f44d", "action": "react", "mid": "m_OUT1"}
    unlike = {"reaction": "like", "action": "unreact", "mid": "m_OUT1"}
    at = 1458692752478
    for n, reaction in enumerate([like, unlike, like, unlike]):
        event = meta_event("page", {"timestamp": at + n * 1000, "reaction": reaction})
        for _ in range(2):  # Meta redelivers each: stored once
            assert meta_post(client, "messenger", inbox, event).status_code == 200
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts == ["[reaction] \U0001f44d", "[reaction removed]"] * 2


def test_a_reaction_is_recorded_but_does_not_reopen_or_wait_for_an_answer(
    client: TestClient, world: World, database: Database
) -> None:
    # A like on the page's "Have a good day" reopened the resolved conversation, and left
    # it waiting for an answer (its SLA clock running, the bot answering a thumb).
    inbox = meta_inbox(client, world, "messenger")
    bye = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "thanks, bye"}}
    meta_post(client, "messenger", inbox, meta_event("page", bye))
    conv = only_conversation(client, world, inbox)
    resolved = client.post(
        f"/api/v1/conversations/{conv['id']}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    assert resolved.status_code == 200
    like = {"reaction": "like", "emoji": "\U0001f44d", "action": "react", "mid": "m_OUT1"}
    event = meta_event("page", {"timestamp": 1458692799000, "reaction": like})
    assert meta_post(client, "messenger", inbox, event).status_code == 200
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][-1]["text"] == "[reaction] \U0001f44d"
    assert conv["status"] == "resolved" and waiting_since(database, conv["id"]) is None


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_what_passes_while_another_app_holds_the_thread_is_recorded_but_not_answered(
    client: TestClient, world: World, database: Database, channel: str, obj: str
) -> None:
    # Meta's handover protocol: while another app (a partner's bot, Meta's own inbox)
    # holds the thread, the page's events come in the entry's "standby", not "messaging".
    # They were dropped: agents saw the thread with holes where the customer and the
    # other app had spoken.
    inbox = meta_inbox(client, world, channel)
    client.put(
        f"/api/v1/bot/inboxes/{inbox}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.patch(
        f"/api/v1/inboxes/{inbox}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    with database.session(write=False) as db:
        before = set(db.scalars(select(Job.id)))  # the setting's own routing pass among them
    customer, page = {"id": "1254459154682919"}, {"id": "PAGE_ID"}
    asked = {"sender": customer, "recipient": page}
    asked |= {"message": {"mid": "m_SB1", "text": "where is my parcel?"}}
    answered = {"sender": page, "recipient": customer}  # the other app's answer, echoed
    answered |= {"message": {"is_echo": True, "app_id": 1, "mid": "m_SB2"}}
    answered["message"]["text"] = "It left this morning."
    tapped = {"sender": customer, "recipient": page}
    tapped |= {"postback": {"mid": "m_SB3", "title": "Thanks!"}}  # no payload in standby
    for item in (asked, answered, tapped, asked):  # the first one redelivered: stored once
        at = item.setdefault("timestamp", int(utcnow().timestamp() * 1000))
        call = {"object": obj, "entry": [{"id": "PAGE_ID", "time": at, "standby": [item]}]}
        assert meta_post(client, channel, inbox, call).status_code == 200
    conv = only_conversation(client, world, inbox)
    said = [(m["direction"], m["text"], m["meta"].get("standby")) for m in conv["messages"]]
    assert said == [
        ("in", "where is my parcel?", True),
        ("out", "It left this morning.", True),
        ("in", "Thanks!", True),
    ]
    # The other app answers: no bot, no rule, no routing here, and nobody waits on us.
    assert conv["assignee_id"] is None and waiting_since(database, conv["id"]) is None
    with database.session(write=False) as db:
        queued = set(db.scalars(select(Job.name).where(Job.id.not_in(before))))
        assert queued & {"bot_reply", "route", "route_waiting", "deliver"} == set()


def standby(event: dict) -> dict:  # type: ignore[type-arg]
    """The same event as it comes while another app holds the thread."""
    for entry in event["entry"]:
        entry["standby"] = entry.pop("messaging")
    return event


@pytest.mark.parametrize(
    "said,opens",
    [
        (
            lambda at: standby(meta_event("page", {"timestamp": at, "message": {"mid": "m_SB"}})),
            True,
        ),
        (
            lambda at: meta_event(
                "page",
                {
                    "timestamp": at,
                    "reaction": {"reaction": "like", "action": "react", "mid": "m_1"},
                },
            ),
            True,
        ),
        (lambda at: standby(echo_event("page", "m_ECHO", "It left this morning.")), False),
        (lambda at: echo_event("page", "m_ECHO", "It left this morning."), False),
    ],
    ids=["standby message", "reaction", "standby echo", "echo"],
)
def test_meta_window_opens_on_what_the_customer_says_even_if_nothing_here_answers_it(
    client: TestClient,
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    said: Callable[[int], dict],  # type: ignore[type-arg]
    opens: bool,
) -> None:
    # A customer's message while another app held the thread (standby), or their reaction,
    # moved nothing: Meta's 24-hour window counted from their last message in "messaging",
    # so an agent's reply the next day was refused although Meta would have taken it. The
    # page's own messages (echoes, whichever app sent them) do not open it.
    from rapport.conversations import service

    inbox = meta_inbox(client, world, "messenger")
    first = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello"}}
    meta_post(client, "messenger", inbox, meta_event("page", first))
    conv = only_conversation(client, world, inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    ).raise_for_status()
    written_ago(database, "m_IN1", timedelta(days=8))  # past even a person's 7 days
    before = len(only_conversation(client, world, inbox)["messages"])
    event = said(int(utcnow().timestamp() * 1000))
    assert meta_post(client, "messenger", inbox, event).status_code == 200
    conv = only_conversation(client, world, inbox)
    assert len(conv["messages"]) == before + 1
    # Nothing here answers it: the conversation stays resolved, and nobody waits.
    assert conv["status"] == "resolved" and waiting_since(database, conv["id"]) is None
    later = utcnow() + timedelta(hours=23)
    monkeypatch.setattr(service, "utcnow", lambda: later)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Anything else I can do?"},
        headers=auth(world.bob),
    )
    if opens:
        assert r.status_code == 201, r.text
    else:
        assert r.status_code == 422 and "7 days" in r.json()["detail"]


def sent_bodies(handler: type[Provider]) -> list[dict]:  # type: ignore[type-arg]
    """What each Send API call asked for (its recipient, type, tag, message), in order."""
    return [json.loads(body) for _, _, body in handler.calls]


@pytest.mark.parametrize("channel,obj", [("messenger", "page"), ("instagram", "instagram")])
def test_a_persons_reply_past_24_hours_goes_with_metas_human_agent_tag_for_7_days(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    channel: str,
    obj: str,
) -> None:
    # Every reply went as messaging_type RESPONSE, and any reply past Meta's 24-hour
    # window was refused: an agent back on Monday could not answer Friday's question,
    # though Meta takes a person's reply for 7 days with the HUMAN_AGENT tag (Messenger
    # and Instagram alike; Instagram documents it as the one tag for a human agent).
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, channel, url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "Is it in stock?"}}
    meta_post(client, channel, inbox, meta_event(obj, hello))
    conv = only_conversation(client, world, inbox)

    def reply(text: str) -> int:
        return client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"text": text},
            headers=auth(world.bob),
        ).status_code

    assert reply("Checking now.") == 201
    Worker(database, settings).run_until_idle()
    written_ago(database, "m_IN1", timedelta(days=3))
    assert reply("Back in stock today.") == 201
    # Queued inside the window, sent after it: the send decides, as Meta will.
    assert reply("And it ships tomorrow.") == 201
    written_ago(database, "m_IN1", timedelta(days=3, hours=1))
    Worker(database, settings).run_until_idle()
    within, *later = sent_bodies(handler)
    assert within["messaging_type"] == "RESPONSE" and "tag" not in within
    assert [(b["messaging_type"], b["tag"]) for b in later] == [("MESSAGE_TAG", "HUMAN_AGENT")] * 2
    assert [m["status"] for m in only_conversation(client, world, inbox)["messages"][1:]] == [
        "sent"
    ] * 3
    # An automatic reply (a rule's, the bot's) never takes the tag: refused past 24 hours.
    from rapport.conversations import service
    from rapport.problems import Invalid

    with database.session() as db:
        row = db.get(Conversation, conv["id"])
        with pytest.raises(Invalid, match="not the bot's or a rule's"):
            service.reply(db, conversation=row, author_id=None, text="Our hours are 9-5.")
    # Past 7 days nothing goes, a person's reply included.
    written_ago(database, "m_IN1", timedelta(days=7, minutes=1))
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Still there?"},
        headers=auth(world.bob),
    )
    assert r.status_code == 422 and "7 days" in r.json()["detail"]
    assert len(handler.calls) == 3


def test_a_queued_automatic_reply_sent_past_metas_24_hours_fails_saying_why(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # A rule's reply queued inside the window but sent after it (the worker was down)
    # must not go with the human agent tag, which Meta allows for a person's reply only.
    from rapport.conversations import service

    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    inbox = meta_inbox(client, world, "messenger", url)
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello"}}
    meta_post(client, "messenger", inbox, meta_event("page", hello))
    conv = only_conversation(client, world, inbox)
    with database.session() as db:
        row = db.get(Conversation, conv["id"])
        assert row is not None
        service.reply(db, conversation=row, author_id=None, text="We answer within a day.")
    written_ago(database, "m_IN1", timedelta(hours=25))
    Worker(database, settings).run_until_idle()
    assert handler.calls == []
    failed = only_conversation(client, world, inbox)["messages"][-1]
    assert failed["status"] == "failed" and "24 hours" in failed["error"]
    # A retry whose parts Meta all took before (its worker died before it wrote so)
    # sends nothing, and so is not failed for a window closed since.
    written_ago(database, "m_IN1", timedelta(hours=1))
    with database.session() as db:
        row = db.get(Conversation, conv["id"])
        assert row is not None
        again = service.reply(db, conversation=row, author_id=None, text="Anything else?")
        again.meta = {"parts_sent": {"text": "m_TOOK"}}
    written_ago(database, "m_IN1", timedelta(hours=26))
    Worker(database, settings).run_until_idle()
    assert handler.calls == []
    took = only_conversation(client, world, inbox)["messages"][-1]
    assert (took["status"], took["external_id"]) == ("sent", "m_TOOK")


def test_a_conversation_started_by_what_another_app_answers_leaves_nobody_waiting(
    client: TestClient, world: World, database: Database
) -> None:
    # A customer's first message in standby started a conversation resolved at once (the
    # other app answers it) but waiting since that message, which nothing resolved ever
    # is: merged into another conversation, it started that one's SLA response clock.
    inbox = meta_inbox(client, world, "messenger")
    first = {"timestamp": 1458692752478, "message": {"mid": "m_SB1", "text": "hello"}}
    assert (
        meta_post(client, "messenger", inbox, standby(meta_event("page", first))).status_code == 200
    )
    conv = only_conversation(client, world, inbox)
    assert conv["status"] == "resolved" and waiting_since(database, conv["id"]) is None


def test_a_handover_of_the_thread_is_a_line_in_the_conversation_once(
    client: TestClient, world: World, database: Database
) -> None:
    # Meta's handover events (another app took the thread, passed it back, asks for it)
    # were dropped: agents could not tell why the customer's messages went unanswered here.
    settings = {"page_id": "PAGE_ID", "page_access_token": "page-token", "app_id": "111"}
    settings |= {"app_secret": "page-app-secret", "verify_token": "vt"}
    inbox = make_inbox(client, world, "messenger", settings)
    client.put(
        f"/api/v1/bot/inboxes/{inbox}", json={"enabled": True}, headers=auth(world.alice)
    ).raise_for_status()
    client.patch(
        f"/api/v1/inboxes/{inbox}", json={"auto_assign": True}, headers=auth(world.alice)
    ).raise_for_status()
    hello = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "hello"}}
    meta_post(client, "messenger", inbox, standby(meta_event("page", hello)))
    conv = only_conversation(client, world, inbox)
    before = len(conv["messages"])
    inbox_app = "263902037430900"  # Meta's Page Inbox
    handovers = [
        {"take_thread_control": {"previous_owner_app_id": "111", "new_owner_app_id": inbox_app}},
        {"request_thread_control": {"requested_owner_app_id": "222", "metadata": "a person"}},
        {"pass_thread_control": {"previous_owner_app_id": inbox_app, "new_owner_app_id": 111}},
        {"pass_thread_control": {"previous_owner_app_id": "111", "new_owner_app_id": "222"}},
    ]
    for n, handover in enumerate(handovers):
        event = meta_event("page", {"timestamp": 1458692800000 + n, **handover})
        for _ in range(2):  # Meta redelivers it: one line
            assert meta_post(client, "messenger", inbox, event).status_code == 200
    conv = only_conversation(client, world, inbox)
    lines = [(m["kind"], m["text"]) for m in conv["messages"][before:]]
    assert lines == [
        ("activity", "Another app took over this conversation"),
        ("activity", "Another app asked to take over this conversation"),
        ("activity", "This conversation was passed to Rapport"),
        ("activity", "This conversation was passed to another app"),
    ]
    assert conv["messages"][-1]["meta"]["handover"]["new_owner_app_id"] == "222"
    # Nobody said anything: the conversation stays as it was, and nothing answers.
    assert conv["status"] == "resolved" and conv["assignee_id"] is None
    assert waiting_since(database, conv["id"]) is None
    with database.session(write=False) as db:
        assert set(db.scalars(select(Job.name))) & {"bot_reply", "route", "deliver"} == set()


def test_a_messenger_edit_is_kept_beside_what_it_changed(client: TestClient, world: World) -> None:
    # Meta's message_edits event was dropped: the agent kept answering the words as they
    # were first written.
    inbox = meta_inbox(client, world, "messenger")
    first = {"timestamp": 1458692752478, "message": {"mid": "m_IN1", "text": "at 5pm"}}
    meta_post(client, "messenger", inbox, meta_event("page", first))
    for _ in range(2):  # a redelivery is stored once
        edit = {"mid": "m_IN1", "text": "at 6pm", "num_edit": 1}
        event = meta_event("page", {"timestamp": 1458692799000, "message_edit": edit})
        assert meta_post(client, "messenger", inbox, event).status_code == 200
    texts = [m["text"] for m in only_conversation(client, world, inbox)["messages"]]
    assert texts == ["at 5pm", "(edited) at 6pm"]


def test_outbound_respects_the_providers_rate_and_retries_what_waits(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The limiter's clock stands still: however slow the machine, the three sends fall in
    # one second (a loaded CI machine once spread them over two, and two went out).
    from rapport.auth import ratelimit

    frozen = SimpleNamespace(monotonic=lambda: 1_000_000.0, time=lambda: 2_000_000_000.0)
    monkeypatch.setattr(ratelimit, "time", frozen)
    url, handler = provider
    handler.reply = {"sid": "SM_R", "status": "queued"}
    inbox = make_inbox(
        client,
        world,
        "twilio_sms",
        {
            "account_sid": "AC1",
            "auth_token": "tok",
            "phone_number": "+14155550100",
            "api_base_url": url,
            "rate_per_second": 1,
        },
    )
    twilio_post(
        client, settings, f"/webhooks/twilio_sms/{inbox}", {**SMS, "MessageSid": "SM_IN_R"}, "tok"
    )
    conv = only_conversation(client, world, inbox)
    for n in range(3):
        client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"text": f"part {n}"},
            headers=auth(world.bob),
        )
    Worker(database, settings).run_until_idle()
    assert len(handler.calls) == 1  # one a second: the others wait for their retry
    statuses = [m["status"] for m in only_conversation(client, world, inbox)["messages"][1:]]
    assert statuses.count("sent") == 1 and statuses.count("queued") == 2


def test_parts_that_report_while_the_rest_is_sent_count_once_it_is_and_a_failure_stays(
    database: Database, world: World
) -> None:
    from rapport.conversations import service as conversations
    from rapport.conversations.models import Conversation, DeliveryStatus, Message, MessagePart

    def report(external_id: str, status: DeliveryStatus) -> DeliveryStatus:
        with database.session() as db:
            conversations.update_delivery(
                db, inbox_id=inbox, external_id=external_id, status=status, error="carrier said no"
            )
            found = db.get(Message, message_id)
            assert found is not None
            return found.status

    with database.session() as db:
        conv = db.get(Conversation, world.acme.opened.conversation.id)
        assert conv is not None
        msg = conversations.reply(db, conversation=conv, author_id=None, text="two parts")
        for n, ext in enumerate(("P1", "P2")):
            db.add(
                MessagePart(
                    inbox_id=msg.inbox_id,
                    external_id=ext,
                    workspace_id=msg.workspace_id,
                    message_id=msg.id,
                    position=n,
                )
            )
        message_id, inbox = msg.id, msg.inbox_id
    # Part 1 delivered while part 2 is still to be sent (a retry): the message stays queued,
    # so the retry still sends part 2.
    assert report("P1", DeliveryStatus.delivered) == DeliveryStatus.queued
    with database.session() as db:
        msg = db.get(Message, message_id)
        assert msg is not None
        msg.status = DeliveryStatus.sent  # the sending job is done
        conversations.settle_parts(db, message=msg)
        assert msg.status == DeliveryStatus.sent  # part 2 has not arrived yet
    # A message that failed stays failed whatever a part says later.
    assert report("P2", DeliveryStatus.failed) == DeliveryStatus.failed
    assert report("P1", DeliveryStatus.read) == DeliveryStatus.failed
    assert report("P2", DeliveryStatus.delivered) == DeliveryStatus.failed


def test_a_failure_reported_after_a_part_was_delivered_or_read_fails_nothing(
    database: Database, world: World
) -> None:
    # Reports arrive out of order, and a carrier may send a failure after its own delivery
    # receipt: the customer had the message, and the agent was told it failed.
    from rapport.conversations import service as conversations
    from rapport.conversations.models import Conversation, DeliveryStatus, Message, MessagePart

    def report(external_id: str, status: DeliveryStatus) -> tuple[DeliveryStatus, str | None]:
        with database.session() as db:
            conversations.update_delivery(
                db, inbox_id=inbox, external_id=external_id, status=status, error="carrier said no"
            )
            found = db.get(Message, message_id)
            assert found is not None
            return found.status, found.error

    with database.session() as db:
        conv = db.get(Conversation, world.acme.opened.conversation.id)
        assert conv is not None
        msg = conversations.reply(db, conversation=conv, author_id=None, text="two parts")
        msg.status = DeliveryStatus.sent  # sent, as two provider messages
        for n, ext in enumerate(("P1", "P2")):
            db.add(
                MessagePart(
                    inbox_id=msg.inbox_id,
                    external_id=ext,
                    workspace_id=msg.workspace_id,
                    message_id=msg.id,
                    position=n,
                )
            )
        message_id, inbox = msg.id, msg.inbox_id
    assert report("P1", DeliveryStatus.delivered) == (DeliveryStatus.sent, None)
    assert report("P2", DeliveryStatus.delivered) == (DeliveryStatus.delivered, None)
    assert report("P2", DeliveryStatus.failed) == (DeliveryStatus.delivered, None)
    assert report("P2", DeliveryStatus.read) == (DeliveryStatus.read, None)  # read up to it
    assert report("P1", DeliveryStatus.failed) == (DeliveryStatus.read, None)
    assert report("P1", DeliveryStatus.sent) == (DeliveryStatus.read, None)
    with database.session(write=False) as db:
        parts = db.scalars(select(MessagePart).where(MessagePart.message_id == message_id))
        assert {p.external_id: (p.status, p.error) for p in parts} == {
            "P1": (DeliveryStatus.read, None),
            "P2": (DeliveryStatus.read, None),
        }


def test_a_late_twilio_undelivered_leaves_a_delivered_sms_delivered(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    inbox, path, _ = twilio_inbox(client, world, provider)
    twilio_post(client, settings, path, SMS, "twilio-token")
    conv = only_conversation(client, world, inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Shipped today."},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    status = {
        "MessageSid": "SM_OUT_1",
        "MessageStatus": "delivered",
        "AccountSid": "AC00000000000000000000000000000000",
    }
    late = dict(status, MessageStatus="undelivered", ErrorCode="30003")
    sent = dict(status, MessageStatus="sent")
    for params in (status, late, sent):
        assert twilio_post(client, settings, path, params, "twilio-token").status_code == 200
    out = only_conversation(client, world, inbox)["messages"][-1]
    assert out["status"] == "delivered" and out.get("error") is None


def sms_replies(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
    count: int,
) -> tuple[str, str]:
    """A customer's SMS answered ``count`` times (SM_OUT_1, SM_OUT_2, ...), as fast as the
    worker sends them: the inbox's webhook path and the conversation's id."""
    url, handler = provider
    handler.reply = {"sid": "SM_OUT_{n}", "status": "queued"}
    settings_of_inbox = {
        "account_sid": "AC00000000000000000000000000000000",
        "auth_token": "twilio-token",
        "phone_number": "+14155550100",
        "api_base_url": url,
        "rate_per_second": 100,
    }
    inbox = make_inbox(client, world, "twilio_sms", settings_of_inbox)
    path = f"/webhooks/twilio_sms/{inbox}"
    twilio_post(client, settings, path, SMS, "twilio-token")
    conv = only_conversation(client, world, inbox)["id"]
    for n in range(1, count + 1):
        client.post(
            f"/api/v1/conversations/{conv}/messages",
            json={"text": f"Reply {n}"},
            headers=auth(world.bob),
        )
        Worker(database, settings).run_until_idle()
    return path, conv


def twilio_status(sid: str, status: str, **more: str) -> dict[str, str]:
    """A status callback as Twilio posts it for an SMS (``more``: RawDlrDoneDate, ...)."""
    return {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": "+14155550123",
        "MessagingServiceSid": "MG00000000000000000000000000000000",
        "MessageSid": sid,
        "AccountSid": "AC00000000000000000000000000000000",
        "From": "+14155550100",
        "ApiVersion": "2010-04-01",
        **more,
    }


def test_a_twilio_report_keeps_the_carriers_time_where_its_zone_can_be_told(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # RawDlrDoneDate is the carrier's clock, to the minute, in a zone Twilio does not say
    # and which varies from carrier to carrier: read as UTC, New York's put a delivery five
    # hours early. Of the times it is in every offset, the one within the message's life.
    path, conv = sms_replies(client, world, database, settings, provider, 4)
    with database.session() as db:  # the last reply waited three hours for the handset
        db.execute(
            update(Message)
            .where(Message.external_id == "SM_OUT_4")
            .values(created_at=utcnow() - timedelta(hours=3))
        )
    new_york, delhi = timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))
    now = utcnow()
    reports = [
        twilio_status(
            "SM_OUT_1", "delivered", RawDlrDoneDate=f"{now.astimezone(new_york):%y%m%d%H%M}"
        ),
        twilio_status(
            "SM_OUT_2",
            "undelivered",
            ErrorCode="30003",
            RawDlrDoneDate=f"{now.astimezone(delhi):%y%m%d%H%M}",
        ),
        twilio_status("SM_OUT_3", "delivered", RawDlrDoneDate="2602301200"),  # no such day
        # Two hours ago if the carrier's clock is UTC's; but for a message written three
        # hours ago a dozen offsets fit: which one cannot be told.
        twilio_status(
            "SM_OUT_4", "delivered", RawDlrDoneDate=f"{now - timedelta(hours=2):%y%m%d%H%M}"
        ),
    ]
    for params in reports:
        assert twilio_post(client, settings, path, params, "twilio-token").status_code == 200
    after = utcnow()
    times = status_times(client, world, conv)
    minute = now.replace(second=0, microsecond=0)
    assert times.pop("SM_OUT_1") == {"delivered": minute}  # New York's clock, told apart
    assert times.pop("SM_OUT_2") == {"failed": minute}  # and Delhi's, half an hour off
    # The others at their receipt.
    assert sorted(times) == ["SM_OUT_3", "SM_OUT_4"]
    assert all(now <= t["delivered"] <= after and len(t) == 1 for t in times.values())


def test_a_reply_sent_again_no_longer_says_when_its_last_try_failed(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],
) -> None:
    # The times of the last try's reports are not the new try's: it said when it had failed
    # while it was queued, sent and delivered again.
    path, conv = sms_replies(client, world, database, settings, provider, 1)
    undelivered = twilio_status("SM_OUT_1", "undelivered", ErrorCode="30003")
    assert twilio_post(client, settings, path, undelivered, "twilio-token").status_code == 200
    [failed] = status_times(client, world, conv).values()
    assert set(failed) == {"failed"}
    got = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    [mid] = [m["id"] for m in got["messages"] if m["direction"] == "out"]
    r = client.post(f"/api/v1/conversations/{conv}/messages/{mid}/retry", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and "status_at" not in r.json()["meta"]
    assert status_times(client, world, conv) == {None: {}}
    Worker(database, settings).run_until_idle()  # sent anew, as SM_OUT_2
    delivered = twilio_status("SM_OUT_2", "delivered")
    before = utcnow()
    assert twilio_post(client, settings, path, delivered, "twilio-token").status_code == 200
    [(sid, again)] = status_times(client, world, conv).items()
    assert sid == "SM_OUT_2" and list(again) == ["delivered"] and again["delivered"] >= before


# --- Deliver jobs that run out -----------------------------------------------------------


def queued_reply(database: Database, world: World) -> str:
    """A reply of Acme's (API inbox) queued with its deliver job; the message's id."""
    from rapport.conversations import service as conversations
    from rapport.conversations.models import Conversation

    with database.session() as db:
        conv = db.get(Conversation, world.acme.opened.conversation.id)
        assert conv is not None
        return conversations.reply(db, conversation=conv, author_id=None, text="hello").id


def deliver_now(database: Database, settings: Settings, **job: object) -> tuple[Job, Message]:
    """Make the deliver job due now (with ``job``'s values), run the worker; the job and
    its message after."""
    with database.session() as db:
        db.execute(update(Job).where(Job.name == "deliver").values(run_at=utcnow(), **job))
    Worker(database, settings).run_until_idle()
    with database.session(write=False) as db:
        row = db.scalars(select(Job).where(Job.name == "deliver")).one()
        msg = db.get(Message, row.args["message_id"])
        assert msg is not None
        return row, msg


def test_a_message_waiting_for_its_sending_rate_never_uses_up_its_attempts(
    database: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rate limit raised a DeliveryError before the send's own handling of one: every
    # wait used an attempt, and on the last the job died with its message queued for ever.
    from rapport.channels import deliver

    queued_reply(database, world)
    turn = {"come": False}
    limiter = SimpleNamespace(hit=lambda key: turn["come"])
    monkeypatch.setattr(deliver, "_limiter", lambda *args: limiter)
    for _ in range(3):
        job, msg = deliver_now(database, settings, attempts=7, max_attempts=8)
        assert job.state == JobState.queued and job.attempts == 7 and msg.status == "queued"
        assert job.run_at > utcnow()  # it waits a moment for its turn
    turn["come"] = True
    job, msg = deliver_now(database, settings)
    assert job.state == JobState.done and job.attempts == 8 and msg.status == "sent"


def test_a_deliver_job_dead_lettered_because_its_lease_ran_out_fails_its_message(
    database: Database, settings: Settings, world: World
) -> None:
    # A worker that died (or hung) on every attempt left the lease to run out each time:
    # the job was dead-lettered and nothing told the message, which stayed queued.
    message_id = queued_reply(database, world)
    expired = {
        "state": JobState.running,
        "attempts": 8,
        "locked_by": "ghost",
        "locked_until": utcnow().replace(year=2000),
    }
    with published_events() as published:
        job, msg = deliver_now(database, settings, **expired)
    assert job.state == JobState.dead and job.last_error == "lease expired on every attempt"
    assert msg.status == "failed" and msg.error == "lease expired on every attempt"
    [event] = [e for e in published if e["type"] == "message.updated"]
    assert event["payload"]["id"] == message_id and event["payload"]["status"] == "failed"


def test_a_message_sent_on_a_later_try_no_longer_says_why_it_waited(
    database: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rapport.channels import base

    api = type(base.get("api"))
    works = api.send

    def unavailable(self: object, out: base.Outbound) -> base.SendResult:
        raise base.DeliveryError("provider 503")

    monkeypatch.setattr(api, "send", unavailable)
    queued_reply(database, world)
    job, msg = deliver_now(database, settings)
    assert msg.status == "queued" and msg.error is not None
    monkeypatch.setattr(api, "send", works)
    job, msg = deliver_now(database, settings)
    assert job.state == JobState.done and msg.status == "sent" and msg.error is None


def test_a_deliver_job_counts_its_own_attempts(
    database: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Last try" was read from a setting (RAPPORT_JOB_MAX_ATTEMPTS) that deliver jobs did
    # not use (they have 8): a lower one failed the message while retries remained, a
    # higher one let the job die with its message queued.
    from rapport.channels import base

    def unavailable(self: object, out: base.Outbound) -> base.SendResult:
        raise base.DeliveryError("provider 503")

    monkeypatch.setattr(type(base.get("api")), "send", unavailable)
    queued_reply(database, world)
    with published_events() as published:
        job, msg = deliver_now(database, settings, attempts=1)
    assert job.state == JobState.queued and job.attempts == 2 and msg.status == "queued"
    # Still queued, and the thread says why it has not gone yet (it said nothing).
    assert msg.error == "retrying (attempt 2 of 8 failed): provider 503"
    [event] = [e for e in published if e["type"] == "message.updated"]
    assert event["payload"]["error"] == msg.error
    job, msg = deliver_now(database, settings, attempts=7)
    assert job.state == JobState.dead and job.attempts == 8
    assert msg.status == "failed" and msg.error == "provider 503"
