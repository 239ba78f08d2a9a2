"""The knowledge base in the agent UI: an agent writes, previews and publishes an article
in a real browser; a reader finds it on the help center (no JavaScript) and says it helped.
Changes saved as a draft reach readers only once published."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import PASSWORD, World
from tests.web.conftest import ARTIFACTS, LiveServer
from tests.web.test_pages import sign_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_the_pages_are_scoped_and_read_only_for_viewers(client: TestClient, world: World) -> None:
    mine = client.post(
        "/api/v1/kb/articles",
        json={"title": "Track an order", "body": "Open **Orders**."},
        headers=auth(world.bob),
    ).json()
    theirs = client.post(
        "/api/v1/kb/articles", json={"title": "Globex only"}, headers=auth(world.mallory)
    ).json()
    sign_in(client, "bob@acme.test")
    page = client.get("/app/kb").text
    assert "Track an order" in page and "Globex only" not in page
    editor = client.get(f"/app/kb/articles/{mine['id']}").text
    assert '<div id="kb-preview"><p>Open <strong>Orders</strong>.</p>' in editor
    assert 'data-kb-action="publish"' in editor
    assert client.get(f"/app/kb/articles/{theirs['id']}").status_code == 404
    sign_in(client, "victor@acme.test")
    read_only = client.get(f"/app/kb/articles/{mine['id']}").text
    assert "data-kb-action" not in read_only and "Save draft" not in read_only


def test_an_agent_writes_and_publishes_an_article_a_reader_finds_it(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    client.put(
        "/api/v1/kb/help-center",
        json={"slug": "acme", "title": "Acme Help"},
        headers=auth(world.alice),
    ).raise_for_status()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/login")
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/app/inbox")
    page.click("header nav >> text=Knowledge base")
    page.wait_for_url("**/app/kb")
    page.fill("form[data-kb-api] input[name=title]", "Shipping")
    page.click("form[data-kb-api] button")
    page.wait_for_selector("td:text('Shipping')")
    page.click("text=New article")
    page.fill("#kb-article input[name=title]", "Where is my parcel?")
    page.select_option("#kb-article select[name=collection_id]", label="Shipping (en)")
    page.fill("#kb-body", "Track it under **My orders**.\n\n<script>alert(1)</script>")
    expect(page.locator("#kb-preview strong")).to_have_text("My orders")
    expect(page.locator("#kb-preview script")).to_have_count(0)
    page.click("#kb-article button[type=submit]")
    page.wait_for_url("**/app/kb/articles/*")
    page.click("[data-kb-action=publish]")
    page.wait_for_selector("text=View on the help center")
    page.screenshot(path=str(ARTIFACTS / "kb-editor.png"), full_page=True)

    reader = browser.new_context(java_script_enabled=False).new_page()
    reader.goto(f"{live_server.url}/help/acme/")
    reader.click("text=Where is my parcel?")
    expect(reader.locator("h1")).to_have_text("Where is my parcel?")
    reader.click("button[value=yes]")
    expect(reader.locator("[role=status]")).to_contain_text("Thank you")
    reader.fill("#q", "parcel orders")
    reader.click("form[role=search] button")
    expect(reader.locator(".results a")).to_have_text(["Where is my parcel?"])
    reader.screenshot(path=str(ARTIFACTS / "help-center.png"), full_page=True)
    items = client.get("/api/v1/kb/articles", headers=auth(world.bob)).json()["items"]
    assert [(a["status"], a["helpful"]) for a in items] == [("published", 1)]

    # "Save draft" on the published article: the reader still reads the published text.
    page.fill("#kb-body", "Track it under **My parcels**.")
    page.click("#kb-article button[type=submit]")
    expect(page.locator("#kb-draft-note")).to_contain_text("This article has unpublished changes")
    expect(page.locator(".status").first).to_have_text("published")
    expect(page.locator("#kb-body")).to_have_value("Track it under **My parcels**.")
    page.screenshot(path=str(ARTIFACTS / "kb-editor-draft.png"), full_page=True)
    reader.goto(f"{live_server.url}/help/acme/articles/where-is-my-parcel")
    expect(reader.locator(".body strong")).to_have_text("My orders")
    # Published, the changes are what the reader reads.
    page.click("[data-kb-action=publish]")
    expect(page.locator("#kb-draft-note")).to_have_count(0)
    expect(page.locator("#kb-preview strong")).to_have_text("My parcels")
    reader.reload()
    expect(reader.locator(".body strong")).to_have_text("My parcels")
    # Another draft, discarded: the editor is back to the published version.
    page.fill("#kb-body", "Ask us.")
    page.click("#kb-article button[type=submit]")
    expect(page.locator("#kb-draft-note")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-kb-action=discard]")
    expect(page.locator("#kb-draft-note")).to_have_count(0)
    expect(page.locator("#kb-body")).to_have_value("Track it under **My parcels**.")
    reader.reload()
    expect(reader.locator(".body strong")).to_have_text("My parcels")
