"""Notes about a customer in the panel, in a real browser: written, edited and deleted by
their author, a colleague's shown live, another's not editable by an agent."""

import pytest

from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_agent_keeps_notes_about_a_customer_beside_the_conversation(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    customer = first.customer.id
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete this note?"
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{first.conversation.id}")
    notes = page.locator('#panel-extra [data-part="notes"]')
    expect(notes).to_contain_text("No notes yet.")  # its load

    notes.get_by_label("New note about this customer").fill(
        "VIP: call before shipping\nPrefers email"
    )
    notes.get_by_role("button", name="Add note").click()
    mine = notes.locator(".customer-notes > li").first
    expect(mine.locator(".note-text")).to_have_text("VIP: call before shipping\nPrefers email")
    expect(mine).to_contain_text("Bob")  # who wrote it
    expect(mine).not_to_contain_text("(edited)")
    expect(notes.get_by_label("New note about this customer")).to_have_value("")

    # A colleague's note arrives live; an agent may not change it.
    r = live_server.http.post(
        f"/api/v1/customers/{customer}/notes",
        json={"text": "Refund approved by finance"},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    theirs = notes.locator(".customer-notes > li").first
    expect(theirs.locator(".note-text")).to_have_text("Refund approved by finance")
    expect(theirs.get_by_role("button", name="Edit this note")).to_have_count(0)

    # Bob edits his own, in place.
    own = notes.locator(".customer-notes > li").nth(1)
    own.get_by_role("button", name="Edit this note").click()
    own.get_by_label("Note").fill("VIP: call before shipping")
    own.get_by_role("button", name="Save").click()
    expect(own.locator(".note-text")).to_have_text("VIP: call before shipping")
    expect(own).to_contain_text("(edited)")
    stored = live_server.http.get(
        f"/api/v1/customers/{customer}/notes", headers=auth(world.bob)
    ).json()
    assert [n["text"] for n in stored] == [
        "Refund approved by finance",
        "VIP: call before shipping",
    ]

    # A double click on Save sends one change, and the list still follows colleagues: the
    # second click's answer made the page believe a note was being edited for good.
    own.get_by_role("button", name="Edit this note").click()
    own.get_by_label("Note").fill("VIP: call before shipping!")
    own.get_by_role("button", name="Save").dblclick()
    expect(own.locator(".note-text")).to_have_text("VIP: call before shipping!")
    live_server.http.post(
        f"/api/v1/customers/{customer}/notes",
        json={"text": "Prefers mornings"},
        headers=auth(world.alice),
    ).raise_for_status()
    expect(notes.locator(".customer-notes > li").first.locator(".note-text")).to_have_text(
        "Prefers mornings"
    )
    own = notes.locator(".customer-notes > li", has_text="VIP: call before shipping!")

    # An admin changes it while Bob's editor is open: Bob's save does not write over it
    # unasked (the last save won); the new text is shown, and saving again replaces it.
    own.get_by_role("button", name="Edit this note").click()
    own.get_by_label("Note").fill("VIP: call first")
    [stored] = [
        n
        for n in live_server.http.get(
            f"/api/v1/customers/{customer}/notes", headers=auth(world.bob)
        ).json()
        if n["text"] == "VIP: call before shipping!"
    ]
    live_server.http.patch(
        f"/api/v1/customers/{customer}/notes/{stored['id']}",
        json={"text": "VIP: call before shipping, after 10 am"},
        headers=auth(world.alice),
    ).raise_for_status()
    own.get_by_role("button", name="Save").click()
    expect(page.locator("#flash")).to_contain_text("the note was changed since you opened it")
    expect(own.locator(".note-theirs")).to_have_text(
        "Changed meanwhile, it now reads: VIP: call before shipping, after 10 am"
    )
    expect(own.get_by_label("Note")).to_have_value("VIP: call first")  # kept to mend
    own.get_by_role("button", name="Save").click()
    own = notes.locator(".customer-notes > li", has_text="VIP: call first")
    expect(own.locator(".note-text")).to_have_text("VIP: call first")

    # ... and deletes it; the customer's own page shows what is left.
    own.get_by_role("button", name="Delete this note").click()
    expect(notes.locator(".customer-notes > li")).to_have_count(2)
    page.goto(f"{live_server.url}/app/customers/{customer}")
    expect(page.locator('#panel-extra [data-part="notes"] .note-text')).to_have_text(
        ["Prefers mornings", "Refund approved by finance"]
    )


def test_a_viewer_reads_notes_and_writes_none(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    live_server.http.post(
        f"/api/v1/customers/{first.customer.id}/notes",
        json={"text": "Speaks Spanish"},
        headers=auth(world.bob),
    ).raise_for_status()
    page = signed_in(
        browser, live_server, "victor@acme.test", f"/app/customers/{first.customer.id}"
    )
    notes = page.locator('#panel-extra [data-part="notes"]')
    expect(notes.locator(".note-text")).to_have_text(["Speaks Spanish"])
    expect(notes.get_by_role("button")).to_have_count(0)
    expect(notes.locator("textarea")).to_have_count(0)
