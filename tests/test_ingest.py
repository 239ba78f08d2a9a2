"""The one inbound path: idempotency, identity, threading, storage, events, batching."""

import base64
import os
import signal
import sqlite3
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from rapport.app import create_app
from rapport.config import Settings
from rapport.conversations.models import Attachment, Conversation, Message, Status
from rapport.customers.models import Customer
from rapport.db import Database, transient, utcnow
from rapport.ingest import InboundMessage, IngestWriter, WriterProcess
from rapport.metrics import INGEST_BATCH
from rapport.realtime.models import StreamEvent
from rapport.storage import LocalStorage
from tests.conftest import (
    auth,
    postgresql_only,
    published_events,
    record_write_lock,
    sqlite_only,
)
from tests.factories import World


def post(client: TestClient, token: str, inbox_id: str, **body: object):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/inboxes/{inbox_id}/messages", json=body, headers=auth(token))


def count(database: Database, model: type, *where: object) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def by_email(
    world: World, external_id: str, email: str, text: str, **extra: object
) -> InboundMessage:
    """A message into Acme's inbox from ``email``, as a channel would hand it over."""
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind

    return InboundMessage(
        inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
        external_id=external_id,
        text=text,
        handles=[handle(IdentityKind.email, email)],
        **extra,  # type: ignore[arg-type]
    )


