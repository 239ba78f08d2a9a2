"""The conversation page in a real browser: priority, labels, and snoozing until a time."""

from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import PASSWORD, World
from tests.web.conftest import ARTIFACTS, LiveServer

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_agent_sets_priority_labels_and_a_snooze(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    cid = inbound(client, world, "conv-ui", "conv-ui@example.com")
    page = browser.new_page(viewport={"width": 390, "height": 844}, timezone_id="Europe/Madrid")
    page.goto(f"{live_server.url}/login")
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/app/inbox")
    page.goto(f"{live_server.url}/app/conversations/{cid}")

    page.select_option("#priority", "urgent")
    page.fill("#label-form input", "Billing <i>")
    page.press("#label-form input", "Enter")
    expect(page.locator("#label-list .label")).to_have_text(["billing <i>"])
    page.fill("#label-form input", "vip")
    page.click("#label-form button")
    expect(page.locator("#label-list .label")).to_have_text(["billing <i>", "vip"])
    page.click('#label-list button[data-label="vip"]')
    expect(page.locator("#label-list .label")).to_have_text(["billing <i>"])

    # Snooze until 1 March 2030, 09:30 in the agent's own time zone (Madrid, UTC+1 then).
    expect(page.locator("#snooze-until")).to_be_hidden()
    page.select_option("#status-select", "snoozed")
    expect(page.locator("#snooze-until")).to_be_visible()
    page.fill("#snooze-input", "2030-03-01T09:30")
    page.click("#status-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("snoozed")
    page.screenshot(path=str(ARTIFACTS / "conversation-snooze.png"), full_page=True)

    c = httpx.get(f"{live_server.url}/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
    assert c["priority"] == "urgent"
    assert c["labels"] == ["billing <i>"]
    assert c["status"] == "snoozed"
    until = datetime.fromisoformat(c["snoozed_until"])
    assert until.astimezone(UTC) == datetime(2030, 3, 1, 8, 30, tzinfo=UTC)

    # After a reload the page shows what was saved, the snooze in local time.
    page.reload()
    expect(page.locator("#priority")).to_have_value("urgent")
    expect(page.locator("#snooze-input")).to_have_value("2030-03-01T09:30")
    page.click("#resolve")
    expect(page.locator("#status")).to_have_text("resolved")
    expect(page.locator("#snooze-until")).to_be_hidden()
