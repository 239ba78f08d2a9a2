"""Someone a customer's mail copied, answering all, writes in that customer's conversation
(its guest), not in one of their own: the thread never splits. What they write stays
theirs: named as theirs, exported and erased with them, following them into a merge."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, event, func, select, update

from rapport.auth.models import Role
from rapport.automation.models import WebhookDelivery
from rapport.channels.email import ingest_email
from rapport.config import Settings
from rapport.conversations import addresses
from rapport.conversations.models import (
    Conversation,
    ConversationGuest,
    Message,
    MessageAddress,
)
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database, utcnow
from rapport.ingest import InboundMessage, receive
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from rapport.privacy.erasure import mentions
from rapport.realtime.models import StreamEvent
from rapport.workspaces import service as workspaces
from tests.channels.email.test_copies import detail, sent_mails
from tests.channels.email.test_email import Outbox, conversations, customer_mail, send
from tests.conftest import auth, sqlite_only, sqlite_plans
from tests.conversations.test_simultaneous import second_inbox
from tests.factories import PASSWORD, World
from tests.web.test_pages import sign_in


def mail_from(
    sender: str, text: str, *, answering: list[str], to: str = "support@acme.test", cc: str = ""
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    if cc:
        mail["Cc"] = cc
    mail["Subject"] = "Re: My order"
    mail["Message-ID"] = make_msgid(domain="example.org")
    mail["In-Reply-To"] = answering[-1]
    mail["References"] = " ".join(answering)
    mail.set_content(text)
    return mail


def customer_of(client: TestClient, world: World, conv: str) -> str:
    return str(detail(client, world, conv)["customer_id"])


def test_one_copied_answering_all_writes_in_the_customers_conversation(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    first = customer_mail("Our invoice is wrong.")
    first["Cc"] = "Walter Skinner <walter@example.org>"
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    dana = customer_of(client, world, conv["id"])

    # Walter answers all to Dana's mail, which copied him: in her conversation, as his.
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "I approved that invoice myself.",
            answering=[str(first["Message-ID"])],
            cc="dana@example.org",
        ),
    )
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]
    thread = detail(client, world, conv["id"])
    assert thread["customer_id"] == dana
    walter_said = thread["messages"][-1]
    assert walter_said["text"] == "I approved that invoice myself."
    walter = walter_said["sender_id"]
    assert walter not in (None, dana)
    found = client.get(
        "/api/v1/customers", params={"q": "walter@example.org"}, headers=auth(world.bob)
    ).json()["items"]
    assert [c["id"] for c in found] == [walter]
    assert thread["guests"] == {walter: "Walter Skinner"}
    # The reply copies him (he wrote last), never Dana, to whom it goes.
    assert thread["reply_cc"] == ["walter@example.org"]
    with database.session(write=False) as db:
        live = db.scalars(
            select(StreamEvent.payload).where(StreamEvent.type == "message.created")
        ).all()
        assert [p["sender_name"] for p in live if p["id"] == walter_said["id"]] == [
            "Walter Skinner"
        ]

    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Thanks both, corrected.", "cc": thread["reply_cc"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    [ours] = sent_mails(outbox)
    assert (ours["To"], ours["Cc"]) == ("dana@example.org", "walter@example.org")

    # Walter answers our reply, which copied him: the same conversation again.
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "Confirmed, thank you.",
            answering=[str(first["Message-ID"]), str(ours["Message-ID"])],
        ),
    )
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]
    assert detail(client, world, conv["id"])["messages"][-1]["sender_id"] == walter

    # The page names each as who wrote it.
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/conversations/{conv['id']}").text
    assert page.count(">Walter Skinner</span>") == 2
    assert f'<a href="/app/customers/{walter}">Walter Skinner</a>' in page
    assert page.count(">Dana Scully</span>") == 1

    # Her history says who wrote what; his holds what he wrote in her conversation.
    def history(customer: str) -> list[tuple[str, str | None]]:
        r = client.get(f"/api/v1/customers/{customer}/timeline", headers=auth(world.bob))
        assert r.status_code == 200, r.text
        return [
            (e["summary"], e["data"].get("by"))
            for e in r.json()["items"]
            if e["kind"] == "message" and e["data"]["direction"] == "in"
        ]

    assert history(dana) == [
        ("Confirmed, thank you.", "Walter Skinner"),
        ("I approved that invoice myself.", "Walter Skinner"),
        ("Our invoice is wrong.", None),
    ]
    assert history(walter) == [
        ("Confirmed, thank you.", None),
        ("I approved that invoice myself.", None),
    ]
    # His own page lists her conversation among those he was copied on.
    his = client.get(f"/app/customers/{walter}").text
    listed = his[his.index('id="customer-guest-in"') :]
    assert f'href="/app/conversations/{conv["id"]}"' in listed and "Dana Scully" in listed
    with database.session(write=False) as db:
        guests = db.scalars(
            select(ConversationGuest.customer_id).where(
                ConversationGuest.conversation_id == conv["id"]
            )
        ).all()
        assert guests == [walter]


def test_one_the_thread_never_addressed_starts_a_conversation_of_their_own(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    first = customer_mail("Where is my parcel?")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    # Dana forwarded her mail to Fox, who answers it: he was not among those it went to,
    # so knowing its Message-ID is no way into her conversation.
    send(
        smtp_port,
        mail_from(
            "Fox Mulder <fox@example.org>",
            "Dana asked me to chase this too.",
            answering=[str(first["Message-ID"])],
        ),
    )
    both = conversations(client, world, mail_inbox)
    assert len(both) == 2
    fox_conv = next(c for c in both if c["id"] != conv["id"])
    fox = detail(client, world, fox_conv["id"])
    assert fox["messages"][0]["sender_id"] == fox["customer_id"]
    assert [m["text"] for m in detail(client, world, conv["id"])["messages"]] == [
        "Where is my parcel?"
    ]


def test_what_a_guest_wrote_is_exported_and_erased_with_them_and_follows_a_merge(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="walter@example.org")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "My home number is 555-0199, call me.",
            answering=[str(first["Message-ID"])],
        ),
    )
    wrote = detail(client, world, conv["id"])["messages"][-1]
    walter = wrote["sender_id"]
    # His other record (a phone call logged by hand), merged into the one that wrote.
    other = client.post(
        "/api/v1/customers",
        json={"name": "W. Skinner", "phone": "+14155550199"},
        headers=auth(world.bob),
    ).json()["id"]
    merged = client.post(
        f"/api/v1/customers/{other}/merge", json={"merged_id": walter}, headers=auth(world.bob)
    )
    assert merged.status_code == 201, merged.text
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/conversations/{conv['id']}").text
    assert ">W. Skinner</span>" in page  # named by the record his merges ended in

    exported = client.get(f"/api/v1/customers/{other}/export", headers=auth(world.alice))
    assert exported.status_code == 200, exported.text
    body = exported.json()
    assert body["conversations"] == []  # Dana's conversation is hers
    assert [m["text"] for m in body["written_elsewhere"]] == [
        "My home number is 555-0199, call me."
    ]
    assert body["written_elsewhere"][0]["channel"] == "email"
    dana_export = client.get(
        f"/api/v1/customers/{customer_of(client, world, conv['id'])}/export",
        headers=auth(world.alice),
    ).json()
    assert dana_export["written_elsewhere"] == []

    r = client.delete(f"/api/v1/customers/{other}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    thread = detail(client, world, conv["id"])
    assert [m["text"] for m in thread["messages"]] == ["Our invoice is wrong."]
    listed = next(c for c in conversations(client, world, mail_inbox) if c["id"] == conv["id"])
    assert listed["messages_count"] == 1
    with database.session(write=False) as db:
        assert db.scalars(select(Message.id).where(Message.sender_id == walter)).all() == []
        # Agents' pages on Dana's conversation are told to take his message away.
        told = db.scalars(select(StreamEvent).where(StreamEvent.type == "customer.erased")).one()
        assert told.payload == {
            "customer_ids": [other, walter],
            "conversation_ids": [],
            "message_ids": [wrote["id"]],
        }
        assert (
            db.scalars(
                select(ConversationGuest.id).where(ConversationGuest.conversation_id == conv["id"])
            ).all()
            == []
        )


def test_an_erased_guests_address_is_no_longer_offered_as_a_copy(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="Walter Skinner <Walter@Example.org>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "I approved it.",
            answering=[str(first["Message-ID"])],
            cc="dana@example.org",
        ),
    )
    walter = detail(client, world, conv["id"])["messages"][-1]["sender_id"]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Thanks both, corrected.", "cc": ["walter@example.org"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    assert detail(client, world, conv["id"])["reply_cc"] == ["walter@example.org"]

    r = client.delete(f"/api/v1/customers/{walter}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    # Neither Dana's mail, which copied him, nor our reply, which did, offers him again.
    copies = client.get(f"/api/v1/conversations/{conv['id']}/reply-copies", headers=auth(world.bob))
    assert copies.status_code == 200, copies.text
    assert copies.json()["cc"] == []
    thread = detail(client, world, conv["id"])
    assert thread["reply_cc"] == []
    # Her conversation is hers as it was, his address gone from what it copied.
    assert thread["customer_id"] != walter
    assert [(m["text"], m["meta"].get("email", {}).get("cc")) for m in thread["messages"]] == [
        ("Our invoice is wrong.", []),
        ("Thanks both, corrected.", []),
    ]
    with database.session(write=False) as db:
        kept = db.scalars(select(Message.meta).where(Message.conversation_id == conv["id"])).all()
        assert len(kept) == 2
        assert not any("walter" in str(meta).lower() for meta in kept)
        assert [m["email"]["to"] for m in kept if "to" in m["email"]] == [["support@acme.test"]]


def copied_guest(
    client: TestClient, world: World, smtp_port: int, mail_inbox: str
) -> tuple[str, str]:
    """Dana's mail copies Walter, who answers all: her conversation, and his customer id."""
    first = customer_mail("Our invoice is wrong.", Cc="Walter Skinner <Walter@Example.org>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "I approved it.",
            answering=[str(first["Message-ID"])],
            cc="dana@example.org",
        ),
    )
    return conv["id"], detail(client, world, conv["id"])["messages"][-1]["sender_id"]


