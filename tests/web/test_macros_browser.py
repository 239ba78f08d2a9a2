"""Macros in the browser: made on their page (the workspace's by an admin, an agent's own),
run from a conversation's menu and on the inbox's ticked conversations."""

import pytest
from fastapi.testclient import TestClient

from rapport.db import Database
from tests.automation.test_macros import team_gone
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def _add_action(page, kind: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """Add an action row to the macro form, its type and value chosen."""
    page.click("#add-macro-action")
    row = page.locator("#macro-actions > li").last
    row.locator("select[name=type]").select_option(kind)
    control = row.locator("[name=value]:enabled")
    if control.evaluate("el => el.tagName") == "SELECT":
        control.select_option(value)
    else:
        control.fill(value)


def test_an_admin_makes_a_macro_and_an_agent_runs_it_on_a_conversation(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    conv = inbound(client, world, "macro-1", "dana@example.com")
    customer = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    client.patch(
        f"/api/v1/customers/{customer['customer_id']}",
        json={"name": "Dana Scully"},
        headers=auth(world.bob),
    )
    admin = signed_in(browser, live_server, "alice@acme.test", "/app/macros")
    expect(admin.locator("#macro-rows")).to_contain_text("No macros yet.")
    admin.fill("#macro-form input[name=name]", "Refund done")
    admin.select_option("#macro-form select[name=visibility]", "workspace")
    first = admin.locator("#macro-actions > li").first
    first.locator("select[name=type]").select_option("send_message")
    first.locator("textarea[name=value]:enabled").fill(
        "Hi {{ customer.first_name }}, your refund is on its way."
    )
    _add_action(admin, "add_label", "refund")
    _add_action(admin, "assign_agent", "me")
    _add_action(admin, "set_status", "resolved")
    admin.click("#macro-form button[type=submit]")
    row = admin.locator("#macro-rows tr[data-id]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Everyone")
    expect(row.locator(".macro-steps li")).to_have_text(
        [
            "Send the reply “Hi {{ customer.first_name }}, your refund is on its way.”",
            "Add label refund",
            "Assign to whoever runs it",
            "Set status resolved",
        ]
    )

    # Bob runs it from the conversation's menu: every change shows at once.
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.select_option("#macro", label="Refund done")
    expect(page.locator("#messages li.dir-out.kind-message").last).to_contain_text(
        "Hi Dana, your refund is on its way."
    )
    expect(page.locator("#status")).to_have_text("resolved")
    expect(page.locator("#label-list")).to_contain_text("refund")
    bob = client.get("/api/v1/auth/me", headers=auth(world.bob)).json()
    expect(page.locator("#assign")).to_have_value(bob["user_id"])
    expect(page.locator("#macro")).to_have_value("")
    done = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    assert done["status"] == "resolved" and done["labels"] == ["refund"]
    assert done["assignee_id"] == bob["user_id"]
    reply = [m for m in done["messages"] if m["direction"] == "out" and m["kind"] == "message"]
    assert [m["text"] for m in reply] == ["Hi Dana, your refund is on its way."]
    assert reply[0]["sender_id"] == bob["user_id"]  # the agent who ran it wrote it

    # An agent may not make one for everyone, nor change the workspace's.
    page.goto(f"{live_server.url}/app/macros")
    expect(page.locator("#macro-form option[value=workspace]")).to_be_disabled()
    expect(page.locator("#macro-rows .macro-edit")).to_have_count(0)
    # Their own: only they see it.
    page.fill("#macro-form input[name=name]", "Checked")
    own = page.locator("#macro-actions > li").first
    own.locator("select[name=type]").select_option("add_note")
    own.locator("textarea[name=value]:enabled").fill("Checked with billing")
    page.click("#macro-form button[type=submit]")
    mine = page.locator("#macro-rows tr[data-id]", has_text="Checked")
    expect(mine).to_contain_text("Only you")
    expect(mine.locator(".macro-edit")).to_be_visible()
    admin.reload()
    expect(admin.locator("#macro-rows tr[data-id]")).to_have_count(1)  # not Bob's own


def test_a_macro_runs_on_the_ticked_conversations_and_says_what_it_left_out(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    ids = [inbound(client, world, f"bulk-macro-{i}", f"bm{i}@example.com") for i in range(2)]
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice)).json()
    macro = client.post(
        "/api/v1/macros",
        json={
            "name": "To billing",
            "visibility": "workspace",
            "actions": [
                {"type": "assign_team", "value": team["id"]},
                {"type": "add_label", "value": "billing"},
            ],
        },
        headers=auth(world.alice),
    ).json()
    # The team goes after the macro was made (as before that was refused): its step is
    # left out, the rest done.
    team_gone(database, team["id"])
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    for conv in ids:
        page.locator(f"#conversation-list li[data-id='{conv}'] input.pick").check()
    page.select_option("#bulk select[name=macro_id]", macro["id"])
    page.click("#bulk button[data-bulk=macro]")
    expect(page.locator("#bulk-result")).to_have_text("2 updated")
    expect(page.locator("#flash")).to_contain_text("To billing")
    expect(page.locator("#flash")).to_contain_text("assign team was left out")
    for conv in ids:
        after = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
        assert after["labels"] == ["billing"] and after["team_id"] is None

    # From a conversation, likewise said.
    page.goto(f"{live_server.url}/app/conversations/{ids[0]}")
    page.select_option("#macro", label="To billing")
    expect(page.locator("#flash")).to_contain_text("assign team was left out")
    # The menu's last entry leads to the page that makes them.
    page.select_option("#macro", "manage")
    page.wait_for_url("**/app/macros")
    expect(page.locator("#macro-rows")).to_contain_text("To billing")


def test_m_chooses_a_macro_from_the_keyboard_and_enter_runs_it(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    conv = inbound(client, world, "macro-keys", "keys@example.com")
    client.post(
        "/api/v1/macros",
        json={"name": "Tag it", "actions": [{"type": "add_label", "value": "kbd"}]},
        headers=auth(world.alice),
    ).raise_for_status()
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.wait_for_selector("#composer")
    page.keyboard.press("m")
    expect(page.locator("#macro")).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(300)
    assert (
        client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()["labels"] == []
    )  # choosing is not running
    page.keyboard.press("Enter")
    expect(page.locator("#label-list")).to_contain_text("kbd")
    expect(page.locator("#macro")).to_have_value("")
