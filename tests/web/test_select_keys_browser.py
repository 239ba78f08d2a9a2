"""Selects that act on a choice, from the keyboard: arrows step through the options and
nothing happens until Enter (Chromium fires "change" at each step: three presses on the team
select made three assignments, each told to rules and webhooks)."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_arrows_step_through_a_select_and_enter_chooses(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    first = world.acme.opened
    conv = first.conversation.id
    teams = [
        client.post("/api/v1/teams", json={"name": name}, headers=auth(world.alice)).json()
        for name in ("A-team", "B-team", "C-team")
    ]
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    url = f"{live_server.url}/api/v1/conversations/{conv}"

    def held() -> object:
        return live_server.http.get(url, headers=auth(world.bob)).json()["team_id"]

    team = page.locator("#team")
    team.focus()
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.wait_for_timeout(500)
    assert held() is None  # stepping chose nothing
    page.keyboard.press("Enter")
    expect(page.locator("#messages li.kind-activity").last).to_contain_text("Moved to team")
    assert held() == teams[2]["id"]
    activity = live_server.http.get(url, headers=auth(world.bob)).json()["messages"]
    assert sum("Moved to team" in m["text"] for m in activity) == 1  # one assignment
    # Escape puts the select back to what the conversation has.
    team.focus()
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Escape")
    expect(team).to_have_value(teams[2]["id"])
    page.wait_for_timeout(300)
    assert held() == teams[2]["id"]

    # The inbox's filters likewise: the list is fetched once Enter is pressed.
    page.goto(f"{live_server.url}/app/inbox")
    status = page.locator("#filters select[name=status]")
    status.focus()
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(500)
    assert "status=" not in page.url
    page.keyboard.press("Enter")
    page.wait_for_url("**status=pending**")
