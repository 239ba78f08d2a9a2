"""Files customers send through providers: fetched after the message, stored, shown."""

import base64
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.channels import media
from rapport.config import Settings
from rapport.conversations.models import Attachment, Message
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database, utcnow
from rapport.ingest import InboundMessage, receive
from rapport.jobs.models import Job, JobState
from rapport.jobs.service import retry_all_dead
from rapport.jobs.worker import Worker
from rapport.storage import LocalStorage
from tests.channels.test_providers import (
    make_inbox,
    meta_event,
    meta_post,
    only_conversation,
    twilio_post,
)
from tests.channels.test_whatsapp import APP_SECRET, post_signed
from tests.conftest import auth, record_write_lock
from tests.factories import World
from tests.standin import serving

PHOTO = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


class Files(BaseHTTPRequestHandler):
    """Stands in for the providers' file endpoints, each with its own credentials."""

    base = ""
    calls: list[tuple[str, str]] = []
    huge = False
    flaky = False

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        cls.calls.append((self.path, self.headers.get("Authorization", "")))
        auth_header = self.headers.get("Authorization", "")
        if self.path == "/v21.0/MEDIA-1":  # WhatsApp: describe the media
            if auth_header != "Bearer wa-token":
                return self._send(401, b"{}", "application/json")
            body = f'{{"url": "{cls.base}/wa-cdn/photo", "mime_type": "image/png"}}'
            return self._send(200, body.encode(), "application/json")
        if self.path == "/wa-cdn/photo":
            ok = auth_header == "Bearer wa-token"
            return self._send(200 if ok else 401, PHOTO if ok else b"", "image/png")
        if self.path.startswith("/bot123:ABC/getFile"):  # Telegram
            body = b'{"ok": true, "result": {"file_path": "photos/file_7.jpg"}}'
            return self._send(200, body, "application/json")
        if self.path == "/file/bot123:ABC/photos/file_7.jpg":
            return self._send(200, PHOTO, "image/jpeg")
        if self.path == "/meta-cdn/pic":  # Messenger: a CDN URL, no credentials
            return self._send(200, PHOTO, "image/png")
        if self.path == "/meta-cdn/flaky":  # a CDN that fails for a while
            return (
                self._send(503, b"", "text/plain")
                if cls.flaky
                else self._send(200, PHOTO, "image/png")
            )
        if self.path == "/mms/ME1":  # Twilio: HTTP basic with the account
            expected = "Basic " + base64.b64encode(b"AC1:twilio-token").decode()
            if auth_header != expected:
                return self._send(401, b"", "text/plain")
            size = media.MAX_MEDIA_BYTES + 10 if cls.huge else len(PHOTO)
            return self._send(200, (PHOTO * (size // len(PHOTO) + 1))[:size], "image/png")
        return self._send(404, b"", "text/plain")

    def do_HEAD(self) -> None:  # noqa: N802
        type(self).calls.append((f"HEAD {self.path}", ""))
        self._send(200, b"", "image/png")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files() -> Iterator[tuple[str, type[Files]]]:
    handler: Any = type("F", (Files,), {"calls": [], "huge": False, "flaky": False})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        handler.base = f"http://127.0.0.1:{server.server_port}"
        yield handler.base, handler


def attachments_of(client: TestClient, world: World, conv: dict) -> list[dict]:  # type: ignore[type-arg]
    message = conv["messages"][0]
    return client.get(  # type: ignore[no-any-return]
        f"/api/v1/conversations/{conv['id']}/messages/{message['id']}/attachments",
        headers=auth(world.bob),
    ).json()


def test_a_whatsapp_photo_is_fetched_with_the_inbox_token_and_stored(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, handler = files
    inbox = make_inbox(
        client,
        world,
        "whatsapp",
        {
            "phone_number_id": "106540352242922",
            "access_token": "wa-token",
            "app_secret": APP_SECRET,
            "verify_token": "v",
            "api_base_url": f"{base}/v21.0",
        },
    )
    event = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "106540352242922"},
                            "contacts": [{"profile": {"name": "Ana"}, "wa_id": "351910000000"}],
                            "messages": [
                                {
                                    "from": "351910000000",
                                    "id": "wamid.PHOTO",
                                    "timestamp": "1700000000",
                                    "type": "image",
                                    "image": {
                                        "id": "MEDIA-1",
                                        "mime_type": "image/png",
                                        "sha256": "x",
                                        "caption": "the broken lid",
                                    },
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    assert post_signed(client, inbox, event).status_code == 200
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][0]["text"] == "[image] the broken lid"  # the text at once
    sqlite = database.is_sqlite
    written = record_write_lock(monkeypatch, LocalStorage, "put", database) if sqlite else []
    Worker(database, settings).run_until_idle()
    # Written before the transaction that records it (25 MB must not hold the lock).
    assert written == ([False] if sqlite else [])
    (stored,) = attachments_of(client, world, conv)
    assert stored["content_type"] == "image/png" and stored["size"] == len(PHOTO)
    assert stored["filename"] == "whatsapp-MEDIA-1.png"
    got = client.get(
        f"/api/v1/conversations/{conv['id']}/messages/{conv['messages'][0]['id']}"
        f"/attachments/{stored['id']}",
        headers=auth(world.bob),
    )
    assert got.content == PHOTO
    # The same webhook again (a provider retry) fetches nothing twice.
    post_signed(client, inbox, event)
    Worker(database, settings).run_until_idle()
    assert len(attachments_of(client, world, conv)) == 1
    assert [p for p, _ in handler.calls].count("/wa-cdn/photo") == 1


def test_a_telegram_photo_is_fetched_through_get_file(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    base, _ = files
    inbox = make_inbox(
        client,
        world,
        "telegram",
        {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": base},
    )
    update = {
        "update_id": 7,
        "message": {
            "message_id": 70,
            "date": 1700000000,
            "chat": {"id": 99, "type": "private"},
            "from": {"id": 99, "first_name": "Tom"},
            "caption": "receipt",
            "photo": [
                {"file_id": "small", "width": 90, "height": 90},
                {"file_id": "BIG", "width": 1280, "height": 1280},
            ],
        },
    }
    r = client.post(
        f"/webhooks/telegram/{inbox}",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
    )
    assert r.status_code == 200
    Worker(database, settings).run_until_idle()
    conv = only_conversation(client, world, inbox)
    (stored,) = attachments_of(client, world, conv)
    assert stored["filename"] == "file_7.jpg" and stored["content_type"] == "image/jpeg"


def test_twilio_mms_media_is_fetched_with_the_account_and_a_huge_one_is_refused(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    base, handler = files
    inbox = make_inbox(
        client,
        world,
        "twilio_sms",
        {
            "account_sid": "AC1",
            "auth_token": "twilio-token",
            "phone_number": "+14155550100",
            "api_base_url": base,
        },
    )
    path = f"/webhooks/twilio_sms/{inbox}"
    mms = {
        "MessageSid": "MM1",
        "From": "+14155550123",
        "To": "+14155550100",
        "Body": "",
        "NumMedia": "1",
        "MediaUrl0": f"{base}/mms/ME1",
        "MediaContentType0": "image/png",
    }
    assert twilio_post(client, settings, path, mms, "twilio-token").status_code == 200
    Worker(database, settings).run_until_idle()
    conv = only_conversation(client, world, inbox)
    (stored,) = attachments_of(client, world, conv)
    assert stored["filename"] == "mms-0.png" and stored["size"] == len(PHOTO)
    handler.huge = True
    big = dict(mms, MessageSid="MM2", From="+14155550199")
    twilio_post(client, settings, path, big, "twilio-token")
    Worker(database, settings).run_until_idle()
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    other = next(c for c in convs if c["id"] != conv["id"])
    detail = client.get(f"/api/v1/conversations/{other['id']}", headers=auth(world.bob)).json()
    assert attachments_of(client, world, detail) == []
    assert "was not kept" in " ".join(detail["messages"][0]["meta"]["notes"])
    # A media URL into the server's own network (a forged or odd payload) is not fetched,
    # and not retried: the message says so.
    settings.outbound_private_ok = False
    metadata = dict(
        mms,
        MessageSid="MM3",
        From="+14155550177",
        MediaUrl0="http://169.254.169.254/latest/meta-data/",
    )
    twilio_post(client, settings, path, metadata, "twilio-token")
    Worker(database, settings).run_until_idle()
    convs = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    third = next(c for c in convs if c["id"] not in (conv["id"], other["id"]))
    detail = client.get(f"/api/v1/conversations/{third['id']}", headers=auth(world.bob)).json()
    assert attachments_of(client, world, detail) == []
    assert "does not call" in " ".join(detail["messages"][0]["meta"]["notes"])
    with database.session(write=False) as db:
        fetches = db.scalars(select(Job).where(Job.name == "fetch_media")).all()
    assert {j.state for j in fetches} == {JobState.done}


def test_a_messenger_image_is_fetched_from_its_cdn_url_once(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    base, handler = files
    inbox = make_inbox(
        client,
        world,
        "messenger",
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
        },
    )
    event = meta_event(
        "page",
        {
            "timestamp": 1458692752478,
            "message": {
                "mid": "m_PIC",
                "attachments": [{"type": "image", "payload": {"url": f"{base}/meta-cdn/pic"}}],
            },
        },
    )
    assert meta_post(client, "messenger", inbox, event).status_code == 200
    Worker(database, settings).run_until_idle()
    conv = only_conversation(client, world, inbox)
    (stored,) = attachments_of(client, world, conv)
    assert stored["filename"] == "messenger-image-0.png" and stored["size"] == len(PHOTO)
    assert [p for p, _ in handler.calls] == ["/meta-cdn/pic"]  # one request: no HEAD first


def test_an_instagram_story_reply_says_so_and_keeps_the_story(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    # A reply to the account's story read as its words alone ("Love it!"), and the story,
    # whose link Meta lets expire, was not kept.
    base, _ = files
    inbox = make_inbox(
        client,
        world,
        "instagram",
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
        },
    )
    story = {"story": {"url": f"{base}/meta-cdn/pic", "id": "17890455425180000"}}
    reply = {"mid": "m_STORY", "text": "Love it!", "reply_to": story}
    event = meta_event("instagram", {"timestamp": 1458692752478, "message": reply})
    assert meta_post(client, "instagram", inbox, event).status_code == 200
    Worker(database, settings).run_until_idle()
    conv = only_conversation(client, world, inbox)
    assert conv["messages"][0]["text"] == "[reply to your story] Love it!"
    (stored,) = attachments_of(client, world, conv)
    assert stored["filename"] == "instagram-story-0.png"


def messenger_files(client: TestClient, world: World, base: str, *paths: str) -> tuple[str, str]:
    """A Messenger inbox and a customer's message carrying a file at each of ``paths`` of
    the stand-in CDN: the inbox's id and the message's."""
    inbox = make_inbox(
        client,
        world,
        "messenger",
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
        },
    )
    atts = [{"type": "image", "payload": {"url": f"{base}{p}"}} for p in paths]
    message = {"mid": "m_FILES", "attachments": atts}
    event = meta_event("page", {"timestamp": 1458692752478, "message": message})
    assert meta_post(client, "messenger", inbox, event).status_code == 200
    conv = only_conversation(client, world, inbox)
    return inbox, str(conv["messages"][0]["id"])


def fetch_state(database: Database, message_id: str) -> tuple[Job, list[str], dict[str, Any]]:
    """The fetch job, the names of the files kept and the message's meta."""
    with database.session(write=False) as db:
        job = db.scalars(select(Job).where(Job.name == "fetch_media")).one()
        names = db.scalars(
            select(Attachment.filename).where(Attachment.message_id == message_id)
        ).all()
        message = db.get(Message, message_id)
        assert message is not None
        return job, sorted(names), dict(message.meta)


def fetch_now(database: Database, settings: Settings, **job: object) -> None:
    with database.session() as db:
        db.execute(update(Job).where(Job.name == "fetch_media").values(run_at=utcnow(), **job))
    Worker(database, settings).run_until_idle()


def test_a_file_the_provider_no_longer_gives_is_noted_and_the_others_are_kept(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    # Meta's CDN URLs expire: one that answers 404 failed the whole job, five times, and
    # the message kept neither file, with nothing saying so.
    base, _ = files
    _, message_id = messenger_files(client, world, base, "/meta-cdn/pic", "/meta-cdn/gone")
    Worker(database, settings).run_until_idle()
    job, names, meta = fetch_state(database, message_id)
    assert job.state == JobState.done and names == ["messenger-image-0.png"]
    assert meta["notes"] == ["a file the provider no longer gives (404) was not kept"]


def test_a_file_the_provider_cannot_give_now_is_asked_for_again_alone(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    base, handler = files
    handler.flaky = True
    _, message_id = messenger_files(client, world, base, "/meta-cdn/pic", "/meta-cdn/flaky")
    Worker(database, settings).run_until_idle()
    job, names, meta = fetch_state(database, message_id)
    # What came is kept at once; the job waits to try the other again.
    assert job.state == JobState.queued and names == ["messenger-image-0.png"]
    assert (job.last_error or "").endswith(
        "NotYet: 1 file(s) not given yet: the provider answered 503"
    )
    assert not meta.get("media_fetched") and not meta.get("notes")
    handler.flaky = False
    fetch_now(database, settings)
    job, names, meta = fetch_state(database, message_id)
    assert job.state == JobState.done and names == [
        "messenger-image-0.png",
        "messenger-image-1.png",
    ]
    assert meta["media_fetched"] and not meta["notes"] and "media_settled" not in meta
    assert [p for p, _ in handler.calls].count("/meta-cdn/pic") == 1  # not fetched again


def test_a_file_never_given_is_noted_when_the_fetch_gives_up(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    files: tuple[str, type[Files]],
) -> None:
    base, handler = files
    handler.flaky = True
    _, message_id = messenger_files(client, world, base, "/meta-cdn/flaky", "/meta-cdn/pic")
    Worker(database, settings).run_until_idle()
    fetch_now(database, settings, attempts=4)  # its last
    job, names, meta = fetch_state(database, message_id)
    assert job.state == JobState.dead and names == ["messenger-image-1.png"]
    assert meta["notes"] == [media.NOT_FETCHED] and meta["media_fetched"]
    # An admin retries the dead job once the provider is back: the missing file only.
    handler.flaky = False
    with database.session() as db:
        assert retry_all_dead(db, workspace_id=world.acme.workspace.id) == 1
    fetch_now(database, settings)
    job, names, meta = fetch_state(database, message_id)
    assert job.state == JobState.done and names == [
        "messenger-image-0.png",
        "messenger-image-1.png",
    ]
    assert meta["notes"] == [] and meta["media_fetched"]
    assert [p for p, _ in handler.calls].count("/meta-cdn/pic") == 1


def test_the_fetch_is_queued_in_the_messages_own_transaction(
    world: World, database: Database, settings: Settings
) -> None:
    # Committed together or not at all: a crash after the message's commit cannot leave
    # its files unfetched, and the provider's retry (a duplicate) does not queue them twice.
    inbox = world.acme.inbox
    assert inbox is not None

    def photo() -> InboundMessage:
        return InboundMessage(
            inbox_id=inbox.id,
            external_id="wamid.PHOTO",
            handles=[handle(IdentityKind.phone, "+14155550123")],
            meta={"media": [{"id": "MEDIA-1"}]},
            fetch_media=True,
        )

    def fetches() -> list[dict[str, Any]]:
        with database.session(write=False) as db:
            return [j.args for j in db.scalars(select(Job).where(Job.name == "fetch_media"))]

    with pytest.raises(RuntimeError), database.session() as db:
        receive(db, photo(), settings=settings)
        raise RuntimeError("the transaction fails after the message")
    assert fetches() == []
    with database.session() as db:
        first = receive(db, photo(), settings=settings)
    with database.session() as db:
        assert receive(db, photo(), settings=settings).duplicate
    assert fetches() == [{"message_id": first.message.id}]


def test_a_media_address_rapport_does_not_call_is_logged_by_its_reason_not_its_host(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The warning carried the refusal's text, which names the host of the file's address:
    # one a customer's payload brought, and logs hold no contact data at WARNING.
    settings.outbound_private_ok = False
    inbox = make_inbox(
        client,
        world,
        "messenger",
        {
            "page_id": "PAGE_ID",
            "page_access_token": "page-token",
            "app_secret": "page-app-secret",
            "verify_token": "vt",
        },
    )
    host = "zoe-quist-photos.local"
    picture = {"type": "image", "payload": {"url": f"https://{host}/pic.jpg"}}
    event = meta_event(
        "page", {"timestamp": 1458692752478, "message": {"mid": "m_PIC", "attachments": [picture]}}
    )
    assert meta_post(client, "messenger", inbox, event).status_code == 200
    with caplog.at_level(logging.INFO, logger="rapport"):
        Worker(database, settings).run_until_idle()
    conv = only_conversation(client, world, inbox)
    assert "does not call" in " ".join(conv["messages"][0]["meta"]["notes"])
    (said,) = [r for r in caplog.records if getattr(r, "event", None) == "media.blocked"]
    assert said.levelno == logging.WARNING and said.__dict__["reason"] == "local_name"
    logged = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    assert not [line for line in logged if host in line]
