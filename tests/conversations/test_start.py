"""An agent writes to a customer first: the conversation, its first message and that
message's delivery in one transaction, after the checks a reply meets, and only through an
inbox that can reach the customer."""

from datetime import timedelta
from email import message_from_bytes, policy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from rapport.config import Settings
from rapport.conversations.models import Conversation, Message, Upload
from rapport.db import Database
from rapport.jobs.models import Job
from rapport.jobs.worker import Worker
from rapport.privacy.models import AuditLog
from tests.channels.email.test_email import (  # noqa: F401  (the stand-in mail servers)
    Outbox,
    customer_mail,
    mail_inbox,
    outbox,
    send,
    smtp_port,
)
from tests.channels.test_providers import make_inbox
from tests.channels.test_whatsapp import (  # noqa: F401  (the stand-in Graph API)
    graph,
    message_event,
    post_signed,
)
from tests.channels.test_whatsapp import inbox as whatsapp  # noqa: F401
from tests.conftest import auth, published_events
from tests.factories import World, written_ago


def customer(client: TestClient, token: str, **body: str) -> str:
    r = client.post("/api/v1/customers", json=body, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def start(client: TestClient, token: str, **body: Any) -> Any:
    return client.post("/api/v1/conversations", json=body, headers=auth(token))


def stored(database: Database) -> tuple[int, int, int]:
    """How many conversations, messages and deliver jobs there are."""
    with database.session(write=False) as db:
        return (
            int(db.scalar(select(func.count()).select_from(Conversation)) or 0),
            int(db.scalar(select(func.count()).select_from(Message)) or 0),
            int(db.scalar(select(func.count()).select_from(Job).where(Job.name == "deliver")) or 0),
        )


def test_an_agent_writes_first_by_email_and_the_mail_arrives_with_its_subject(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
    smtp_port: int,  # noqa: F811
) -> None:
    dana = customer(client, world.bob, name="Dana Scully", email="dana@example.org")
    with published_events() as published:
        r = start(
            client,
            world.bob,
            customer_id=dana,
            inbox_id=mail_inbox,
            subject="Your refund",
            text="Your refund went out today.",
        )
    assert r.status_code == 201, r.text
    conv = r.json()
    bob = world.acme.users["bob"].id
    # The shape GET answers; given to its author, as Chatwoot does; the first message queued.
    assert conv == client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert conv["customer_id"] == dana and conv["inbox_id"] == mail_inbox
    assert conv["subject"] == "Your refund" and conv["status"] == "open"
    assert conv["assignee_id"] == bob
    [first] = [m for m in conv["messages"] if m["kind"] == "message"]
    assert first["direction"] == "out" and first["status"] == "queued"
    assert first["sender_id"] == bob and first["text"] == "Your refund went out today."
    with database.session(write=False) as db:
        jobs = list(db.scalars(select(Job).where(Job.name == "deliver")))
        [entry] = db.scalars(select(AuditLog).where(AuditLog.action == "conversation.start"))
    assert [j.args for j in jobs] == [{"message_id": first["id"]}]
    assert entry.target_id == conv["id"] and entry.actor_user_id == bob
    assert entry.data["message_id"] == first["id"]
    # Published once committed: the new conversation, and its message.
    said = [(e["type"], e["payload"].get("id")) for e in published]
    assert ("conversation.created", conv["id"]) in said
    assert ("message.created", first["id"]) in said

    Worker(database, settings).run_until_idle()
    [sent] = [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]
    assert sent["To"] == "dana@example.org"
    # Its own subject, not "Re:" of a mail that never was, with the thread's token.
    assert sent["Subject"] == f"Your refund [#{conv['id']}]"
    assert "In-Reply-To" not in sent
    assert sent.get_body(("plain",)).get_content().strip() == "Your refund went out today."
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["status"] for m in detail["messages"] if m["id"] == first["id"]] == ["sent"]

    # Her answer continues the conversation; our next mail answers hers.
    answer = customer_mail(
        "Thanks!", subject=f"Re: {sent['Subject']}", In_Reply_To=str(sent["Message-ID"])
    )
    send(smtp_port, answer)
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["text"] for m in detail["messages"] if m["direction"] == "in"] == ["Thanks!"]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "You are welcome."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    again = message_from_bytes(outbox[0].messages[-1], policy=policy.default)
    assert again["Subject"] == f"Re: Your refund [#{conv['id']}]"