def new_api_inbox(client: TestClient, token: str, name: str) -> str:
    r = client.post("/api/v1/inboxes", json={"name": name, "channel": "api"}, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_the_same_inbound_message_posted_twice_is_stored_once(
    client: TestClient, world: World, database: Database
) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    body = {
        "external_id": "wamid-77",
        "text": "where is my order?",
        "from": {"phone": "+14155550123"},
    }
    first = post(client, world.bob, inbox, **body)
    second = post(client, world.bob, inbox, **body)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["duplicate"] is True
    assert first.json()["id"] == second.json()["id"]
    assert count(database, Message, Message.external_id == "wamid-77") == 1


@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
def test_duplicates_arriving_in_one_group_commit_are_stored_once(
    world: World, database: Database, settings: Settings, process: bool
) -> None:
    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": process}))
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind

    futures = [
        writer.submit_nowait(
            InboundMessage(
                inbox_id=inbox,
                external_id="same-id",
                text="hi",
                handles=[handle(IdentityKind.email, "dup@example.com")],
            )
        )
        for _ in range(20)
    ]
    try:
        results = [f.result(30) for f in futures]
    finally:
        writer.stop()
    assert len({r.message.id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert count(database, Message, Message.external_id == "same-id") == 1


def test_one_email_address_arriving_through_two_inboxes_is_one_customer(
    client: TestClient, world: World, database: Database
) -> None:
    shop = new_api_inbox(client, world.alice, "Shop")
    app = new_api_inbox(client, world.alice, "App")
    a = post(
        client,
        world.bob,
        shop,
        external_id="s1",
        text="hi",
        **{"from": {"email": "Kim@Example.COM"}},
    )
    b = post(
        client,
        world.bob,
        app,
        external_id="a1",
        text="hello",
        **{"from": {"email": "kim@example.com"}},  # her phone's mail app writes it so
    )
    assert a.json()["customer_id"] == b.json()["customer_id"]
    assert a.json()["conversation_id"] != b.json()["conversation_id"]
    customer = client.get(
        f"/api/v1/customers/{a.json()['customer_id']}", headers=auth(world.bob)
    ).json()
    assert [i["value"] for i in customer["identities"]] == ["kim@example.com"]
    timeline = client.get(
        f"/api/v1/customers/{a.json()['customer_id']}/timeline", headers=auth(world.bob)
    ).json()
    assert [e["summary"] for e in timeline["items"]] == ["hello", "hi"]


def test_a_phone_number_written_two_ways_is_one_customer(client: TestClient, world: World) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    a = post(
        client,
        world.bob,
        inbox,
        external_id="p1",
        text="x",
        **{"from": {"phone": "+1 (415) 555-0199"}},
    )
    b = post(
        client,
        world.bob,
        inbox,
        external_id="p2",
        text="y",
        **{"from": {"phone": "001 415 555 0199"}},
    )
    assert a.json()["customer_id"] == b.json()["customer_id"]
    assert a.json()["conversation_id"] == b.json()["conversation_id"]


def test_handles_matching_two_ways_link_the_new_one_to_the_known_customer(
    client: TestClient, world: World
) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    a = post(
        client,
        world.bob,
        inbox,
        external_id="h1",
        text="x",
        **{"from": {"email": "lee@example.com"}},
    )
    b = post(
        client,
        world.bob,
        inbox,
        external_id="h2",
        text="y",
        **{"from": {"email": "lee@example.com", "phone": "+442071838750"}},
    )
    c = post(
        client,
        world.bob,
        inbox,
        external_id="h3",
        text="z",
        **{"from": {"phone": "+44 20 7183 8750"}},
    )
    assert a.json()["customer_id"] == b.json()["customer_id"] == c.json()["customer_id"]


def test_a_newcomer_whose_handles_match_nothing_is_a_new_customer(
    client: TestClient, world: World, database: Database
) -> None:
    before = count(database, Customer)
    r = post(
        client,
        world.bob,
        world.acme.inbox.id,
        external_id="n1",
        text="hi",
        **{"from": {"external_id": "crm-9"}},
    )  # type: ignore[union-attr]
    assert r.status_code == 201
    assert count(database, Customer) == before + 1


def test_threading_continues_reopens_within_the_window_and_starts_anew_after(
    client: TestClient, world: World, database: Database
) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    sender = {"from": {"email": "tess@example.com"}}
    first = post(client, world.bob, inbox, external_id="t1", text="one", **sender).json()
    second = post(client, world.bob, inbox, external_id="t2", text="two", **sender).json()
    assert second["conversation_id"] == first["conversation_id"]

    conv = first["conversation_id"]
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    )
    third = post(client, world.bob, inbox, external_id="t3", text="three", **sender).json()
    assert third["conversation_id"] == conv
    assert (
        client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()["status"]
        == "open"
    )

    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    )
    with database.session() as db:
        row = db.get(Conversation, conv)
        assert row is not None
        row.resolved_at = utcnow() - timedelta(days=30)
    fourth = post(client, world.bob, inbox, external_id="t4", text="four", **sender).json()
    assert fourth["conversation_id"] != conv
    with database.session(write=False) as db:
        assert db.get(Conversation, conv).status == Status.resolved  # type: ignore[union-attr]


def test_a_customer_reopening_their_conversation_says_so_in_the_thread_before_their_message(
    world: World, database: Database, settings: Settings
) -> None:
    # An agent's reopening wrote "Reopened" in the thread; the customer's wrote nothing,
    # and the thread read as if their message had come to an open conversation.
    from rapport.conversations import service as conversations
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind
    from rapport.db import new_id
    from rapport.ingest import receive_batch, with_triage

    conv_id = world.acme.opened.conversation.id
    with database.session() as db:
        conv = db.get(Conversation, conv_id)
        assert conv is not None
        conversations.set_status(db, conversation=conv, status=Status.resolved)
    them = [handle(IdentityKind.email, "customer@acme.example")]
    with database.session() as db:
        (recorded,) = receive_batch(
            db,
            [
                InboundMessage(
                    inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
                    external_id="ooo-back",
                    handles=them,
                    text="I am out of the office",
                    auto_reply=True,  # recorded, reopening nothing: no line
                )
            ],
            settings=settings,
        )
    assert not isinstance(recorded, BaseException) and recorded.threading == "recorded"
    # Their ids chosen before the writer, as its callers choose them: older than any id
    # the batch takes, the line's included.
    batch = [
        InboundMessage(
            inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
            external_id=None,
            message_id=new_id(),
            handles=them,
            text="It broke again",
        ),
        InboundMessage(
            inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
            external_id="again-2",
            message_id=new_id(),
            handles=them,
            text="Hello?",  # continues the conversation the message before reopened
        ),
    ]
    with published_events() as published, database.session() as db:
        outcomes = receive_batch(db, [with_triage(m) for m in batch], settings=settings)
    assert [o.threading for o in outcomes if not isinstance(o, BaseException)] == [
        "reopened",
        "continued",
    ]
    with database.session(write=False) as db:
        thread = list(
            db.scalars(
                select(Message)
                .where(Message.conversation_id == conv_id)
                .order_by(Message.created_at, Message.id)
            )
        )
        conv = db.get(Conversation, conv_id)
        assert conv is not None and conv.messages_count == len(thread)
    assert [(m.kind.value, m.sender_type, m.text) for m in thread[-5:]] == [
        ("activity", "system", "Resolved"),
        ("message", "customer", "I am out of the office"),
        ("activity", "system", "Reopened"),
        ("message", "customer", "It broke again"),
        ("message", "customer", "Hello?"),
    ]
    # As an agent's line says it, and which message did it (for undoing a merge: bookkeeping)
    assert thread[-3].meta == {"status": "open", "by": None, "reopened_by": thread[-2].id}
    said = [(e["type"], e["payload"].get("text")) for e in published]
    assert said[: said.index(("message.created", "It broke again"))][-1] == (
        "message.created",
        "Reopened",
    )


@pytest.mark.parametrize(
    ("status", "said"), [(Status.pending, "Marked open"), (Status.snoozed, "Back from snooze")]
)
def test_a_customer_writing_to_a_pending_or_snoozed_conversation_says_so_in_the_thread(
    world: World, database: Database, settings: Settings, status: Status, said: str
) -> None:
    # Their message opened it again, but only an agent's change wrote a line: the thread
    # read as if it had stayed open all along.
    from rapport.conversations import service as conversations
    from rapport.db import new_id
    from rapport.ingest import receive_batch

    conv_id = world.acme.opened.conversation.id
    with database.session() as db:
        conv = db.get(Conversation, conv_id)
        assert conv is not None
        conversations.set_status(
            db, conversation=conv, status=status, snoozed_until=utcnow() + timedelta(days=1)
        )
    email = "customer@acme.example"
    with database.session() as db:  # an out-of-office changes no status: no line
        (recorded,) = receive_batch(
            db, [by_email(world, "ooo", email, "Away", auto_reply=True)], settings=settings
        )
    assert not isinstance(recorded, BaseException)
    batch = [
        by_email(world, "back-1", email, "Any news?", message_id=new_id()),
        by_email(world, "back-2", email, "Hello?", message_id=new_id()),  # open by then
    ]
    with published_events() as published, database.session() as db:
        outcomes = receive_batch(db, batch, settings=settings)
    assert [o.threading for o in outcomes if not isinstance(o, BaseException)] == [
        "continued",
        "continued",
    ]
    with database.session(write=False) as db:
        thread = list(
            db.scalars(
                select(Message)
                .where(Message.conversation_id == conv_id)
                .order_by(Message.created_at, Message.id)
            )
        )
        conv = db.get(Conversation, conv_id)
        assert conv is not None and conv.status == Status.open and conv.snoozed_until is None
        assert conv.messages_count == len(thread)
    assert [(m.kind.value, m.sender_type, m.text) for m in thread[-4:]] == [
        ("message", "customer", "Away"),
        ("activity", "system", said),
        ("message", "customer", "Any news?"),
        ("message", "customer", "Hello?"),
    ]
    assert thread[-3].meta == {"status": "open", "by": None}  # as an agent's, by nobody
    lines = [(e["type"], e["payload"].get("text")) for e in published]
    assert lines[: lines.index(("message.created", "Any news?"))][-1] == (
        "message.created",
        said,
    )
    # And agents' lists and open pages are told it is open: they kept it pending or snoozed.
    updates = [e["payload"] for e in published if e["type"] == "conversation.updated"]
    assert [(u["id"], u["status"]) for u in updates] == [(conv_id, "open")]


def test_a_thread_hint_naming_another_customers_conversation_is_ignored(
    client: TestClient, world: World
) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    victim = world.acme.opened.conversation.id
    r = post(
        client,
        world.bob,
        inbox,
        external_id="x1",
        text="let me in",
        conversation_id=victim,
        **{"from": {"email": "intruder@example.com"}},
    )
    assert r.json()["conversation_id"] != victim


def test_html_is_sanitized_and_attachments_are_stored(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqlite = database.is_sqlite
    written = record_write_lock(monkeypatch, LocalStorage, "put", database) if sqlite else []
    r = post(
        client,
        world.bob,
        world.acme.inbox.id,
        external_id="html-1",  # type: ignore[union-attr]
        html='<p onclick="steal()">Hi<script>alert(1)</script><img src=x onerror=alert(2)></p>',
        attachments=[
            {
                "filename": "note.txt",
                "content_type": "text/plain",
                "data_base64": base64.b64encode(b"hello file").decode(),
            }
        ],
        **{"from": {"email": "h@example.com"}},
    )
    assert r.status_code == 201, r.text
    html = r.json()["html"]
    assert "script" not in html and "onerror" not in html and "onclick" not in html
    assert "<p>Hi" in html
    with database.session(write=False) as db:
        att = db.scalar(select(Attachment).where(Attachment.message_id == r.json()["id"]))
        assert att is not None and att.size == len(b"hello file")
    assert (settings.attachments_dir / att.storage_key).read_bytes() == b"hello file"
    # Written before the batch's transaction (10 MB files must not hold the write lock).
    assert written == ([False] if sqlite else [])


def test_the_api_channels_answer_is_the_message_as_the_api_reads_it_files_included(
    client: TestClient, world: World
) -> None:
    # The answer to a post said "attachments": [] for a message posted with files, which
    # the conversation's API then listed: a client keeping the answer's ids had none.
    assert world.acme.inbox is not None
    body = {
        "external_id": "with-file",
        "text": "my receipt",
        "html": "<p>my receipt</p>",
        "attachments": [
            {
                "filename": "receipt.png",
                "content_type": "image/png",
                "data_base64": base64.b64encode(b"\x89PNG\r\n\x1a\nreceipt").decode(),
            }
        ],
        "from": {"email": "files@example.com"},
    }
    posted = post(client, world.bob, world.acme.inbox.id, **body)
    assert posted.status_code == 201, posted.text
    again = post(client, world.bob, world.acme.inbox.id, **body)  # a retry: the stored one
    assert again.status_code == 200, again.text
    message = posted.json()
    read = client.get(
        f"/api/v1/conversations/{message['conversation_id']}/messages/{message['id']}",
        headers=auth(world.bob),
    ).json()
    for answer in (message, again.json()):
        assert [a["filename"] for a in answer["attachments"]] == ["receipt.png"]
        assert {k: answer[k] for k in read} == read


def test_ingest_records_its_events_in_the_outbox(
    client: TestClient, world: World, database: Database
) -> None:
    before = count(database, StreamEvent)
    post(
        client,
        world.bob,
        world.acme.inbox.id,
        external_id="ev-1",
        text="hi",
        **{"from": {"email": "e@example.com"}},
    )  # type: ignore[union-attr]
    with database.session(write=False) as db:
        types = list(db.scalars(select(StreamEvent.type).order_by(StreamEvent.id).offset(before)))
    assert types == ["message.created", "conversation.created"]


def test_each_event_of_a_group_commit_is_published_with_the_id_it_is_stored_under(
    world: World, database: Database, settings: Settings
) -> None:
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind
    from rapport.ingest import receive_batch, with_triage

    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    msgs = [
        with_triage(
            InboundMessage(
                inbox_id=inbox,
                external_id=f"batch-{i}",
                text=f"message {i}",
                # every other one a returning customer: some messages start conversations
                handles=[handle(IdentityKind.email, f"batch{i // 2}@example.com")],
            )
        )
        for i in range(12)
    ]
    with published_events() as published, database.session() as db:
        receive_batch(db, msgs, settings=settings)
    assert len(published) == 12 + 6  # a message each, a new conversation every other one
    with database.session(write=False) as db:
        stored = {
            e.id: (e.type, e.payload)
            for e in db.scalars(
                select(StreamEvent).where(StreamEvent.id.in_([p["id"] for p in published]))
            )
        }
    assert {p["id"]: (p["type"], p["payload"]) for p in published} == stored
    assert [p["id"] for p in published] == sorted(p["id"] for p in published)  # type: ignore[type-var]


def test_bad_input_gets_a_problem_document_and_stores_nothing(
    client: TestClient, world: World, database: Database
) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    before = count(database, Message)
    no_handle = post(
        client, world.bob, inbox, external_id="b1", text="hi", **{"from": {"name": "Anon"}}
    )
    assert no_handle.status_code == 422
    assert no_handle.headers["content-type"] == "application/problem+json"
    assert no_handle.json()["errors"]
    bad_email = post(
        client, world.bob, inbox, external_id="b2", text="hi", **{"from": {"email": "not-an-email"}}
    )
    assert bad_email.status_code == 422 and "email" in bad_email.json()["detail"]
    empty = post(client, world.bob, inbox, external_id="b3", **{"from": {"email": "a@example.com"}})
    assert empty.status_code == 422
    assert count(database, Message) == before


@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
def test_a_failing_message_does_not_take_its_batch_down(
    world: World, database: Database, settings: Settings, process: bool
) -> None:
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind
    from rapport.problems import NotFound

    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": process}))
    good = world.acme.inbox.id  # type: ignore[union-attr]
    msgs = [
        InboundMessage(
            inbox_id=good if i != 3 else "no-such-inbox",
            external_id=f"batch-{i}",
            text="hi",
            handles=[handle(IdentityKind.email, f"b{i}@example.com")],
        )
        for i in range(8)
    ]
    futures = [writer.submit_nowait(m) for m in msgs]
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result(30).duplicate)
        except NotFound as exc:  # from the writer process too, as the problem it was
            assert exc.detail == "inbox not found" and exc.status == 404
            outcomes.append("not found")
    writer.stop()
    assert outcomes == [False, False, False, "not found", False, False, False, False]
    assert count(database, Message, Message.external_id.like("batch-%")) == 7


def batches_so_far() -> float:
    return next(
        sample.value
        for metric in INGEST_BATCH.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )


@sqlite_only
@pytest.mark.parametrize("process", [True, False], ids=["writer-process", "writer-thread"])
def test_a_write_lock_held_too_long_fails_each_batch_once_with_a_retryable_error(
    world: World, settings: Settings, process: bool
) -> None:
    # Someone holds SQLite's one write lock longer than a write waits for it (here 0.3 s;
    # ``?timeout=`` on the URL, 10 s by default). Each batch's senders are told at once to
    # try again: 503 with Retry-After. The batch is not tried again one message at a time,
    # each waiting as long again while every sender behind them waits too.
    url = f"{settings.database_url}?timeout=0.3"
    busy = settings.model_copy(update={"database_url": url, "ingest_process": process})
    database = Database(url)
    waits: list[object] = []  # each time a write waited for the lock and gave up
    event.listen(database.engine, "handle_error", waits.append)
    holder = sqlite3.connect(str(database.engine.url.database), isolation_level=None)
    try:
        with TestClient(create_app(busy, database=database)) as client:
            inbox = world.acme.inbox.id  # type: ignore[union-attr]
            sender = {"from": {"email": "busy@example.com"}}
            holder.execute("BEGIN IMMEDIATE")
            r = post(client, world.alice, inbox, external_id="busy", text="hi", **sender)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.headers["content-type"] == "application/problem+json"

            writer = IngestWriter(database, busy)
            batches, waits[:] = batches_so_far(), []
            futures = [
                writer.submit_nowait(by_email(world, f"busy-{i}", f"b{i}@example.com", "hi"))
                for i in range(6)
            ]
            for future in futures:
                with pytest.raises(OperationalError) as caught:
                    future.result(30)
                assert transient(caught.value)
            if not process:  # one wait per batch (the writer process's are its own)
                assert len(waits) == batches_so_far() - batches
            writer.stop()

            holder.execute("ROLLBACK")
            r = post(client, world.alice, inbox, external_id="busy", text="hi", **sender)
            assert r.status_code == 201, r.text
        assert count(database, Message, Message.external_id.like("busy%")) == 1
    finally:
        holder.close()
        database.dispose()


def test_posting_into_a_non_api_inbox_or_as_a_viewer_is_refused(
    client: TestClient, world: World
) -> None:
    r = post(
        client,
        world.victor,
        world.acme.inbox.id,
        external_id="v1",
        text="x",
        **{"from": {"email": "v@example.com"}},
    )  # type: ignore[union-attr]
    assert r.status_code == 403


def test_attachments_can_be_listed_and_downloaded_by_the_workspace_only(
    client: TestClient, world: World
) -> None:
    r = post(
        client,
        world.bob,
        world.acme.inbox.id,
        external_id="att-1",
        text="see file",  # type: ignore[union-attr]
        attachments=[
            {
                "filename": "<evil>.html",
                "content_type": "text/html",
                "data_base64": base64.b64encode(b"<script>alert(1)</script>").decode(),
            }
        ],
        **{"from": {"email": "att@example.com"}},
    ).json()
    base_url = f"/api/v1/conversations/{r['conversation_id']}/messages/{r['id']}/attachments"
    [att] = client.get(base_url, headers=auth(world.bob)).json()
    got = client.get(f"{base_url}/{att['id']}", headers=auth(world.bob))
    assert got.content == b"<script>alert(1)</script>"
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"evil.html\"; filename*=UTF-8''%3Cevil%3E.html"
    )
    assert client.get(f"{base_url}/{att['id']}", headers=auth(world.mallory)).status_code == 404


