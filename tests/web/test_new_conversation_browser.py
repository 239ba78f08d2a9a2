"""A new conversation from the customer's page: only the inboxes that can reach the customer
are offered (by the API's own rule), each other one said why not; the message goes out and
the agent lands on the conversation; a refusal is said readably."""

import re
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from rapport.channels.models import Inbox
from rapport.db import Database
from tests.channels.email.test_email import Outbox, mail_inbox, outbox  # noqa: F401
from tests.channels.test_providers import make_inbox
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.conversations.test_start import customer as make_customer
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer, signed_in
from tests.web.test_pages import sign_in as sign_in_client

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_the_page_offers_only_the_inboxes_that_can_reach_the_customer(
    client: TestClient, world: World
) -> None:
    customer = make_customer(client, world.bob, name="Dana Scully", email="dana@example.org")
    make_inbox(client, world, "twilio_sms", {"phone_number": "+14155550100"})
    make_inbox(client, world, "whatsapp", {"phone_number_id": "1065"})
    r = client.post(
        f"/api/v1/customers/{customer}/identities",
        json={"kind": "whatsapp", "value": "14155550123"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    mail = make_inbox(client, world, "email", {"address": "support@acme.test"})
    off = make_inbox(client, world, "email", {"address": "old@acme.test"})
    r = client.patch(f"/api/v1/inboxes/{off}", json={"enabled": False}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    sign_in_client(client, "bob@acme.test")
    page = client.get(f"/app/customers/{customer}").text
    offered = re.findall(r'<option value="([^"]+)" data-channel="[^"]*"', page)
    assert sorted(offered) == sorted([mail, world.acme.inbox.id])  # type: ignore[union-attr]
    assert "Not through twilio_sms: the customer has no phone number" in page
    # A number to send to, but she never wrote there: WhatsApp's window is closed.
    assert "Not through whatsapp: the customer has not written in the last 24 hours" in page
    assert off not in page  # disabled: neither offered nor explained
    # A viewer cannot start one, and is not offered to.
    client.post("/api/v1/auth/logout")
    sign_in_client(client, "victor@acme.test")
    assert "new-conversation" not in client.get(f"/app/customers/{customer}").text


def test_an_agent_starts_a_conversation_from_the_customers_page(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
    mail_inbox: str,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    customer = make_customer(client, world.bob, name="Dana Scully", email="dana@example.org")
    api_inbox = world.acme.inbox.id  # type: ignore[union-attr]
    billing = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice))
    client.patch(
        f"/api/v1/inboxes/{api_inbox}",
        json={"auto_assign": True, "team_id": billing.json()["id"]},
        headers=auth(world.alice),
    ).raise_for_status()
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    page.click("#new-conversation summary")
    form = page.locator("#new-conversation-form")
    expect(form).to_be_visible()
    # The subject is an email's: asked for through the email inbox only. Nobody, through
    # an inbox that assigns by itself, is an agent it picks: said.
    nobody = form.locator("option.nobody")
    form.locator("select[name=inbox_id]").select_option(api_inbox)
    expect(form.locator("input[name=subject]")).to_be_hidden()
    expect(nobody).to_have_text("Nobody: the inbox assigns an agent")
    team = form.locator("select[name=team_id]")
    expect(team.locator("option").first).to_have_text("The inbox's (Billing)")
    form.locator("select[name=inbox_id]").select_option(mail_inbox)
    expect(form.locator("input[name=subject]")).to_be_visible()
    expect(nobody).to_have_text("Nobody")
    expect(team.locator("option").first).to_have_text("The inbox's (none)")

    # Refused after the page was drawn (the inbox disabled meanwhile, its event not in yet:
    # once in, the inbox is offered no more): said, nothing sent.
    with database.session() as db:
        db.execute(update(Inbox).where(Inbox.id == api_inbox).values(enabled=False))
    form.locator("select[name=inbox_id]").select_option(api_inbox)
    form.locator("textarea[name=text]").fill("Hello from the API inbox")
    form.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text("is disabled")
    assert page.url.endswith(f"/app/customers/{customer}")

    form.locator("select[name=inbox_id]").select_option(mail_inbox)
    form.locator("input[name=subject]").fill("Your refund")
    # Copies, written as people write them; the Bcc is named in no header.
    form.locator("input[name=cc]").fill("Fox Mulder <Fox@example.org>; walter@example.org")
    form.locator("input[name=bcc]").fill("crm@acme.test")
    # A canned response by "/shortcut", filled in for her before the conversation exists.
    client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "refund", "text": "Hi {{ customer.first_name }}, your refund"},
        headers=auth(world.bob),
    ).raise_for_status()
    text = form.locator("textarea[name=text]")
    text.fill("")
    text.type("/ref")
    expect(page.locator("#canned-menu li")).to_have_text(
        ["/refund — Hi {{ customer.first_name }}, your refund"]
    )
    text.press("Enter")
    expect(text).to_have_value("Hi Dana, your refund")
    expect(page.locator("#canned-menu")).to_be_hidden()
    text.fill("Your refund went out today.")
    # Files, as in a reply: each a chip once uploaded (for her: no conversation yet); one
    # taken off again is not sent.
    attach = form.locator("#attach-input")
    attach.set_input_files(
        [
            {"name": "receipt.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 r"},
            {"name": "wrong.txt", "mimeType": "text/plain", "buffer": b"not this one"},
        ]
    )
    chips = form.locator("#attached li")
    expect(chips).to_have_count(2)
    expect(form.locator("#attached li.uploading")).to_have_count(0)
    form.get_by_role("button", name="Remove wrong.txt").click()
    expect(chips).to_have_text(["receipt.pdf×"])
    # Given to a colleague and left waiting for the customer (it was always the caller's,
    # and open).
    assignee = form.locator("select[name=assignee_id]")
    # "Me" stays so while the page follows Bob's own presence (it became "Bob · online").
    page.wait_for_timeout(300)
    expect(assignee.locator("option")).to_have_text(["Me", "Alice · offline", "Nobody"])
    assignee.select_option(label="Alice · offline")
    form.locator("select[name=status]").select_option("pending")
    team.select_option(label="Billing")  # not the mail inbox's (it has none)
    page.screenshot(path=str(ARTIFACTS / "new-conversation.png"), full_page=True)
    form.locator("textarea[name=text]").press("Control+Enter")
    page.wait_for_url("**/app/conversations/*")
    conv = page.url.rsplit("/", 1)[1]
    expect(page.locator(".subject")).to_have_text("Your refund")
    expect(page.locator("#messages li.dir-out.kind-message .body")).to_have_text(
        "Your refund went out today."
    )
    expect(page.locator("#messages li.dir-out.kind-message .files a")).to_have_text(["receipt.pdf"])
    started = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    assert started["customer_id"] == customer and started["inbox_id"] == mail_inbox
    assert started["assignee_id"] == world.acme.users["alice"].id
    assert started["status"] == "pending"
    assert started["team_id"] == billing.json()["id"]
    # The server's worker sends it: the mail arrives, under its subject.
    deadline = time.monotonic() + 20
    while not outbox[0].messages and time.monotonic() < deadline:
        time.sleep(0.1)
    assert outbox[0].messages, "the mail never arrived"
    mail = outbox[0].messages[0].decode()
    assert f"Subject: Your refund [#{conv}]" in mail
    assert 'filename="receipt.pdf"' in mail and "wrong.txt" not in mail
    assert "Cc: fox@example.org, walter@example.org" in mail and "crm@acme.test" not in mail
    assert outbox[0].recipients == [
        ["dana@example.org", "fox@example.org", "walter@example.org", "crm@acme.test"]
    ]
    expect(page.locator("#messages li.dir-out.kind-message .delivery")).to_have_text("sent")
    expect(page.locator("#messages li.dir-out.kind-message .copies")).to_have_text(
        "Cc: fox@example.org, walter@example.org · Bcc: crm@acme.test"
    )

    # A reply offers whom the thread's latest mail copied; Walter left out, Fox is copied.
    composer = page.locator("#composer")
    cc = composer.locator("input[name=cc]")
    expect(cc).to_have_value("fox@example.org, walter@example.org")
    cc.fill("fox@example.org")
    composer.locator("input[name=bcc]").fill("audit@acme.test")
    composer.locator("textarea").fill("And here is the receipt.")
    composer.locator("button[type=submit]").click()
    expect(page.locator("#messages li.dir-out.kind-message .copies").last).to_have_text(
        "Cc: fox@example.org · Bcc: audit@acme.test"
    )
    expect(composer.locator("input[name=bcc]")).to_have_value("")  # this reply's alone
    expect(cc).to_have_value("fox@example.org")
    deadline = time.monotonic() + 20
    while len(outbox[0].messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert outbox[0].recipients[1:] == [["dana@example.org", "fox@example.org", "audit@acme.test"]]
    # A private note goes to no one: no copies are offered for it.
    composer.locator("input[name=mode][value=note]").check()
    expect(cc).to_be_hidden()


def test_an_inbox_disabled_meanwhile_is_offered_no_more_on_an_open_customer_page(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # The page went on offering it, and the message written to go through it was refused.
    customer = make_customer(client, world.bob, name="Dana Scully", email="dana@example.org")
    shop = client.post(
        "/api/v1/inboxes",
        json={"name": "Shop", "channel": "api", "settings": {"webhook_url": "https://s.test/h"}},
        headers=auth(world.alice),
    ).json()["id"]
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    page.click("#new-conversation summary")
    through = page.locator("#new-conversation-form select[name=inbox_id] option")
    expect(through).to_have_count(2)
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    r = live_server.http.patch(
        f"/api/v1/inboxes/{shop}", json={"enabled": False}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    expect(through).to_have_count(1)
    expect(page.locator(f'#new-conversation-form option[value="{shop}"]')).to_have_count(0)


def test_a_customer_page_whose_session_ended_keeps_what_the_agent_is_writing(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Once the session has ended, the page's redraw answers with the sign-in page: an
    # agent writing a first message is told, and not sent away from what she wrote.
    customer = make_customer(client, world.bob, name="Ended Writer", email="ended.w@example.org")
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    page.click("#new-conversation summary")
    page.fill("#new-conversation-form textarea[name=text]", "About your refund")
    page.context.clear_cookies()  # the session gone (its socket still open)
    inbound(client, world, "ended-w", "ended.w@example.org")
    expect(page.locator("#flash")).to_contain_text("You are signed out")
    assert page.url.endswith(f"/app/customers/{customer}")
    expect(page.locator("#new-conversation-form textarea[name=text]")).to_have_value(
        "About your refund"
    )
