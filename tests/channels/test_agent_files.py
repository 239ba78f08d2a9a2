"""Files agents send: the upload API, and each provider receiving the documented media
payload with a signed link that serves exactly the file, and nothing once tampered with."""

import json
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.config import Settings
from rapport.conversations import files
from rapport.conversations.models import Attachment, MessagePart
from rapport.db import Database, utcnow
from rapport.jobs.models import Job
from rapport.jobs.worker import Worker
from rapport.storage import LocalStorage
from tests.channels.test_providers import TG_UPDATE, meta_event, meta_inbox, meta_post
from tests.channels.test_whatsapp import message_event, post_signed
from tests.conftest import auth, record_write_lock, sqlite_only
from tests.factories import World
from tests.standin import serving

PDF = b"%PDF-1.4\n% an invoice\n" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01fake image data" * 8


class Stand(BaseHTTPRequestHandler):
    """A provider's API: records each call (path, content type, raw body) and answers with
    the next of ``answers`` (status, JSON), the last one forever after."""

    calls: list[tuple[str, str, bytes]] = []
    answers: list[tuple[int, dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = type(self)
        kind.calls.append((self.path, self.headers.get("Content-Type", ""), body))
        status, out = kind.answers[0] if len(kind.answers) == 1 else kind.answers.pop(0)
        if callable(out):
            out = out(len(kind.calls))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(out).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand() -> Iterator[tuple[str, type[Stand]]]:
    handler = type("S", (Stand,), {"calls": [], "answers": []})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_port}", handler


def upload(
    client: TestClient, world: World, conv: str, name: str, data: bytes, claimed: str
) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/conversations/{conv}/uploads",
        files={"file": (name, data, claimed)},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def fetch(client: TestClient, url: str) -> Any:
    """GET one of our signed links the way a provider would: no credentials at all."""
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def tampered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?" + "&".join(f"{k}={v}" for k, v in query.items())


def last_message(client: TestClient, world: World, conv: str) -> dict[str, Any]:
    detail = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    return detail["messages"][-1]  # type: ignore[no-any-return]


# --- the upload API ------------------------------------------------------------------------


def test_an_upload_is_typed_by_its_bytes_and_refused_when_empty_or_too_large(
    client: TestClient, world: World
) -> None:
    conv = world.acme.opened.conversation.id
    # What the client claims is not what we believe: the bytes are a PDF.
    up = upload(client, world, conv, "../../invoice.pdf", PDF, "text/html")
    assert up["content_type"] == "application/pdf" and up["filename"] == "invoice.pdf"
    assert up["size"] == len(PDF) and up["conversation_id"] == conv
    page = upload(client, world, conv, "page.html", b"<script>alert(1)</script>", "image/png")
    assert page["content_type"] == "text/html"
    for data, why in ((b"", "empty"), (b"x" * (files.MAX_UPLOAD_BYTES + 1), "10 MB")):
        r = client.post(
            f"/api/v1/conversations/{conv}/uploads",
            files={"file": ("big.bin", data, "application/octet-stream")},
            headers=auth(world.bob),
        )
        assert r.status_code == 422 and why in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
    missing = client.post(f"/api/v1/conversations/{conv}/uploads", headers=auth(world.bob))
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "application/problem+json"


def test_a_note_keeps_its_files_and_an_upload_is_used_once(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    conv = world.acme.opened.conversation.id
    up = upload(client, world, conv, "notes.pdf", PDF, "application/pdf")
    r = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    note = r.json()
    assert note["kind"] == "note" and note["text"] == ""
    assert [a["filename"] for a in note["attachments"]] == ["notes.pdf"]
    again = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "again", "attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    )
    assert again.status_code == 404
    empty = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": " "}, headers=auth(world.bob)
    )
    assert empty.status_code == 422
    # The agent's file downloads like a customer's: as an attachment, never rendered.
    att = note["attachments"][0]
    got = client.get(
        f"/api/v1/conversations/{conv}/messages/{note['id']}/attachments/{att['id']}",
        headers=auth(world.bob),
    )
    assert got.content == PDF
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    # A note is never delivered, so no link is ever made for it.
    Worker(database, settings).run_until_idle()
    assert last_message(client, world, conv)["status"] == "received"


def test_uploads_never_sent_are_pruned_after_a_day(
    client: TestClient, world: World, database: Database
) -> None:
    conv = world.acme.opened.conversation.id
    up = upload(client, world, conv, "draft.pdf", PDF, "application/pdf")
    with database.session() as db:
        assert files.prune_uploads(db) == []
        assert len(files.prune_uploads(db, now=utcnow() + timedelta(days=1, minutes=1))) == 1
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    )
    assert r.status_code == 404