def test_the_writer_process_is_started_again_when_it_dies(
    world: World, database: Database, settings: Settings
) -> None:
    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": True}))
    backend = writer._backend
    assert isinstance(backend, WriterProcess)

    def message(n: int) -> InboundMessage:
        text = "Hello, is anyone there? I need help with my order, please."
        return by_email(world, f"crash-{n}", "crash@example.com", text)

    try:
        first = writer.submit_sync(message(1))
        pid = backend.pid()
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while backend._process is not None and backend._process.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = writer.submit_sync(message(2))
        assert backend.pid() not in (None, pid)
    finally:
        writer.stop()
    assert second.customer_id == first.customer_id and not second.duplicate
    assert second.conversation_id == first.conversation_id
    assert count(database, Message, Message.external_id.like("crash-%")) == 2
    # Triage ran in the writer process.
    assert second.message.meta["triage"]["language"] == "en"


@postgresql_only
def test_the_writer_process_outlives_a_dropped_database_connection(
    world: World, database: Database, settings: Settings
) -> None:
    # It pings no connection before a batch: a connection the server dropped (a restart, a
    # failover) fails the batch's first statement, and the batch is tried again on another.
    from sqlalchemy import text

    from rapport.channels.models import Inbox

    def drop_connections() -> list[object]:
        """The server ends every other connection to this database."""
        with database.engine.connect() as conn:
            dropped = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
            conn.commit()
        return list(dropped)

    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": True}))
    try:
        first = writer.submit_sync(by_email(world, "drop-1", "drop@example.com", "hello"))
        assert drop_connections()  # the writer process's connection among them
        second = writer.submit_sync(by_email(world, "drop-2", "drop@example.com", "again"))
        # Dropped again while idle, and the next message comes through an inbox the writer
        # process has not seen: it reads the database before its transaction, too.
        drop_connections()
        with database.session() as db:
            other = Inbox(workspace_id=world.acme.workspace.id, name="Other", channel="api")
            db.add(other)
        pid = writer._backend.pid()  # type: ignore[union-attr]
        third = by_email(world, "drop-3", "drop@example.com", "and again")
        third.inbox_id = other.id
        assert not writer.submit_sync(third).duplicate
        assert writer._backend.pid() == pid  # type: ignore[union-attr]
    finally:
        writer.stop()
    assert second.conversation_id == first.conversation_id and not second.duplicate
    assert count(database, Message, Message.external_id.like("drop-%")) == 3


