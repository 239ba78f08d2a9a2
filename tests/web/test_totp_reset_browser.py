"""An owner resets a member's two-factor from the Settings members table; an account
another workspace shares is refused with the reason shown."""

import pytest
from fastapi.testclient import TestClient

from rapport.auth.models import Role
from rapport.db import Database
from rapport.workspaces import service as workspaces
from tests.auth.test_login import _enrol
from tests.conftest import auth
from tests.factories import PASSWORD, World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_owner_resets_a_members_two_factor_from_the_members_table(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
    database: Database,
) -> None:
    bob, victor = world.acme.users["bob"].id, world.acme.users["victor"].id
    _enrol(client, world.bob)
    _enrol(client, world.victor)
    with database.session() as db:  # victor's account is also Globex's
        workspaces.add_member(
            db,
            workspace_id=world.globex.workspace.id,
            email="victor@acme.test",
            role=Role.viewer,
            password=None,
            actor_role=Role.owner,
        )
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings")
    page.on("dialog", lambda dialog: dialog.accept())
    alice = page.locator(f'#members tr[data-user="{world.acme.users["alice"].id}"]')
    expect(alice.locator("button", has_text="Reset 2FA")).to_have_count(0)  # off, and hers

    row = page.locator(f'#members tr[data-user="{bob}"]')
    expect(row.locator("td").nth(4)).to_have_text("on")
    row.locator("button", has_text="Reset 2FA").click()
    # Her own password first: a wrong one is refused and changes nothing.
    row.get_by_placeholder("Your password").fill("not her password")
    row.locator("button", has_text="Confirm reset").click()
    expect(page.locator("#settings-error")).to_contain_text("password is wrong")
    expect(row.locator("td").nth(4)).to_have_text("on")
    row.get_by_placeholder("Your password").fill(PASSWORD)
    row.locator("button", has_text="Confirm reset").click()
    # Drawn again from the change, as every open settings page hears it: off, no button.
    expect(row.locator("td").nth(4)).to_have_text("off")
    expect(row.locator("button", has_text="Reset 2FA")).to_have_count(0)
    members = client.get("/api/v1/members", headers=auth(world.alice)).json()
    assert [m["totp_enabled"] for m in members if m["user_id"] == bob] == [False]

    victors = page.locator(f'#members tr[data-user="{victor}"]')
    victors.locator("button", has_text="Reset 2FA").click()
    victors.get_by_placeholder("Your password").fill(PASSWORD)
    victors.locator("button", has_text="Confirm reset").click()
    expect(page.locator("#settings-error")).to_contain_text("member of other workspaces")
    expect(page.locator(f'#members tr[data-user="{victor}"] td').nth(4)).to_have_text("on")
