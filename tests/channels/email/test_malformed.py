"""Mail as it really arrives, broken or odd, is stored whole and can be answered
(tests/channels/email/test_email.py has the SMTP frame)."""

import smtplib
from email import message_from_bytes, policy
from email.message import EmailMessage
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
from tests.factories import PASSWORD, World


def detail(client: TestClient, world: World, conv: str) -> dict:  # type: ignore[type-arg]
    r = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


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


def test_two_mails_of_one_sender_under_one_message_id_are_both_kept(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # A web form's mailer that writes the same Message-ID on every mail: its second mail,
    # sent a day later with other words, was answered 250 and dropped as a redelivery.
    first = customer_mail("Order 1001 arrived broken.", Date="Mon, 07 Dec 2026 09:00:00 +0000")
    second = customer_mail("Order 1002 never came.", Date="Tue, 08 Dec 2026 09:00:00 +0000")
    second.replace_header("Message-ID", str(first["Message-ID"]))
    send(smtp_port, first)
    send(smtp_port, second)
    send(smtp_port, second)  # its own redelivery is still one message
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    texts = [m["text"] for m in detail(client, world, conv["id"])["messages"]]
    assert texts == ["Order 1001 arrived broken.", "Order 1002 never came."]


def test_a_mail_redelivered_through_another_route_is_stored_once(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # The same mail, once directly and once through a list that adds its footer and a
    # Received line: one message, as its Date and Message-ID say.
    mail = customer_mail("Please call me.", Date="Mon, 07 Dec 2026 09:00:00 +0000")
    send(smtp_port, mail)
    mail["Received"] = "from lists.example.org by mx.acme.test"
    mail.set_content("Please call me.\n\n--\nThe customers' list")
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 1


def test_what_a_plain_text_mail_says_above_a_forwarded_html_mail_is_shown() -> None:
    # The HTML parts alone made the message's HTML, which agents are shown: a customer's
    # plain-text words above a forwarded HTML mail were hidden, the forwarded mail shown.
    inner = EmailMessage()
    inner["From"] = "Bank <alerts@bank.example>"
    inner["Subject"] = "Verify your account"
    inner.set_content("Click here.")
    inner.add_alternative("<p>Click <a href='https://bank.example'>here</a>.</p>", subtype="html")
    mail = customer_mail("Is this real?\nMy card ends in 42 & I'm <worried>.")
    mail.add_attachment(inner)
    parsed = parse(mail.as_bytes())
    assert parsed.html is not None
    assert parsed.html.index("Is this real?<br>") < parsed.html.index("Click <a")
    assert "I&#x27;m &lt;worried&gt;" in parsed.html
    # A mail with HTML of its own shows that once, not its text part again.
    own = customer_mail("Hello")
    own.add_alternative("<p>Hello</p>", subtype="html")
    assert parse(own.as_bytes()).html == "<p>Hello</p>\n"
    assert parse(customer_mail("Plain alone").as_bytes()).html is None


def test_an_image_pasted_into_a_mail_is_shown_where_it_was_pasted(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # Its HTML said <img src="cid:...">, which no browser loads: every screenshot pasted
    # into a mail showed as a broken image, findable only among the files below it.
    png = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
    mail = customer_mail("See the screenshot.")
    mail.add_alternative(
        '<p>See the screenshot:</p><img src="cid:shot%231@example.org" alt="shot">'
        '<img src="cid:gone@example.org" alt="not attached">',
        subtype="html",
    )
    html_part = mail.get_payload()[1]
    html_part.add_related(png, maintype="image", subtype="png", cid="<shot#1@example.org>")
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    [message] = detail(client, world, conv["id"])["messages"]
    files = client.get(
        f"/api/v1/conversations/{conv['id']}/messages/{message['id']}/attachments",
        headers=auth(world.bob),
    ).json()
    [image] = [f for f in files if f["content_type"] == "image/png"]
    r = client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    assert r.status_code == 200, r.text
    page = client.get(f"/app/conversations/{conv['id']}").text
    src = f"/api/v1/conversations/{conv['id']}/messages/{message['id']}/attachments/{image['id']}"
    assert f'<img src="{src}" alt="shot">' in page
    assert '<img src="cid:gone@example.org" alt="not attached">' in page
    assert client.get(src).content == png


def test_the_api_gives_an_images_address_as_its_attachments_not_cid(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # The agent's page pointed a pasted image at its attachment, but the API gave the html
    # with <img src="cid:...">, which no API client can load or look up.
    png = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
    mail = customer_mail("See the screenshot.")
    mail.add_alternative(
        '<p>See:</p><img src="cid:shot@example.org" alt="shot">'
        '<img src="cid:gone@example.org" alt="not attached">',
        subtype="html",
    )
    mail.get_payload()[1].add_related(
        png, maintype="image", subtype="png", cid="<shot@example.org>"
    )
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    [message] = detail(client, world, conv["id"])["messages"]
    [image] = [a for a in message["attachments"] if a["content_type"] == "image/png"]
    # Absolute, under the public URL, as the API's other links are (a help center's url).
    src = (
        f"http://testserver/api/v1/conversations/{conv['id']}/messages/{message['id']}"
        f"/attachments/{image['id']}"
    )
    one = client.get(
        f"/api/v1/conversations/{conv['id']}/messages/{message['id']}", headers=auth(world.bob)
    ).json()
    for html in (message["html"], one["html"]):
        assert f'<img src="{src}" alt="shot">' in html
        assert '<img src="cid:gone@example.org" alt="not attached">' in html
    assert client.get(src, headers=auth(world.bob)).content == png


def test_a_customers_export_gives_an_images_address_as_the_api_does_not_cid(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # The API's messages pointed a pasted image at its attachment; the customer's export
    # (an access request) still held <img src="cid:...">, which names nothing outside the
    # mail it came in.
    png = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
    mail = customer_mail("See the screenshot.")
    mail.add_alternative('<p>See:</p><img src="cid:shot@example.org" alt="shot">', subtype="html")
    mail.get_payload()[1].add_related(
        png, maintype="image", subtype="png", cid="<shot@example.org>"
    )
    send(smtp_port, mail)
    [conv] = conversations(client, world, mail_inbox)
    [message] = detail(client, world, conv["id"])["messages"]
    r = client.get(f"/api/v1/customers/{conv['customer_id']}/export", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    [exported] = r.json()["conversations"][0]["messages"]
    assert exported["html"] == message["html"]
    assert exported["attachments"] == message["attachments"]
    assert "cid:" not in exported["html"] and 'src="http://testserver/api/v1/' in exported["html"]


def test_mail_for_an_inbox_switched_off_after_rcpt_is_not_answered_stored(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    # The inbox was looked up again at DATA and, switched off meanwhile, found no longer:
    # the listener stored the mail nowhere and still answered "250 OK: stored".
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.ehlo()
        s.mail("dana@example.org")
        assert s.rcpt("support@acme.test")[0] == 250
        r = client.patch(
            f"/api/v1/inboxes/{mail_inbox}", json={"enabled": False}, headers=auth(world.alice)
        )
        assert r.status_code == 200, r.text
        code, _ = s.data(customer_mail("Hello?").as_bytes())
    assert code == 451  # kept by the sender's server: asked again, it is told 550
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.ehlo()
        s.mail("dana@example.org")
        assert s.rcpt("support@acme.test")[0] == 550