@postgresql_only
def test_postgresql_finds_stored_messages_and_identities_by_one_probe_per_key(
    world: World, database: Database
) -> None:
    # Planned without statistics (a table never analyzed, like an inbox newer than the last
    # ANALYZE), IN lists made PostgreSQL read every message of the inbox and every handle
    # of the workspace and filter them, on every batch.
    from sqlalchemy import insert

    from rapport import ingest
    from rapport.customers.models import Identity, IdentityKind

    inbox = world.acme.inbox
    assert inbox is not None
    conv = world.acme.opened.conversation
    now = utcnow()
    rows = [
        {
            "id": f"m{n:031d}",
            "workspace_id": inbox.workspace_id,
            "conversation_id": conv.id,
            "inbox_id": inbox.id,
            "direction": "inbound",
            "kind": "message",
            "sender_type": "customer",
            "text": "hi",
            "external_id": f"ext-{n}",
            "status": "received",
            "meta": {},
            "created_at": now,
        }
        for n in range(3000)
    ]
    handles = [
        {
            "id": f"i{n:031d}",
            "workspace_id": inbox.workspace_id,
            "customer_id": conv.customer_id,
            "kind": IdentityKind.email,
            "value": f"h{n}@example.com",
            "verified": True,
            "created_at": now,
        }
        for n in range(3000)
    ]
    with database.session() as db:
        db.execute(insert(Message), rows)
        db.execute(insert(Identity), handles)
        conn = db.connection()
        for names, statement, keys in (
            (ingest._MESSAGE_KEY, ingest._STORED_BY_KEY, [(inbox.id, f"ext-{n}") for n in (1, 7)]),
            (
                ingest._IDENTITY_KEY,
                ingest._IDENTITIES_BY_KEY,
                [(inbox.workspace_id, "email", f"h{n}@example.com") for n in (1, 7)],
            ),
        ):
            params = {f"{n}s": [k[j] for k in keys] for j, n in enumerate(names)}
            sql = str(statement.compile(dialect=conn.dialect))
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, params))
            assert "Filter" not in plan and "Seq Scan" not in plan, plan
            found = conn.execute(statement, params).all()
            assert len(found) == 2


