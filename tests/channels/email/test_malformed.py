"""Mail as it really arrives, broken or odd, is stored whole and can be answered
(tests/channels/email/test_email.py has the SMTP frame)."""

from email import message_from_bytes, policy
from email.utils import make_msgid

from fastapi.testclient import TestClient

from rapport.channels.email.parse import parse
from rapport.config import Settings
from rapport.db import Database
from tests.channels.email.test_email import (
    Outbox,
    answer,
    conversations,
    customer_mail,
    last_message,
    send,
)
from tests.conftest import auth
from tests.factories import World


def raw_mail(*headers: str, body: bytes = b"Hello\r\n") -> bytes:
    return "".join(f"{h}\r\n" for h in headers).encode("latin-1") + b"\r\n" + body


def test_a_subject_hiding_line_breaks_is_one_line_and_the_reply_leaves(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # An encoded word decodes to CR LF: the conversation's subject held them, the mail
    # library refused the reply's Subject, and the agent's answer stayed queued for good.
    raw = raw_mail(
        "From: Dana Scully <dana@example.org>",
        "To: support@acme.test",
        "Subject: =?utf-8?q?My_order=0D=0ABcc:_evil@example.net?=",
        "Message-ID: <crlf-subject@example.org>",
    )
    send(smtp_port, customer_mail(""), mail_from="dana@example.org", raw=raw)
    [conv] = conversations(client, world, mail_inbox)
    assert conv["subject"] == "My order Bcc: evil@example.net"
    answer(client, world, database, settings, conv["id"], "On its way.")
    assert last_message(client, world, conv["id"])["status"] == "sent"
    [sent] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    assert sent["Subject"].strip() == f"Re: My order Bcc: evil@example.net [#{conv['id']}]"
    assert "Bcc" not in sent and outbox[0].recipients == [["dana@example.org"]]


def test_an_inbox_sender_name_with_a_line_break_still_sends(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    r = client.patch(
        f"/api/v1/inboxes/{mail_inbox}",
        json={"settings": {"from_name": "Acme\nSupport"}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    send(smtp_port, customer_mail("Hi"))
    [conv] = conversations(client, world, mail_inbox)
    answer(client, world, database, settings, conv["id"], "Hello")
    [sent] = [message_from_bytes(m, policy=policy.default) for m in outbox[0].messages]
    assert sent["From"] == "Acme Support <support@acme.test>"


def test_headers_in_latin_1_keep_their_accents() -> None:
    # Unencoded 8-bit headers from an old mailer in Latin-1 were read as UTF-8 and each
    # accented letter became U+FFFD: "Ren� Dupont", on the customer and the subject.
    parsed = parse(
        b"From: Ren\xe9 Dupont <rene@example.org>\r\nTo: support@acme.test\r\n"
        b"Subject: Caf\xe9 froid, cr\xe8me br\xfbl\xe9e\r\nMessage-ID: <l1@example.org>\r\n"
        b"\r\nBonjour\r\n"
    )
    assert parsed.from_name == "René Dupont" and parsed.from_addr == "rene@example.org"
    assert parsed.subject == "Café froid, crème brûlée"
    # UTF-8 written raw (RFC 6532) is read as it was.
    utf8 = parse("Subject: Grüße aus Köln\r\nFrom: a@example.org\r\n\r\nx".encode())
    assert utf8.subject == "Grüße aus Köln"


def test_a_latin_1_name_reaches_the_customers_record(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    raw = raw_mail(
        "From: Ren\xe9 Dupont <rene@example.org>",
        "To: support@acme.test",
        "Subject: Caf\xe9",
        f"Message-ID: {make_msgid(domain='example.org')}",
    )
    send(smtp_port, customer_mail(""), mail_from="rene@example.org", raw=raw)
    [conv] = conversations(client, world, mail_inbox)
    assert conv["subject"] == "Café"
    customer = client.get(f"/api/v1/customers/{conv['customer_id']}", headers=auth(world.bob))
    assert customer.json()["name"] == "René Dupont"
