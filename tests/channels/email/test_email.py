"""Email in and out over real SMTP conversations, threaded, without loops or noise."""

import json
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import update

import rapport.channels.email as email_channel
from rapport.channels.email import smtp as listener
from rapport.config import Settings
from rapport.conversations.models import Conversation
from rapport.db import Database, utcnow
from rapport.jobs.models import Job
from rapport.jobs.worker import Worker
from rapport.storage import LocalStorage
from tests.conftest import auth, record_write_lock, sqlite_only
from tests.factories import World
from tests.web.conftest import free_port

DATA = Path(__file__).resolve().parents[4] / "shared" / "data"


class Outbox:
    """A local receiving SMTP server: what Rapport sends ends up here."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.recipients: list[list[str]] = []  # each mail's envelope: RCPT TO, in order
        self.refused: set[str] = set()  # recipients it refuses (RCPT TO), taking the others
        self.refused_with = "550 5.1.1 no such user"
        # Answers to give before "250 OK", one per mail: each mail is kept whatever it is told.
        self.answers: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]  # noqa: N802
        if address.lower() in self.refused:
            return self.refused_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
        self.messages.append(envelope.original_content or envelope.content)
        self.recipients.append(list(envelope.rcpt_tos))
        return self.answers.pop(0) if self.answers else "250 OK"


@pytest.fixture
def outbox() -> Iterator[tuple[Outbox, int]]:
    box, port = Outbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def mail_inbox(client: TestClient, world: World, outbox: tuple[Outbox, int]) -> str:
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Support mail",
            "channel": "email",
            "settings": {
                "address": "support@acme.test",
                "smtp_host": "127.0.0.1",
                "smtp_port": outbox[1],
                "smtp_security": "none",
                "smtp_password": "not-shown-back",
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    assert "smtp_password" not in r.json()["settings"] and r.json()["secrets_set"] == [
        "smtp_password"
    ]
    return str(r.json()["id"])


@pytest.fixture
def smtp_port(database: Database, settings: Settings) -> Iterator[int]:
    port = free_port()
    controller = listener.start(database, settings, host="127.0.0.1", port=port)
    yield port
    controller.stop()


def send(
    port: int, mail: EmailMessage, *, mail_from: str | None = None, raw: bytes | None = None
) -> None:
    """Through a real SMTP conversation; ``raw`` sends those bytes as the message."""
    with smtplib.SMTP("127.0.0.1", port) as s:
        if raw is None:
            s.send_message(mail, from_addr=mail_from)
        else:
            s.sendmail(mail_from or str(mail["From"]), [str(mail["To"])], raw)


def customer_mail(text: str, subject: str = "My order", **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Dana Scully <dana@example.org>"
    mail["To"] = "support@acme.test"
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain="example.org")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(text)
    return mail


def conversations(client: TestClient, world: World, inbox: str) -> list[dict]:  # type: ignore[type-arg]
    page = client.get("/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob))
    return page.json()["items"]  # type: ignore[no-any-return]


def answer(
    client: TestClient, world: World, database: Database, settings: Settings, conv: str, text: str
) -> None:
    """An agent's reply in the conversation, and the worker's attempts to deliver it."""
    r = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": text}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()


def last_message(client: TestClient, world: World, conv: str) -> dict:  # type: ignore[type-arg]
    messages = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    return messages["messages"][-1]  # type: ignore[no-any-return]


def test_a_mail_a_reply_and_the_answer_stay_in_one_conversation(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    first = customer_mail("Hi, my parcel has not arrived.")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert detail["messages"][0]["text"] == "Hi, my parcel has not arrived."
    customer = client.get(
        f"/api/v1/customers/{conv['customer_id']}", headers=auth(world.bob)
    ).json()
    assert customer["email"] == "dana@example.org"

    answer(client, world, database, settings, conv["id"], "It ships today.")
    from email import message_from_bytes, policy

    [sent] = [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]
    assert sent["To"] == "dana@example.org"
    assert sent["In-Reply-To"] == first["Message-ID"]
    assert first["Message-ID"] in sent["References"]
    assert sent["Reply-To"].startswith(f"support+c{conv['id']}@")
    # The subject carries the thread's token: it used to be read but never written.
    assert sent["Subject"] == f"Re: My order [#{conv['id']}]"
    assert sent.get_body(("plain",)).get_content().strip() == "It ships today."
    out = last_message(client, world, conv["id"])
    assert out["status"] == "sent" and out["external_id"] == sent["Message-ID"]

    # The customer answers from another client, with a new subject, quoting us.
    thanks = customer_mail(
        "Great, thanks!\n\n"
        "On Mon, 1 Jan 2026 at 10:00, Support <support@acme.test> wrote:\n> It ships today.\n",
        subject="thanks",
        In_Reply_To=sent["Message-ID"],
        References=f"{first['Message-ID']} {sent['Message-ID']}",
    )
    send(smtp_port, thanks)
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]
    last = last_message(client, world, conv["id"])
    assert last["text"] == "Great, thanks!"
    assert "It ships today." in last["meta"]["email"]["full_text"]


def test_a_mail_sent_again_after_a_lost_answer_keeps_its_message_id(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # The receiving server keeps the first copy but answers as if it had not (a reply lost
    # on the way back looks the same to us): the job sends it again. Each attempt had a new
    # Message-ID, so the customer saw two different mails, and a reply to the first copy
    # named an id we never stored.
    send(smtp_port, customer_mail("Where is my parcel?"))
    [conv] = conversations(client, world, mail_inbox)
    outbox[0].answers.append("451 4.3.0 Try again later")
    answer(client, world, database, settings, conv["id"], "On its way.")
    with database.session() as db:
        db.execute(update(Job).where(Job.name == "deliver").values(run_at=utcnow()))
    Worker(database, settings).run_until_idle()
    from email import message_from_bytes, policy

    first, second = [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]
    assert first["Message-ID"] == second["Message-ID"]
    ours = last_message(client, world, conv["id"])
    assert ours["status"] == "sent" and ours["external_id"] == first["Message-ID"]
    send(smtp_port, customer_mail("Thanks!", In_Reply_To=first["Message-ID"], subject="thanks"))
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]


def test_a_reply_to_our_address_token_threads_even_without_headers(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    send(smtp_port, customer_mail("first"))
    [conv] = conversations(client, world, mail_inbox)
    reply = customer_mail("second, from a mailer that drops In-Reply-To", subject="New subject")
    del reply["To"]
    reply["To"] = f"support+c{conv['id']}@acme.test"
    send(smtp_port, reply)
    assert [c["id"] for c in conversations(client, world, mail_inbox)] == [conv["id"]]


def test_a_reply_naming_seventy_thousand_earlier_mails_is_stored_in_its_thread(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # Every id of References went into one query, past the 65,535 parameters PostgreSQL
    # allows: the mail was refused, and its sender tried again and again.
    first = customer_mail("first")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    reply = customer_mail("second, in a long thread")
    older = [f"<{i:x}@example.org>" for i in range(70_000)]
    references = "References: " + "\r\n ".join([*older, str(first["Message-ID"])]) + "\r\n"
    send(smtp_port, reply, raw=references.encode() + reply.as_bytes(policy=SMTP))
    [after] = conversations(client, world, mail_inbox)
    assert after["id"] == conv["id"] and after["messages_count"] == 2
    # An In-Reply-To naming thousands is kept to the ids looked up, not stored whole.
    many = customer_mail("third", In_Reply_To=" ".join(older[:5_000]))
    send(smtp_port, many)
    stored = last_message(client, world, conv["id"])
    assert stored["text"] == "third"
    assert len(stored["meta"]["email"]["in_reply_to"]) == email_channel.MAX_LOOKED_UP_IDS


def out_of_office(to: EmailMessage) -> EmailMessage:
    """The customer's mail server answering ``to`` by itself."""
    return customer_mail(
        "I am out of office until Monday.",
        subject="Out of office",
        Auto_Submitted="auto-replied",
        In_Reply_To=to["Message-ID"],
    )