# --- signed links --------------------------------------------------------------------------


def test_a_signed_link_serves_only_its_file_until_it_expires(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    conv = world.acme.opened.conversation.id
    up = upload(client, world, conv, "page.html", b"<script>alert(1)</script>", "text/html")
    note = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "x", "attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    ).json()
    key = settings.secret_key.get_secret_value()
    with database.session(write=False) as db:
        att = db.get(Attachment, note["attachments"][0]["id"])
        assert att is not None
        link = files.signed_link(public_url=settings.public_url, secret_key=key, attachment=att)
        old = files.signed_link(
            public_url=settings.public_url,
            secret_key=key,
            attachment=att,
            now=utcnow() - timedelta(days=2),
        )
    got = fetch(client, link.url)
    assert got.status_code == 200 and got.content == b"<script>alert(1)</script>"
    # Never a page of our origin, whatever the file says it is.
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    parts = urlsplit(link.url)
    head = client.head(f"{parts.path}?{parts.query}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(b"<script>alert(1)</script>"))
    sig = parse_qs(urlsplit(link.url).query)["sig"][0]
    forged_sig = ("0" if sig[0] != "0" else "1") + sig[1:]
    for bad in (
        tampered(link.url, sig=forged_sig),
        tampered(link.url, expires=str(link.expires + 3600)),
        urlsplit(old.url).path + "?" + urlsplit(old.url).query,
        link.url.split("?")[0],
    ):
        r = fetch(client, bad) if bad.startswith("http") else client.get(bad)
        assert r.status_code == 404, bad
        assert r.headers["content-type"] == "application/problem+json"
    # The signature is for one attachment: another id with it is refused.
    other = urlsplit(link.url)
    swapped = other.path.replace(att.id, "f" * 32) + "?" + other.query
    assert client.get(swapped).status_code == 404


def signed_pdf(client: TestClient, world: World, database: Database, settings: Settings) -> str:
    """The signed link of a PDF bob attached to a note."""
    conv = world.acme.opened.conversation.id
    up = upload(client, world, conv, "invoice.pdf", PDF, "application/pdf")
    note = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "x", "attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    ).json()
    with database.session(write=False) as db:
        att = db.get(Attachment, note["attachments"][0]["id"])
        assert att is not None
        key = settings.secret_key.get_secret_value()
        return files.signed_link(public_url=settings.public_url, secret_key=key, attachment=att).url


def test_a_link_signed_with_non_ascii_text_is_refused_as_any_other_forgery(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Compared as text, a signature with a non-ASCII character raised (a 500), not a 404.
    url = signed_pdf(client, world, database, settings)
    assert fetch(client, url).status_code == 200
    for sig in ("%C3%A9" * 64, "%EF%BC%90" * 64):  # é, and a full-width 0
        r = client.get(tampered(url, sig=sig))
        assert r.status_code == 404, sig
        assert r.headers["content-type"] == "application/problem+json"


def test_a_link_expiring_at_no_number_is_refused(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # "²" passed str.isdigit(), then int() raised (a 500), not a 404.
    url = signed_pdf(client, world, database, settings)
    r = client.get(tampered(url, expires="%C2%B2"))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


# --- providers -----------------------------------------------------------------------------


@pytest.fixture
def whatsapp(client: TestClient, world: World, stand: tuple[str, type[Stand]]) -> str:
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "WhatsApp",
            "channel": "whatsapp",
            "settings": {
                "phone_number_id": "106540352242922",
                "access_token": "EAAG-test-token",
                "app_secret": "meta-app-secret-for-tests",
                "verify_token": "v",
                "api_base_url": stand[0] + "/v21.0",
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _wamid(n: int) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "messages": [{"id": f"wamid.OUT{n}"}]}


def test_whatsapp_gets_the_text_then_a_document_and_an_image_by_signed_link(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    whatsapp: str,
    stand: tuple[str, type[Stand]],
) -> None:
    _, api = stand
    api.answers = [(200, _wamid)]  # type: ignore[list-item]
    post_signed(client, whatsapp, message_event("wamid.IN1", "send me the invoice"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": whatsapp}, headers=auth(world.bob)
    ).json()["items"]
    pdf = upload(client, world, conv["id"], "invoice.pdf", PDF, "application/pdf")
    png = upload(client, world, conv["id"], "parcel.png", PNG, "image/png")
    sent = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Here you are.", "attachment_ids": [pdf["id"], png["id"]]},
        headers=auth(world.bob),
    )
    assert sent.status_code == 201, sent.text
    assert [a["filename"] for a in sent.json()["attachments"]] == ["invoice.pdf", "parcel.png"]
    Worker(database, settings).run_until_idle()
    bodies = [json.loads(body) for _, _, body in api.calls]
    assert [p for p, _, _ in api.calls] == ["/v21.0/106540352242922/messages"] * 3
    envelope = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    assert all(b.items() >= (envelope | {"to": "16505551234"}).items() for b in bodies)
    assert bodies[0]["type"] == "text" and bodies[0]["text"]["body"] == "Here you are."
    assert bodies[1]["type"] == "document"
    assert bodies[1]["document"]["filename"] == "invoice.pdf"
    assert set(bodies[1]["document"]) == {"link", "filename"}
    assert bodies[2]["type"] == "image" and set(bodies[2]["image"]) == {"link"}
    doc = fetch(client, bodies[1]["document"]["link"])
    assert doc.status_code == 200 and doc.content == PDF
    assert doc.headers["content-type"] == "application/pdf"
    image = fetch(client, bodies[2]["image"]["link"])
    assert image.content == PNG and image.headers["content-type"] == "image/png"
    assert fetch(client, tampered(bodies[1]["document"]["link"], sig="0" * 64)).status_code == 404
    out = last_message(client, world, conv["id"])
    assert out["status"] == "sent" and out["external_id"] == "wamid.OUT3"
    assert out["meta"]["parts_sent"] == {
        "text": "wamid.OUT1",
        f"file:{out['attachments'][0]['id']}": "wamid.OUT2",
        f"file:{out['attachments'][1]['id']}": "wamid.OUT3",
    }


def test_a_file_the_provider_fails_is_retried_without_sending_the_text_twice(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    whatsapp: str,
    stand: tuple[str, type[Stand]],
) -> None:
    _, api = stand
    refused = {"error": {"code": 131053, "message": "Media upload error"}}
    api.answers = [(200, _wamid(1)), (503, {}), (200, _wamid(3)), (400, refused)]
    post_signed(client, whatsapp, message_event("wamid.IN2", "hello"))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": whatsapp}, headers=auth(world.bob)
    ).json()["items"]
    pdf = upload(client, world, conv["id"], "invoice.pdf", PDF, "application/pdf")
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Here.", "attachment_ids": [pdf["id"]]},
        headers=auth(world.bob),
    )
    worker = Worker(database, settings)
    worker.run_until_idle()
    assert len(api.calls) == 2  # the text went, the file met a 503
    assert last_message(client, world, conv["id"])["status"] == "queued"
    with database.session() as db:  # the retry is due now rather than after its backoff
        db.execute(update(Job).where(Job.name == "deliver").values(run_at=utcnow()))
    worker.run_until_idle()
    assert len(api.calls) == 3
    assert json.loads(api.calls[2][2])["type"] == "document"  # the text was not sent again
    out = last_message(client, world, conv["id"])
    assert out["status"] == "sent" and out["external_id"] == "wamid.OUT3"

    # A file the provider refuses for good fails the message, saying which file and why.
    again = upload(client, world, conv["id"], "contract.pdf", PDF, "application/pdf")
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"attachment_ids": [again["id"]]},
        headers=auth(world.bob),
    )
    worker.run_until_idle()
    out = last_message(client, world, conv["id"])
    assert out["status"] == "failed"
    assert "131053" in out["error"] and "contract.pdf" in out["error"]


