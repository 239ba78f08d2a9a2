"""Cc and Bcc: whom a customer's mail copied stays on the thread, and an agent's reply
copies whom the agent keeps (tests/channels/email/test_email.py has the SMTP frame)."""

import smtplib
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage

from fastapi.testclient import TestClient

from rapport.channels.email.parse import parse
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from tests.channels.email.test_email import Outbox, conversations, customer_mail, send
from tests.conftest import auth
from tests.factories import World
from tests.web.test_pages import sign_in


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


def reply(client: TestClient, world: World, conv: str, **body: object) -> dict:  # type: ignore[type-arg]
    r = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Answer.", **body},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_refused_customer_fails_the_reply_and_a_refused_copy_is_said(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # Some recipients refused, not all: smtplib says so only in what it returns, and the
    # reply passed for sent though the customer never got it.
    outbox[0].refused = {"dana@example.org"}
    # Even for a moment only: tried again, it would mail the copies again, and again.
    outbox[0].refused_with = "450 4.2.0 mailbox busy"
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)
    ours = reply(client, world, conv["id"], cc=["fox@example.org"])
    Worker(database, settings).run_until_idle()
    [failed] = [m for m in detail(client, world, conv["id"])["messages"] if m["id"] == ours["id"]]
    assert failed["status"] == "failed"
    assert failed["error"] == "recipient refused: dana@example.org (the copies were sent)"
    assert outbox[0].recipients == [["fox@example.org"]]

    outbox[0].refused = {"gone@example.org"}
    ours = reply(client, world, conv["id"], cc=["fox@example.org", "gone@example.org"])
    Worker(database, settings).run_until_idle()
    [sent] = [m for m in detail(client, world, conv["id"])["messages"] if m["id"] == ours["id"]]
    assert sent["status"] == "sent"
    assert sent["meta"]["delivery"]["refused_copies"] == ["gone@example.org"]
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/conversations/{conv['id']}").text
    assert "Cc: fox@example.org, gone@example.org · Not delivered to: gone@example.org" in page


def failed(address: str, original: str | None = None) -> str:
    """A report's block for one recipient it could not deliver to."""
    said = f"Original-Recipient: rfc822; {original}\r\n" if original else ""
    return f"{said}Final-Recipient: rfc822; {address}\r\nAction: failed\r\nStatus: 5.1.1\r\n"


def delivery_report(message_id: str, blocks: str, *, whole: bool = False) -> bytes:
    """A receiving server's report (RFC 3464) on our mail, its recipients' ``blocks``; it
    returns our mail's headers, or the ``whole`` of it as Postfix and Exim do."""
    returned = (
        f"Content-Type: message/rfc822\r\n\r\nMessage-ID: {message_id}\r\n"
        "To: dana@example.org\r\nSubject: Re: Hello?\r\n\r\nOur answer.\r\n"
        if whole
        else f"Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n"
        "To: dana@example.org\r\n"
    )
    return (
        "From: Mail Delivery System <MAILER-DAEMON@example.net>\r\n"
        "To: support@acme.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{uuid.uuid4().hex}@example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.net\r\n\r\n{blocks}"
        f"\r\n--B\r\n{returned}\r\n--B--\r\n"
    ).encode()


def test_a_bounce_of_a_copy_leaves_the_reply_sent_and_of_the_customer_fails_it(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    # A copy's server bounced it: the reply was marked failed (and "Send again" mailed
    # everyone again), though the customer had it.
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)
    ours = reply(client, world, conv["id"], cc=["gone@example.net"])
    Worker(database, settings).run_until_idle()

    def now() -> dict:  # type: ignore[type-arg]
        [m] = [m for m in detail(client, world, conv["id"])["messages"] if m["id"] == ours["id"]]
        return m  # type: ignore[no-any-return]

    message_id = now()["external_id"]
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:

        def reported(blocks: str, *, whole: bool = False) -> None:
            s.sendmail("", ["support@acme.test"], delivery_report(message_id, blocks, whole=whole))

        reported(failed("gone@example.net"))
        assert now()["status"] == "sent"
        assert now()["meta"]["email"]["bounced"] == ["gone@example.net"]
        # The copy forwarded elsewhere, and that bounced: the address we sent to is its
        # Original-Recipient (the Final-Recipient is the forward's).
        reported(failed("fox.mulder@elsewhere.example", original="GONE@example.net"))
        assert now()["status"] == "sent"
        # A delay notice, even the customer's, fails nothing (it failed the reply).
        reported("Final-Recipient: rfc822; dana@example.org\r\nAction: delayed\r\n")
        assert now()["status"] == "sent"
        # The customer's, returning our mail whole (it was not seen as a report on ours).
        reported(failed("Dana@Example.org"), whole=True)
    assert now()["status"] == "failed"
    # What it returned is ours, not the report's text.
    read = parse(delivery_report(message_id, failed("dana@example.org"), whole=True))
    assert read.bounce_of == [message_id] and read.bounced_to == ["dana@example.org"]
    assert "Our answer." not in read.text


