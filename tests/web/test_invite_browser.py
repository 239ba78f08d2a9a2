"""Inviting a member in the browser: the admin's form on the settings page, the email, and the
invitee's page, for a newcomer (who chooses a password) and for an existing account (who
confirms theirs)."""

import time

import pytest

from rapport.config import Settings
from rapport.db import Database
from tests.auth.test_password_reset import deliver, mails
from tests.channels.email.test_email import Outbox
from tests.factories import PASSWORD, World
from tests.web.conftest import LiveServer, signed_in
from tests.workspaces.test_invitations import NEW_PASSWORD, invite_token

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def mailed_link(relay: Outbox, database: Database, settings: Settings, to: str, base: str) -> str:
    for _ in range(50):
        deliver(database, settings)
        sent = [m for m in mails(relay) if m["To"] == to]
        if sent:
            return invite_token(sent[-1], base)
        time.sleep(0.1)
    raise AssertionError(f"no invitation mailed to {to}")


def invite_on_settings(
    browser,  # type: ignore[no-untyped-def]
    live_server: LiveServer,
    admin: str,
    email: str,
    *,
    name: str = "",
    role: str = "agent",
):  # type: ignore[no-untyped-def]
    """``admin`` invites ``email`` on the settings page; the admin's page, showing it invited."""
    page = signed_in(browser, live_server, admin, "/app/settings")
    form = page.locator("#invite-member")
    form.locator("input[name=email]").fill(email)
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=role]").select_option(role)
    form.locator("button[type=submit]").click()
    expect(page.locator("#invitations")).to_contain_text(email)
    return page


def test_an_admin_invites_a_newcomer_who_joins_in_the_browser(
    relay: Outbox,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
    settings: Settings,
) -> None:
    admin = invite_on_settings(
        browser, live_server, "alice@acme.test", "dana@acme.test", name="Dana", role="admin"
    )
    expect(admin.locator("#invite-member input[name=password]")).to_have_count(0)

    token = mailed_link(relay, database, live_server.settings, "dana@acme.test", live_server.url)
    page = browser.new_page(viewport={"width": 390, "height": 800})
    page.goto(f"{live_server.url}/invite#{token}")
    assert "#" not in page.url  # the token leaves the address bar at once
    expect(page.locator("#invite-title")).to_have_text("Join Acme")
    expect(page.locator("#invite-about")).to_contain_text("as admin")
    page.fill("#invite-form input[name=password]", NEW_PASSWORD)
    page.fill("#invite-form input[name=again]", NEW_PASSWORD + "x")
    page.click("#invite-form button[type=submit]")
    expect(page.locator("#invite-error")).to_have_text("The two passwords differ.")
    page.fill("#invite-form input[name=again]", NEW_PASSWORD)
    page.click("#invite-form button[type=submit]")
    expect(page.locator("#invite-done")).to_contain_text("You have joined Acme")
    page.click("#invite-done a")
    page.fill("input[name=email]", "dana@acme.test")
    page.fill("input[name=password]", NEW_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/app/inbox")

    # Accepted: off the invited list, on the members table.
    admin.reload()
    expect(admin.locator("#invitations")).to_have_count(0)
    expect(admin.locator("#members")).to_contain_text("dana@acme.test")


def test_an_existing_account_confirms_its_password_to_join(
    relay: Outbox,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
    settings: Settings,
) -> None:
    invite_on_settings(browser, live_server, "mallory@globex.test", "bob@acme.test")

    token = mailed_link(relay, database, live_server.settings, "bob@acme.test", live_server.url)
    page = browser.new_page()
    page.goto(f"{live_server.url}/invite#{token}")
    expect(page.locator("#invite-existing")).to_be_visible()
    expect(page.locator("#invite-name")).to_be_hidden()
    page.fill("#invite-form input[name=password]", "not bobs password")
    page.click("#invite-form button[type=submit]")
    expect(page.locator("#invite-error")).to_have_text("email or password is wrong")
    page.fill("#invite-form input[name=password]", PASSWORD)
    page.click("#invite-form button[type=submit]")
    expect(page.locator("#invite-done")).to_contain_text("You have joined Globex")
