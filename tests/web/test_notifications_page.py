"""The notifications page in the browser, past its first page."""

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from rapport.db import Database
from rapport.notifications.models import Notification
from rapport.web.views import NOTIFICATIONS_SHOWN
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_mark_all_read_stays_offered_on_an_older_page_while_newer_ones_are_unread(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # Drawn again on an event, the page asked its own list whether any was unread: on an
    # older page of read ones the button went grey while the newer ones waited unread.
    with database.session() as db:
        bob = world.acme.users["bob"].id
        long_ago = datetime(2026, 1, 1, tzinfo=UTC)
        db.add(
            Notification(
                workspace_id=world.acme.workspace.id,
                user_id=bob,
                kind="mention",
                text="the oldest, read",
                created_at=long_ago,
                read_at=long_ago,
            )
        )
        db.add_all(
            Notification(workspace_id=world.acme.workspace.id, user_id=bob, kind="mention")
            for _ in range(NOTIFICATIONS_SHOWN)
        )
    page = signed_in(browser, live_server, "bob@acme.test", "/app/notifications")
    page.click("#notifications .more")
    expect(page.locator("#notification-list li")).to_have_count(1)
    expect(page.locator("#notification-list")).to_contain_text("the oldest, read")
    button = page.locator("#notifications-all-read")
    expect(button).to_be_enabled()
    page.wait_for_timeout(300)  # the stream connects
    client.post(
        f"/api/v1/conversations/{world.acme.opened.conversation.id}/notes",
        json={"text": "@bob one more"},
        headers=auth(world.alice),
    )
    expect(page.locator("#notif-badge")).to_have_text(f"{NOTIFICATIONS_SHOWN - 1}+")
    page.wait_for_timeout(500)  # the page is drawn again
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("#notif-badge")).to_be_hidden()
    expect(button).to_be_disabled()


def test_mark_all_read_leaves_unread_one_that_came_after_the_list_was_drawn(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # One that came while the page had not drawn it yet (its event on its way, or lost) was
    # marked read with the rest: the agent never saw it.
    bob = world.acme.users["bob"].id
    ws = world.acme.workspace.id
    with database.session() as db:
        db.add(Notification(workspace_id=ws, user_id=bob, kind="mention", text="seen"))
    page = signed_in(browser, live_server, "bob@acme.test", "/app/notifications")
    expect(page.locator("#notification-list li.unread")).to_have_text([re.compile("seen")])
    with database.session() as db:  # stored without its event: the page does not redraw
        db.add(Notification(workspace_id=ws, user_id=bob, kind="mention", text="unseen"))
    page.click("#notifications-all-read")
    expect(page.locator("#notification-list li.unread")).to_have_text([re.compile("unseen")])
    expect(page.locator("#notif-badge")).to_have_text("1")
    unread = client.get("/api/v1/notifications", params={"unread": True}, headers=auth(world.bob))
    assert [n["text"] for n in unread.json()["items"]] == ["unseen"]