def test_telegram_gets_a_photo_by_link_and_other_documents_uploaded(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    stand: tuple[str, type[Stand]],
) -> None:
    url, api = stand
    api.answers = [(200, lambda n: {"ok": True, "result": {"message_id": 1400 + n}})]  # type: ignore[list-item]
    inbox = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Telegram",
            "channel": "telegram",
            "settings": {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
        },
        headers=auth(world.alice),
    ).json()["id"]
    client.post(
        f"/webhooks/telegram/{inbox}",
        json=TG_UPDATE,
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
    )
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    ids = [
        upload(client, world, conv["id"], name, data, "application/octet-stream")["id"]
        for name, data in (
            ("parcel.png", PNG),
            ("invoice.pdf", PDF),
            ("notes.txt", b"plain text notes\n"),
        )
    ]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Files:", "attachment_ids": ids},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    paths = [p for p, _, _ in api.calls]
    assert paths == [
        "/bot123:ABC/sendMessage",
        "/bot123:ABC/sendPhoto",
        "/bot123:ABC/sendDocument",
        "/bot123:ABC/sendDocument",
    ]
    text, photo, pdf = (json.loads(body) for _, _, body in api.calls[:3])
    assert text == {"chat_id": "1111111", "text": "Files:"}
    assert photo["chat_id"] == "1111111" and fetch(client, photo["photo"]).content == PNG
    assert fetch(client, pdf["document"]).content == PDF
    # A plain-text file cannot go by URL (Telegram takes only GIF, PDF and ZIP that way).
    _, content_type, body = api.calls[3]
    assert content_type.startswith("multipart/form-data; boundary=")
    part = message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    ).get_payload()
    fields = {p.get_param("name", header="content-disposition"): p for p in part}  # type: ignore[union-attr]
    assert fields["chat_id"].get_payload() == "1111111"
    assert fields["document"].get_filename() == "notes.txt"
    assert fields["document"].get_payload(decode=True) == b"plain text notes\n"
    out = last_message(client, world, conv["id"])
    assert out["status"] == "sent" and out["external_id"] == "1111111:1404"
    # Each part is known by chat and id, as inbound messages are: a Telegram message id
    # counts within its chat, so another chat's message 1401 is another message.
    with database.session(write=False) as db:
        parts = db.scalars(
            select(MessagePart.external_id)
            .where(MessagePart.message_id == out["id"])
            .order_by(MessagePart.position)
        ).all()
    assert parts == ["1111111:1401", "1111111:1402", "1111111:1403", "1111111:1404"]