def test_a_customer_or_inbox_of_another_workspace_is_not_found_as_if_it_did_not_exist(
    client: TestClient, world: World, database: Database
) -> None:
    ours = customer(client, world.bob, email="ours@example.com")
    theirs = customer(client, world.mallory, email="theirs@example.com")
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    their_inbox = world.globex.inbox.id  # type: ignore[union-attr]
    before = stored(database)
    for body, missing in (
        ({"customer_id": theirs, "inbox_id": inbox}, "customer"),
        ({"customer_id": "no-such-customer", "inbox_id": inbox}, "customer"),
        ({"customer_id": ours, "inbox_id": their_inbox}, "inbox"),
        ({"customer_id": ours, "inbox_id": "no-such-inbox"}, "inbox"),
    ):
        r = start(client, world.bob, text="Hello", **body)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/not-found")
        assert r.json()["detail"] == f"{missing} not found"
    # Nor may a conversation go to a member of another workspace; the conversation created
    # before the assignment was looked at is not kept either (one transaction).
    mallory = world.globex.users["mallory"].id
    r = start(client, world.bob, customer_id=ours, inbox_id=inbox, text="Hi", assignee_id=mallory)
    assert r.status_code == 404 and r.json()["detail"] == "agent not found"
    assert stored(database) == before


def test_a_viewer_cannot_start_a_conversation(
    client: TestClient, world: World, database: Database
) -> None:
    ours = customer(client, world.bob, email="ours@example.com")
    before = stored(database)
    r = start(
        client,
        world.victor,
        customer_id=ours,
        inbox_id=world.acme.inbox.id,
        text="Hello",  # type: ignore[union-attr]
    )
    assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")
    assert stored(database) == before


@pytest.mark.parametrize(
    ("channel", "given", "why"),
    [
        ("email", {"address": "support@acme.test"}, "the customer has no email address"),
        ("twilio_sms", {"phone_number": "+14155550100"}, "the customer has no phone number"),
        ("whatsapp", {"phone_number_id": "1065"}, "the customer has no WhatsApp number"),
        ("telegram", {}, "the customer has no Telegram chat"),
        ("messenger", {}, "the customer has no messenger id"),
        ("instagram", {}, "the customer has no instagram id"),
        ("webchat", {}, "they have never chatted through it"),
        ("twilio_voice", {}, "a voice inbox cannot send text"),
    ],
)
def test_an_inbox_that_cannot_reach_the_customer_is_refused_saying_why(
    client: TestClient,
    world: World,
    database: Database,
    channel: str,
    given: dict[str, str],
    why: str,
) -> None:
    inbox = make_inbox(client, world, channel, given)
    # An email address for every channel but email's; a phone number for email's.
    handle = {"phone": "+14155550123"} if channel == "email" else {"email": "kim@example.com"}
    kim = customer(client, world.bob, name="Kim", **handle)
    before = stored(database)
    r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hello Kim")
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith("/unreachable") and problem["inbox_id"] == inbox
    assert f"cannot reach this customer ({why}" in problem["detail"]
    assert stored(database) == before


def test_the_api_channel_reaches_any_customer_and_the_answer_says_who_has_it(
    client: TestClient, world: World
) -> None:
    # The API channel posts the message to the inbox's webhook (or keeps it to be read):
    # it needs no address of the customer's.
    kim = customer(client, world.bob, name="Kim", phone="+14155550123")
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hi", assignee_id=None)
    assert r.status_code == 201, r.text
    assert r.json()["assignee_id"] is None  # null: nobody, as asked
    alice = world.acme.users["alice"].id
    r = start(
        client,
        world.bob,
        customer_id=kim,
        inbox_id=inbox,
        text="Hi again",
        assignee_id=alice,
        status="pending",
    )
    assert r.status_code == 201, r.text
    assert r.json()["assignee_id"] == alice and r.json()["status"] == "pending"
    said = [m["text"] for m in r.json()["messages"] if m["kind"] == "activity"]
    assert said == ["Assigned to Alice by Bob", "Marked pending by Bob"]
    # A viewer is never given one; an upload that is not this customer's is not found.
    victor = world.acme.users["victor"].id
    r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hi", assignee_id=victor)
    assert r.status_code == 422
    r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hi", attachment_ids=["x"])
    assert r.status_code == 404 and "upload" in r.text


