"""Rapport's own SMTP listener, as the domain's mail server, checks SPF, DKIM and DMARC.

The DNS is a small zone of ours (``verify.lookup`` stands in for the resolver); keys and
signatures are real (dkimpy signs, dkimpy and pyspf verify)."""

import base64
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit

import dkim
import pytest
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from rapport.channels.email import sender_auth, verify
from rapport.channels.email import smtp as listener
from rapport.config import Settings
from rapport.db import Database
from tests.channels.email.test_email import conversations, send
from tests.conftest import auth
from tests.factories import PASSWORD, World
from tests.web.conftest import free_port

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE = KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[tuple[str, str], list[Any]]]:
    """shop.example sends from 127.0.0.1 and signs with selector s1; it asks receivers to
    reject what fails DMARC. evil.example allows nobody."""
    records: dict[tuple[str, str], list[Any]] = {
        ("shop.example", "TXT"): [[b"v=spf1 ip4:127.0.0.1 -all"]],
        ("s1._domainkey.shop.example", "TXT"): [[f"v=DKIM1; k=rsa; p={PUBLIC}".encode()]],
        ("_dmarc.shop.example", "TXT"): [[b"v=DMARC1; p=reject"]],
        ("evil.example", "TXT"): [[b"v=spf1 -all"]],
    }

    def lookup(name: str, qtype: str, timeout: float = 5) -> list[Any]:
        return [((name, qtype), value) for value in records.get((name.lower(), qtype), [])]

    monkeypatch.setattr(verify, "lookup", lookup)
    yield records


def mail(sender: str, text: str = "Please change my delivery address") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "support@acme.test"
    message["Subject"] = "Delivery"
    message["Message-ID"] = make_msgid(domain="shop.example")
    message.set_content(text)
    return message


