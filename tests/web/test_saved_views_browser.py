"""Saved views in the browser: the inbox's filters (and the customers list's) saved under a
name, listed beside the list, the one on screen marked; shared ones made by admins."""

import pytest
from fastapi.testclient import TestClient

from rapport.conversations import service as conversations
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import World
from tests.web.conftest import LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def _save_view(page, name: str, *, shared: bool = False) -> None:  # type: ignore[no-untyped-def]
    page.locator("details.save-view summary").click()
    form = page.locator("form.save-view-form")
    form.locator("input[name=name]").fill(name)
    if shared:
        form.locator("input[name=shared]").check()
    form.locator("button[type=submit]").click()


def test_an_agent_saves_the_inbox_filters_as_a_view_and_opens_it_again(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    urgent, calm = (inbound(client, world, f"sv-{n}", f"sv{n}@example.com") for n in (1, 2))
    client.post(
        f"/api/v1/conversations/{urgent}/priority",
        json={"priority": "high"},
        headers=auth(world.bob),
    )
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?priority=high&view=all")
    rows = page.locator("#conversation-list > li[data-id]")
    expect(rows).to_have_count(1)
    expect(page.locator(".saved-views")).to_contain_text("None yet")
    _save_view(page, "High, everyone's")
    page.wait_for_url("**/app/inbox?view=all&priority=high")
    link = page.get_by_role("link", name="High, everyone's")
    expect(link).to_have_attribute("aria-current", "page")

    # Elsewhere, it is not the one on screen; followed, the list is filtered again.
    page.goto(f"{live_server.url}/app/inbox?view=mine")
    expect(link).not_to_have_attribute("aria-current", "page")
    link.click()
    page.wait_for_url("**/app/inbox?view=all&priority=high")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", urgent)
    # The list follows the stream, its sidebar drawn again: the view stays, still marked,
    # and a keyboard's focus on it stays there (it fell back to the page).
    link.focus()
    inbound(client, world, "sv-3", "sv3@example.com")
    client.post(
        f"/api/v1/conversations/{calm}/priority",
        json={"priority": "high"},
        headers=auth(world.bob),
    )
    expect(rows).to_have_count(2)
    expect(link).to_have_attribute("aria-current", "page")
    expect(link).to_be_focused()

    # An admin's shared view: Bob sees it, marked shared, and cannot delete it; Alice does
    # not see Bob's own.
    admin = signed_in(browser, live_server, "alice@acme.test", "/app/inbox?view=unassigned")
    expect(admin.get_by_role("link", name="High, everyone's")).to_have_count(0)
    _save_view(admin, "Unassigned", shared=True)
    # Saved, the page is drawn again at the same address: its list says so.
    expect(admin.locator(".saved-views li", has_text="Unassigned")).to_contain_text("shared")
    page.reload()
    shared = page.locator(".saved-views li", has_text="Unassigned")
    expect(shared).to_contain_text("shared")
    expect(shared.locator("button.view-delete")).to_have_count(0)
    # Bob deletes his own, asked first.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete view High, everyone's").click()
    expect(link).to_have_count(0)
    inbound(client, world, "sv-4", "sv4@example.com")  # the list (and sidebar) drawn again
    expect(rows).to_have_count(2)
    expect(link).to_have_count(0)
    page.reload()
    expect(link).to_have_count(0)
    listed = client.get("/api/v1/saved-views", headers=auth(world.bob)).json()
    assert [v["name"] for v in listed] == ["Unassigned"]


def test_the_customers_list_saves_its_filters_and_a_refusal_is_said(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers")
    # What the filter form holds is saved, a tag typed and not yet applied too.
    page.fill("form.filters input[name=tag]", "VIP")
    _save_view(page, "VIPs")
    page.wait_for_url("**/app/customers?tag=vip")
    expect(page.get_by_role("link", name="VIPs")).to_have_attribute("aria-current", "page")
    # The same name again is refused, said, and the name stays to be mended.
    page.goto(f"{live_server.url}/app/customers?q=ann")
    _save_view(page, "vips")
    expect(page.locator("#flash")).to_contain_text("a view of the customers list named “vips”")
    expect(page.locator("form.save-view-form input[name=name]")).to_have_value("vips")
    assert page.url.endswith("/app/customers?q=ann")


def test_each_inbox_view_shows_its_count_which_follows_the_stream(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Counted afresh each time asked (the server keeps counts 5 s): the sidebar's own pace
    # (a fetch at most every 5 s) is what is shown here.
    monkeypatch.setattr(conversations._COUNTS, "ttl", 0.0)
    for name, query in (("Queue", "view=unassigned"), ("Urgent", "view=all&priority=urgent")):
        r = client.post(
            "/api/v1/saved-views",
            json={"page": "inbox", "name": name, "query": query},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=mine")
    queue = page.locator(".saved-views li", has_text="Queue").locator(".view-count")
    urgent = page.locator(".saved-views li", has_text="Urgent").locator(".view-count")
    expect(queue).to_have_text("1")  # the world's first conversation, nobody's
    expect(queue).to_have_attribute("title", "1 conversation")
    expect(urgent).to_have_text("0")
    # A customer writes in: the list (mine, so it stays empty) and the counts are drawn
    # again, without a reload, the counts within 5 s of the last.
    inbound(client, world, "vc-1", "vc1@example.com")
    expect(queue).to_have_text("2", timeout=10_000)
    expect(queue).to_have_attribute("title", "2 conversations")
    expect(urgent).to_have_text("0")
    expect(page.locator("#conversation-list > li[data-id]")).to_have_count(0)
