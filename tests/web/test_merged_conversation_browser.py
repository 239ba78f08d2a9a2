"""A conversation merged by a colleague while an agent has it (or the other) open, and a
link to a merged conversation opened later."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def by_email(client: TestClient, world: World) -> str:
    """The first customer's conversation in an email inbox too; its id."""
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    r = client.post(
        "/api/v1/conversations",
        json={
            "customer_id": world.acme.opened.customer.id,
            "inbox_id": mail["id"],
            "text": "We wrote by email too.",
            "subject": "Your order",
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_both_open_pages_say_at_once_that_a_colleague_merged_their_conversations(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Neither page changed: the merged one kept an empty thread whose reply box still sent,
    # the other showed none of the messages it had taken in.
    gone = world.acme.opened.conversation.id
    kept = by_email(client, world)
    merged_page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{gone}")
    kept_page = signed_in(browser, live_server, "alice@acme.test", f"/app/conversations/{kept}")
    for page in (merged_page, kept_page):
        page.wait_for_function("() => document.body.dataset.streamOpen === '1'")
    merged_page.fill("#composer textarea", "Half a reply")
    r = client.post(
        f"/api/v1/conversations/{kept}/merge", json={"merged_id": gone}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text

    notice = merged_page.locator("#merged-notice")
    expect(notice).to_contain_text("merged into another")
    expect(merged_page.locator("#composer button[type=submit]")).to_be_disabled()
    expect(merged_page.locator("#composer textarea")).to_have_value("Half a reply")
    merged_page.click("#merged-notice a")
    merged_page.wait_for_url(f"**/app/conversations/{kept}")

    expect(kept_page.locator("#merged-notice")).to_contain_text("merged into this one")
    kept_page.click("#merged-notice button")
    expect(kept_page.locator("#messages")).to_contain_text("Hello Acme")


def test_a_link_to_a_merged_conversation_opens_the_one_it_was_merged_into(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # A notification's link (or an old tab) opened the emptied thread.
    gone = world.acme.opened.conversation.id
    kept = by_email(client, world)
    r = client.post(
        f"/api/v1/conversations/{kept}/merge", json={"merged_id": gone}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{gone}")
    page.wait_for_url(f"**/app/conversations/{kept}")
    expect(page.locator("#messages")).to_contain_text("Hello Acme")
    expect(page.locator("#messages")).to_contain_text("We wrote by email too.")