def signed(message: EmailMessage, domain: str = "shop.example") -> bytes:
    raw = message.as_bytes().replace(b"\n", b"\r\n")
    signature = dkim.sign(
        raw, b"s1", domain.encode(), PRIVATE, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + raw


# The servers messages come from: shop.example's own, a mailing list's (a forwarder SPF does
# not list), and a forger's, one of them dressing up its HELO as results.
SERVERS = {
    "shop": {"ip": "127.0.0.1", "helo": "mail.shop.example", "mail_from": "bounce@shop.example"},
    "forwarder": {"ip": "198.51.100.7", "helo": "fwd.example", "mail_from": "fwd@list.example"},
    "evil": {"ip": "203.0.113.9", "helo": "evil.example", "mail_from": "x@evil.example"},
    "injector": {
        "ip": "203.0.113.9",
        "helo": "x; dkim=pass header.d=shop.example; dmarc=pass header.from=shop.example",
        "mail_from": "",
    },
}


def results(raw: bytes, sent_by: str) -> str:
    return verify.authenticate(raw, authserv_id="mx.rapport.test", **SERVERS[sent_by])


def verdict(header: str, from_addr: str) -> str:
    found = sender_auth.check([header], from_addr=from_addr, trusted={"mx.rapport.test"})
    assert found is not None
    return str(found["result"])


def test_mail_sent_and_signed_by_its_domain_passes(zone: dict[Any, Any]) -> None:
    raw = signed(mail("Ana <ana@shop.example>"))
    header = results(raw, "shop")
    assert "spf=pass smtp.mailfrom=shop.example" in header
    assert "dkim=pass header.d=shop.example" in header
    assert "dmarc=pass header.from=shop.example" in header
    assert verdict(header, "ana@shop.example") == "pass"
    # Signed by its domain, sent through a server SPF does not list (a forwarder): DKIM's
    # aligned pass carries DMARC.
    header = results(raw, "forwarder")
    assert "dkim=pass" in header and "dmarc=pass" in header


def test_a_forged_from_fails_dmarc_and_a_tampered_body_fails_dkim(zone: dict[Any, Any]) -> None:
    forged = mail("CEO <ceo@shop.example>").as_bytes()
    header = results(forged, "evil")
    assert "spf=fail smtp.mailfrom=evil.example" in header and "dkim=none" in header
    assert "dmarc=fail header.from=shop.example" in header
    assert verdict(header, "ceo@shop.example") == "fail"

    tampered = signed(mail("Ana <ana@shop.example>")).replace(b"delivery address", b"bank account")
    header = results(tampered, "evil")
    assert "dkim=fail header.d=shop.example" in header and "dmarc=fail" in header


def test_a_domain_without_dmarc_or_a_dns_that_does_not_answer_proves_nothing(
    zone: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    del zone[("_dmarc.shop.example", "TXT")]
    forged = mail("CEO <ceo@shop.example>").as_bytes()
    header = results(forged, "evil")
    assert "dmarc=none" in header and verdict(header, "ceo@shop.example") == "none"

    def unreachable(name: str, qtype: str, timeout: float = 5) -> list[Any]:
        raise spf.TempError("DNS timed out")

    monkeypatch.setattr(verify, "lookup", unreachable)
    header = results(signed(mail("Ana <ana@shop.example>")), "shop")
    assert "spf=temperror" in header and "dkim=temperror" in header
    assert "dmarc=temperror" in header and verdict(header, "ana@shop.example") == "none"


def test_the_listener_as_mail_server_flags_a_forgery_without_any_trusted_relay(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    zone: dict[Any, Any],
) -> None:
    settings.smtp_check_senders = True
    ours = urlsplit(settings.public_url).hostname  # the name the listener signs with
    port = free_port()
    controller = listener.start(database, settings, host="127.0.0.1", port=port)
    try:
        # A forger writes a passing verdict under our own name: ours, on top, is believed.
        forged = mail("CEO <ceo@shop.example>", "Wire the refund to this account")
        forged["Authentication-Results"] = f"{ours}; dmarc=pass header.from=shop.example"
        send(port, forged, mail_from="x@evil.example")
        genuine = mail("Ana <ana@shop.example>")
        send(port, genuine, mail_from="bounce@shop.example", raw=signed(genuine))
    finally:
        controller.stop()
    by_sender = {}
    for conv in conversations(client, world, mail_inbox):
        detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
        (msg,) = detail["messages"]
        by_sender[msg["meta"]["email"]["from"]] = (conv["id"], msg["meta"]["email"]["sender_auth"])
    forged_conv, forged_auth = by_sender["ceo@shop.example"]
    assert forged_auth["result"] == "fail" and forged_auth["by"] == ours
    assert by_sender["ana@shop.example"][1]["result"] == "pass"
    client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    assert "sender not verified" in client.get(f"/app/conversations/{forged_conv}").text


def test_what_the_sender_says_cannot_write_results_into_our_header(zone: dict[Any, Any]) -> None:
    """HELO, MAIL FROM and From are the sender's words: a forger who dresses them up as
    results gets 'unknown' in their place, and two authors fail DMARC."""
    forged = mail("CEO <ceo@shop.example>").as_bytes()
    header = results(forged, "injector")
    assert "dkim=pass" not in header and "dmarc=pass" not in header
    assert "smtp.mailfrom=unknown" in header
    assert verdict(header, "ceo@shop.example") == "fail"

    two_authors = b"From: x@evil.example\r\n" + mail("CEO <ceo@shop.example>").as_bytes()
    header = results(two_authors, "evil")
    assert "dmarc=fail header.from=unknown" in header
    # And a pass for another author than the one shown vouches for nobody.
    assert (
        verdict("mx.rapport.test; dmarc=pass header.from=evil.example", "ceo@shop.example")
        == "fail"
    )


def test_a_message_the_checks_cannot_read_is_still_answered(zone: dict[Any, Any]) -> None:
    broken = b"From ceo@shop.example\r\nno colon here\r\nDKIM-Signature: v=1; d=(\r\n\r\nbody"
    header = verify.authenticate(
        broken, authserv_id="mx.rapport.test", **{**SERVERS["evil"], "mail_from": "x@bank..example"}
    )
    assert header.startswith("mx.rapport.test; ") and "dmarc=pass" not in header


def test_a_subdomain_falls_under_its_organizations_policy(zone: dict[Any, Any]) -> None:
    # shop.co.uk is registered under the public suffix co.uk: its policy covers
    # news.shop.co.uk, and co.uk (which a last-two-labels rule would ask) has none.
    zone[("_dmarc.shop.co.uk", "TXT")] = [[b"v=DMARC1; p=reject"]]
    zone[("_dmarc.co.uk", "TXT")] = []
    forged = mail("Offers <offers@news.shop.co.uk>").as_bytes()
    header = results(forged, "evil")
    assert "dmarc=fail header.from=news.shop.co.uk" in header
    assert verdict(header, "offers@news.shop.co.uk") == "fail"


def test_alignment_is_by_organizational_domain() -> None:
    assert sender_auth.organizational_domain("news.shop.co.uk") == "shop.co.uk"
    assert sender_auth.organizational_domain("co.uk") == "co.uk"  # a public suffix
    assert sender_auth.aligned("mail.shop.example", "news.shop.example")  # siblings
    assert sender_auth.aligned("shop.example", "news.shop.example")
    # Two registrants under one public suffix are two organizations.
    assert not sender_auth.aligned("attacker.co.uk", "shop.co.uk")
    assert not sender_auth.aligned("co.uk", "shop.co.uk")
    assert not sender_auth.aligned("alice.github.io", "bob.github.io")  # its private section
    assert not sender_auth.aligned("", "shop.example")


def test_a_mail_without_message_id_sent_again_from_another_server_is_stored_once(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    mail_inbox: str,
    zone: dict[Any, Any],
) -> None:
    # A mail with no Message-ID is known by its bytes' hash, which took in the
    # Authentication-Results header the listener writes on top: tried again by another of
    # the sender's servers (another address, another SPF verdict), it was stored twice.
    settings.smtp_check_senders = True
    port = free_port()
    controller = listener.start(database, settings, host="127.0.0.1", port=port)
    nameless = mail("Ana <ana@shop.example>")
    del nameless["Message-ID"]
    try:
        for source in ("127.0.0.1", "127.0.0.2"):
            with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0)) as s:
                s.sendmail("bounce@shop.example", ["support@acme.test"], nameless.as_bytes())
    finally:
        controller.stop()
    [conv] = conversations(client, world, mail_inbox)
    assert conv["messages_count"] == 1
