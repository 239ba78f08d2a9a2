"""Someone a customer's mail copied, answering all, writes in that customer's conversation
(its guest), not in one of their own: the thread never splits. What they write stays
theirs: named as theirs, exported and erased with them, following them into a merge."""

from email.message import EmailMessage
from email.utils import make_msgid

from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.config import Settings
from rapport.conversations.models import ConversationGuest, Message
from rapport.db import Database
from rapport.jobs.worker import Worker
from rapport.realtime.models import StreamEvent
from tests.channels.email.test_copies import detail, sent_mails
from tests.channels.email.test_email import Outbox, conversations, customer_mail, send
from tests.conftest import auth
from tests.factories import World
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
    walter = detail(client, world, conv["id"])["messages"][-1]["sender_id"]
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
        assert (
            db.scalars(
                select(ConversationGuest.id).where(ConversationGuest.conversation_id == conv["id"])
            ).all()
            == []
        )


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