def test_an_erased_address_is_offered_nowhere_once_the_erasure_commits_before_any_job_runs(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    conv, walter = copied_guest(client, world, smtp_port, mail_inbox)
    # A reply copying him, queued: no worker has sent it when he is erased.
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Thanks both, corrected.", "cc": ["walter@example.org"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    with database.session(write=False) as db:
        held = db.scalars(
            select(MessageAddress.message_id).where(
                MessageAddress.address_key == addresses.key("walter@example.org")
            )
        ).all()
        assert len(held) == 3  # Dana's mail, his, and our reply

    r = client.delete(f"/api/v1/customers/{walter}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    # Nothing has run since it committed: neither the reply form's Cc, nor the copies each
    # message shows, nor the stored mails, nor the index name him.
    copies = client.get(f"/api/v1/conversations/{conv}/reply-copies", headers=auth(world.bob))
    assert copies.json()["cc"] == []
    thread = detail(client, world, conv)
    assert thread["reply_cc"] == []
    assert [(m["text"], m["meta"]["email"].get("cc")) for m in thread["messages"]] == [
        ("Our invoice is wrong.", []),
        ("Thanks both, corrected.", []),  # queued
    ]
    with database.session(write=False) as db:
        assert (
            db.scalar(select(func.count()).select_from(Job).where(Job.state != JobState.queued))
            == 0
        )
        kept = db.scalars(select(Message.meta).where(Message.conversation_id == conv)).all()
        assert kept and not any("walter" in str(meta).lower() for meta in kept)
        assert (
            db.scalars(
                select(MessageAddress).where(
                    MessageAddress.address_key == addresses.key("walter@example.org")
                )
            ).all()
            == []
        )
        assert db.scalars(select(MessageAddress.address_key)).all()  # Dana's stay
    # The reply queued before goes to Dana alone.
    Worker(database, settings).run_until_idle()
    [ours] = sent_mails(outbox)
    assert (ours["To"], ours["Cc"]) == ("dana@example.org", None)


@sqlite_only
def test_an_erasure_finds_the_mails_that_list_them_by_the_index_never_reading_all_the_mail(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    conv, walter = copied_guest(client, world, smtp_port, mail_inbox)
    for n in range(3):  # others' mail, which his erasure has no reason to read
        other = customer_mail(f"Question {n}")
        other.replace_header("From", f"someone{n}@example.net")
        send(smtp_port, other)
    with sqlite_plans(database, "messages", "message_addresses") as plans:
        r = client.delete(f"/api/v1/customers/{walter}", headers=auth(world.alice))
        assert r.status_code == 204, r.text
    assert detail(client, world, conv)["reply_cc"] == []
    # Every message the erasure read or wrote was found by its id or its conversation (his
    # own, or those he wrote in), never by the workspace's inboxes or a scan; the mails
    # listing him, by the index of addresses.
    steps = [step for _, plan in plans for step in plan.split(" | ")]
    on_messages = [s for s in steps if re.match(r"(SCAN|SEARCH) messages\b", s)]
    assert on_messages
    assert all(
        s.startswith("SEARCH messages USING") and s.endswith(("(id=?)", "(conversation_id=?)"))
        for s in on_messages
    ), on_messages
    assert any(
        s.startswith("SEARCH message_addresses USING") and "(workspace_id=? AND address_key=?)" in s
        for s in steps
    ), steps
    assert not [s for s, _ in plans if " LIKE " in s], "a mail's text was searched"


def test_a_merge_undone_gives_the_guest_back_what_they_wrote(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="walter@example.org")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from("walter@example.org", "Seen.", answering=[str(first["Message-ID"])]),
    )
    walter = detail(client, world, conv["id"])["messages"][-1]["sender_id"]
    other = client.post("/api/v1/customers", json={"name": "Walt"}, headers=auth(world.bob)).json()[
        "id"
    ]
    merged = client.post(
        f"/api/v1/customers/{other}/merge", json={"merged_id": walter}, headers=auth(world.bob)
    ).json()
    undo = client.post(f"/api/v1/customer-merges/{merged['id']}/undo", headers=auth(world.bob))
    assert undo.status_code == 200, undo.text
    # Erasing the record he was merged into takes nothing of his now.
    assert client.delete(f"/api/v1/customers/{other}", headers=auth(world.alice)).status_code == 204
    assert [m["text"] for m in detail(client, world, conv["id"])["messages"]][-1] == "Seen."
    exported = client.get(f"/api/v1/customers/{walter}/export", headers=auth(world.alice))
    assert [m["text"] for m in exported.json()["written_elsewhere"]] == ["Seen."]


def test_her_own_other_address_answering_her_thread_is_put_to_duplicate_review(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    first = customer_mail("Where is my parcel?")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    dana = customer_of(client, world, conv["id"])
    # Her mail forwarded to her work address and answered from there: never addressed by
    # the thread, so a conversation of its own; signed with her full name, so the two
    # records are offered to an agent as one person.
    send(
        smtp_port,
        mail_from(
            "Dana  SCULLY <dana.scully@fbi.example>",
            "Any news?",
            answering=[str(first["Message-ID"])],
        ),
    )
    # A colleague she forwarded it to is no such evidence.
    send(
        smtp_port,
        mail_from("Fox Mulder <fox@example.org>", "Chasing.", answering=[str(first["Message-ID"])]),
    )
    assert len(conversations(client, world, mail_inbox)) == 3
    [suggestion] = client.get("/api/v1/merge-suggestions", headers=auth(world.bob)).json()
    found = client.get(
        "/api/v1/customers", params={"q": "dana.scully@fbi.example"}, headers=auth(world.bob)
    ).json()["items"]
    work = found[0]["id"]
    pair = {suggestion["left_id"], suggestion["right_id"]}
    assert pair == {dana, work}
    assert suggestion["probability"] == 0.9 and "same full name" in suggestion["reason"]


def test_a_guest_message_written_while_merged_goes_back_to_its_writer_on_undo(
    client: TestClient, world: World, database: Database, mail_inbox: str, smtp_port: int
) -> None:
    # Walter (W1) answers all in Dana's conversation: a guest row (conv, W1).
    first = customer_mail("Our invoice is wrong.", Cc="walter@example.org")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(smtp_port, mail_from("walter@example.org", "Seen.", answering=[str(first["Message-ID"])]))
    w1 = detail(client, world, conv["id"])["messages"][-1]["sender_id"]
    # W1 merged into W2: the guest row moves to W2, and so does his address.
    w2 = client.post(
        "/api/v1/customers", json={"name": "W. Skinner"}, headers=auth(world.bob)
    ).json()["id"]
    merged = client.post(
        f"/api/v1/customers/{w2}/merge", json={"merged_id": w1}, headers=auth(world.bob)
    ).json()
    # He writes again meanwhile: the message is W2's; (conv, W2) is already there, so no
    # row of its own is recorded.
    send(
        smtp_port,
        mail_from(
            "walter@example.org", "My number is 555-0199.", answering=[str(first["Message-ID"])]
        ),
    )
    assert detail(client, world, conv["id"])["messages"][-1]["sender_id"] == w2
    # The merge undone: the moved row goes back to W1, and so does what he wrote while
    # merged (it came by his address): W2 is left with neither.
    undo = client.post(f"/api/v1/customer-merges/{merged['id']}/undo", headers=auth(world.bob))
    assert undo.status_code == 200, undo.text
    assert detail(client, world, conv["id"])["messages"][-1]["sender_id"] == w1

    def written(customer: str) -> list[str]:
        exported = client.get(f"/api/v1/customers/{customer}/export", headers=auth(world.alice))
        return [m["text"] for m in exported.json()["written_elsewhere"]]

    assert written(w2) == []
    assert written(w1) == ["Seen.", "My number is 555-0199."]
    assert client.delete(f"/api/v1/customers/{w1}", headers=auth(world.alice)).status_code == 204
    with database.session(write=False) as db:
        # Erased with him, never kept in Dana's conversation under a dangling id.
        left = db.scalars(select(Message.text).where(Message.sender_id.in_([w1, w2]))).all()
    assert left == []


def test_the_workspaces_own_address_never_becomes_a_guest(
    client: TestClient, world: World, database: Database, mail_inbox: str, smtp_port: int
) -> None:
    # Every customer mail is addressed To our own address, so a mail From it (the shared
    # mailbox answering from webmail, a loop, a forgery) always passes the "addressed" test.
    first = customer_mail("Our invoice is wrong.")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from(
            "Acme Support <support@acme.test>",
            "We are looking into it.",
            answering=[str(first["Message-ID"])],
        ),
    )
    thread = detail(client, world, conv["id"])
    assert thread["guests"] == {}, thread["guests"]
    with database.session(write=False) as db:
        assert (
            db.scalars(
                select(ConversationGuest.id).where(ConversationGuest.conversation_id == conv["id"])
            ).all()
            == []
        )


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, *_):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


# The whole ``meta`` column (``email.full_text`` is up to 200,000 characters) selected, not
# a JSON path of it.
_WHOLE_META = re.compile(r"(?:SELECT|,)\s+messages\.meta\s*(?:,|\s+FROM)", re.IGNORECASE)
# The thread's lookup (``_thread_hint``), not the redelivery check of the mail's own id.
_THREAD_LOOKUP = re.compile(r"messages\.workspace_id = \S+ AND messages\.external_id IN")


def test_an_ordinary_reply_does_not_read_every_referenced_mails_meta(
    world: World, database: Database, settings: Settings, mail_inbox: str
) -> None:
    # A long thread of Dana's, each mail with a long quoted history (kept as full_text).
    long = "quoted history\n" * 12_000  # ~180 kB each
    ids: list[str] = []
    with database.session() as db:
        for i in range(30):
            mail = customer_mail(f"Mail {i}\n\n{long}", In_Reply_To=ids[-1] if ids else "")
            if ids:
                mail["References"] = " ".join(ids)
            ids.append(str(mail["Message-ID"]))
            ingest_email(db, bytes(mail), inbox_id=mail_inbox, settings=settings)
    # Dana, the conversation's own customer, answers: no guest in sight.
    reply = customer_mail("Any news?", In_Reply_To=ids[-1], References=" ".join(ids))
    with statements(database) as seen, database.session() as db:
        stored = ingest_email(db, bytes(reply), inbox_id=mail_inbox, settings=settings)
        assert stored.ingest.threading == "continued"
    lookups = [s for s in seen if _THREAD_LOOKUP.search(s) and _WHOLE_META.search(s)]
    # Was one row, one column (LIMIT 1); now every referenced mail's whole meta (~5 MB here).
    assert lookups == [], lookups


def test_a_webhook_call_made_about_a_guests_message_is_blanked_when_they_are_erased(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    r = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/h", "events": ["message.received"]},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    first = customer_mail("Our invoice is wrong.", Cc="walter@example.org")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(smtp_port, mail_from("walter@example.org", "Seen.", answering=[str(first["Message-ID"])]))
    said = detail(client, world, conv["id"])["messages"][-1]
    walter = said["sender_id"]
    # The calls were made (delivered; their jobs done and gone).
    with database.session() as db:
        db.execute(update(WebhookDelivery).values(status="delivered", response_status=200))
        db.execute(delete(Job).where(Job.name == "webhook_deliver"))
    assert (
        client.delete(f"/api/v1/customers/{walter}", headers=auth(world.alice)).status_code == 204
    )
    Worker(database, settings).run_until_idle(max_jobs=50)
    with database.session(write=False) as db:
        logged = db.scalars(select(WebhookDelivery.payload)).all()
    # For a customer's own message the call names their conversation and is blanked; the
    # call about the guest's (erased) message still names it.
    assert not any(mentions(p, {said["id"], walter}) for p in logged), logged


def by_mail_then_chat(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> tuple[EmailMessage, dict, str]:  # type: ignore[type-arg]
    """Dana's mail copying Walter (the mail, its conversation), then her chat message
    through an API inbox, in a conversation of its own (its id)."""
    first = customer_mail("Our invoice is wrong.", Cc="walter@example.org")
    send(smtp_port, first)
    [mailed] = conversations(client, world, mail_inbox)
    with database.session() as db:
        chatted = receive(
            db,
            InboundMessage(
                inbox_id=second_inbox(client, world),
                external_id="chat-1",
                text="Are you there?",
                handles=[handle(IdentityKind.email, "dana@example.org")],
            ),
            settings=settings,
        ).conversation.id
    return first, mailed, chatted


def test_a_guests_mail_does_not_move_the_reply_off_the_channel_the_customer_is_on(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    # Dana goes on in chat (an API inbox) with the same address; the two are merged, and
    # a reply goes back on chat, where she is now.
    first, mailed, chatted = by_mail_then_chat(
        client, world, database, settings, mail_inbox, smtp_port
    )
    r = client.post(
        f"/api/v1/conversations/{mailed['id']}/merge",
        json={"merged_id": chatted},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    how = client.get(f"/api/v1/conversations/{mailed['id']}/reply-copies", headers=auth(world.bob))
    assert how.json()["by_email"] is False
    # Walter answers all to her first mail: in her conversation, as its guest.
    send(smtp_port, mail_from("walter@example.org", "Seen.", answering=[str(first["Message-ID"])]))
    assert detail(client, world, mailed["id"])["messages"][-1]["text"] == "Seen."
    # Dana is still on chat: the guest's mail must not choose the channel a reply to her
    # takes (``last_channel``: "the inbox the customer last wrote through").
    answer = client.post(
        f"/api/v1/conversations/{mailed['id']}/messages",
        json={"text": "Looking into it."},
        headers=auth(world.bob),
    ).json()
    assert answer["inbox_id"] == detail(client, world, chatted)["inbox_id"]


def test_one_copied_at_an_internationalised_domain_is_found_however_the_domain_is_written(
    client: TestClient, world: World, database: Database, settings: Settings, mail_inbox: str
) -> None:
    # Dana's client wrote the Cc in Unicode (RFC 6532); Walter's writes his From in
    # punycode. Identities hold both as one address (``normalize_email``: IDNA), the
    # "addressed" test compares them lower-cased only.
    first = (
        "From: Dana Scully <dana@example.org>\r\nTo: support@acme.test\r\n"
        "Cc: Walter <walter@b\u00fccher.example>\r\nSubject: My order\r\n"
        "Message-ID: <idn-1@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Our invoice is wrong.\r\n"
    ).encode()
    answer = (
        b"From: Walter <walter@xn--bcher-kva.example>\r\nTo: support@acme.test\r\n"
        b"Cc: dana@example.org\r\nSubject: Re: My order\r\nMessage-ID: <idn-2@example.org>\r\n"
        b"In-Reply-To: <idn-1@example.org>\r\nReferences: <idn-1@example.org>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nI approved it.\r\n"
    )
    with database.session() as db:
        dana = ingest_email(db, first, inbox_id=mail_inbox, settings=settings)
        walter = ingest_email(db, answer, inbox_id=mail_inbox, settings=settings)
        assert walter.ingest.customer.email == "walter@xn--bcher-kva.example"
        assert walter.ingest.conversation.id == dana.ingest.conversation.id


def test_a_colleague_copied_answering_from_their_own_mailbox_is_no_guest(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="Bob <bob@acme.test>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from("Bob <Bob@Acme.test>", "On it.", answering=[str(first["Message-ID"])]),
    )
    # Not made a customer writing in her thread: a note there, as nothing proves it is
    # Bob's (see the next test), and no conversation of its own.
    assert detail(client, world, conv["id"])["guests"] == {}
    said = detail(client, world, conv["id"])["messages"]
    assert [m["kind"] for m in said] == ["message", "note"]
    assert said[1]["text"].endswith("as the sending server could not be verified:\n\nOn it.")
    assert len(conversations(client, world, mail_inbox)) == 1


def test_a_colleagues_own_mail_in_the_thread_is_their_reply_when_proved_else_a_note(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    trusted = "mx.acme.test"
    r = client.patch(
        f"/api/v1/inboxes/{mail_inbox}",
        json={"settings": {"trusted_authserv_ids": [trusted]}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    first = customer_mail("Our invoice is wrong.", Cc="Bob <bob@acme.test>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    # Bob answers all from his own mailbox, his domain's DMARC passing: Dana has it from
    # him already, so it is his reply in the thread, sent, and nothing goes out again.
    proved = mail_from(
        "Bob <Bob@acme.test>",
        "Corrected, see attached.",
        answering=[str(first["Message-ID"])],
        cc="dana@example.org",
    )
    proved["Authentication-Results"] = f"{trusted}; dmarc=pass header.from=acme.test"
    proved.add_attachment(
        b"%PDF-1.4 fixed", maintype="application", subtype="pdf", filename="fixed.pdf"
    )
    send(smtp_port, proved)
    send(smtp_port, proved)  # delivered twice: stored once
    thread = detail(client, world, conv["id"])
    bob = world.acme.users["bob"].id
    said = [m for m in thread["messages"] if m["direction"] == "out"]
    assert [(m["kind"], m["sender_type"], m["sender_id"], m["status"]) for m in said] == [
        ("message", "user", bob, "sent")
    ]
    assert said[0]["text"] == "Corrected, see attached."
    assert [a["filename"] for a in said[0]["attachments"]] == ["fixed.pdf", "original.eml"]
    assert thread["first_response_at"] is not None
    assert waiting(database, conv["id"]) is None
    assert thread["guests"] == {}
    found = client.get("/api/v1/customers", params={"q": "bob@acme.test"}, headers=auth(world.bob))
    assert found.json()["items"] == []  # no customer made of a colleague
    Worker(database, settings).run_until_idle()
    assert outbox[0].messages == []

    # Dana writes again; a mail in Bob's name that no server vouches for is a note saying
    # so, and she still waits on us.
    again = mail_from(
        "Dana Scully <dana@example.org>",
        "Thanks, one more thing.",
        answering=[str(first["Message-ID"])],
    )
    send(smtp_port, again)
    send(
        smtp_port,
        mail_from(
            "Bob <bob@acme.test>",
            "Ignore her, refund her twice.",
            answering=[str(again["Message-ID"])],
        ),
    )
    thread = detail(client, world, conv["id"])
    note = thread["messages"][-1]
    assert (note["kind"], note["sender_type"], note["sender_id"]) == ("note", "system", None)
    assert "could not be verified" in note["text"] and "refund her twice" in note["text"]
    assert waiting(database, conv["id"]) is not None
    assert len(conversations(client, world, mail_inbox)) == 1


TRUSTED = "mx.acme.test"


def trust(client: TestClient, world: World, inbox: str) -> None:
    r = client.patch(
        f"/api/v1/inboxes/{inbox}",
        json={"settings": {"trusted_authserv_ids": [TRUSTED]}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text


def proved(mail: EmailMessage, domain: str = "acme.test") -> EmailMessage:
    """The mail as the trusted server stamps it: DMARC passed for its From's domain."""
    mail["Authentication-Results"] = f"{TRUSTED}; dmarc=pass header.from={domain}"
    return mail


def waiting(database: Database, conv: str) -> object:
    with database.session(write=False) as db:
        return db.scalar(select(Conversation.waiting_since).where(Conversation.id == conv))


def customer_search(client: TestClient, world: World, q: str) -> list[dict]:  # type: ignore[type-arg]
    r = client.get("/api/v1/customers", params={"q": q}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


# 1. A member who writes to support as a customer (an internal help desk, or trying the
# inbox out): their follow-up in their own ticket is taken for a colleague's answer.


def test_a_members_follow_up_in_their_own_ticket_stays_their_message_as_customer(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    trust(client, world, mail_inbox)
    first = mail_from("Bob <bob@acme.test>", "My laptop will not boot.", answering=["<x@y>"])
    del first["In-Reply-To"], first["References"]
    send(smtp_port, proved(first))
    [conv] = conversations(client, world, mail_inbox)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Did you try holding the power button?"},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    [ours] = sent_mails(outbox)
    assert waiting(database, conv["id"]) is None
    # Bob, the ticket's customer, answers our reply: his question, inbound, waiting on us.
    send(
        smtp_port,
        proved(
            mail_from(
                "Bob <bob@acme.test>", "Yes, still nothing.", answering=[str(ours["Message-ID"])]
            )
        ),
    )
    last = detail(client, world, conv["id"])["messages"][-1]
    assert (last["direction"], last["sender_type"], last["sender_id"]) == (
        "in",
        "customer",
        conv["customer_id"],
    ), last
    assert waiting(database, conv["id"]) is not None


# 2. "The customer had it from them": never checked. A colleague answering us alone (an
# internal word: the customer not among its recipients) becomes a reply "sent" to her.


def test_a_colleagues_mail_to_us_alone_is_no_reply_sent_to_the_customer(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    trust(client, world, mail_inbox)
    first = customer_mail("Our invoice is wrong.", Cc="Bob <bob@acme.test>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    # Bob answers support only (not all): Dana never gets this.
    internal = mail_from(
        "Bob <bob@acme.test>",
        "Internal: she is on the fraud list, do not refund.",
        answering=[str(first["Message-ID"])],
    )
    send(smtp_port, proved(internal))
    thread = detail(client, world, conv["id"])
    said = thread["messages"][-1]
    assert "fraud list" in said["text"]
    # Not a message to the customer marked sent, nor a first response; she still waits.
    assert (said["kind"], said["status"]) != ("message", "sent"), said
    assert thread["first_response_at"] is None
    assert waiting(database, conv["id"]) is not None


# 3. A viewer may not reply (the API refuses it); by mail they reply, a first response.


def test_a_viewers_own_mail_is_no_reply_of_theirs(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    trust(client, world, mail_inbox)
    first = customer_mail("Our invoice is wrong.", Cc="Victor <victor@acme.test>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "We will refund you."},
        headers=auth(world.victor),
    )
    assert r.status_code == 403, r.text  # a viewer cannot answer a customer
    send(
        smtp_port,
        proved(
            mail_from(
                "Victor <victor@acme.test>",
                "We will refund you twice.",
                answering=[str(first["Message-ID"])],
                to="dana@example.org",
                cc="support@acme.test",
            )
        ),
    )
    thread = detail(client, world, conv["id"])
    said = thread["messages"][-1]
    assert (said["sender_type"], said["kind"]) != ("user", "message"), said
    assert thread["first_response_at"] is None
    assert waiting(database, conv["id"]) is not None


# 4. Members' addresses are kept lower-cased as typed (Unicode domain), the sender IDNA:
# a member on an internationalized domain is never found, so made a guest (a customer).


@pytest.mark.parametrize(
    ("typed", "mailed"),
    [
        ("jurgen@bücher.test", "jurgen@xn--bcher-kva.test"),
        # IDNA 2008's own form: ß is no "ss" (IDNA 2003's codec refused it, so never matched)
        ("jurgen@faß.test", "jurgen@xn--fa-hia.test"),
    ],
)
def test_a_member_on_an_internationalized_domain_is_a_colleague_not_a_guest(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
    typed: str,
    mailed: str,
) -> None:
    with database.session() as db:
        workspaces.add_member(
            db,
            workspace_id=world.acme.workspace.id,
            email=typed,
            role=Role.agent,
            password=PASSWORD,
            name="Jürgen",
            actor_role=Role.owner,
        )
    first = customer_mail("Our invoice is wrong.", Cc=f"Jürgen <{mailed}>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from(
            f"Jürgen <{mailed}>",
            "On it.",
            answering=[str(first["Message-ID"])],
            to="dana@example.org",
            cc="support@acme.test",
        ),
    )
    thread = detail(client, world, conv["id"])
    assert thread["guests"] == {}
    assert customer_search(client, world, "jurgen") == []
    assert thread["messages"][-1]["kind"] == "note"  # unverified: the colleague's note


# 5. After a colleague's reply the next reply's copies are read from its Cc alone (as ours
# would be): whom it went To besides the customer drops off the thread.


def test_the_next_reply_still_copies_whom_a_colleagues_reply_went_to(
    client: TestClient,
    world: World,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    trust(client, world, mail_inbox)
    first = customer_mail(
        "Our invoice is wrong.",
        Cc="Bob <bob@acme.test>",
    )
    del first["To"]
    first["To"] = "support@acme.test, Walter Skinner <walter@example.org>"
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    assert sorted(detail(client, world, conv["id"])["reply_cc"]) == [
        "bob@acme.test",
        "walter@example.org",
    ]
    # Bob answers all (a client putting the original To in To, as Gmail does).
    send(
        smtp_port,
        proved(
            mail_from(
                "Bob <bob@acme.test>",
                "Corrected.",
                answering=[str(first["Message-ID"])],
                to="dana@example.org, support@acme.test, walter@example.org",
            )
        ),
    )
    thread = detail(client, world, conv["id"])
    assert thread["messages"][-1]["sender_type"] == "user"
    assert "walter@example.org" in thread["reply_cc"], thread["reply_cc"]


# 6. A colleague's out-of-office (our reply copied them): still a customer and a conversation
# of their own, though "no customer is made of a colleague".


def test_a_colleagues_out_of_office_makes_no_customer_of_them(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    first = customer_mail("Our invoice is wrong.")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Looking into it.", "cc": ["bob@acme.test"]},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    [ours] = sent_mails(outbox)
    away = mail_from(
        "Bob <bob@acme.test>",
        "I am out of office until Monday.",
        answering=[str(ours["Message-ID"])],
    )
    away["Auto-Submitted"] = "auto-replied"
    send(smtp_port, away)
    assert customer_search(client, world, "bob@acme.test") == []
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]


# 7. The page's guests line is keyed by name: two guests of one name show as one.


def test_the_guests_line_links_two_guests_of_the_same_name(
    client: TestClient,
    world: World,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    first = customer_mail(
        "Our invoice is wrong.", Cc="Sam Jones <sam@example.org>, Sam Jones <sam@example.net>"
    )
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    for address in ("sam@example.org", "sam@example.net"):
        send(
            smtp_port,
            mail_from(
                f"Sam Jones <{address}>", f"From {address}", answering=[str(first["Message-ID"])]
            ),
        )
    guests = detail(client, world, conv["id"])["guests"]
    assert len(guests) == 2
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/conversations/{conv['id']}").text
    for guest in guests:
        assert f'<a href="/app/customers/{guest}">Sam Jones</a>' in page


# 8. A colleague's mail held up on its way to us (greylisting) lands after the customer's
# answer to it: written before her latest message, it still ends her wait.


def test_a_colleagues_mail_written_before_the_customers_latest_leaves_her_waiting(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    trust(client, world, mail_inbox)
    first = customer_mail("Our invoice is wrong.", Cc="Bob <bob@acme.test>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    written = utcnow()
    bobs = mail_from(
        "Bob <bob@acme.test>",
        "Corrected.",
        answering=[str(first["Message-ID"])],
        to="dana@example.org",
        cc="support@acme.test",
    )
    bobs["Date"] = format_datetime(written)
    # Dana had Bob's mail at once and answers it; our copy of his arrives after hers.
    again = customer_mail(
        "Still wrong: the VAT line is missing.",
        In_Reply_To=str(bobs["Message-ID"]),
        References=f"{first['Message-ID']} {bobs['Message-ID']}",
    )
    send(smtp_port, again)
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]
    assert waiting(database, conv["id"]) is not None
    send(smtp_port, proved(bobs))
    assert detail(client, world, conv["id"])["messages"][-1]["sender_type"] == "user"
    assert waiting(database, conv["id"]) is not None  # her newer question is unanswered


# 10. (06a11bd) Guest rows no longer move with a customer merge, and customers_latest
# leaves out a guest unless it IS the conversation's customer: a guest merged INTO the
# customer (the other direction) is her now (no guest on the page), yet what they wrote
# is still left out of "the customer's latest message" (suggestions, the reply's channel).


def test_a_guest_merged_into_the_customer_writes_as_the_customer(
    client: TestClient,
    world: World,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="Dana at work <dana@work.example>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    send(
        smtp_port,
        mail_from(
            "Dana at work <dana@work.example>",
            "Where is the refund for the duplicate charge?",
            answering=[str(first["Message-ID"])],
        ),
    )
    thread = detail(client, world, conv["id"])
    [work] = thread["guests"]
    # One person: her work address's record merged into her own.
    r = client.post(
        f"/api/v1/customers/{conv['customer_id']}/merge",
        json={"merged_id": work},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert detail(client, world, conv["id"])["guests"] == {}
    asked = client.get(f"/api/v1/conversations/{conv['id']}/suggestions", headers=auth(world.bob))
    assert asked.status_code == 200, asked.text
    assert asked.json()["question"] == "Where is the refund for the duplicate charge?"


def test_a_guest_whose_merges_end_in_the_customer_chooses_the_reply_channel(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    # Dana on chat (an API inbox), her mail conversation merged into the chat one; Walter
    # answers all by email as a guest, then turns out to be her, through a chain of two
    # merges (his record into another, that one into hers): his mail is hers, and a reply
    # goes where she last wrote, by email.
    first, mailed, chatted = by_mail_then_chat(
        client, world, database, settings, mail_inbox, smtp_port
    )
    r = client.post(
        f"/api/v1/conversations/{chatted}/merge",
        json={"merged_id": mailed["id"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    send(smtp_port, mail_from("walter@example.org", "Seen.", answering=[str(first["Message-ID"])]))
    walter = detail(client, world, chatted)["messages"][-1]["sender_id"]
    how = client.get(f"/api/v1/conversations/{chatted}/reply-copies", headers=auth(world.bob))
    assert how.json()["by_email"] is False  # a guest's mail: still chat
    middle = client.post("/api/v1/customers", json={"name": "W"}, headers=auth(world.bob))
    for survivor, merged in (
        (middle.json()["id"], walter),
        (mailed["customer_id"], middle.json()["id"]),
    ):
        r = client.post(
            f"/api/v1/customers/{survivor}/merge",
            json={"merged_id": merged},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
    assert detail(client, world, chatted)["guests"] == {}
    how = client.get(f"/api/v1/conversations/{chatted}/reply-copies", headers=auth(world.bob))
    assert how.json()["by_email"] is True


def test_a_colleagues_mail_proved_on_a_second_delivery_is_their_reply(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    trust(client, world, mail_inbox)
    first = customer_mail("Our invoice is wrong.", Cc="Bob <bob@acme.test>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    bobs = mail_from(
        "Bob <bob@acme.test>",
        "Corrected.",
        answering=[str(first["Message-ID"])],
        to="dana@example.org",
        cc="support@acme.test",
    )
    send(smtp_port, bobs)  # no trusted verdict: a note
    send(smtp_port, proved(bobs))  # the same mail, proved
    said = [m for m in detail(client, world, conv["id"])["messages"] if m["direction"] == "out"]
    assert ("message", "user") in [(m["kind"], m["sender_type"]) for m in said], said
    assert waiting(database, conv["id"]) is None
    # The note became the reply: one message, in Bob's words alone, the proved verdict.
    [reply] = said
    assert reply["text"] == "Corrected." and reply["sender_id"] == world.acme.users["bob"].id
    assert reply["meta"]["email"]["sender_auth"]["result"] == "pass"
