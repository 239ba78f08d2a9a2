"""The thread never splits, and an old one is not joined by what is no reply to it: a
customer's new mail months later is a conversation of its own
(tests/channels/email/test_email.py has the SMTP frame)."""

from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.policy import SMTP

from fastapi.testclient import TestClient
from sqlalchemy import update

from rapport.config import Settings
from rapport.conversations.models import Conversation, Status
from rapport.db import Database, utcnow
from tests.channels.email.test_email import (
    Outbox,
    answer,
    bounce,
    conversations,
    customer_mail,
    last_message,
    send,
)
from tests.conftest import auth, sqlite_only, sqlite_plans
from tests.factories import World


def resolved_long_ago(database: Database, conv: str, days: int = 90) -> None:
    then = utcnow() - timedelta(days=days)
    with database.session() as db:
        db.execute(
            update(Conversation)
            .where(Conversation.id == conv)
            .values(status=Status.resolved, resolved_at=then, last_activity_at=then)
        )


def test_a_new_mail_to_the_reply_address_a_client_remembered_starts_a_new_conversation(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # Her mail client offered support+c<old conversation>@ (our Reply-To) for a new mail
    # months later, about something else: it reopened the old conversation, resolved
    # long past the reopen window, and her new question sat in a thread of last spring.
    send(smtp_port, customer_mail("My first order is late.", subject="Order 1001"))
    [old] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, old["id"], "Sorry, it ships today.")
    resolved_long_ago(database, old["id"])
    new = customer_mail("Do you ship to Norway?", subject="Shipping question")
    new.replace_header("To", f"support+c{old['id']}@acme.test")
    send(smtp_port, new)
    convs = {c["id"]: c for c in conversations(client, world, mail_inbox)}
    assert len(convs) == 2 and convs[old["id"]]["status"] == "resolved"
    [fresh] = [c for c in convs.values() if c["id"] != old["id"]]
    assert fresh["subject"] == "Shipping question"


def test_a_real_reply_to_an_old_conversation_still_reopens_it(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    send(smtp_port, customer_mail("My first order is late.", subject="Order 1001"))
    [old] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, old["id"], "Sorry, it ships today.")
    ours = last_message(client, world, old["id"])["external_id"]
    resolved_long_ago(database, old["id"])
    # Her client keeps our headers, or only our reply address and the subject's token, or
    # only the reply address while the subject goes on (a client that drops In-Reply-To).
    by_headers = customer_mail("It never came.", subject="Re: Order 1001", In_Reply_To=ours)
    by_token = customer_mail("Still nothing.", subject=f"Re: Order 1001 [#{old['id']}]")
    by_token.replace_header("To", f"support+c{old['id']}@acme.test")
    for mail in (by_headers, by_token):
        send(smtp_port, mail)
        resolved_long_ago(database, old["id"])
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [old["id"]]


def test_a_new_mail_with_the_same_subject_months_later_is_a_new_conversation(
    client: TestClient, world: World, database: Database, mail_inbox: str, smtp_port: int
) -> None:
    send(smtp_port, customer_mail("Where is it?", subject="My order"))
    [old] = conversations(client, world, mail_inbox)
    resolved_long_ago(database, old["id"])
    send(smtp_port, customer_mail("Another order, another question.", subject="RE: My order"))
    assert len(conversations(client, world, mail_inbox)) == 2
    # Within the reopen window the same customer's mail reopens her last conversation.
    with database.session() as db:
        db.execute(
            update(Conversation)
            .where(Conversation.id != old["id"])
            .values(status=Status.resolved, resolved_at=utcnow() - timedelta(hours=1))
        )
    send(smtp_port, customer_mail("One more thing.", subject="My order"))
    assert len(conversations(client, world, mail_inbox)) == 2


