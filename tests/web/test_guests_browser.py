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