def test_what_the_writer_process_stores_reaches_the_agents_stream_and_metrics(
    settings: Settings, database: Database, world: World
) -> None:
    from rapport.app import create_app
    from rapport.metrics import INGESTED

    def counted() -> float:
        return INGESTED.labels(channel="api", outcome="new")._value.get()

    before = counted()
    app = create_app(settings.model_copy(update={"ingest_process": True}), database=database)
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    with (
        TestClient(app) as client,
        client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws,
    ):
        assert ws.receive_json()["type"] == "hello"
        stored = post(
            client,
            world.bob,
            inbox,
            external_id="live-p1",
            text="Where is my parcel? It was due on Monday.",
            **{"from": {"email": "live@example.com"}},
        )
        assert stored.status_code == 201, stored.text
        while (event := ws.receive_json())["type"] != "message.created":
            pass
        assert event["payload"]["id"] == stored.json()["id"]
    assert counted() == before + 1  # counted by the serving process, where /metrics is


def test_a_customer_first_seen_without_a_name_takes_the_next_one_and_is_found_by_it(
    client: TestClient, world: World
) -> None:
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    sender = {"email": "nameless@example.com"}
    first = post(client, world.bob, inbox, external_id="n1", text="hi", **{"from": sender})
    post(client, world.bob, inbox, external_id="n2", text="hi again", **{"from": sender})
    named = {**sender, "name": "Ottilie Quast"}
    post(client, world.bob, inbox, external_id="n3", text="it is me", **{"from": named})
    renamed = {**sender, "name": "Someone Else"}
    post(client, world.bob, inbox, external_id="n4", text="still me", **{"from": renamed})
    customer_id = first.json()["customer_id"]
    customer = client.get(f"/api/v1/customers/{customer_id}", headers=auth(world.bob)).json()
    assert customer["name"] == "Ottilie Quast"  # a name once given is not replaced
    for q in ("Ottilie", "Quast", "nameless"):
        found = client.get("/api/v1/customers", params={"q": q}, headers=auth(world.bob))
        assert [c["id"] for c in found.json()["items"]] == [customer_id], q
    assert (
        client.get("/api/v1/customers", params={"q": "Someone"}, headers=auth(world.bob)).json()[
            "items"
        ]
        == []
    )