def test_files_for_a_customer_who_wrote_in_a_telegram_group_go_to_that_group(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    stand: tuple[str, type[Stand]],
) -> None:
    # As the text does: sent to the user's private chat, Telegram refused them unless the
    # user had started the bot, and they never showed in the group.
    url, api = stand
    api.answers = [(200, lambda n: {"ok": True, "result": {"message_id": 1400 + n}})]  # type: ignore[list-item]
    inbox = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Telegram",
            "channel": "telegram",
            "settings": {"bot_token": "123:ABC", "secret_token": "s3cret", "api_base_url": url},
        },
        headers=auth(world.alice),
    ).json()["id"]
    group = {"id": -100222, "type": "group", "title": "Acme fans"}
    update = {**TG_UPDATE, "message": {**TG_UPDATE["message"], "chat": group}}  # type: ignore[dict-item]
    client.post(
        f"/webhooks/telegram/{inbox}",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"},
    )
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    ids = [
        upload(client, world, conv["id"], name, data, "application/octet-stream")["id"]
        for name, data in (("parcel.png", PNG), ("notes.txt", b"plain text notes\n"))
    ]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"attachment_ids": ids},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    replying = {"message_id": 1365, "allow_sending_without_reply": True}
    photo = json.loads(api.calls[0][2])
    assert photo["chat_id"] == "-100222" and photo["reply_parameters"] == replying
    _, content_type, body = api.calls[1]
    part = message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    ).get_payload()
    fields = {p.get_param("name", header="content-disposition"): p for p in part}  # type: ignore[union-attr]
    assert fields["chat_id"].get_payload() == "-100222"
    assert json.loads(fields["reply_parameters"].get_payload()) == replying
    out = last_message(client, world, conv["id"])
    assert out["status"] == "sent" and out["external_id"] == "-100222:1402"