def test_a_disabled_inbox_or_a_customer_who_opted_out_is_refused(
    client: TestClient, world: World, database: Database
) -> None:
    kim = customer(client, world.bob, name="Kim", email="kim@example.com")
    mail = make_inbox(client, world, "email", {"address": "support@acme.test"})
    r = client.post(
        f"/api/v1/customers/{kim}/consents",
        json={"channel": "email", "purpose": "all", "granted": False, "source": "phone call"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    before = stored(database)
    r = start(client, world.bob, customer_id=kim, inbox_id=mail, text="Hello")
    assert r.status_code == 409 and r.json()["type"].endswith("/no-consent")
    assert "opted out of email" in r.json()["detail"]
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    r = client.patch(f"/api/v1/inboxes/{inbox}", json={"enabled": False}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hello")
    assert r.status_code == 422 and "disabled" in r.json()["detail"]
    assert stored(database) == before


def test_an_email_is_not_started_without_a_subject(
    client: TestClient, world: World, database: Database
) -> None:
    # It reached the customer as "Your conversation with us [#...]".
    kim = customer(client, world.bob, name="Kim", email="kim@example.com")
    mail = make_inbox(client, world, "email", {"address": "support@acme.test"})
    before = stored(database)
    for subject in (None, "   "):
        body = {"subject": subject} if subject is not None else {}
        r = start(client, world.bob, customer_id=kim, inbox_id=mail, text="Hello", **body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == "subject: an email needs a subject"
    assert stored(database) == before


def test_whatsapp_refuses_free_text_outside_the_customers_24_hours(
    client: TestClient,
    world: World,
    database: Database,
    whatsapp: str,  # noqa: F811
) -> None:
    post_signed(client, whatsapp, message_event("wamid.IN1", "hello"))
    old = written_ago(database, "wamid.IN1", timedelta(hours=25))
    kerry = client.get(f"/api/v1/conversations/{old}", headers=auth(world.bob)).json()
    before = stored(database)
    r = start(client, world.bob, customer_id=kerry["customer_id"], inbox_id=whatsapp, text="Hi")
    assert r.status_code == 422, r.text
    assert "24 hours" in r.json()["detail"] and "template" in r.json()["detail"]
    assert stored(database) == before
    # Once they write again, a conversation of its own may start within the window.
    post_signed(client, whatsapp, message_event("wamid.IN2", "still there?"))
    r = start(client, world.bob, customer_id=kerry["customer_id"], inbox_id=whatsapp, text="Yes")
    assert r.status_code == 201, r.text
    assert r.json()["id"] != old


def test_webhooks_hear_of_a_started_conversation_and_rules_for_new_ones_do_not_run(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Integrations never heard of conversations agents started; a rule for new
    # conversations (a greeting) would answer the agent's own first message.
    from rapport.automation.models import WebhookDelivery

    admin = auth(world.alice)
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "https://hooks.example/rapport", "events": ["conversation.created"]},
        headers=admin,
    )
    assert hook.status_code == 201, hook.text
    rule = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Greet",
            "event": "conversation.created",
            "actions": [{"type": "add_label", "value": "greeted"}],
        },
        headers=admin,
    )
    assert rule.status_code == 201, rule.text
    kim = customer(client, world.bob, name="Kim", phone="+14155550123")
    r = start(client, world.bob, customer_id=kim, inbox_id=world.acme.inbox.id, text="Hi")  # type: ignore[union-attr]
    assert r.status_code == 201, r.text
    conv = r.json()["id"]
    with database.session() as db:
        delivered = db.execute(select(WebhookDelivery.event, WebhookDelivery.payload)).all()
        assert [(d.event, d.payload["conversation_id"]) for d in delivered] == [
            ("conversation.created", conv)
        ]
        assert db.scalar(select(func.count()).select_from(Job).where(Job.name == "automation")) == 0
    Worker(database, settings).run_until_idle(max_jobs=20)
    assert client.get(f"/api/v1/conversations/{conv}", headers=admin).json()["labels"] == []


def test_a_conversation_is_started_in_the_inbox_s_team_another_or_none(
    client: TestClient, world: World
) -> None:
    # It always went to the inbox's team: one for another team took a second step.
    kim = customer(client, world.bob, name="Kim", phone="+14155550124")
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    support, billing = (
        client.post("/api/v1/teams", json={"name": n}, headers=auth(world.alice)).json()["id"]
        for n in ("Support", "Billing")
    )
    client.patch(
        f"/api/v1/inboxes/{inbox}", json={"team_id": support}, headers=auth(world.alice)
    ).raise_for_status()
    for given, held in (({}, support), ({"team_id": billing}, billing), ({"team_id": None}, None)):
        r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hi", **given)
        assert r.status_code == 201, r.text
        assert r.json()["team_id"] == held
    # Another workspace's team is not found, and nothing is stored.
    theirs = client.post(
        "/api/v1/teams", json={"name": "Theirs"}, headers=auth(world.mallory)
    ).json()["id"]
    before = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"]
    r = start(client, world.bob, customer_id=kim, inbox_id=inbox, text="Hi", team_id=theirs)
    assert r.status_code == 404 and r.json()["detail"].startswith("team")
    after = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"]
    assert len(after) == len(before)


def test_files_uploaded_for_a_customer_go_with_the_first_message_and_nowhere_else(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    dana = customer(client, world.bob, name="Dana Scully", email="dana@example.org")
    kim = customer(client, world.bob, name="Kim", email="kim@example.com")

    def upload(customer_id: str, name: str, data: bytes, token: str = world.bob) -> Any:
        return client.post(
            f"/api/v1/customers/{customer_id}/uploads",
            files={"file": (name, data, "application/octet-stream")},
            headers=auth(token),
        )

    invoice = upload(dana, "invoice.pdf", b"%PDF-1.4 the invoice")
    assert invoice.status_code == 201, invoice.text
    assert invoice.json()["content_type"] == "application/pdf"  # read from its bytes
    kims = upload(kim, "kim.txt", b"for Kim").json()
    # A viewer uploads nothing; another workspace's member finds no such customer.
    assert upload(dana, "x.txt", b"x", world.acme.tokens["victor"]).status_code == 403
    assert upload(dana, "x.txt", b"x", world.globex.tokens["mallory"]).status_code == 404
    assert upload(dana, "empty.txt", b"").status_code == 422

    body = {
        "customer_id": dana,
        "inbox_id": mail_inbox,
        "subject": "Your invoice",
        "text": "Attached, as promised.",
    }
    # Kim's file cannot go to Dana: refused, nothing stored.
    before = stored(database)
    r = start(client, world.bob, **body, attachment_ids=[invoice.json()["id"], kims["id"]])
    assert r.status_code == 404 and "upload" in r.text
    assert stored(database) == before
    r = start(client, world.bob, **body, attachment_ids=[invoice.json()["id"]])
    assert r.status_code == 201, r.text
    [first] = [m for m in r.json()["messages"] if m["kind"] == "message"]
    assert [a["filename"] for a in first["attachments"]] == ["invoice.pdf"]
    # Sent once: the same upload cannot go again, nor into a reply.
    again = start(client, world.bob, **body, attachment_ids=[invoice.json()["id"]])
    assert again.status_code == 404
    Worker(database, settings).run_until_idle()
    [sent] = [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]
    [part] = list(sent.iter_attachments())
    assert part.get_filename() == "invoice.pdf"
    assert part.get_content() == b"%PDF-1.4 the invoice"

    # Erasing Kim takes the file uploaded for her and never sent.
    assert client.delete(f"/api/v1/customers/{kim}", headers=auth(world.alice)).status_code == 204
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).select_from(Upload)) == 0