def test_only_plain_addresses_are_copied_and_never_the_customer_or_ourselves(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # An address in a group or with a route reached others than the one shown; the
    # customer's own was shown as copied but not sent; ours would come back in.
    mail = customer_mail("Hello?")
    mail["Cc"] = '"sales,eu"@example.org, fox@example.org'
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    # A quoted address, which a mail client splits at its comma, is not offered.
    assert detail(client, world, conv["id"])["reply_cc"] == ["fox@example.org"]
    billing = client.post(
        "/api/v1/inboxes",
        json={"name": "Billing", "channel": "email", "settings": {"address": "billing@acme.test"}},
        headers=auth(world.alice),
    )
    assert billing.status_code == 201, billing.text
    path = f"/api/v1/conversations/{conv['id']}/messages"
    for cc, said in [
        (["boss@acme.test>fox@example.org"], "“boss@acme.test>fox@example.org” is not"),
        (["team:walter@example.org"], "“team:walter@example.org” is not an email address"),
        (["a@-.org"], "“a@-.org” is not an email address"),
        (["Billing@Acme.test"], "billing@acme.test is this workspace's own address"),
        (["support+c1@acme.test"], "support+c1@acme.test is this workspace's own address"),
    ]:
        r = client.post(path, json={"text": "x", "cc": cc}, headers=auth(world.bob))
        assert r.status_code == 422 and said in r.json()["detail"], r.text
    sent = reply(client, world, conv["id"], cc=["Dana@Example.org", "fox@example.org"])
    assert sent["meta"]["email"] == {"cc": ["fox@example.org"], "bcc": []}


def test_a_macro_an_agent_runs_copies_as_her_reply_would_and_says_how_a_reply_goes(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
    outbox: tuple[Outbox, int],
) -> None:
    send(smtp_port, customer_mail("Hello?", Cc="fox@example.org"))
    [conv] = conversations(client, world, mail_inbox)
    r = client.get(f"/api/v1/conversations/{conv['id']}/reply-copies", headers=auth(world.bob))
    mail = {"id": mail_inbox, "name": "Support mail", "channel": "email", "enabled": True}
    assert r.json() == {"by_email": True, "cc": ["fox@example.org"], "inbox": mail}
    chat = world.acme.opened.conversation.id
    # And the inbox it goes through, which a composer says is disabled while it is.
    api = world.acme.inbox.id  # type: ignore[union-attr]
    off = client.patch(f"/api/v1/inboxes/{api}", json={"enabled": False}, headers=auth(world.alice))
    assert off.status_code == 200, off.text
    r = client.get(f"/api/v1/conversations/{chat}/reply-copies", headers=auth(world.bob))
    shown = {"id": api, "name": "Acme API", "channel": "api", "enabled": False}
    assert r.json() == {"by_email": False, "cc": [], "inbox": shown}
    client.patch(f"/api/v1/inboxes/{api}", json={"enabled": True}, headers=auth(world.alice))
    macro = client.post(
        "/api/v1/macros",
        json={
            "name": "Thanks",
            "visibility": "personal",
            "actions": [{"type": "send_message", "value": "Thanks!"}],
        },
        headers=auth(world.bob),
    )
    assert macro.status_code == 201, macro.text
    r = client.post(
        f"/api/v1/conversations/{conv['id']}/macros/{macro.json()['id']}", headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    Worker(database, settings).run_until_idle()
    assert outbox[0].recipients == [["dana@example.org", "fox@example.org"]]


def sent_reply(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    conv: str,
    **body: object,
) -> tuple[str, str]:
    """An agent's reply, sent: its id and our Message-ID."""
    ours = reply(client, world, conv, **body)
    Worker(database, settings).run_until_idle()
    m = one(client, world, conv, ours["id"])
    assert m["status"] == "sent"
    return m["id"], m["external_id"]


def one(client: TestClient, world: World, conv: str, message: str) -> dict:  # type: ignore[type-arg]
    [m] = [m for m in detail(client, world, conv)["messages"] if m["id"] == message]
    return m  # type: ignore[no-any-return]


def returned(port: int, raw: bytes) -> None:
    """What a mail server sends back, from the null sender."""
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.sendmail("", ["support@acme.test"], raw)


def plain_bounce(message_id: str, *, qmail: bool, failed_to: str) -> bytes:
    """A bounce that is no delivery report, as qmail writes one (its copy of our mail
    inline) or as Exim does by default (``X-Failed-Recipients``, the copy quoted)."""
    if qmail:
        return (
            "From: MAILER-DAEMON@mx.example.net\r\nTo: support@acme.test\r\n"
            "Subject: failure notice\r\n\r\n"
            "Hi. This is the qmail-send program at mx.example.net.\r\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
            "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
            f"<{failed_to}>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
            "--- Below this line is a copy of the message.\r\n\r\n"
            f"Message-ID: {message_id}\r\nTo: dana@example.org\r\n\r\nOur answer.\r\n"
        ).encode()
    return (
        "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n"
        "To: support@acme.test\r\n"
        f"X-Failed-Recipients: {failed_to}\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n\r\n"
        "This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its\r\n"
        f"recipients. This is a permanent error.\r\n\r\n  {failed_to}\r\n"
        "    SMTP error from remote mail server after RCPT TO: 550 unknown user\r\n\r\n"
        "------ This is a copy of the message, including all the headers. ------\r\n\r\n"
        f"Message-ID: {message_id}\r\nTo: dana@example.org\r\n\r\nOur answer.\r\n"
    ).encode()


def test_a_plain_bounce_is_read_as_a_report_is_and_a_copy_named_with_the_customer_is_kept(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)

    def sent(**body: object) -> tuple[str, str]:
        return sent_reply(client, world, database, settings, conv["id"], **body)

    def now(message: str) -> dict:  # type: ignore[type-arg]
        return one(client, world, conv["id"], message)

    # qmail's bounce of a copy: the reply stays sent, the copy known as bounced (a plain
    # bounce marked nothing at all).
    first, first_id = sent(cc=["gone@example.net"])
    returned(smtp_port, plain_bounce(first_id, qmail=True, failed_to="gone@example.net"))
    assert now(first)["status"] == "sent"
    assert now(first)["meta"]["email"]["bounced"] == ["gone@example.net"]
    # Exim's of the customer's: the reply failed.
    second, second_id = sent()
    returned(smtp_port, plain_bounce(second_id, qmail=False, failed_to="dana@example.org"))
    assert now(second)["status"] == "failed"
    # A report naming the customer and a copy fails the reply and keeps the copy's bounce.
    third, third_id = sent(cc=["walter@example.org"])
    both = failed("dana@example.org") + "\r\n" + failed("walter@example.org")
    returned(smtp_port, delivery_report(third_id, both))
    assert now(third)["status"] == "failed"
    assert now(third)["meta"]["email"]["bounced"] == ["walter@example.org"]
    # Read alone: what each names.
    read = parse(plain_bounce("<x@acme.test>", qmail=True, failed_to="A@Example.net"))
    assert (read.bounce_of, read.bounced_to, read.auto_reply) == (
        ["<x@acme.test>"],
        ["a@example.net"],
        True,
    )
    # A person quoting our headers is no bounce.
    quoting = parse(
        b"From: dana@example.org\r\nTo: support@acme.test\r\nSubject: fwd\r\n\r\n"
        b"Message-ID: <x@acme.test>\r\n<fox@example.org>:\r\n"
    )
    assert (quoting.bounce_of, quoting.bounced_to) == ([], [])


def test_a_plain_delay_warning_from_the_mailer_daemon_does_not_fail_the_reply(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    # A warning that the mail is still queued (no delivery report: sendmail's old form,
    # many appliances'), quoting our headers: delivery goes on, nothing failed yet.
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)
    ours, message_id = sent_reply(client, world, database, settings, conv["id"])
    returned(
        smtp_port,
        (
            "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\r\n"
            "To: support@acme.test\r\n"
            "Subject: Warning: could not send message for past 4 hours\r\n\r\n"
            "    **********************************************\r\n"
            "    **      THIS IS A WARNING MESSAGE ONLY      **\r\n"
            "    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\r\n"
            "    **********************************************\r\n\r\n"
            "The original message was received at Mon, 7 Dec 2026 09:00:00 GMT\r\n"
            "Will keep trying until message is 5 days old\r\n\r\n"
            "   ----- Original message headers follow -----\r\n\r\n"
            f"Message-ID: {message_id}\r\nTo: dana@example.org\r\n"
        ).encode(),
    )
    assert one(client, world, conv["id"], ours)["status"] == "sent"


def test_a_person_writing_from_postmaster_quoting_our_message_id_fails_nothing(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    # The customer's mail admin answering our mail (In-Reply-To it), asking about the
    # headers of the mail they did receive: a person, no bounce.
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)
    ours, message_id = sent_reply(client, world, database, settings, conv["id"])
    returned(
        smtp_port,
        (
            "From: Jane Admin <postmaster@example.org>\r\n"
            "To: support@acme.test\r\n"
            f"In-Reply-To: {message_id}\r\nReferences: {message_id}\r\n"
            "Subject: Re: your mail to Dana\r\n\r\n"
            "Dana got your mail below, but our filter flagged it. Is this really from you?\r\n\r\n"
            f"> Message-ID: {message_id}\r\n> To: dana@example.org\r\n"
        ).encode(),
    )
    assert one(client, world, conv["id"], ours)["status"] == "sent"


def test_a_bounce_read_by_x_failed_recipients_is_no_person_writing() -> None:
    # Exim's bounce from a sender address of its own (errors_reply_to / a relay's
    # bounce address): read as a bounce, so it must not be a person asking to be answered.
    read = parse(
        b"From: Bounces <bounces@relay.example.net>\r\nTo: support@acme.test\r\n"
        b"X-Failed-Recipients: dana@example.org\r\n"
        b"Subject: Mail delivery failed: returning message to sender\r\n\r\n"
        b"A message that you sent could not be delivered.\r\n\r\n  dana@example.org\r\n\r\n"
        b"------ This is a copy of the message, including all the headers. ------\r\n\r\n"
        b"Message-ID: <x@acme.test>\r\nTo: dana@example.org\r\n\r\nOur answer.\r\n"
    )
    assert read.bounce_of == ["<x@acme.test>"]
    assert read.auto_reply, "a bounce that marks our mail failed is answered as a person's mail"


def test_a_read_receipt_with_our_headers_does_not_fail_the_reply(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    smtp_port: int,
) -> None:
    # (Pre-existing, same code path.) Thunderbird's read receipt: a multipart/report of
    # report-type disposition-notification with our headers in text/rfc822-headers. She
    # read the reply; it is marked failed, "bounced".
    send(smtp_port, customer_mail("Hello?"))
    [conv] = conversations(client, world, mail_inbox)
    ours, message_id = sent_reply(client, world, database, settings, conv["id"])
    returned(
        smtp_port,
        (
            "From: Dana Scully <dana@example.org>\r\nTo: support@acme.test\r\n"
            "Subject: Return Receipt (displayed) - Re: My order\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"\r\n'
            "\r\n--B\r\nContent-Type: text/plain\r\n\r\nThe message was displayed.\r\n"
            "--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
            f"Final-Recipient: rfc822;dana@example.org\r\nOriginal-Message-ID: {message_id}\r\n"
            "Disposition: manual-action/MDN-sent-manually; displayed\r\n"
            f"\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n"
            "To: dana@example.org\r\n\r\n--B--\r\n"
        ).encode(),
    )
    assert one(client, world, conv["id"], ours)["status"] == "sent"
