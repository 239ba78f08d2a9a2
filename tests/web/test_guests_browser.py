"""Someone copied on a customer's mail answering all, seen in Chromium: their message
arrives live under their own name, and they join the header's line of who else writes."""

import pytest
from fastapi.testclient import TestClient

from tests.channels.email.test_email import (  # noqa: F401  (the stand-in mail servers)
    Outbox,
    conversations,
    customer_mail,
    mail_inbox,
    outbox,
    send,
    smtp_port,
)
from tests.channels.email.test_guests import mail_from
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_a_guest_arrives_live_under_their_own_name(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    mail_inbox: str,  # noqa: F811
    smtp_port: int,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="Walter Skinner <walter@example.org>")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv['id']}")
    line = page.locator("#guests")
    expect(line).to_be_hidden()  # nobody else has written yet
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "I approved that invoice myself.",
            answering=[str(first["Message-ID"])],
        ),
    )
    said = page.locator("#messages li.dir-in").last
    expect(said.locator(".body")).to_have_text("I approved that invoice myself.")
    expect(said.locator(".meta")).to_contain_text("Walter Skinner")
    expect(page.locator("#messages li.dir-in").first.locator(".meta")).to_contain_text(
        "Dana Scully"
    )
    expect(line).to_be_visible()
    expect(line.locator("a")).to_have_text(["Walter Skinner"])
    # His next message adds nobody new; the composer's Cc offers him.
    send(
        smtp_port,
        mail_from(
            "Walter Skinner <walter@example.org>",
            "Also: PO 4411.",
            answering=[str(first["Message-ID"])],
        ),
    )
    expect(page.locator("#messages li.dir-in .body").last).to_have_text("Also: PO 4411.")
    expect(line.locator("a")).to_have_count(1)
    expect(page.locator("#composer input[name=cc]")).to_have_value("walter@example.org")
    page.reload()
    expect(page.locator("#guests a")).to_have_text(["Walter Skinner"])


def test_a_guest_erased_is_no_longer_named_live_nor_on_a_fresh_page(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    mail_inbox: str,  # noqa: F811
    smtp_port: int,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    # Erased by an admin, a guest stayed named on the header's line of the pages open.
    first = customer_mail(
        "Our invoice is wrong.",
        Cc="Walter Skinner <walter@example.org>, Monica Reyes <monica@example.org>",
    )
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    for sender, text in (
        ("Walter Skinner <walter@example.org>", "I approved that invoice myself."),
        ("Monica Reyes <monica@example.org>", "Accounts has it now."),
    ):
        send(smtp_port, mail_from(sender, text, answering=[str(first["Message-ID"])]))
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv['id']}")
    names = page.locator("#guests .names")
    expect(names).to_have_text("Monica Reyes, Walter Skinner")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    walter = page.locator("#guests a", has_text="Walter Skinner").get_attribute("href")
    assert walter is not None
    r = client.delete(f"/api/v1/customers/{walter.rsplit('/', 1)[1]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    expect(page.locator("#messages li", has_text="I approved")).to_have_count(0)
    expect(names).to_have_text("Monica Reyes")  # no comma left behind
    assert "Walter" not in (page.locator("#conversation").get_attribute("data-senders") or "")
    # Monica erased too: the line goes; and a page drawn afresh names neither.
    monica = page.locator("#guests a").get_attribute("href")
    assert monica is not None
    r = client.delete(f"/api/v1/customers/{monica.rsplit('/', 1)[1]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    expect(page.locator("#guests")).to_be_hidden()
    page.reload()
    expect(page.locator("#guests")).to_be_hidden()
    expect(page.locator("#guests a")).to_have_count(0)
    expect(page.locator("#messages li.dir-in")).to_have_count(1)  # Dana's own
