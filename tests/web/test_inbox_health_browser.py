"""An admin sees a failing inbox: its badge on the settings page, the reasons behind it,
and a banner over the agent app; agents see no banner. Every text is shown as text."""

import pytest
from fastapi.testclient import TestClient

from rapport.channels import health
from rapport.db import Database
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect

NAME = '<b>Web & "shop"</b>'
ERROR = "WhatsApp refused the message (190: token expired) <img src=x onerror=alert(1)>"


def test_an_admin_sees_a_failing_inbox_on_the_settings_page_and_over_the_app(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    failing = world.acme.inbox.id  # type: ignore[union-attr]
    client.patch(f"/api/v1/inboxes/{failing}", json={"name": NAME}, headers=auth(world.alice))
    made = client.post(
        "/api/v1/inboxes", json={"name": "Mobile app", "channel": "api"}, headers=auth(world.alice)
    )
    working = made.json()["id"]
    with database.session() as db:
        health.record_failure(
            db,
            inbox_id=failing,
            workspace_id=world.acme.workspace.id,
            error=ERROR,
            at_send=True,
            account=True,
        )
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings#inbox-settings")
    try:
        row = page.locator(f'#inboxes tr[data-id="{failing}"]')
        badge = row.locator("details.health > summary")
        expect(badge).to_have_text("failing")
        # The reasons on hover, and opened with the figures.
        assert "refused for the inbox itself" in (badge.get_attribute("title") or "")
        badge.click()
        reasons = row.locator(".health-reasons li")
        expect(reasons.first).to_be_visible()
        expect(reasons.first).to_contain_text("<img src=x onerror=alert(1)>")
        expect(row.locator(".health-detail")).to_contain_text("Failed replies, 24 h")
        expect(row.locator(".health-detail img")).to_have_count(0)
        ok = page.locator(f'#inboxes tr[data-id="{working}"] details.health > summary')
        expect(ok).to_have_text("ok")

        # Over the agent app, a banner names it, as text, with the reason.
        page.goto(f"{live_server.url}/app/inbox")
        banner = page.locator("#health-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text(f"“{NAME}” is failing")
        expect(banner).to_contain_text("refused for the inbox itself")
        expect(banner.locator("b, img")).to_have_count(0)
        expect(banner.locator("a")).to_have_attribute("href", "/app/settings#inbox-settings")
        assert "Mobile app" not in banner.inner_text()
        # Dismissed, it stays away in this tab while the same inboxes fail alike.
        banner.get_by_role("button", name="Dismiss").click()
        expect(banner).to_have_count(0)
        page.reload()
        page.wait_for_selector("body[data-health=read]", state="attached")
        expect(page.locator("#health-banner")).to_have_count(0)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "inbox-health.png"), full_page=True)
        raise

    # An agent is shown none (the API would refuse them the figures anyway).
    agent = signed_in(browser, live_server, "bob@acme.test", "/app/inbox")
    agent.wait_for_selector("#conversation-list")
    expect(agent.locator("#health-banner")).to_have_count(0)
