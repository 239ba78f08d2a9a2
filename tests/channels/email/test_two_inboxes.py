"""One mail to two of a workspace's email inboxes (To: support@, Cc: sales@) is one
conversation (tests/channels/email/test_email.py has the SMTP frame)."""

import smtplib
import threading
from contextlib import nullcontext
from email import message_from_bytes, policy

from fastapi.testclient import TestClient

from rapport.channels.email import prepare_email, store_email
from rapport.config import Settings
from rapport.conversations.models import Message
from rapport.db import Database
from tests.channels.email.test_email import Outbox, answer, conversations, customer_mail, send
from tests.conftest import auth, published_events, sqlite_plans
from tests.factories import World


def sales_inbox(client: TestClient, world: World, outbox: tuple[Outbox, int]) -> str:
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Sales mail",
            "channel": "email",
            "settings": {
                "address": "sales@acme.test",
                "smtp_host": "127.0.0.1",
                "smtp_port": outbox[1],
                "smtp_security": "none",
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def messages(client: TestClient, world: World, conv: str) -> list[dict]:  # type: ignore[type-arg]
    r = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return r.json()["messages"]  # type: ignore[no-any-return]


def test_a_mail_to_one_inbox_copying_another_is_one_conversation(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # Each inbox stored its copy: two conversations of one mail, two agents answering it.
    sales = sales_inbox(client, world, outbox)
    mail = customer_mail("Can I buy a licence for my team?")
    mail["Cc"] = "sales@acme.test"
    looked_up = "JOIN inboxes ON inboxes.id = messages.inbox_id"
    with sqlite_plans(database, looked_up) if database.is_sqlite else nullcontext([]) as plans:
        send(smtp_port, mail)  # one SMTP transaction, RCPT TO each address
    [conv] = conversations(client, world, mail_inbox)
    assert conversations(client, world, sales) == []
    [stored] = messages(client, world, conv["id"])
    assert stored["meta"]["email"]["also_received_by"] == [sales]
    # Looked up once a copy among the other inboxes' messages, by the (inbox, external id)
    # index.
    if database.is_sqlite:
        assert len(plans) == 2
        for _, plan in plans:
            assert "SEARCH messages USING INDEX" in plan, plan
            assert "(inbox_id=? AND external_id=?)" in plan, plan

    # Delivered again, each copy apart (a poll of each mailbox): still the one message.
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("dana@example.org", ["sales@acme.test"], mail.as_bytes())
        s.sendmail("dana@example.org", ["support@acme.test"], mail.as_bytes())
    [again] = conversations(client, world, mail_inbox)
    assert again["messages_count"] == 1 and conversations(client, world, sales) == []
    [stored] = messages(client, world, conv["id"])
    assert stored["meta"]["email"]["also_received_by"] == [sales]

    # The reply leaves from the inbox the conversation lives in, offering no copy to ours.
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert detail["reply_cc"] == []
    answer(client, world, database, settings, conv["id"], "Yes: how many seats?")
    [sent] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    assert sent["From"].addresses[0].addr_spec == "support@acme.test"  # type: ignore[attr-defined]
    assert outbox[0].recipients == [["dana@example.org"]]


def test_another_mail_under_the_same_message_id_in_another_inbox_is_its_own(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int, outbox: tuple[Outbox, int]
) -> None:
    # A mailer that writes one Message-ID on every mail (a web form's), or another sender
    # reusing it: not a copy of the first, each inbox keeps its own.
    sales = sales_inbox(client, world, outbox)
    first = customer_mail("A question for support", Date="Mon, 07 Dec 2026 10:00:00 +0000")
    send(smtp_port, first)
    later = customer_mail("A question for sales", Date="Mon, 07 Dec 2026 11:00:00 +0000")
    later.replace_header("Message-ID", str(first["Message-ID"]))
    later.replace_header("To", "sales@acme.test")
    send(smtp_port, later)
    stranger = customer_mail("Another's question", Date="Mon, 07 Dec 2026 10:00:00 +0000")
    stranger.replace_header("Message-ID", str(first["Message-ID"]))
    stranger.replace_header("To", "sales@acme.test")
    stranger.replace_header("From", "Fox Mulder <fox@example.org>")
    send(smtp_port, stranger)
    [ours] = conversations(client, world, mail_inbox)
    theirs = conversations(client, world, sales)
    assert [m["text"] for m in messages(client, world, ours["id"])] == ["A question for support"]
    assert sorted(m["text"] for c in theirs for m in messages(client, world, c["id"])) == [
        "A question for sales",
        "Another's question",
    ]


def test_two_copies_stored_at_once_are_one_conversation(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # Each mailbox polled by a worker of its own: neither transaction saw the other's copy.
    sales = sales_inbox(client, world, outbox)
    send(smtp_port, customer_mail("An earlier question"))  # a customer already known
    mail = customer_mail("Can I buy a licence for my team?")
    mail["Cc"] = "sales@acme.test"
    raw = mail.as_bytes()
    with database.session(write=False) as db:
        copies = [prepare_email(db, raw, inbox_id=i) for i in (mail_inbox, sales)]
    second_done = threading.Event()

    def store_second() -> None:
        with database.session() as db:
            store_email(db, copies[1], settings=settings)
        second_done.set()

    with database.session() as db:
        store_email(db, copies[0], settings=settings)
        other = threading.Thread(target=store_second)
        other.start()
        # The second waits for the first to commit (it cannot know the mail before).
        assert not second_done.wait(0.5)
    other.join(30)
    assert second_done.is_set()
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 2 and conversations(client, world, sales) == []
    with database.session(write=False) as db:
        kept = db.query(Message).filter(Message.inbox_id == sales).count()
    assert kept == 0


def test_a_copy_that_comes_later_is_said_to_open_pages(
    client: TestClient,
    world: World,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # Each mailbox polled on its own: the copy to sales@ came after agents had the
    # message open, and only a reload showed that it had.
    sales = sales_inbox(client, world, outbox)
    mail = customer_mail("Can I buy a licence for my team?")
    mail["Cc"] = "sales@acme.test"
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("dana@example.org", ["support@acme.test"], mail.as_bytes())
    [conv] = conversations(client, world, mail_inbox)
    [stored] = messages(client, world, conv["id"])
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        assert ws.receive_json()["type"] == "hello"
        with smtplib.SMTP("127.0.0.1", smtp_port) as s:
            s.sendmail("dana@example.org", ["sales@acme.test"], mail.as_bytes())
        # Stored, and said, before the server answered; the note's event comes after.
        note = client.post(
            f"/api/v1/conversations/{conv['id']}/notes",
            json={"text": "Sales has it too"},
            headers=auth(world.bob),
        ).json()
        said = []
        while (event := ws.receive_json())["payload"].get("id") != note["id"]:
            said.append(event)
    [updated] = [e for e in said if e["type"] == "message.updated"]
    assert updated["payload"]["id"] == stored["id"]
    assert updated["payload"]["meta"]["email"]["also_received_by"] == [sales]
    assert messages(client, world, conv["id"])[0]["meta"]["email"]["also_received_by"] == [sales]
    # The same copy delivered again changes nothing, and says nothing.
    with published_events() as published, smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("dana@example.org", ["sales@acme.test"], mail.as_bytes())
    assert [e["type"] for e in published if e["type"].startswith("message.")] == []