class KillsTheWriter:
    """Unpickled in the writer process, it ends that process: a message that brings the
    writer down, as a huge attachment exhausting its memory would."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (os._exit, (1,))


def test_a_message_that_kills_the_writer_process_fails_alone(
    world: World, database: Database, settings: Settings
) -> None:
    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": True}))
    msgs = [
        by_email(
            world,
            f"poison-{i}",
            f"p{i}@example.com",
            "hello",
            meta={"bomb": KillsTheWriter()} if i == 1 else {},
        )
        for i in range(3)
    ]
    try:
        writer.start()
        futures = [writer.submit_nowait(m) for m in msgs]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(120).duplicate)
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        after = writer.submit_sync(
            by_email(world, "poison-after", "after@example.com", "still there?")
        )
    finally:
        writer.stop()
    # The other two are stored; the one that killed the writer twice gets the error.
    assert outcomes == [False, "RuntimeError", False]
    assert not after.duplicate
    assert count(database, Message, Message.external_id.like("poison-%")) == 3


def test_the_writer_process_sees_a_rule_created_a_moment_ago(
    world: World, database: Database, settings: Settings
) -> None:
    """The writer process caches "no rules for this event" like the server does; what the
    server forgets when a rule is saved, it passes on with the next batch."""
    from rapport.automation import service as automation
    from rapport.jobs.models import Job

    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": True}))
    workspace = world.acme.workspace.id  # type: ignore[attr-defined]

    def message(n: int) -> InboundMessage:
        return by_email(world, f"rule-{n}", "rules@example.com", "my order is late")

    def automation_jobs() -> int:
        return count(database, Job, Job.name == "automation", Job.workspace_id == workspace)

    try:
        writer.submit_sync(message(1))
        assert automation_jobs() == 0  # and the writer now knows the workspace has no rules
        with database.session() as db:
            automation.create_rule(
                db,
                workspace_id=workspace,
                data={
                    "name": "late orders",
                    "event": "message.received",
                    "conditions": [],
                    "actions": [{"type": "set_priority", "value": "high"}],
                },
            )
        writer.submit_sync(message(2))
    finally:
        writer.stop()
    assert automation_jobs() == 1


def test_the_wal_rewinds_while_a_writer_commits_without_pause(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A passive checkpoint never finishes while the writer keeps committing, so on its own
    the WAL would only grow (the log rewinds only when a write begins with every frame
    copied back); the checkpointer rewinds it between two of the writer's transactions."""
    import sqlite3

    from rapport.db import WalCheckpointer

    path = tmp_path / "wal.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # as the ingest writer runs
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    checkpointer = WalCheckpointer(str(path), interval=0.005, restart_frames=100)
    checkpointer.start()
    try:
        for _ in range(3000):  # ~2 frames each: 24 MB of log if it never rewound
            with checkpointer.lock:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("INSERT INTO t (body) VALUES (?)", ("x" * 3000,))
                writer.execute("COMMIT")
            time.sleep(0.0002)  # the writer's own pause between batches (pipe, triage)
    finally:
        checkpointer.stop()
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 3000
    assert (tmp_path / "wal.db-wal").stat().st_size < 4_000_000