@sqlite_only
def test_a_reply_finds_its_thread_and_a_bounce_its_mail_by_index(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # The Message-IDs a mail names were looked up by workspace: no index starts with it,
    # and each reply and each bounce read every message of the workspace.
    first = customer_mail("Hello")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, conv["id"], "Hi Dana")
    ours = last_message(client, world, conv["id"])["external_id"]
    with sqlite_plans(database, "messages.external_id IN") as plans:
        send(smtp_port, customer_mail("Thanks", In_Reply_To=ours))
        send(smtp_port, bounce(f"Message-ID: {ours}\nTo: dana@example.org\n"))
    assert len(plans) >= 2
    for statement, plan in plans:
        assert "SCAN messages" not in plan, (statement, plan)
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["text"] for m in detail["messages"]] == ["Hello", "Hi Dana", "Thanks"]
    assert [m["status"] for m in detail["messages"] if m["external_id"] == ours] == ["failed"]


def test_a_reply_in_a_long_thread_names_its_first_mail_and_only_real_message_ids(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # References kept the last 20 ids and dropped the thread's first (RFC 5322 keeps it:
    # clients find the thread's root by it), and named our stand-ins for mails that came
    # without a Message-ID (<sha256:...>, no Message-ID at all).
    first = customer_mail("The first of many.")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    nameless = customer_mail("A mail without a Message-ID.")
    del nameless["Message-ID"]
    send(smtp_port, nameless)
    for i in range(22):
        send(smtp_port, customer_mail(f"Follow-up {i}", In_Reply_To=str(first["Message-ID"])))
    answer(client, world, database, settings, conv["id"], "All answered.")
    [sent] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    refs = str(sent["References"]).split()
    assert len(refs) == 20 and refs[0] == first["Message-ID"]
    assert all("@" in r and not r.startswith("<sha256:") for r in refs)
    assert sent["In-Reply-To"] == refs[-1]


def with_headers(mail: EmailMessage, **headers: str) -> bytes:
    """The mail with these headers written on one line each, as a mailer may (the mail
    library folds a long one), its own Message-ID left out."""
    del mail["Message-ID"]
    lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return lines.encode() + mail.as_bytes(policy=SMTP)


def test_a_message_id_longer_than_its_column_still_threads_its_replies(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # A Message-ID over 300 characters was cut to fit external_id: a reply naming the
    # whole id found no mail and, its conversation resolved, started one of its own; and a
    # mail whose id began with the same 300 characters was dropped as the first come again.
    first_id, second_id = (f"<{'x' * 390}{tail}@example.org>" for tail in ("a", "b"))

    first = customer_mail("My first question.", subject="Long ids")
    send(smtp_port, first, raw=with_headers(first, Message_ID=first_id))
    second = customer_mail("And another.", subject="Long ids")
    send(smtp_port, second, raw=with_headers(second, Message_ID=second_id))
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 2
    answer(client, world, database, settings, conv["id"], "Answered.")
    # Named as they came, not as the digests they are stored as.
    assert f"References: {first_id}\r\n {second_id}\r\n".encode() in outbox[0].messages[0]
    resolved_long_ago(database, conv["id"])
    reply = customer_mail("It came back.", subject="Something else")
    send(smtp_port, reply, raw=with_headers(reply, In_Reply_To=first_id))
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]
    assert last_message(client, world, conv["id"])["text"] == "It came back."


def test_a_reply_names_an_outlook_message_id_as_it_came(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # The mail library writes a word longer than a line as RFC 2047 encoded words: our
    # replies named an Outlook customer's 80-character Message-ID as "=?utf-8?q?=3CPH0P...",
    # which their mail client does not take for the id they sent, and the thread split.
    outlook = "<PH0PR11MB48390A8D3F4E06E1C4E5B36C3B89A@PH0PR11MB4839.namprd11.prod.outlook.com>"
    hello = customer_mail("Hello from Outlook")
    send(smtp_port, hello, raw=with_headers(hello, Message_ID=outlook))
    [conv] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, conv["id"], "Hi!")
    [raw] = outbox[0].messages
    assert f"In-Reply-To: {outlook}\r\n".encode() in raw
    assert f"References: {outlook}\r\n".encode() in raw
