"""A data subject's rights: an export holds everything about the person; an erased customer
is gone everywhere (rows, search, realtime copies, files) and nobody else is touched."""

import base64
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from rapport import search
from rapport.assistant.models import TriageModel
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.bot.models import BotConversation, Intent, IntentExample, UnansweredQuestion
from rapport.channels.models import UnparsedPayload
from rapport.channels.webchat.models import Visitor
from rapport.config import Settings
from rapport.conversations.models import (
    Attachment,
    Conversation,
    ConversationGuest,
    ConversationLabel,
    Message,
    ReadMarker,
    Upload,
)
from rapport.customers.models import (
    Consent,
    Customer,
    CustomerNote,
    CustomerTag,
    Event,
    Identity,
    MergeSuggestion,
)
from rapport.db import Base, Database, utcnow
from rapport.events.models import Order
from rapport.jobs.models import Job, JobState
from rapport.jobs.service import enqueue
from rapport.jobs.worker import Worker
from rapport.notifications.models import Notification
from rapport.privacy.erasure import mentions
from rapport.privacy.models import AuditLog
from rapport.realtime.models import StreamEvent
from rapport.storage import LocalStorage
from tests.conftest import auth, sqlite_only, sqlite_plans
from tests.factories import World

OWN_FILE = b"%PDF-1.4\n% zoe's passport scan\n" + bytes(range(256))
SHARED_FILE = b"%PDF-1.4\n% the shop's price list\n" + bytes(range(256))