class DiesAnswering(str):
    """Message text that ends the writer process when it is pickled there, i.e. when the
    process answers, after its commit; in the process that made it, it pickles as text."""

    parent: int

    @classmethod
    def made_in(cls, text: str, parent: int) -> "DiesAnswering":
        made = cls(text)
        made.parent = parent
        return made

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        if os.getpid() != self.parent:
            os._exit(1)
        return (DiesAnswering.made_in, (str(self), self.parent))


def test_a_message_committed_just_before_the_writer_process_died_is_stored_once(
    world: World, database: Database, settings: Settings
) -> None:
    """No external id to know it by: the id chosen before the first try finds it."""
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind

    writer = IngestWriter(database, settings.model_copy(update={"ingest_process": True}))
    text = DiesAnswering.made_in("committed, then the writer died", os.getpid())
    msg = InboundMessage(
        inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
        external_id=None,
        text=text,
        handles=[handle(IdentityKind.email, "once@example.com")],
    )
    try:
        with published_events() as published:
            stored = writer.submit_sync(msg, timeout=120)
    finally:
        writer.stop()
    assert count(database, Message, Message.text == str(text)) == 1
    # Found stored when sent again, and answered as stored by this send (nobody had been
    # told): its events, committed with it but lost with the process, are published.
    assert not stored.duplicate and stored.threading == "new"
    with database.session(write=False) as db:
        events = [
            (e.id, e.type, e.payload["id"])
            for e in db.scalars(select(StreamEvent).order_by(StreamEvent.id))
            if e.payload.get("id") in (stored.message.id, stored.conversation_id)
        ]
    assert [(e["id"], e["type"], e["payload"]["id"]) for e in published] == events
    assert [t for _, t, _ in events] == ["message.created", "conversation.created"]


def test_a_commit_whose_answer_was_lost_is_answered_as_stored_on_the_retry(
    world: World, database: Database, settings: Settings
) -> None:
    # The connection drops during COMMIT (PostgreSQL restarting, say): the commit went
    # through, the writer never heard, and tries the batch again.
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind
    from rapport.ingest import _Store

    store = _Store(database, settings)
    batch = [
        InboundMessage(
            inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
            external_id=external_id,
            text=f"message {i}",
            handles=[handle(IdentityKind.email, email)],
        )
        for i, (external_id, email) in enumerate(
            [("lost-1", "lost@example.com"), (None, "lost@example.com"), ("lost-3", "b@x.org")]
        )
    ]
    with published_events() as first:
        before = store.batch(batch)
    with published_events() as again:
        after = store.batch(batch)  # the same messages, ids chosen, sent again
    assert [(s.message.id, s.duplicate, s.threading) for s in after] == [  # type: ignore[union-attr]
        (s.message.id, False, s.threading)
        for s in before  # type: ignore[union-attr]
    ]
    assert [s.threading for s in before] == ["new", "continued", "new"]  # type: ignore[union-attr]
    assert again == first and len(first) == 5
    # A provider retrying the first (another send of the same external id) is a duplicate.
    retried = InboundMessage(
        inbox_id=batch[0].inbox_id, external_id="lost-1", text="message 0", handles=[]
    )
    assert store.batch([retried])[0].duplicate  # type: ignore[union-attr]