def test_twilio_gets_the_files_as_mms_media_urls(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    stand: tuple[str, type[Stand]],
) -> None:
    url, api = stand
    api.answers = [(200, {"sid": "MM_OUT_1", "status": "queued"})]
    inbox = client.post(
        "/api/v1/inboxes",
        json={
            "name": "SMS",
            "channel": "twilio_sms",
            "settings": {
                "account_sid": "AC00000000000000000000000000000000",
                "auth_token": "twilio-token",
                "phone_number": "+14155550100",
                "api_base_url": url,
            },
        },
        headers=auth(world.alice),
    ).json()["id"]
    from tests.channels.test_providers import SMS, twilio_post

    assert twilio_post(client, settings, f"/webhooks/twilio_sms/{inbox}", SMS, "twilio-token")
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    ids = [
        upload(client, world, conv["id"], n, d, "image/png")["id"]
        for n, d in (("a.png", PNG), ("b.pdf", PDF))
    ]
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Your label", "attachment_ids": ids},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    [(path, _, body)] = api.calls
    form = parse_qs(body.decode())
    assert path == "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json"
    assert form["Body"] == ["Your label"] and len(form["MediaUrl"]) == 2
    assert [fetch(client, u).content for u in form["MediaUrl"]] == [PNG, PDF]

    # More than an MMS carries in all: refused before anything is stored or sent, and the
    # files stay to be sent in two messages.
    big = [
        upload(client, world, conv["id"], f"scan{n}.png", PNG + bytes(3 * 1024 * 1024), "image/png")
        for n in (1, 2)
    ]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Both scans", "attachment_ids": [b["id"] for b in big]},
        headers=auth(world.bob),
    )
    assert r.status_code == 422 and "at most 5 MB" in r.json()["detail"]
    for one in big:
        r = client.post(
            f"/api/v1/conversations/{conv['id']}/messages",
            json={"text": "A scan", "attachment_ids": [one["id"]]},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text


def test_messenger_gets_each_file_as_an_attachment_by_url(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    stand: tuple[str, type[Stand]],
) -> None:
    url, api = stand
    api.answers = [(200, lambda n: {"recipient_id": "PSID", "message_id": f"m_{n}"})]  # type: ignore[list-item]
    inbox = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Messenger",
            "channel": "messenger",
            "settings": {
                "page_id": "P1",
                "page_access_token": "page-token",
                "app_secret": "meta-app-secret-for-tests",
                "verify_token": "v",
                "api_base_url": url,
            },
        },
        headers=auth(world.alice),
    ).json()["id"]
    event = meta_event(
        "page",
        {
            "timestamp": int(utcnow().timestamp() * 1000),
            "message": {"mid": "m_in", "text": "hi"},
        },
        page="P1",
        sender="PSID",
        time=1,
    )
    body = json.dumps(event).encode()
    import hashlib
    import hmac

    sig = hmac.new(b"meta-app-secret-for-tests", body, hashlib.sha256).hexdigest()
    client.post(
        f"/webhooks/messenger/{inbox}",
        content=body,
        headers={"X-Hub-Signature-256": f"sha256={sig}", "Content-Type": "application/json"},
    )
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    up = upload(client, world, conv["id"], "invoice.pdf", PDF, "application/pdf")
    client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    )
    Worker(database, settings).run_until_idle()
    [(path, _, raw)] = api.calls
    sent = json.loads(raw)
    assert path == "/me/messages?access_token=page-token"
    assert sent["recipient"] == {"id": "PSID"} and sent["messaging_type"] == "RESPONSE"
    attachment = sent["message"]["attachment"]
    assert attachment["type"] == "file" and attachment["payload"]["is_reusable"] is False
    assert fetch(client, attachment["payload"]["url"]).content == PDF
    assert last_message(client, world, conv["id"])["external_id"] == "m_1"


