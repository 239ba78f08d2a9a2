"""The workspace's cap on automatic replies (a rule's, the bot's) to one customer an hour:
on every channel, counted across the customer's conversations, one reply at a time
(tests/channels/email/test_loops.py has the email side, over real SMTP)."""

import json
import threading
import time
from urllib.parse import parse_qs

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from rapport.automation import service as automation
from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.conversations.models import Conversation, Message, MessageKind
from rapport.crypto import box_for
from rapport.customers.models import Customer
from rapport.db import Database, utcnow
from rapport.jobs.worker import Worker
from tests.channels.test_providers import (  # noqa: F401
    Provider,
    echo_event,
    meta_event,
    meta_inbox,
    meta_post,
    only_conversation,
    provider,
    text_in,
    twilio_inbox,
)
from tests.conftest import auth, postgresql_only
from tests.factories import World


def cap(client: TestClient, world: World, limit: int) -> None:
    r = client.patch(
        "/api/v1/workspace",
        json={"settings": {"automatic_replies_per_hour": limit}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text


def acknowledge_every_message(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Acknowledge",
            "event": "message.received",
            "actions": [{"type": "send_message", "value": "Thanks, we got your message."}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text


def test_an_sms_autoresponder_gets_only_so_many_of_a_rules_replies(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
) -> None:
    # The cap held for email alone: a customer's SMS away message ("I'm driving, I'll text
    # you later") answered each of a rule's acknowledgements, and the rule answered each of
    # its answers, an SMS a second either way (each one paid for), without end. Nothing in
    # an SMS says it was sent by a machine.
    cap(client, world, 3)
    acknowledge_every_message(client, world)
    inbox, path, handler = twilio_inbox(client, world, provider)
    for n in range(6):
        text_in(client, settings, path, f"SM_AWAY_{n}", "I'm driving, I'll text you later.")
        Worker(database, settings).run_until_idle()
    conv = only_conversation(client, world, inbox)
    replies = [m for m in conv["messages"] if m["direction"] == "out" and m["kind"] == "message"]
    assert [m["text"] for m in replies] == ["Thanks, we got your message."] * 3
    assert parse_qs(handler.calls[0][2].decode())["Body"] == ["Thanks, we got your message."]
    [first, *more] = [m for m in conv["messages"] if m["kind"] == "activity"]
    assert "Rule “Acknowledge”" in first["text"] and "3 automatic replies" in first["text"]
    assert first["meta"]["not_sent"] == {"type": "automatic-replies-capped", "limit": 3}
    assert len(more) == 2  # each message after the third, its reply not sent
    # A person's reply is never held back.
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Drive safely, we'll write tomorrow."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text


def test_the_cap_counts_a_customers_automatic_replies_on_every_channel_together(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
) -> None:
    # One customer, two conversations (an SMS inbox, the API inbox): a loop split over two
    # threads, or two channels, is still one loop.
    cap(client, world, 2)
    acknowledge_every_message(client, world)
    _, path, _ = twilio_inbox(client, world, provider)
    text_in(client, settings, path, "SM_1", "Where is my order?")
    Worker(database, settings).run_until_idle()
    assert world.acme.inbox is not None
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",
        json={"external_id": "app-1", "text": "Hello?", "from": {"phone": "+14155550123"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    text_in(client, settings, path, "SM_2", "Anyone there?")
    Worker(database, settings).run_until_idle()
    customer = r.json()["customer_id"]
    with database.session(write=False) as db:
        convs = list(
            db.scalars(select(Conversation.id).where(Conversation.customer_id == customer))
        )
        automatic = db.scalar(
            select(func.count())
            .select_from(Message)
            .where(
                Message.conversation_id.in_(convs),
                Message.sender_type == "system",
                Message.kind == MessageKind.message,
            )
        )
    assert len(convs) == 2 and automatic == 2


def test_two_automatic_replies_at_once_at_the_cap_send_only_one(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Two rule jobs (or the bot and a rule) answering at once each counted the customer's
    # automatic replies before the other's was committed: both saw one fewer than the cap,
    # and both went. Two conversations of one customer: no row of either is in common.
    cap(client, world, 1)
    assert world.acme.inbox is not None
    second = client.post(
        "/api/v1/inboxes", json={"name": "App", "channel": "api"}, headers=auth(world.alice)
    ).json()["id"]
    convs = []
    for n, inbox in enumerate((world.acme.inbox.id, second)):
        r = client.post(
            f"/api/v1/inboxes/{inbox}/messages",
            json={"external_id": f"m{n}", "text": "Hello?", "from": {"email": "c@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        convs.append(r.json()["conversation_id"])
    first_sent, release = threading.Event(), threading.Event()
    outcomes: dict[str, str] = {}

    def answer(conversation_id: str, *, hold_open: bool) -> None:
        try:
            with database.session() as db:
                conv = db.get(Conversation, conversation_id)
                assert conv is not None
                conversations.reply(
                    db, conversation=conv, author_id=None, text="Thanks, we got it."
                )
                if hold_open:  # not committed yet while the other counts
                    first_sent.set()
                    assert release.wait(30)
            outcomes[conversation_id] = "sent"
        except conversations.TooManyAutomatic:
            outcomes[conversation_id] = "refused"
        finally:
            first_sent.set()

    one = threading.Thread(target=answer, args=(convs[0],), kwargs={"hold_open": True})
    other = threading.Thread(target=answer, args=(convs[1],), kwargs={"hold_open": False})
    one.start()
    assert first_sent.wait(30)
    other.start()
    # It waits for the first (PostgreSQL: on the customer's row; SQLite: on its one
    # writer), or, unheld, goes at once.
    other.join(1)
    release.set()
    one.join(30)
    other.join(30)
    assert outcomes == {convs[0]: "sent", convs[1]: "refused"}


def test_the_pages_own_answers_from_outside_rapport_are_a_persons_not_automatic(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
) -> None:
    # Someone answering from Meta's own inbox comes back as an echo, stored as a person's
    # reply that no member sent (no sender_id): counted as automatic, two of them would
    # have kept the rule's acknowledgement from going.
    url, handler = provider
    handler.reply = {"recipient_id": "1254459154682919", "message_id": "m_OUT{n}"}
    cap(client, world, 1)
    inbox = meta_inbox(client, world, "messenger", url)
    for n in range(2):
        echo = echo_event("page", f"m_ECHO{n}", "Hi, how can we help?")
        hello = {"timestamp": 1458692752478 + n, "message": {"mid": f"m_IN{n}", "text": "hi"}}
        assert meta_post(client, "messenger", inbox, meta_event("page", hello)).status_code == 200
        assert meta_post(client, "messenger", inbox, echo).status_code == 200
    acknowledge_every_message(client, world)
    more = {"timestamp": 1458692752490, "message": {"mid": "m_IN9", "text": "Still there?"}}
    assert meta_post(client, "messenger", inbox, meta_event("page", more)).status_code == 200
    Worker(database, settings).run_until_idle()
    assert [json.loads(body)["message"]["text"] for _, _, body in handler.calls] == [
        "Thanks, we got your message."
    ]


@postgresql_only
def test_a_rule_answering_as_the_customer_writes_again_does_not_deadlock(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Ingest writes a customer (last_seen_at), then their conversation. A rule's job held
    # the conversation, then, to count the customer's automatic replies, the customer: the
    # two each waited on the other, and PostgreSQL undid one of them.
    acknowledge_every_message(client, world)
    assert world.acme.inbox is not None
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",
        json={"external_id": "m1", "text": "Hello?", "from": {"email": "c@example.com"}},
        headers=auth(world.bob),
    )
    message = r.json()
    customer, conv_id = message["customer_id"], message["conversation_id"]
    has_customer, errors = threading.Event(), []

    def incoming() -> None:  # the statements ingest runs, in its order, held apart
        try:
            with database.session() as db:
                db.execute(
                    update(Customer).where(Customer.id == customer).values(last_seen_at=utcnow())
                )
                has_customer.set()
                time.sleep(1)  # the rule's job meanwhile takes what it takes
                db.execute(
                    update(Conversation)
                    .where(Conversation.id == conv_id)
                    .values(last_activity_at=utcnow())
                )
        except Exception as exc:
            errors.append(exc)

    def rule() -> None:
        try:
            with database.session() as db:
                automation.run(
                    db,
                    workspace_id=world.acme.workspace.id,
                    event="message.received",
                    conversation_id=conv_id,
                    message_id=message["id"],
                    customer_id=customer,
                    caused_by=[],
                    box=box_for(settings.secret_key.get_secret_value()),
                )
        except Exception as exc:
            errors.append(exc)

    first = threading.Thread(target=incoming)
    first.start()
    assert has_customer.wait(30)
    second = threading.Thread(target=rule)
    second.start()
    first.join(30)
    second.join(30)
    assert errors == []
    with database.session(write=False) as db:
        replies = db.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == conv_id, Message.sender_type == "system")
        )
    assert replies == 1