def test_a_long_read_does_not_hold_the_writer_up_behind_the_wal_rewind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The rewind waits for readers of older snapshots; it gives up soon instead, and the
    writer goes on (the log is rewound once the reader is done)."""
    import sqlite3

    from rapport.db import WalCheckpointer

    path = tmp_path / "wal.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    for _ in range(50):
        writer.execute("INSERT INTO t (body) VALUES (?)", ("x" * 3000,))
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 50  # holds its snapshot
    writer.execute("INSERT INTO t (body) VALUES ('after the read began')")
    checkpointer = WalCheckpointer(str(path), restart_frames=10)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA busy_timeout=20")  # as the checkpointer's own connection
    checkpointer.checkpoint(other)  # cannot rewind past the reader: gives up
    assert checkpointer.lock.acquire(blocking=False)  # and does not keep the writer's lock
    checkpointer.lock.release()
    reader.execute("COMMIT")
    checkpointer.checkpoint(other)
    writer.execute("INSERT INTO t (body) VALUES ('rewound')")
    assert int(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]) < 10


def test_a_real_message_after_an_auto_reply_in_one_batch_leaves_the_customer_waiting(
    world: World, database: Database, settings: Settings
) -> None:
    # The conversation the auto-reply started (resolved, nobody waiting) was opened by the
    # real message behind it in the same batch, but kept no waiting_since: it was missing
    # from the "oldest waiting" sort, its wait uncounted.
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind
    from rapport.ingest import receive_batch, with_triage

    them = [handle(IdentityKind.email, "batched@example.com")]
    batch = [
        InboundMessage(
            inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
            external_id="ooo-1",
            handles=them,
            text="I am out of the office",
            auto_reply=True,
        ),
        InboundMessage(
            inbox_id=world.acme.inbox.id,  # type: ignore[union-attr]
            external_id="real-1",
            handles=them,
            text="Back now: where is my order?",
        ),
    ]
    with database.session() as db:
        first, second = receive_batch(db, [with_triage(m) for m in batch], settings=settings)
    assert not isinstance(first, BaseException) and not isinstance(second, BaseException)
    assert first.conversation_id == second.conversation_id
    with database.session(write=False) as db:
        conv = db.get(Conversation, second.conversation_id)
        assert conv is not None
        assert conv.status == Status.open and conv.waiting_since is not None


def test_a_problem_that_crosses_the_writer_pipe_keeps_what_it_says() -> None:
    # Pickled by the writer process, a refusal came back without what its subclass set
    # besides its detail: an Unsendable's ``why`` (what a rule or the bot notes) was gone.
    import pickle

    from rapport.customers.models import Consent, ConsentChannel
    from rapport.customers.profile import NoConsent

    withdrawal = Consent(
        channel=ConsentChannel.sms,
        purpose="all",
        granted=False,
        source="SMS keyword STOP",
        recorded_at=utcnow(),
    )
    refused = NoConsent(withdrawal)
    back = pickle.loads(pickle.dumps(refused))  # noqa: S301 - our own bytes
    assert type(back) is NoConsent
    assert (back.status, back.slug, back.detail, back.extra) == (
        refused.status,
        refused.slug,
        refused.detail,
        refused.extra,
    )
    assert back.why == refused.why and "opted out of SMS" in back.why


def test_that_an_auto_reply_opens_no_reply_window_is_kept_from_api_clients(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # meta.opens_window, the reply window's bookkeeping, was shown by the REST API.
    from rapport.conversations.models import OPENS_WINDOW
    from rapport.customers.identity import handle
    from rapport.customers.models import IdentityKind
    from rapport.ingest import receive

    assert world.acme.inbox is not None
    with database.session() as db:
        stored = receive(
            db,
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="ooo-shown",
                handles=[handle(IdentityKind.email, "away@example.com")],
                text="I am out of the office",
                auto_reply=True,
            ),
            settings=settings,
        )
        conv_id, message_id = stored.conversation.id, stored.message.id
        assert stored.message.meta[OPENS_WINDOW] is False  # what the window's check reads
    one = client.get(
        f"/api/v1/conversations/{conv_id}/messages/{message_id}", headers=auth(world.bob)
    )
    whole = client.get(f"/api/v1/conversations/{conv_id}", headers=auth(world.bob))
    assert one.status_code == 200 and whole.status_code == 200, (one.text, whole.text)
    shown = [one.json()["meta"], *(m["meta"] for m in whole.json()["messages"])]
    assert not [m for m in shown if OPENS_WINDOW in m], shown


def test_a_batch_updates_its_customers_last_seen_in_id_order(
    world: World, database: Database, settings: Settings
) -> None:
    # Customers' rows are held ids ascending (a merge, its undo). A batch updating them in
    # set order held one while waiting for another a merge held, the merge waiting for it
    # in turn: deadlocked, and PostgreSQL failed one of the two.
    from rapport.ingest import receive_batch

    def batch(round: int) -> list[InboundMessage]:
        return [
            by_email(world, f"seen-{round}-{n}", f"seen{n}@example.com", "hi") for n in range(20)
        ]

    with database.session() as db:
        receive_batch(db, batch(1), settings=settings)
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE CUSTOMERS SET LAST_SEEN_AT"):
            rows = parameters if executemany else [parameters]
            seen.extend(row["cid"] if isinstance(row, dict) else row[-1] for row in rows)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        with database.session() as db:
            receive_batch(db, batch(2), settings=settings)
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    assert len(seen) == 20
    assert seen == sorted(seen)