def test_instagram_refuses_what_it_does_not_take_before_anything_is_sent(
    client: TestClient, world: World, database: Database
) -> None:
    # Instagram takes images (8 MB), video, audio and PDF: a text file, or a 9 MB image,
    # was stored, sent, refused by Meta, and the reply failed.
    inbox = meta_inbox(client, world, "instagram")
    hello = {
        "timestamp": int(utcnow().timestamp() * 1000),
        "message": {"mid": "m_in", "text": "hi"},
    }
    meta_post(client, "instagram", inbox, meta_event("instagram", hello))
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    notes = upload(client, world, conv["id"], "notes.txt", b"plain text notes\n", "text/plain")
    big = upload(client, world, conv["id"], "scan.png", PNG + bytes(9 * 1024 * 1024), "image/png")
    path = f"/api/v1/conversations/{conv['id']}/messages"
    for up, why in ((notes, "does not take notes.txt"), (big, "scan.png up to 8 MB")):
        r = client.post(path, json={"attachment_ids": [up["id"]]}, headers=auth(world.bob))
        assert r.status_code == 422 and why in r.json()["detail"], r.text
    pdf = upload(client, world, conv["id"], "invoice.pdf", PDF, "application/pdf")
    r = client.post(path, json={"attachment_ids": [pdf["id"]]}, headers=auth(world.bob))
    assert r.status_code == 201, r.text


def test_the_api_channels_webhook_lists_the_files_with_their_links(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    stand: tuple[str, type[Stand]],
) -> None:
    url, hook = stand
    hook.answers = [(200, {})]
    inbox = client.post(
        "/api/v1/inboxes",
        json={"name": "Shop", "channel": "api", "settings": {"webhook_url": f"{url}/hook"}},
        headers=auth(world.alice),
    ).json()["id"]
    r = client.post(
        f"/api/v1/inboxes/{inbox}/messages",
        json={"external_id": "shop-1", "text": "label?", "from": {"email": "kim@example.com"}},
        headers=auth(world.alice),
    )
    conv = r.json()["conversation_id"]
    up = upload(client, world, conv, "label.pdf", PDF, "application/pdf")
    sent = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Your label", "attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    ).json()
    Worker(database, settings).run_until_idle()
    [(_, _, raw)] = hook.calls
    [listed] = json.loads(raw)["message"]["attachments"]
    assert {k: listed[k] for k in ("filename", "content_type", "size")} == {
        "filename": "label.pdf",
        "content_type": "application/pdf",
        "size": len(PDF),
    }
    assert fetch(client, listed["url"]).content == PDF
    one = client.get(
        f"/api/v1/conversations/{conv}/messages/{sent['id']}", headers=auth(world.bob)
    ).json()
    assert [a["id"] for a in one["attachments"]] == [listed["id"]]


def test_a_channel_that_cannot_carry_files_refuses_them_before_anything_is_stored(
    client: TestClient, world: World
) -> None:
    voice = client.post(
        "/api/v1/inboxes",
        json={"name": "Phone", "channel": "twilio_voice", "settings": {}},
        headers=auth(world.alice),
    ).json()["id"]
    conv = world.acme.opened.conversation.id
    up = upload(client, world, conv, "a.pdf", PDF, "application/pdf")
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "see file", "attachment_ids": [up["id"]], "inbox_id": voice},
        headers=auth(world.bob),
    )
    assert r.status_code == 422 and "twilio_voice" in r.json()["detail"]
    # The upload is still there to send another way.
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "see file", "attachment_ids": [up["id"]]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201 and len(r.json()["attachments"]) == 1


def test_whatsapp_sends_a_large_image_as_a_document() -> None:
    from rapport.channels import base
    from rapport.channels.whatsapp import IMAGE_MAX, media_body

    def file(size: int) -> base.OutboundFile:
        return base.OutboundFile("i", "big.png", "image/png", size, "https://x/f", lambda: b"")

    assert media_body(file(IMAGE_MAX))["type"] == "image"
    big = media_body(file(IMAGE_MAX + 1))
    assert big == {"type": "document", "document": {"link": "https://x/f", "filename": "big.png"}}


@sqlite_only
def test_an_upload_is_written_before_its_transaction_takes_the_write_lock(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 MB hashed and written inside the request's write transaction held SQLite's one
    # writer (ingest included) meanwhile.
    written = record_write_lock(monkeypatch, LocalStorage, "put", database)
    up = upload(client, world, world.acme.opened.conversation.id, "a.pdf", PDF, "application/pdf")
    assert up["size"] == len(PDF)
    assert written == [False]