def post(
    client: TestClient,
    world: World,
    external_id: str,
    sender: dict[str, str],
    text: str,
    files: list[bytes] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    assert world.acme.inbox is not None
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",
        json={
            "external_id": external_id,
            "text": text,
            "from": sender,
            "attachments": [
                {
                    "filename": f"file{i}.pdf",
                    "content_type": "application/pdf",
                    "data_base64": base64.b64encode(data).decode(),
                }
                for i, data in enumerate(files)
            ],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def merged_twin(client: TestClient, world: World, customer_id: str) -> dict[str, Any]:
    """A duplicate record of the customer, merged into them: the same person."""
    twin = client.post(
        "/api/v1/customers",
        json={"name": "Zoe Q.", "email": "zoe.q@example.com"},
        headers=auth(world.bob),
    ).json()
    merged = client.post(
        f"/api/v1/customers/{customer_id}/merge",
        json={"merged_id": twin["id"]},
        headers=auth(world.bob),
    )
    assert merged.status_code == 201, merged.text
    return twin  # type: ignore[no-any-return]


def age(settings: Settings, data: bytes) -> Path:
    """The stored file of these bytes, made to look stored two hours ago."""
    key, _ = LocalStorage(settings.attachments_dir).put(data)
    path = settings.attachments_dir / key
    past = time.time() - 7200
    os.utime(path, (past, past))
    return path


def count(database: Database, model: Any, *where: Any) -> int:
    with database.session(write=False) as db:
        return db.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_erasing_a_customer_removes_all_of_them_and_nothing_of_anyone_else(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    zoe = {"name": "Zoe Quist", "email": "zoe@example.com", "phone": "+14155550123"}
    first = post(client, world, "z-1", zoe, "my passport, zanzibarian visa", [OWN_FILE])
    post(client, world, "z-2", zoe, "and the price list", [SHARED_FILE])
    other = post(client, world, "o-1", {"email": "otto@example.com"}, "price list?", [SHARED_FILE])
    zoe_id, conv_id = first["customer_id"], first["conversation_id"]
    twin = merged_twin(client, world, zoe_id)
    client.post(
        f"/api/v1/customers/{zoe_id}/events", json={"type": "Viewed"}, headers=auth(world.bob)
    )
    client.put(f"/api/v1/customers/{zoe_id}/tags", json={"tags": ["vip"]}, headers=auth(world.bob))
    own, shared = age(settings, OWN_FILE), age(settings, SHARED_FILE)
    ws = world.acme.workspace.id
    with database.session(write=False) as db:
        assert search.conversation_ids(db, workspace_id=ws, q="zanzibarian") == [conv_id]
        assert zoe_id in search.customer_ids(db, workspace_id=ws, q="Quist")

    r = client.delete(f"/api/v1/customers/{zoe_id}", headers=auth(world.alice))
    assert r.status_code == 204, r.text

    for url in (
        f"/api/v1/customers/{zoe_id}",
        f"/api/v1/customers/{twin['id']}",
        f"/api/v1/conversations/{conv_id}",
    ):
        assert client.get(url, headers=auth(world.alice)).status_code == 404
    person = [zoe_id, twin["id"]]
    assert count(database, Customer, Customer.id.in_(person)) == 0
    assert count(database, Identity, Identity.customer_id.in_(person)) == 0
    assert count(database, Event, Event.customer_id.in_(person)) == 0
    assert count(database, Conversation, Conversation.customer_id.in_(person)) == 0
    assert count(database, Message, Message.conversation_id == conv_id) == 0
    with database.session(write=False) as db:
        assert search.conversation_ids(db, workspace_id=ws, q="zanzibarian") == []
        assert search.customer_ids(db, workspace_id=ws, q="Quist") == []
        audit = db.scalars(select(AuditLog).where(AuditLog.action == "customer.erase")).one()
    assert audit.target_id == zoe_id
    assert audit.data["conversations"] == 1 and audit.data["messages"] == 2
    assert sorted(audit.data["customer_ids"]) == sorted(person)

    # The copies: realtime events that named her, then her own file, in a job.
    erased = {zoe_id, twin["id"], conv_id}
    with database.session(write=False) as db:
        assert any(mentions(p, erased) for p in db.scalars(select(StreamEvent.payload)))
    Worker(database, settings).run_until_idle(max_jobs=50)
    with database.session(write=False) as db:
        events = list(db.scalars(select(StreamEvent)))
    assert events and not any(mentions(e.payload, erased) for e in events)
    assert any(e.type == "erased" and e.payload == {} for e in events)
    assert not own.exists()
    assert shared.exists()  # Otto's message still has it

    # Everyone else is as they were.
    assert client.get(
        f"/api/v1/customers/{other['customer_id']}", headers=auth(world.bob)
    ).is_success
    detail = client.get(
        f"/api/v1/conversations/{other['conversation_id']}", headers=auth(world.bob)
    ).json()
    (att,) = detail["messages"][-1]["attachments"]
    got = client.get(
        f"/api/v1/conversations/{other['conversation_id']}/messages/{other['id']}"
        f"/attachments/{att['id']}",
        headers=auth(world.bob),
    )
    assert got.content == SHARED_FILE
    assert count(database, Attachment) == 1


def test_what_the_assistant_learnt_from_an_erased_customer_is_unlearnt(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    from rapport.assistant.models import TriageModel
    from rapport.bot.models import IntentExample, IntentModelBlob
    from rapport.jobs.models import Job, JobState

    zoe = {"name": "Zoe Quist", "email": "zoe@example.com"}
    said = post(client, world, "z-1", zoe, "zoe.quist@example.com wants her zanzibar refund")
    hours = client.post(
        "/api/v1/bot/intents",
        json={
            "name": "hours",
            "reply": "9 to 5",
            "examples": ["when are you open", "opening hours please"],
        },
        headers=auth(world.alice),
    ).json()
    refund = client.post(
        "/api/v1/bot/intents",
        json={"name": "refund", "reply": "Sorry!", "examples": ["I want my money back"]},
        headers=auth(world.alice),
    ).json()
    taught = client.post(
        f"/api/v1/bot/intents/{refund['id']}/examples",
        json={"message_id": said["id"]},
        headers=auth(world.bob),
    )
    assert taught.status_code == 201 and len(taught.json()["examples"]) == 2
    ws = world.acme.workspace.id
    with database.session() as db:  # as the nightly training leaves it
        db.add(TriageModel(workspace_id=ws, kind="category", model=b"learnt from zoe"))
    Worker(database, settings).run_until_idle()
    with database.session(write=False) as db:
        before = db.get(IntentModelBlob, ws)
        assert before is not None and before.examples == 4

    r = client.delete(f"/api/v1/customers/{said['customer_id']}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    # A second erasure before the training has run adds no second training.
    other = post(client, world, "o-1", {"email": "otto@example.com"}, "hello")
    client.delete(f"/api/v1/customers/{other['customer_id']}", headers=auth(world.alice))
    assert count(database, Job, Job.name == "train_triage", Job.state == JobState.queued) == 1
    Worker(database, settings).run_until_idle()

    assert count(database, IntentExample, IntentExample.text.contains("zanzibar")) == 0
    assert count(database, IntentExample, IntentExample.intent_id == hours["id"]) == 2
    with database.session(write=False) as db:
        after = db.get(IntentModelBlob, ws)
        assert after is not None and after.examples == 3  # trained again, without hers
        # Trained again from what is left: here too little for a model, so none.
        assert db.get(TriageModel, (ws, "category")) is None


def test_an_erased_customers_question_leaves_the_suggested_answers_at_once(
    client: TestClient, world: World
) -> None:
    from tests.assistant.test_suggest import answer_and_resolve, ask

    zoe = post(client, world, "z-1", {"email": "zoe@example.com"}, "How do I change my address?")
    answer_and_resolve(client, world, zoe["conversation_id"], "Orders, then Edit address, Zoe.")

    def suggested() -> list[str]:
        conv = ask(client, world, f"n-{time.monotonic_ns()}", "how can I change the address?")
        out = client.get(f"/api/v1/conversations/{conv}/suggestions", headers=auth(world.bob))
        return [a["answer"] for a in out.json()["answers"]]

    assert suggested() == ["Orders, then Edit address, Zoe."]  # and the pool is read
    r = client.delete(f"/api/v1/customers/{zoe['customer_id']}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    assert suggested() == []  # not a minute later, when the pool would be read again


def test_the_same_person_writing_again_after_erasure_is_a_new_customer(
    client: TestClient, world: World
) -> None:
    sender = {"email": "zoe@example.com"}
    before = post(client, world, "z-1", sender, "hello")
    client.delete(f"/api/v1/customers/{before['customer_id']}", headers=auth(world.alice))
    after = post(client, world, "z-1", sender, "hello again")  # even the same external id
    assert after["customer_id"] != before["customer_id"]
    assert after["conversation_id"] != before["conversation_id"]
    detail = client.get(
        f"/api/v1/conversations/{after['conversation_id']}", headers=auth(world.bob)
    ).json()
    assert [m["text"] for m in detail["messages"]] == ["hello again"]


def test_erasing_a_customer_tells_the_agents_pages_after_it_commits(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Their open pages kept showing the erased customer's conversations until a reload.
    zoe = post(client, world, "z-live", {"name": "Zoe", "email": "zoe@example.com"}, "hi")
    twin = merged_twin(client, world, zoe["customer_id"])
    otto = post(client, world, "o-live", {"email": "otto@example.com"}, "not hers")
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        r = client.delete(f"/api/v1/customers/{zoe['customer_id']}", headers=auth(world.alice))
        assert r.status_code == 204, r.text
        while (event := ws.receive_json())["type"] != "customer.erased":
            pass
    assert sorted(event["payload"]["customer_ids"]) == sorted([zoe["customer_id"], twin["id"]])
    assert event["payload"]["conversation_ids"] == [zoe["conversation_id"]]
    assert event["payload"]["message_ids"] == []
    assert otto["conversation_id"] not in str(event) and otto["customer_id"] not in str(event)
    # A refused erasure tells nothing.
    r = client.delete(f"/api/v1/customers/{otto['customer_id']}", headers=auth(world.bob))
    assert r.status_code == 403
    with database.session(write=False) as db:
        told = db.scalars(select(StreamEvent.id).where(StreamEvent.type == "customer.erased"))
        [told_id] = told.all()
    # Then blanked with every other event naming them: a reconnecting page replays no id.
    Worker(database, settings).run_until_idle(max_jobs=50)
    with database.session(write=False) as db:
        blanked = db.get(StreamEvent, told_id)
        assert blanked is not None and (blanked.type, blanked.payload) == ("erased", {})


def test_only_an_admin_erases_and_another_workspace_cannot_see_the_customer(
    client: TestClient, world: World
) -> None:
    url = f"/api/v1/customers/{world.acme.opened.customer.id}"
    assert client.delete(url, headers=auth(world.bob)).status_code == 403
    assert client.delete(url, headers=auth(world.victor)).status_code == 403
    assert client.delete(url, headers=auth(world.mallory)).status_code == 404
    assert client.get(url, headers=auth(world.bob)).status_code == 200


def test_a_file_stored_or_reused_lately_is_kept_until_its_grace_has_passed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    key, _ = storage.put(b"fresh")
    assert storage.forget(key) is False  # an uncommitted row may be about to use it
    assert storage.open(key) == b"fresh"
    path = tmp_path / key
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    storage.put(b"fresh")  # reused: fresh again
    assert storage.forget(key) is False
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    assert storage.forget(key) is True
    assert not path.exists()
    assert storage.forget(key) is True  # gone already
    assert storage.put(b"fresh") == (key, key.rsplit("/", 1)[1])  # stored again as new
    assert storage.open(key) == b"fresh"


def test_an_admin_exports_everything_held_about_a_person_and_the_export_is_audited(
    client: TestClient, world: World, database: Database
) -> None:
    zoe = {"name": "Zoe Quist", "email": "zoe@example.com"}
    first = post(client, world, "z-1", zoe, "my passport", [OWN_FILE])
    zoe_id = first["customer_id"]
    note = client.post(
        f"/api/v1/conversations/{first['conversation_id']}/notes",
        json={"text": "asked about her visa"},
        headers=auth(world.bob),
    )
    assert note.status_code == 201, note.text
    twin = merged_twin(client, world, zoe_id)
    client.post(
        f"/api/v1/customers/{zoe_id}/events",
        json={"type": "Viewed", "properties": {"page": "/visa"}},
        headers=auth(world.bob),
    )
    client.put(f"/api/v1/customers/{zoe_id}/tags", json={"tags": ["vip"]}, headers=auth(world.bob))
    post(client, world, "o-1", {"email": "otto@example.com"}, "not hers")

    url = f"/api/v1/customers/{twin['id']}/export"  # the merged record leads to the person
    assert client.get(url, headers=auth(world.bob)).status_code == 403
    r = client.get(url, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="customer-{twin["id"]}.json"'
    doc = r.json()
    assert doc["customer"]["id"] == zoe_id
    assert [c["id"] for c in doc["merged_records"]] == [twin["id"]]
    assert sorted(i["value"] for i in doc["identities"]) == ["zoe.q@example.com", "zoe@example.com"]
    assert doc["tags"] == ["vip"]
    assert [(e["type"], e["properties"]) for e in doc["events"]] == [("Viewed", {"page": "/visa"})]
    (conv,) = doc["conversations"]
    assert conv["channel"] == "api"
    assert [(m["kind"], m["text"]) for m in conv["messages"]] == [
        ("message", "my passport"),
        ("note", "asked about her visa"),
    ]
    assert [a["filename"] for a in conv["messages"][0]["attachments"]] == ["file0.pdf"]
    assert "not hers" not in r.text
    with database.session(write=False) as db:
        audit = db.scalars(select(AuditLog).where(AuditLog.action == "customer.export")).one()
    assert audit.target_id == twin["id"] and audit.actor_user_id == world.acme.users["alice"].id


def test_the_daily_sweep_forgets_bytes_no_row_refers_to(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    """Bytes stored by a transaction that then rolled back (or written for a message an
    erasure could not see) are found and forgotten once nobody touched them for a day."""
    kept = post(client, world, "s-1", {"email": "sam@example.com"}, "scan", [OWN_FILE])
    storage = LocalStorage(settings.attachments_dir)
    orphan, _ = storage.put(b"stored, then the transaction rolled back")
    recent, _ = storage.put(b"stored a moment ago: its row may be about to commit")
    with database.session(write=False) as db:
        used = db.scalar(select(Attachment.storage_key).where(Attachment.size == len(OWN_FILE)))
    day_old = time.time() - 2 * 86400
    for key in (orphan, used):
        os.utime(Path(settings.attachments_dir) / key, (day_old, day_old))
    half_written = Path(settings.attachments_dir) / orphan[:5] / "abc.tmp"
    half_written.write_bytes(b"a crash mid-write")
    os.utime(half_written, (day_old, day_old))

    with database.session() as db:
        enqueue(db, name="sweep_storage", args={})
    Worker(database, settings).run_until_idle()
    assert not (Path(settings.attachments_dir) / orphan).exists()
    assert not half_written.exists()
    assert storage.open(recent)  # the grace holds
    assert storage.open(str(used)) == OWN_FILE  # a message's file stays
    message = client.get(
        f"/api/v1/conversations/{kept['conversation_id']}", headers=auth(world.bob)
    ).json()["messages"][-1]
    assert len(message["attachments"]) == 1


def test_an_erasure_cancels_and_deletes_the_jobs_about_the_customer(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Job rows were out of an erasure's reach: a queued send of a reply to her still ran,
    # a dead one kept the provider's refusal quoting her address, a report kept the id of
    # her message at the provider (a WhatsApp id spells the number).
    from rapport.jobs import service
    from rapport.jobs.models import Job, JobState

    zoe = post(client, world, "wamid.zoe-1", {"email": "zoe@example.com"}, "hello")
    otto = post(client, world, "o-1", {"email": "otto@example.com"}, "hello")
    ws = world.acme.workspace.id

    def reply(conversation_id: str, text: str) -> str:
        r = client.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"text": text},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    refused = "SMTPRecipientsRefused: 550 5.1.1 <zoe@example.com>: Recipient address rejected"
    sent_to_zoe, to_otto = (
        reply(zoe["conversation_id"], "Hi Zoe"),
        reply(otto["conversation_id"], "Hi"),
    )
    with database.session() as db:
        for message_id, error in ((sent_to_zoe, refused), (to_otto, "provider 503")):
            dead = service.enqueue(
                db, name="deliver", args={"message_id": message_id}, workspace_id=ws
            )
            dead.state, dead.last_error = JobState.dead, error
        report = {"external_id": "wamid.zoe-1", "status": "read", "error": None}
        service.enqueue(
            db,
            name="delivery_report",
            args={"inbox_id": "i", "report": report, "tries": 1},
            workspace_id=ws,
        )
        # A worker is sending a second reply to her as the erasure runs.
        running = service.enqueue(
            db,
            name="deliver",
            args={"message_id": reply(zoe["conversation_id"], "?")},
            workspace_id=ws,
        )
        running.state, running.locked_by = JobState.running, "elsewhere"
        running.locked_until = utcnow() + timedelta(seconds=60)
        running_id = running.id

    r = client.delete(f"/api/v1/customers/{zoe['customer_id']}", headers=auth(world.alice))
    assert r.status_code == 204, r.text

    def rows() -> list[Job]:
        with database.session(write=False) as db:
            return list(db.scalars(select(Job).where(Job.name.in_(("deliver", "delivery_report")))))

    # The queued send and the report are cancelled, the dead send deleted; the running one
    # is left to its worker.
    assert {(j.name, j.args.get("message_id"), j.state) for j in rows()} == {
        ("deliver", to_otto, JobState.queued),
        ("deliver", to_otto, JobState.dead),
        ("deliver", running.args["message_id"], JobState.running),
    }

    def run_erase_copies_now() -> None:  # it waits for the running job's lease to end
        with database.session() as db:
            db.execute(
                update(Job)
                .where(Job.name == "erase_copies", Job.state == JobState.queued)
                .values(run_at=utcnow())
            )
        Worker(database, settings).run_until_idle(max_jobs=20)

    run_erase_copies_now()
    assert running_id in {j.id for j in rows()}  # still running: looked at again later
    with database.session() as db:  # its send failed: to be tried again, the error quoting her
        db.execute(
            update(Job)
            .where(Job.id == running_id)
            .values(
                state=JobState.queued,
                last_error=refused,
                locked_by=None,
                run_at=utcnow() + timedelta(minutes=5),
            )
        )
    run_erase_copies_now()
    left = rows()
    assert {j.args.get("message_id") for j in left} == {to_otto}
    with database.session(write=False) as db:
        errors = [e for e in db.scalars(select(Job.last_error)) if e]
    assert errors == ["provider 503"]  # Otto's dead send, kept for someone to look at


def test_the_search_for_copies_reads_only_the_events_since_the_customer_was_made(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It read every event the workspace held, a week of them on a busy one, to find the few
    # naming the erased customer: none can be older than the customer.
    from rapport.privacy import erasure

    with database.session() as db:  # older than a client can replay; the prune lags
        db.execute(update(StreamEvent).values(created_at=utcnow() - timedelta(days=8)))
    with database.session(write=False) as db:
        expired = set(db.scalars(select(StreamEvent.id)))
    post(client, world, "o-1", {"email": "otto@example.com"}, "hello")
    with database.session() as db:  # Otto's events, an hour before Zoe first wrote
        db.execute(
            update(StreamEvent)
            .where(StreamEvent.id.not_in(expired))
            .values(created_at=utcnow() - timedelta(hours=1))
        )
    with database.session(write=False) as db:
        ottos = {e.id: e.payload for e in db.scalars(select(StreamEvent)) if e.id not in expired}
    zoe = post(client, world, "z-1", {"email": "zoe@example.com"}, "hello")
    r = client.delete(f"/api/v1/customers/{zoe['customer_id']}", headers=auth(world.alice))
    assert r.status_code == 204, r.text

    read: list[Any] = []
    looks = erasure.mentions

    def looking(value: Any, ids: set[str]) -> bool:
        read.append(value)
        return looks(value, ids)

    monkeypatch.setattr(erasure, "mentions", looking)
    Worker(database, settings).run_until_idle(max_jobs=50)
    assert read  # Zoe's events were read, and blanked
    assert ottos and not [p for p in ottos.values() if p in read]
    with database.session(write=False) as db:
        events = {e.id: e.payload for e in db.scalars(select(StreamEvent))}
    assert not any(mentions(p, {zoe["customer_id"]}) for p in events.values())
    assert expired and not expired & set(events)  # pruned, not read
    assert {i: events[i] for i in ottos} == ottos


def unparsed(database: Database, tenant: Any, body: str, days_ago: float = 0) -> str:
    """A provider's call we could not read, kept ``days_ago``; its id."""
    from rapport.channels.models import UnparsedPayload

    with database.session() as db:
        row = UnparsedPayload(
            workspace_id=tenant.workspace.id,
            inbox_id=tenant.inbox.id,
            body=body,
            error="KeyError: 'from'",
            created_at=utcnow() - timedelta(days=days_ago),
        )
        db.add(row)
        db.flush()
        return row.id


def test_an_erasure_deletes_the_unreadable_provider_calls_that_hold_the_customers_handles(
    client: TestClient, world: World, database: Database
) -> None:
    # A provider's call we could not parse was kept whole for ever, out of an erasure's
    # reach: her message, her number and her address with it.
    from rapport.channels.models import UnparsedPayload

    zoe = {"name": "Zoe Quist", "email": "zoe@example.com", "phone": "+14155550123"}
    erased = post(client, world, "z-1", zoe, "hello")
    hers = [
        unparsed(  # WhatsApp spells the number without its plus
            database,
            world.acme,
            '{"contacts": [{"wa_id": "14155550123"}], "messages": [{"text": {"body": "hi"}}]}',
        ),
        unparsed(database, world.acme, "From=%2B14155550123&Body=my+card+is+blocked"),  # Twilio
        unparsed(database, world.acme, '{"sender": {"email": "Zoe@Example.com"}}'),
        unparsed(database, world.acme, "reply_to=zoe%40example.com&text=hi"),
        # As people write a number, and her name alone: neither was looked for.
        unparsed(database, world.acme, '{"caller": "(415) 555-0123", "note": "call back"}'),
        unparsed(database, world.acme, "callback=415.555.0123"),
        unparsed(database, world.acme, "From=%2B1+415-555-0123"),
        unparsed(database, world.acme, '{"profile": {"name": "Zoe Quist"}}'),
        unparsed(database, world.acme, "name=Zoe+Quist&msg=hi"),
    ]
    kept = {
        unparsed(database, world.acme, '{"sender": {"email": "otto@example.com"}}'),
        unparsed(database, world.acme, '{"profile": {"name": "Zoe"}}'),  # a first name alone
        unparsed(database, world.acme, '{"caller": "(415) 555-0124"}'),  # another number
        unparsed(database, world.globex, "From=%2B14155550123&Body=hi"),  # not this workspace's
    }
    expired = unparsed(database, world.acme, '{"entry": []}', days_ago=31)  # the prune lags

    r = client.delete(f"/api/v1/customers/{erased['customer_id']}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    with database.session(write=False) as db:
        left = set(db.scalars(select(UnparsedPayload.id)))
    assert left == kept
    assert not {*hers, expired} & left


def test_unreadable_provider_calls_are_kept_thirty_days(
    world: World, database: Database, settings: Settings
) -> None:
    # They were kept for ever; they may hold a customer's message and number.
    from rapport.channels.models import UnparsedPayload

    recent = {
        unparsed(database, tenant, "From=%2B14155550123", days_ago=29)
        for tenant in (world.acme, world.globex)
    }
    for tenant in (world.acme, world.globex):
        unparsed(database, tenant, "From=%2B14155550123", days_ago=31)
    with database.session() as db:
        enqueue(db, name="prune_unparsed")
    Worker(database, settings).run_until_idle(max_jobs=10)
    with database.session(write=False) as db:
        assert set(db.scalars(select(UnparsedPayload.id))) == recent


def test_the_export_holds_what_merges_kept_of_the_person_and_nothing_of_anyone_else(
    client: TestClient, world: World
) -> None:
    def customer(**fields: str) -> str:
        r = client.post("/api/v1/customers", json=fields, headers=auth(world.bob))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def merge(survivor: str, merged: str, **body: Any) -> dict[str, Any]:
        r = client.post(
            f"/api/v1/customers/{survivor}/merge",
            json={"merged_id": merged, **body},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    zoe = customer(name="Zoe Quist", email="zoe.old@example.com", phone="+14155550123")
    twin = customer(name="Zoe Q.", email="zoe@example.com")
    # The survivor takes the twin's address: her old one is kept only for undoing.
    kept = merge(zoe, twin, reason="same woman, says Zoe", take=["email", "name"])
    otto = customer(name="Otto Other", email="otto@example.com")
    wrong = merge(zoe, otto, reason="oops")
    undone = client.post(f"/api/v1/customer-merges/{wrong['id']}/undo", headers=auth(world.bob))
    assert undone.status_code == 200, undone.text

    r = client.get(f"/api/v1/customers/{zoe}/export", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    merges = {m["id"]: m for m in r.json()["merges"]}
    assert set(merges) == {kept["id"], wrong["id"]}
    ours = merges[kept["id"]]
    assert ours["reason"] == "same woman, says Zoe"
    assert ours["moved"]["survivor_before"]["email"] == "zoe.old@example.com"
    assert ours["moved"]["survivor_before"]["phone"] == "+14155550123"
    assert {"field": "name", "survivor": "Zoe Quist", "merged": "Zoe Q.", "kept": "merged"} in (
        ours["moved"]["conflicts"]
    )
    # The undone merge with Otto: what it kept of her, none of his.
    theirs = merges[wrong["id"]]
    assert theirs["undone_at"] is not None
    assert theirs["moved"]["survivor_before"]["name"] == "Zoe Q."
    assert "otto" not in r.text.lower()
    # Otto's own export holds his side of it, none of hers.
    r = client.get(f"/api/v1/customers/{otto}/export", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    (his,) = r.json()["merges"]
    assert his["id"] == wrong["id"]
    mine = {"field": "name", "merged": "Otto Other", "kept": "survivor"}
    assert mine in his["moved"]["conflicts"]
    assert "zoe" not in r.text.lower()
    # Another workspace's admin sees neither of them.
    r = client.get(f"/api/v1/customers/{zoe}/export", headers=auth(world.mallory))
    assert r.status_code == 404


def test_an_erasure_blanks_what_agents_typed_about_the_person_in_the_audit_log_and_keeps_it(
    client: TestClient, world: World, database: Database
) -> None:
    def customer(**fields: str) -> str:
        r = client.post("/api/v1/customers", json=fields, headers=auth(world.bob))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def merge(survivor: str, merged: str, reason: str) -> str:
        r = client.post(
            f"/api/v1/customers/{survivor}/merge",
            json={"merged_id": merged, "reason": reason},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    zoe, twin = customer(name="Zoe Quist"), customer(name="Zoe Q.")
    otto, ann = customer(name="Otto Other"), customer(name="Ann Other")
    merge(zoe, twin, "same woman, she moved to Leeds")
    # Zoe merged into Otto's record by mistake, then undone: that entry is about her too.
    wrong = merge(otto, zoe, "Zoe is Otto's wife")
    undone = client.post(f"/api/v1/customer-merges/{wrong}/undo", headers=auth(world.bob))
    assert undone.status_code == 200, undone.text
    merge(otto, ann, "Ann and Otto: one account")
    for who, tags in [(zoe, ["divorce case"]), (otto, ["vip"])]:
        r = client.put(
            f"/api/v1/customers/{who}/tags", json={"tags": tags}, headers=auth(world.bob)
        )
        assert r.status_code == 200, r.text

    r = client.delete(f"/api/v1/customers/{zoe}", headers=auth(world.alice))
    assert r.status_code in (200, 204), r.text
    with database.session(write=False) as db:
        entries = {
            (a.target_id, a.data["merged_id"]): a
            for a in db.scalars(select(AuditLog).where(AuditLog.action == "customer.merge"))
        }
    assert set(entries) == {(zoe, twin), (otto, zoe), (otto, ann)}
    bob = world.acme.users["bob"].id
    for key in [(zoe, twin), (otto, zoe)]:
        assert entries[key].data["reason"] == "" and entries[key].data["erased"] == ["reason"]
        assert entries[key].actor_user_id == bob and entries[key].data["merge_id"]
    assert entries[(otto, ann)].data["reason"] == "Ann and Otto: one account"
    with database.session(write=False) as db:
        tagged = {
            a.target_id: a.data
            for a in db.scalars(select(AuditLog).where(AuditLog.action == "customer.tags"))
        }
    assert tagged == {zoe: {"tags": [], "erased": ["tags"]}, otto: {"tags": ["vip"]}}


# What an erasure may read by the workspace alone: its webhooks and trained models, a
# handful each, and the provider calls it could not read, kept 30 days (forget_unparsed).
# The live jobs of every workspace it reads by the claim index's state (``_live_jobs``).
READ_WHOLE = {"webhooks", "triage_models", "unparsed_payloads"}


def reads_too_much(step: str) -> bool:
    """Whether a step of SQLite's plan reads a whole table, or all of a workspace's rows of
    one (or all of its rows of a kind or state), to find a few."""
    if scan := re.match(r"SCAN (\w+)", step):
        return scan.group(1) in Base.metadata.tables
    search = re.match(r"SEARCH (\w+) USING (?:COVERING )?INDEX (\w+) \((.*)\)", step)
    if search is None:
        return False
    table, index, terms = search.groups()
    columns = {re.split(r"[=<>]", term)[0] for term in terms.split(" AND ")}
    if table in READ_WHOLE or index == "ix_jobs_claim":
        return False
    return columns <= {"workspace_id", "kind", "state", "status"}


def deleted_with(conn: Any, tables: set[str]) -> set[str]:
    """These tables and every table the database deletes rows of when their rows go (its
    ON DELETE CASCADE, followed through)."""
    found, todo = set(tables), list(tables)
    while todo:
        parent = todo.pop()
        for child in Base.metadata.tables:
            for fk in conn.exec_driver_sql(f"PRAGMA foreign_key_list('{child}')"):
                if fk[2] == parent and fk[6] == "CASCADE" and child not in found:
                    found.add(child)
                    todo.append(child)
    return found


@sqlite_only
def test_every_statement_of_an_erasure_finds_its_rows_by_an_index(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # An erasure holds SQLite's one write lock, which every workspace's ingest waits for:
    # it deleted the phrasings taught from her messages by reading every phrasing
    # (bot_intent_examples.message_id had no index), and the records merged into her, her
    # handles, her conversations, the live jobs and the audit entries about her by reading
    # all of the workspace's; the database's own cascades read whole tables of merges,
    # suggestions, visitors, notifications and read markers for each row deleted.
    ws, alice = world.acme.workspace.id, world.acme.users["alice"].id
    assert world.acme.inbox is not None
    zoe = post(client, world, "z-1", {"name": "Zoe Quist", "email": "zoe@example.com"}, "hi")
    otto = post(client, world, "o-1", {"name": "Otto Nm", "email": "otto@example.com"}, "hey")
    merged_twin(client, world, zoe["customer_id"])
    Worker(database, settings).run_until_idle()  # what the messages queued, done
    with database.session() as db:
        # A row of hers, and one of Otto's, in every table an erasure reads or deletes.
        for said in (zoe, otto):
            who, conv = said["customer_id"], said["conversation_id"]
            db.add_all(
                [
                    Event(workspace_id=ws, customer_id=who, type="Viewed"),
                    Order(workspace_id=ws, customer_id=who, order_id=f"order-{who}"),
                    CustomerTag(workspace_id=ws, customer_id=who, tag="vip"),
                    Consent(
                        workspace_id=ws,
                        customer_id=who,
                        channel="email",
                        purpose="marketing",
                        granted=True,
                    ),
                    CustomerNote(workspace_id=ws, customer_id=who, text="a note"),
                    Notification(
                        workspace_id=ws, user_id=alice, kind="mention", conversation_id=conv
                    ),
                    ReadMarker(user_id=alice, conversation_id=conv),
                    UnansweredQuestion(workspace_id=ws, conversation_id=conv, text="?"),
                    BotConversation(workspace_id=ws, conversation_id=conv),
                    ConversationLabel(workspace_id=ws, conversation_id=conv, label="vip"),
                    Upload(
                        workspace_id=ws,
                        customer_id=who,
                        filename="a.pdf",
                        content_type="application/pdf",
                        size=1,
                        sha256="0" * 64,
                        storage_key=f"key-{who}",
                    ),
                    Visitor(
                        workspace_id=ws,
                        inbox_id=world.acme.inbox.id,
                        token_hash=f"token-{who}",
                        customer_id=who,
                    ),
                    AuditLog(
                        workspace_id=ws,
                        action="customer.tags",
                        target_type="customer",
                        target_id=who,
                        data={"tags": ["vip"]},
                    ),
                    UnparsedPayload(
                        workspace_id=ws, inbox_id=world.acme.inbox.id, body=who, error="?"
                    ),
                ]
            )
        db.add(
            MergeSuggestion(
                workspace_id=ws,
                left_id=min(zoe["customer_id"], otto["customer_id"]),
                right_id=max(zoe["customer_id"], otto["customer_id"]),
                probability=0.5,
            )
        )
        intent = Intent(workspace_id=ws, name="greeting")
        db.add(intent)
        db.flush()
        for said in (zoe, otto):
            db.add(
                IntentExample(
                    workspace_id=ws, intent_id=intent.id, text="hi", message_id=said["id"]
                )
            )
        db.add(TriageModel(workspace_id=ws, kind="category", model=b"learnt"))
        # She wrote in Otto's conversation too (copied on his mail), which listed her.
        db.add(
            ConversationGuest(
                workspace_id=ws,
                conversation_id=otto["conversation_id"],
                customer_id=zoe["customer_id"],
            )
        )
        db.add(
            Message(
                workspace_id=ws,
                conversation_id=otto["conversation_id"],
                inbox_id=world.acme.inbox.id,
                direction="inbound",
                sender_type="customer",
                sender_id=zoe["customer_id"],
                text="me too",
            )
        )
        his = db.get(Message, otto["id"])
        assert his is not None
        his.meta = {**his.meta, "email": {"from": "otto@example.com", "cc": ["zoe@example.com"]}}
        hook = Webhook(workspace_id=ws, url="https://hooks.example/", secret_encrypted="x")
        db.add(hook)
        db.flush()
        call = WebhookDelivery(
            workspace_id=ws,
            webhook_id=hook.id,
            event="customer.updated",
            payload={"id": zoe["customer_id"]},
        )
        db.add(call)
        db.flush()
        enqueue(db, name="webhook_deliver", args={"delivery_id": call.id}, workspace_id=ws)

    with sqlite_plans(database, "") as plans:
        r = client.delete(f"/api/v1/customers/{zoe['customer_id']}", headers=auth(world.alice))
        assert r.status_code == 204, r.text
    with database.session() as db:  # the trainings read the whole workspace, as they must
        db.execute(
            update(Job)
            .where(Job.name.in_(("bot_train", "train_triage")))
            .values(state=JobState.done)
        )
    with sqlite_plans(database, "") as copies:
        Worker(database, settings).run_until_idle()  # erase_copies
    assert count(database, Customer, Customer.id == zoe["customer_id"]) == 0
    assert count(database, IntentExample) == 1  # Otto's

    steps = [(s, step) for s, plan in [*plans, *copies] for step in plan.split(" | ")]
    assert not [(s, step) for s, step in steps if reads_too_much(step)]
    [taught] = [plan for s, plan in plans if s.startswith("DELETE FROM bot_intent_examples")]
    assert taught.startswith("SEARCH bot_intent_examples USING INDEX ix_bot_examples_message")
    # And what the database deletes with what it deleted, row by row.
    deleted = {m.group(1) for s, _ in plans if (m := re.match(r"DELETE FROM (\w+)", s))}
    assert {"customers", "messages", "bot_intent_examples"} <= deleted
    with database.engine.connect() as conn:
        cascaded = deleted_with(conn, deleted)
        assert {"conversations", "notifications", "conversation_reads"} <= cascaded
        for table in sorted(cascaded):
            explain = f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE rowid = 1"  # noqa: S608
            plan = conn.exec_driver_sql(explain)
            too_much = [row[-1] for row in plan if reads_too_much(row[-1])]
            assert not too_much, (table, too_much)
