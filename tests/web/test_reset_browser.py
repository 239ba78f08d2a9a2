"""A forgotten password in the browser: the link on the login page, the email, a new
password, and signing in with it."""

import pytest

from rapport.config import Settings
from rapport.db import Database
from tests.auth.test_password_reset import NEW_PASSWORD, deliver, link_token, mails
from tests.channels.email.test_email import Outbox
from tests.factories import World
from tests.web.conftest import LiveServer

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_a_member_resets_a_forgotten_password_in_the_browser(
    relay: Outbox,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
    settings: Settings,
) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(f"{live_server.url}/login")
    page.click("text=Forgot password?")
    page.fill("#forgot-form input[name=email]", "bob@acme.test")
    page.press("#forgot-form input[name=email]", "Enter")
    expect(page.locator("#forgot-done")).to_contain_text("If an account has this address")
    for _ in range(50):
        deliver(database, live_server.settings)  # the links name its address
        if relay.messages:
            break
        page.wait_for_timeout(100)
    token = link_token(mails(relay)[0], live_server.url)
    page.goto(f"{live_server.url}/reset-password#{token}")
    assert "#" not in page.url  # the token leaves the address bar at once
    page.fill("#reset-form input[name=password]", NEW_PASSWORD)
    page.fill("#reset-form input[name=again]", NEW_PASSWORD + "x")
    page.click("#reset-form button[type=submit]")
    expect(page.locator("#reset-error")).to_have_text("The two passwords differ.")
    page.fill("#reset-form input[name=again]", NEW_PASSWORD)
    page.click("#reset-form button[type=submit]")
    expect(page.locator("#reset-done")).to_be_visible()
    page.click("#reset-done a")
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", NEW_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/app/inbox")
