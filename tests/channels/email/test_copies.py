"""Cc and Bcc: whom a customer's mail copied stays on the thread, and an agent's reply
copies whom the agent keeps (tests/channels/email/test_email.py has the SMTP frame)."""

import smtplib
from email import message_from_bytes, policy
from email.message import EmailMessage

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from tests.channels.email.test_email import Outbox, conversations, customer_mail, send
from tests.conftest import auth
from tests.factories import World


def sent_mails(outbox: tuple[Outbox, int]) -> list[EmailMessage]:
    return [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]  # type: ignore[misc]


def detail(client: TestClient, world: World, conv: str) -> dict:  # type: ignore[type-arg]
    r = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_reply_copies_whom_the_customers_mail_copied_and_a_bcc_is_named_nowhere(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    mail = customer_mail("Our invoice is wrong.")
    mail.replace_header("To", "support@acme.test, Fox Mulder <Fox@Example.org>")
    # Herself and our reply address among them: neither is a copy of ours to make.
    mail["Cc"] = "Walter Skinner <walter@example.org>, dana@example.org, support+x@acme.test"
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    first = detail(client, world, conv["id"])
    assert first["messages"][0]["meta"]["email"]["cc"] == [
        "walter@example.org",
        "dana@example.org",
        "support+x@acme.test",
    ]
    assert first["reply_cc"] == ["fox@example.org", "walter@example.org"]

    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Corrected.", "cc": first["reply_cc"], "bcc": ["Boss@Acme.test"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["email"] == {
        "cc": ["fox@example.org", "walter@example.org"],
        "bcc": ["boss@acme.test"],
    }
    Worker(database, settings).run_until_idle()
    [sent] = sent_mails(outbox)
    assert sent["To"] == "dana@example.org"
    assert sent["Cc"] == "fox@example.org, walter@example.org"
    assert "Bcc" not in sent and b"boss@acme.test" not in outbox[0].messages[0]
    assert outbox[0].recipients == [
        ["dana@example.org", "fox@example.org", "walter@example.org", "boss@acme.test"]
    ]
    # An address copied that forwards to us brings our own mail back: it is the message
    # we sent, not a new customer's.
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("support@acme.test", ["support@acme.test"], outbox[0].messages[0])
    assert len(detail(client, world, conv["id"])["messages"]) == 2
    found = client.get(
        "/api/v1/customers", params={"q": "support@acme.test"}, headers=auth(world.bob)
    )
    assert found.json()["items"] == []
    # Our reply is the thread's latest mail: what it copied is offered next.
    assert detail(client, world, conv["id"])["reply_cc"] == [
        "fox@example.org",
        "walter@example.org",
    ]

    # A reply that leaves Walter out: the next one is offered Fox alone.
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Fox, see attached soon.", "cc": ["fox@example.org"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert detail(client, world, conv["id"])["reply_cc"] == ["fox@example.org"]
    # A note in between is no mail: it changes nothing.
    client.post(
        f"/api/v1/conversations/{conv['id']}/notes", json={"text": "fyi"}, headers=auth(world.bob)
    )
    assert detail(client, world, conv["id"])["reply_cc"] == ["fox@example.org"]


def test_copies_are_refused_where_they_cannot_go_and_nothing_is_stored(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)
    path = f"/api/v1/conversations/{conv['id']}/messages"
    for body, said in [
        ({"cc": ["not-an-address"]}, "cc: “not-an-address” is not an email address"),
        # One header line per address list: a line break would start a header of its own.
        ({"bcc": ["a@example.org\r\nX-Evil: 1"]}, "bcc: “a@example.org"),
        ({"cc": ["a@example.org, b@example.org"]}, "is not an email address"),
        ({"bcc": [f"p{i}@example.org" for i in range(21)]}, "bcc"),
    ]:
        r = client.post(path, json={"text": "x", **body}, headers=auth(world.bob))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert said in r.text
    # Through a channel that has no copies (the API channel's thread).
    chat = world.acme.opened.conversation.id
    before = len(detail(client, world, chat)["messages"])
    r = client.post(
        f"/api/v1/conversations/{chat}/messages",
        json={"text": "x", "cc": ["fox@example.org"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 422, r.text
    assert "cc: only an email has copies, and this goes through “" in r.text
    assert len(detail(client, world, conv["id"])["messages"]) == 1
    assert len(detail(client, world, chat)["messages"]) == before


def test_a_conversation_an_agent_starts_by_email_copies_whom_she_names(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    outbox: tuple[Outbox, int],
) -> None:
    customer = client.post(
        "/api/v1/customers",
        json={"name": "Dana", "email": "dana@example.org"},
        headers=auth(world.bob),
    ).json()
    r = client.post(
        "/api/v1/conversations",
        json={
            "customer_id": customer["id"],
            "inbox_id": mail_inbox,
            "subject": "Your renewal",
            "text": "Your plan renews next week.",
            "cc": ["billing@example.org"],
            "bcc": ["crm@acme.test"],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert r.json()["reply_cc"] == ["billing@example.org"]
    Worker(database, settings).run_until_idle()
    [sent] = sent_mails(outbox)
    assert sent["Cc"] == "billing@example.org" and "Bcc" not in sent
    assert outbox[0].recipients == [["dana@example.org", "billing@example.org", "crm@acme.test"]]
    # Refused before anything is stored.
    r = client.post(
        "/api/v1/conversations",
        json={
            "customer_id": customer["id"],
            "inbox_id": mail_inbox,
            "subject": "Again",
            "text": "x",
            "cc": ["nobody"],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 422 and "cc: “nobody”" in r.text
    assert len(conversations(client, world, mail_inbox)) == 1