def test_an_auto_reply_is_recorded_but_never_reopens(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    first = customer_mail("hello")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    client.post(
        f"/api/v1/conversations/{conv['id']}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    send(smtp_port, out_of_office(first))
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert detail["status"] == "resolved"
    assert detail["messages"][-1]["meta"]["email"]["auto_reply"] is True


def test_an_auto_reply_to_an_answered_conversation_leaves_no_one_waiting(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    # It set the conversation's waiting_since: answered, it showed again as a customer
    # waiting for an agent, at the top of "oldest waiting".
    first = customer_mail("hello")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, conv["id"], "Hello Dana, on it.")
    send(smtp_port, out_of_office(first))
    with database.session(write=False) as db:
        row = db.get(Conversation, conv["id"])
        assert row is not None
        assert row.status == "open" and row.messages_count == 3
        assert row.waiting_since is None


def bounce(returned_headers: str) -> EmailMessage:
    """A delivery report from the customer's server, carrying the headers of what it refused."""
    dsn = EmailMessage()
    dsn["From"] = "Mail Delivery System <MAILER-DAEMON@example.org>"
    dsn["To"] = "support@acme.test"
    dsn["Subject"] = "Undelivered Mail Returned to Sender"
    dsn["Message-ID"] = make_msgid(domain="example.org")
    dsn.set_content("This is the mail system. Your message could not be delivered.")
    report = EmailMessage()
    report.make_mixed()
    for name in ("From", "To", "Subject", "Message-ID"):
        report[name] = dsn[name]
    report.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    report.attach(dsn)
    headers = EmailMessage()
    headers.set_content(returned_headers, subtype="rfc822-headers")
    report.attach(headers)
    return report


def test_a_bounce_marks_our_message_failed(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    send(smtp_port, customer_mail("hello"))
    [conv] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, conv["id"], "answer")
    ours = last_message(client, world, conv["id"])
    send(smtp_port, bounce(f"Message-ID: {ours['external_id']}\nTo: dana@example.org\n"))
    after = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    failed = [m for m in after["messages"] if m["id"] == ours["id"]][0]
    assert failed["status"] == "failed" and "bounced" in failed["error"]
    assert after["status"] == "open"  # the bounce itself reopens nothing


def test_a_bounce_naming_seventy_thousand_mails_still_marks_ours_failed(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # Every Message-ID of the report went into one query, past the 65,535 parameters
    # PostgreSQL allows: the bounce was refused, and its server tried again and again.
    send(smtp_port, customer_mail("hello"))
    [conv] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, conv["id"], "answer")
    ours = last_message(client, world, conv["id"])
    others = "".join(f"Message-ID: <{i:x}@example.org>\n" for i in range(70_000))
    send(smtp_port, bounce(f"Message-ID: {ours['external_id']}\n{others}"))
    after = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert [m["status"] for m in after["messages"] if m["id"] == ours["id"]] == ["failed"]


def test_the_same_mail_delivered_twice_is_stored_once(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    mail = customer_mail("once")
    send(smtp_port, mail)
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 1


BROKEN_HEADERS = {
    "a To cut short": ("To", "support@acme.test, <someone@"),
    "a Cc cut short": ("Cc", "<x@"),
    "a Message-ID of brackets": ("Message-ID", "<<@>> 1.foo@company.com"),
    "a Date past what a datetime holds": ("Date", "Fri, 31 Dec 9999 23:59:59 -0100"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_HEADERS))
def test_a_mail_with_a_header_the_parser_chokes_on_is_stored_not_refused(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int, broken: str
) -> None:
    # parse() raised on these: the listener answered 451 until the sender's server gave up
    # and bounced the mail, and the IMAP poller stopped at it for good.
    name, value = BROKEN_HEADERS[broken]
    head = {
        "From": "Dana Scully <dana@example.org>",
        "To": "support@acme.test",
        "Subject": "Broken but real",
        "Message-ID": f"<broken-{len(broken)}@example.org>",
        name: value,
    }
    raw = "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\nPlease read me.\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("dana@example.org", ["support@acme.test"], raw.encode())
    [conv] = conversations(client, world, mail_inbox)
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert "Please read me." in detail["messages"][0]["text"]


def test_a_charset_with_a_nul_in_its_name_is_read_as_utf8() -> None:
    raw = (
        b"From: dana@example.org\r\nTo: support@acme.test\r\nSubject: hi\r\n"
        b'Content-Type: text/plain; charset="a\x00b"\r\n\r\nbody\r\n'
    )
    parsed = email_channel.parse(raw)
    assert parsed.text.strip() == "body" and parsed.from_addr == "dana@example.org"


def test_a_database_out_of_reach_is_a_temporary_failure_for_the_sender(
    settings: Settings,
) -> None:
    # The mailbox lookup ran outside the handler's guard: aiosmtpd answered 500 with our
    # error's text, and the sending server bounced the mail for good.
    down = Database("postgresql://postgres@127.0.0.1:1/nowhere", pool_size=1)
    port = free_port()
    controller = listener.start(down, settings, host="127.0.0.1", port=port)
    try:
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo()
            s.mail("dana@example.org")
            code, text = s.rcpt("support@acme.test")
    finally:
        controller.stop()
        down.dispose()
    assert (code, text) == (451, b"4.3.0 Temporary failure, try again later")


def test_another_senders_mail_under_a_message_id_already_stored_is_kept_too(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # Only a redelivery of the same mail is one message; a mailer that reuses Message-IDs
    # (or a forger) used to be answered 250 and dropped as a duplicate.
    first = customer_mail("Ann's complaint")
    second = customer_mail("Bob's question")
    del second["From"], second["Message-ID"]
    second["From"] = "Bob <bob@example.net>"
    second["Message-ID"] = first["Message-ID"]
    send(smtp_port, first)
    send(smtp_port, second)
    send(smtp_port, second)  # and its own redelivery is still stored once
    texts = sorted(
        m["text"]
        for c in conversations(client, world, mail_inbox)
        for m in client.get(f"/api/v1/conversations/{c['id']}", headers=auth(world.bob)).json()[
            "messages"
        ]
    )
    assert texts == ["Ann's complaint", "Bob's question"]


def test_mail_to_an_unknown_address_is_refused(smtp_port: int, mail_inbox: str) -> None:
    mail = customer_mail("hello")
    del mail["To"]
    mail["To"] = "nobody@acme.test"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(smtp_port, mail)


def test_an_inbox_whose_own_address_has_a_plus_receives_its_mail_and_its_threads(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # The listener looked every recipient up without its "+" part: mail to
    # support+billing@ went to the support@ inbox, or was refused when there was none.
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Billing mail",
            "channel": "email",
            "settings": {
                "address": "Support+Billing@acme.test",
                "smtp_host": "127.0.0.1",
                "smtp_port": outbox[1],
                "smtp_security": "none",
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    billing = str(r.json()["id"])
    mail = customer_mail("Why was I charged twice?", subject="Invoice")
    mail.replace_header("To", "support+billing@acme.test")
    send(smtp_port, mail)
    [conv] = conversations(client, world, billing)
    assert conv["subject"] == "Invoice" and conversations(client, world, mail_inbox) == []
    # Its own reply address (support+billing+c<id>@) threads, as support+c<id>@ does.
    answer(client, world, database, settings, conv["id"], "Refunded.")
    from email import message_from_bytes, policy

    [sent] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    assert sent["Reply-To"] == f"support+billing+c{conv['id']}@acme.test"
    reply = customer_mail("Thanks!", subject="another subject")
    reply.replace_header("To", str(sent["Reply-To"]))
    send(smtp_port, reply)
    [after] = conversations(client, world, billing)
    assert after["id"] == conv["id"] and after["messages_count"] == 3
    # The plain inbox still takes its own tags.
    other = customer_mail("Hello", subject="Sales")
    other.replace_header("To", "support+sales@acme.test")
    send(smtp_port, other)
    assert conversations(client, world, mail_inbox) != []


def _eval(*args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, "-m", "rapport.cli", "eval", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_shared_email_is_stored_with_its_body() -> None:
    if not (DATA / "emails").exists():
        pytest.skip("../shared/data/emails is absent")
    figures = _eval("emails", str(DATA / "emails"))
    assert figures["failed"] == 0 and figures["stored"] == figures["files"] > 100
    assert figures["empty_body"] <= 1  # bad_date_header.eml has no body at all


def test_reply_stripping_scores_on_the_shared_cases() -> None:
    cases = DATA / "reply_stripping" / "cases.jsonl"
    if not cases.exists():
        pytest.skip("../shared/data/reply_stripping is absent")
    figures = _eval("replies", str(cases))
    assert figures["cases"] == 72 and figures["rate"] > 0.85


def test_serve_receives_mail_itself_when_an_smtp_port_is_set(
    settings: Settings, database: Database, world: World
) -> None:
    from rapport.app import create_app
    from rapport.channels.models import Inbox

    with database.session() as db:
        inbox = Inbox(
            workspace_id=world.acme.workspace.id,
            name="m",
            channel="email",
            settings={"address": "in@acme.test"},
            public_token="smtp-serve",
        )
        db.add(inbox)
    settings.smtp_port = free_port()
    with TestClient(create_app(settings, database=database)):
        mail = customer_mail("through serve")
        mail.replace_header("To", "in@acme.test")
        send(settings.smtp_port, mail)
    with database.session(write=False) as db:
        from sqlalchemy import select

        from rapport.conversations.models import Message

        texts = list(db.scalars(select(Message.text).where(Message.inbox_id == inbox.id)))
    assert texts == ["through serve"]


def test_an_agent_can_answer_a_chat_conversation_by_email(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    outbox: tuple[Outbox, int],
) -> None:
    conv = world.acme.opened.conversation.id  # an API-channel thread
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Answering by email, as you asked.", "inbox_id": mail_inbox},
        headers=auth(world.bob),
    )
    assert r.status_code == 201 and r.json()["inbox_id"] == mail_inbox
    Worker(database, settings).run_until_idle()
    from email import message_from_bytes, policy

    [sent] = [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]
    assert sent["To"] == "customer@acme.example"
    other = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "x", "inbox_id": world.globex.inbox.id},  # type: ignore[union-attr]
        headers=auth(world.bob),
    )
    assert other.status_code == 404


def test_an_agents_files_reach_the_customer_as_mime_attachments(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    send(smtp_port, customer_mail("Could you send me the invoice?"))
    [conv] = conversations(client, world, mail_inbox)
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 8
    uploaded = [
        client.post(
            f"/api/v1/conversations/{conv['id']}/uploads",
            files={"file": (name, data, "application/octet-stream")},
            headers=auth(world.bob),
        ).json()["id"]
        for name, data in (("invoice 2026.pdf", pdf), ("notes.txt", "Grüße\n".encode()))
    ]
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "Attached.", "attachment_ids": uploaded},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    Worker(database, settings).run_until_idle()
    from email import message_from_bytes, policy

    [sent] = [message_from_bytes(raw, policy=policy.default) for raw in outbox[0].messages]
    assert sent.get_content_type() == "multipart/mixed"
    assert sent.get_body(("plain",)).get_content().strip() == "Attached."
    files = [
        (p.get_filename(), p.get_content_type(), p.get_content()) for p in sent.iter_attachments()
    ]
    assert files[0] == ("invoice 2026.pdf", "application/pdf", pdf)
    assert files[1][:2] == ("notes.txt", "text/plain") and files[1][2].strip() == "Grüße"
    out = last_message(client, world, conv["id"])
    assert out["status"] == "sent"
    assert [a["filename"] for a in out["attachments"]] == ["invoice 2026.pdf", "notes.txt"]


@sqlite_only
def test_a_mail_is_parsed_with_no_write_lock_held(
    client: TestClient,
    world: World,
    database: Database,
    mail_inbox: str,
    smtp_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parsing a big mail takes a second (60 MB are allowed): done inside the transaction
    # that stores it, it held SQLite's one write lock meanwhile, and every other writer
    # (the inbox's other channels, agents' replies) waited.
    held = record_write_lock(monkeypatch, email_channel, "parse", database)
    written = record_write_lock(monkeypatch, LocalStorage, "put", database)  # the original
    send(smtp_port, customer_mail("parsed first, stored after"))
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 1
    assert held == [False] and written == [False]
