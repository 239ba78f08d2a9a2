"""A member's account page in the browser: bob renames himself and changes his password; his
other browser is signed out, and alice's open settings page shows his new name without a
reload."""

import re
from urllib.parse import quote

import pyotp
import pytest

from tests.conftest import auth
from tests.factories import PASSWORD, World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect

NEW_PASSWORD = "a much longer passphrase 9"


def test_a_member_renames_themself_and_changes_their_password(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    bob_id = world.acme.users["bob"].id
    # alice's settings page is open, its stream connected (the server said hello).
    admin = signed_in(browser, live_server, "alice@acme.test", "/app/inbox")
    with admin.expect_websocket() as opened:
        admin.goto(f"{live_server.url}/app/settings")
    opened.value.expect_event("framereceived", lambda frame: "hello" in str(frame))
    member = admin.locator(f'#members tr[data-user="{bob_id}"] td').first
    expect(member).to_have_text("Bob")
    presence = admin.locator(f'#members tr[data-user="{bob_id}"] td').nth(5)
    expect(presence).to_have_text("offline")
    # bob is signed in on another browser too.
    elsewhere = signed_in(browser, live_server, "bob@acme.test", "/app/inbox")
    expect(presence).to_have_text("online")  # his page's first heartbeat, heard live

    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox")
    page.click("header a.me")  # every member reaches their account from the header
    page.wait_for_url("**/app/account")

    # A blank name is refused, saying which field and why.
    page.fill("#account-name input[name=name]", "   ")
    page.click("#account-name button[type=submit]")
    expect(page.locator("#account-name-error")).to_have_text("name: must not be empty")
    page.fill("#account-name input[name=name]", "Robert <b>Tables</b>")
    page.click("#account-name button[type=submit]")
    expect(page.locator("#account-name-done")).to_be_visible()
    expect(page.locator("#account-name-error")).to_be_hidden()
    expect(page.locator("header .me")).to_have_text("Robert <b>Tables</b>")
    # alice's page redraws the row, as text, without a reload.
    expect(member).to_have_text("Robert <b>Tables</b>")
    assert admin.locator("#members b").count() == 0

    # A wrong current password: said plainly, nothing changes.
    form = page.locator("#account-password")
    form.locator("input[name=current_password]").fill("not my password")
    form.locator("input[name=new_password]").fill(NEW_PASSWORD)
    form.locator("input[name=again]").fill(NEW_PASSWORD)
    form.locator("button[type=submit]").click()
    expect(page.locator("#account-password-error")).to_have_text("the current password is wrong")
    form.locator("input[name=current_password]").fill(PASSWORD)
    form.locator("input[name=new_password]").fill(NEW_PASSWORD)
    form.locator("input[name=again]").fill(NEW_PASSWORD)
    form.locator("button[type=submit]").click()
    expect(page.locator("#account-password-done")).to_be_visible()
    expect(page.locator("#account-password-error")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "account.png"), full_page=True)

    # The other browser is signed out; this one goes on (its new CSRF token in hand).
    elsewhere.goto(f"{live_server.url}/app/inbox")
    elsewhere.wait_for_url("**/login?next=%2Fapp%2Finbox")
    page.fill("#account-name input[name=name]", "Robert Tables")
    page.click("#account-name button[type=submit]")
    expect(member).to_have_text("Robert Tables")
    expect(page.locator("#account-name-error")).to_be_hidden()
    # And the new password signs in.
    again = browser.new_page()
    again.goto(f"{live_server.url}/login")
    again.fill("input[name=email]", "bob@acme.test")
    again.fill("input[name=password]", NEW_PASSWORD)
    again.click("#login-form button[type=submit]")
    again.wait_for_url("**/app/inbox")
    expect(again.locator("header .me")).to_have_text("Robert Tables")


def test_a_member_makes_and_revokes_an_api_token_in_the_browser(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Tokens could be made and revoked only through the API itself (or the CLI): the account
    # page sent a member who feared theirs was known to "revoke them through the API".
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server, "bob@acme.test", "/app/account")
    # An agent's token is at most an agent's.
    roles = page.locator("#token-create select[name=role] option").all_text_contents()
    assert roles == ["viewer", "agent"]
    expect(page.locator("#token-create select[name=role]")).to_have_value("agent")
    page.fill("#token-create input[name=name]", "CRM <i>sync</i>")
    page.click("#token-create button[type=submit]")
    expect(page.locator("#token-made")).to_be_visible()
    token = page.locator("#token-value").text_content() or ""
    row = page.locator("#tokens tbody tr").last
    expect(row.locator("td").first).to_have_text("CRM <i>sync</i>")  # as text
    expect(row.locator("td.state")).to_have_text("active")
    me = live_server.http.get("/api/v1/auth/me", headers=auth(token))
    assert me.status_code == 200 and me.json()["email"] == "bob@acme.test"
    # Listed again after a reload, never shown again; revoked, it is refused at once.
    page.reload()
    assert token not in page.content()
    row = page.locator("#tokens tbody tr", has_text="CRM <i>sync</i>")
    row.locator("button.revoke-token").click()
    expect(row.locator("td.state")).to_have_text("revoked")
    assert live_server.http.get("/api/v1/auth/me", headers=auth(token)).status_code == 401
    page.reload()
    row = page.locator("#tokens tbody tr", has_text="CRM <i>sync</i>")
    expect(row.locator("td.state")).to_contain_text("revoked")
    assert row.locator("button.revoke-token").count() == 0
    page.screenshot(path=str(ARTIFACTS / "account-tokens.png"), full_page=True)


def test_signing_in_comes_back_to_the_page_a_link_opened(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # A link to a conversation opened while signed out led to the inbox once signed in.
    conv = world.acme.opened.conversation.id
    page = browser.new_page()
    page.goto(f"{live_server.url}/app/conversations/{conv}?tab=files")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"**/app/conversations/{conv}?tab=files")
    # Another site is never where it goes, however the address is written.
    for elsewhere in (
        "//evil.example/",
        "/\\evil.example/",
        "https://evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/.//evil.example/",  # this origin, the path "//evil.example/": another site again
        "/x/..//evil.example/",
    ):
        other = browser.new_page()
        other.goto(f"{live_server.url}/login?next={quote(elsewhere, safe='')}")
        other.fill("input[name=email]", "bob@acme.test")
        other.fill("input[name=password]", PASSWORD)
        other.click("#login-form button[type=submit]")
        other.wait_for_url("**/app/inbox")
        other.close()


def test_a_member_turns_on_two_factor_by_scanning_its_code(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # The key was shown as text only, 32 characters to type into a phone.
    page = signed_in(browser, live_server, "bob@acme.test", "/app/account")
    page.click("#enrol-2fa")
    qr = page.locator("#totp-qr")
    expect(qr).to_be_visible()
    expect(qr).to_have_attribute("src", re.compile(r"^data:image/svg\+xml;"))
    assert page.evaluate("document.getElementById('totp-qr').naturalWidth") > 0  # it drew
    secret = page.inner_text("#totp-secret")
    page.fill("#totp-activate input[name=code]", pyotp.TOTP(secret).now())
    page.fill("#totp-activate input[name=password]", PASSWORD)
    page.click("#totp-activate button[type=submit]")
    expect(page.locator("#recovery code")).not_to_be_empty()
