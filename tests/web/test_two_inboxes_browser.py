"""One mail to two of the workspace's inboxes, kept once, in Chromium: its message names
the other inbox it came to, live when that copy comes after the page was opened."""

import smtplib

import pytest
from fastapi.testclient import TestClient

from rapport.conversations.models import Message
from rapport.db import Database
from tests.channels.email.test_email import (  # noqa: F401  (the stand-in mail servers)
    Outbox,
    conversations,
    customer_mail,
    mail_inbox,
    outbox,
    smtp_port,
)
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_a_mail_names_the_other_inbox_it_came_to_live_and_after_a_reload(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
    mail_inbox: str,  # noqa: F811
    smtp_port: int,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    sales = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Sales <b>&</b> leads",  # a name is text, never markup
            "channel": "email",
            "settings": {"address": "sales@acme.test", "smtp_host": "127.0.0.1"}
            | {"smtp_port": outbox[1], "smtp_security": "none"},
        },
        headers=auth(world.alice),
    )
    assert sales.status_code == 201, sales.text
    mail = customer_mail("Can I buy a licence for my team?", Cc="sales@acme.test")
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:  # support@'s copy first
        s.sendmail("dana@example.org", ["support@acme.test"], mail.as_bytes())
    [conv] = conversations(client, world, mail_inbox)
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv['id']}")
    message = page.locator("#messages li.dir-in")
    expect(message.locator(".copies")).to_have_text("Cc: sales@acme.test")
    expect(message.locator(".received-by")).to_have_count(0)

    # The copy to sales@ comes while the page is open: it is kept once, and said there.
    with smtplib.SMTP("127.0.0.1", smtp_port) as s:
        s.sendmail("dana@example.org", ["sales@acme.test"], mail.as_bytes())
    received = message.locator(".received-by")
    expect(received).to_have_text("Also received by: Sales <b>&</b> leads")
    expect(received.locator("b")).to_have_count(0)
    expect(message).to_have_count(1)

    # Drawn by the server alike; an inbox that is none of the workspace's is not named
    # (not another workspace's, nor one deleted: its id alone would tell nothing).
    with database.session() as db:
        row = db.query(Message).filter(Message.conversation_id == conv["id"]).one()
        kept = row.meta["email"]
        theirs = world.globex.inbox.id  # type: ignore[union-attr]
        reached = ["inbox-gone", *kept["also_received_by"], theirs]
        row.meta = {**row.meta, "email": {**kept, "also_received_by": reached}}
    page.reload()
    expect(received).to_have_text("Also received by: Sales <b>&</b> leads")
    expect(received.locator("b")).to_have_count(0)
    expect(message.locator(".copies")).to_have_text("Cc: sales@acme.test")
