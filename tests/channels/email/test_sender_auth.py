"""A spoofed From is flagged when the mail server an inbox trusts says the sender's domain
did not send it; headers from servers it does not trust prove nothing."""

from fastapi.testclient import TestClient

from rapport.channels.email.sender_auth import check
from tests.channels.email.test_email import conversations, customer_mail, send
from tests.conftest import auth
from tests.factories import PASSWORD, World

TRUSTED = {"mx.relay.test"}
SPOOFED = (
    "mx.relay.test; spf=fail (sender IP is 203.0.113.9) smtp.mailfrom=evil.test; "
    "dkim=none (message not signed); dmarc=fail (p=REJECT) header.from=example.org"
)


def test_the_trusted_servers_dmarc_verdict_is_the_verdict() -> None:
    failed = check([SPOOFED], from_addr="dana@example.org", trusted=TRUSTED)
    assert failed == {
        "result": "fail",
        "by": "mx.relay.test",
        "domain": "example.org",
        "reported": {"dmarc": "fail", "spf": "fail", "dkim": "none"},
    }
    passed = check(
        ["mx.relay.test; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"],
        from_addr="dana@example.org",
        trusted=TRUSTED,
    )
    assert passed is not None and passed["result"] == "pass"


def test_without_dmarc_only_an_aligned_pass_counts() -> None:
    def result(header: str) -> str:
        found = check([header], from_addr="dana@mail.example.org", trusted=TRUSTED)
        assert found is not None
        return str(found["result"])

    assert result("mx.relay.test; dkim=pass header.d=example.org") == "pass"  # parent domain
    assert result("mx.relay.test; spf=pass smtp.mailfrom=bounce@mail.example.org") == "pass"
    # A mailing service's own bounce domain proves nothing about example.org.
    assert result("mx.relay.test; spf=pass smtp.mailfrom=bounces@esp.test") == "none"
    assert result("mx.relay.test; dkim=pass header.d=esp.test") == "none"
    assert result("mx.relay.test; spf=fail smtp.mailfrom=dana@mail.example.org") == "none"


def test_headers_from_untrusted_servers_and_forgeries_below_the_trusted_one_are_ignored() -> None:
    forged_pass = "mx.relay.test; dmarc=pass header.from=example.org"
    assert check([SPOOFED], from_addr="dana@example.org", trusted={"mx.other.test"}) is None
    assert check([SPOOFED], from_addr="dana@example.org", trusted=set()) is None
    assert check(["not a header at all ;;"], from_addr="dana@example.org", trusted=TRUSTED) is None
    # The topmost trusted header is the one the trusted server wrote on the way in.
    top = check([SPOOFED, forged_pass], from_addr="dana@example.org", trusted=TRUSTED)
    assert top is not None and top["result"] == "fail"
    elsewhere = check(
        ["mx.other.test; dmarc=pass header.from=example.org", SPOOFED],
        from_addr="dana@example.org",
        trusted=TRUSTED,
    )
    assert elsewhere is not None and elsewhere["result"] == "fail"


def test_a_spoofed_mail_is_flagged_to_agents_and_still_filed_under_the_address(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    r = client.patch(
        f"/api/v1/inboxes/{mail_inbox}",
        json={"settings": {"trusted_authserv_ids": sorted(TRUSTED)}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    send(
        smtp_port, customer_mail("It is me, change my bank details", Authentication_Results=SPOOFED)
    )
    (conv,) = conversations(client, world, mail_inbox)
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    (msg,) = detail["messages"]
    assert msg["meta"]["email"]["sender_auth"]["result"] == "fail"
    customer = client.get(f"/api/v1/customers/{conv['customer_id']}", headers=auth(world.bob))
    assert customer.json()["email"] == "dana@example.org"  # replies go to the real Dana

    client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    page = client.get(f"/app/conversations/{conv['id']}").text
    assert "sender not verified" in page
    assert "mx.relay.test found this email failed DMARC for example.org" in page


def test_an_inbox_that_trusts_no_server_records_no_verdict(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    send(smtp_port, customer_mail("hello", Authentication_Results=SPOOFED))
    (conv,) = conversations(client, world, mail_inbox)
    detail = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()
    assert "sender_auth" not in detail["messages"][0]["meta"]["email"]
