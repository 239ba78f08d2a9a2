"""Custom attributes in a real browser: an admin defines them in Settings, an agent fills
them in on the customer panel (each by its type, only what changed sent), a colleague's
change shows live."""

import pytest

from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_admin_defines_attributes_and_an_agent_fills_them_in_by_type(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    customer = first.customer.id
    api = f"{live_server.url}/api/v1"
    # Set before any definition (an import's column): kept, shown and editable as text.
    live_server.http.patch(
        f"{api}/customers/{customer}",
        json={"attributes": {"source": "fair 2025"}},
        headers=auth(world.bob),
    ).raise_for_status()

    admin = browser.new_page()
    admin.on("dialog", lambda dialog: dialog.accept())
    sign_in(admin, live_server, "alice@acme.test", "/app/settings#attribute-settings")
    form = admin.locator("#attribute-create")
    for key, label, kind, options in (
        ("plan", "Plan", "list", "Free, Pro, Enterprise"),
        ("seats", "Seats", "number", ""),
        ("vip", "", "boolean", ""),
    ):
        form.get_by_label("Key").fill(key)
        form.get_by_label("Label").fill(label)
        form.get_by_label("Type").select_option(kind)
        form.get_by_label("Allowed values").fill(options)
        with admin.expect_navigation():  # the page drawn again with it
            form.get_by_role("button", name="Define").click()
        expect(admin.locator("#attribute-definitions")).to_contain_text(key)
    rows = admin.locator("#attribute-definitions tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Free, Pro, Enterprise")
    expect(rows.nth(2)).to_contain_text("Vip")  # no label given: made from the key
    defined = live_server.http.get(f"{api}/attribute-definitions", headers=auth(world.bob)).json()
    assert [(d["key"], d["type"], d["options"]) for d in defined] == [
        ("plan", "list", ["Free", "Pro", "Enterprise"]),
        ("seats", "number", []),
        ("vip", "boolean", []),
    ]

    page = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    part = page.locator('#panel-extra [data-part="attributes"]')
    expect(part.locator("dt")).to_have_text(["Plan", "Seats", "Vip", "source"])
    expect(part.locator("dd")).to_have_text(["—", "—", "—", "fair 2025"])
    part.get_by_role("button", name="Edit attributes").click()
    part.get_by_label("Plan").select_option(["Pro"])
    part.get_by_label("Seats").fill("12")
    part.get_by_label("Vip").select_option("yes")
    part.get_by_role("button", name="Save").click()
    expect(part.locator("dd")).to_have_text(["Pro", "12", "yes", "fair 2025"])
    stored = live_server.http.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()
    assert stored["attributes"] == {
        "plan": ["Pro"],
        "seats": 12,
        "vip": True,
        "source": "fair 2025",
    }

    # A colleague's change arrives live; clearing a value removes it.
    live_server.http.patch(
        f"{api}/customers/{customer}", json={"attributes": {"seats": 15}}, headers=auth(world.alice)
    ).raise_for_status()
    expect(part.locator("dd").nth(1)).to_have_text("15")
    part.get_by_role("button", name="Edit attributes").click()
    part.get_by_label("source").fill("")
    part.get_by_role("button", name="Save").click()
    expect(part.locator("dt")).to_have_text(["Plan", "Seats", "Vip"])
    stored = live_server.http.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()
    assert stored["attributes"] == {"plan": ["Pro"], "seats": 15, "vip": True}

    # A deleted definition leaves the values, untyped.
    admin.reload()
    admin.get_by_role("button", name="Delete attribute seats").click()
    expect(admin.locator("#attribute-definitions tbody tr")).to_have_count(2)
    page.reload()
    expect(part.locator("dt")).to_have_text(["Plan", "Vip", "seats"])


def test_edited_attributes_keep_their_type_their_lines_and_values_outside_the_list(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    customer = first.customer.id
    api = f"{live_server.url}/api/v1"
    # Stored by an import or an API client, none defined (but plan, below, later).
    stored = {
        "score": 42,
        "vip": True,
        "tags": ["a", "b"],
        "meta": {"x": 1},
        "address": "1 Main St\nSpringfield",
        "plan": ["Pro", "Legacy"],
        "seats": 10,
    }
    live_server.http.patch(
        f"{api}/customers/{customer}", json={"attributes": stored}, headers=auth(world.bob)
    ).raise_for_status()
    live_server.http.post(
        f"{api}/attribute-definitions",
        json={"key": "plan", "type": "list", "options": ["Free", "Pro", "Enterprise"]},
        headers=auth(world.alice),
    ).raise_for_status()

    page = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    part = page.locator('#panel-extra [data-part="attributes"]')
    expect(part.get_by_role("button", name="Edit attributes")).to_be_visible()
    part.get_by_role("button", name="Edit attributes").click()
    expect(part.get_by_label("meta")).to_be_disabled()  # an object: shown, not edited here
    expect(part.get_by_label("address")).to_have_value("1 Main St\nSpringfield")
    part.get_by_label("score").fill("43")
    part.get_by_label("vip").select_option("no")
    part.get_by_label("tags").fill("a, b, c")
    part.get_by_label("address").fill("1 Main Street\nSpringfield")
    part.get_by_role("button", name="Save").click()
    expect(part.get_by_role("button", name="Edit attributes")).to_be_visible()
    after = live_server.http.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()[
        "attributes"
    ]
    assert after == {
        **stored,
        "score": 43,
        "vip": False,
        "tags": ["a", "b", "c"],
        "address": "1 Main Street\nSpringfield",
    }

    # A value from before the allowed values were set is shown chosen (it was dropped
    # unseen by any change of the list): kept, the change is refused saying so.
    part.get_by_role("button", name="Edit attributes").click()
    plan = part.get_by_label("Plan")
    expect(plan.locator("option:checked")).to_have_text(["Pro", "Legacy (not an allowed value)"])
    plan.select_option(["Pro", "Enterprise", "Legacy"])
    part.get_by_role("button", name="Save").click()
    expect(page.locator("#flash")).to_contain_text("Legacy")
    plan.select_option(["Pro", "Enterprise"])
    part.get_by_role("button", name="Save").click()
    expect(part.get_by_role("button", name="Edit attributes")).to_be_visible()
    after = live_server.http.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()[
        "attributes"
    ]
    assert after["plan"] == ["Pro", "Enterprise"]

    # Saved with nothing changed while a colleague changed a value: theirs is shown.
    part.get_by_role("button", name="Edit attributes").click()
    live_server.http.patch(
        f"{api}/customers/{customer}", json={"attributes": {"seats": 15}}, headers=auth(world.alice)
    ).raise_for_status()
    page.wait_for_timeout(500)  # the event arrives while the form is open
    part.get_by_role("button", name="Save").click()
    seats = part.locator("dt", has_text="seats").locator("xpath=following-sibling::dd[1]")
    expect(seats).to_have_text("15")


def test_an_admin_edits_a_lists_label_and_values_and_agents_are_offered_the_new_ones(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    customer = first.customer.id
    api = f"{live_server.url}/api/v1"
    live_server.http.post(
        f"{api}/attribute-definitions",
        json={"key": "plan", "type": "list", "label": "Plna", "options": ["Free", "Pro", "Legacy"]},
        headers=auth(world.alice),
    ).raise_for_status()
    live_server.http.patch(
        f"{api}/customers/{customer}",
        json={"attributes": {"plan": ["Legacy"]}},
        headers=auth(world.bob),
    ).raise_for_status()

    admin = signed_in(browser, live_server, "alice@acme.test", "/app/settings#attribute-settings")
    row = admin.locator("#attribute-definitions tbody tr", has_text="plan")
    # Cancel puts the row back as it was.
    row.get_by_role("button", name="Edit attribute plan").click()
    row.get_by_label("Label of plan").fill("Tier")
    row.get_by_role("button", name="Cancel editing plan").click()
    expect(row.locator("td")).to_have_text(
        ["plan", "Plna", "list", "Free, Pro, Legacy", "Edit Delete"]
    )

    row.get_by_role("button", name="Edit attribute plan").click()
    expect(row.get_by_label("Allowed values of plan")).to_have_value("Free, Pro, Legacy")
    row.get_by_label("Label of plan").fill("Plan")
    row.get_by_label("Allowed values of plan").fill("Free, Pro, Enterprise")
    with admin.expect_navigation():  # the page drawn again with it, as after Define
        row.get_by_role("button", name="Save attribute plan").click()
    expect(row.locator("td")).to_have_text(
        ["plan", "Plan", "list", "Free, Pro, Enterprise", "Edit Delete"]
    )
    defined = live_server.http.get(f"{api}/attribute-definitions", headers=auth(world.bob)).json()
    assert [(d["key"], d["label"], d["options"]) for d in defined] == [
        ("plan", "Plan", ["Free", "Pro", "Enterprise"])
    ]

    # The agent is offered the new value; the one taken out stays where it was held.
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    part = page.locator('#panel-extra [data-part="attributes"]')
    expect(part.locator("dt")).to_have_text(["Plan"])
    expect(part.locator("dd")).to_have_text(["Legacy"])
    part.get_by_role("button", name="Edit attributes").click()
    plan = part.get_by_label("Plan")
    expect(plan.locator("option")).to_have_text(
        ["Free", "Pro", "Enterprise", "Legacy (not an allowed value)"]
    )
    plan.select_option(["Enterprise"])
    part.get_by_role("button", name="Save").click()
    expect(part.locator("dd")).to_have_text(["Enterprise"])
    stored = live_server.http.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()
    assert stored["attributes"] == {"plan": ["Enterprise"]}

    # Saved after a colleague deleted it: said as the section says its other errors.
    row.get_by_role("button", name="Edit attribute plan").click()
    live_server.http.delete(
        f"{api}/attribute-definitions/{defined[0]['id']}", headers=auth(world.alice)
    ).raise_for_status()
    row.get_by_role("button", name="Save attribute plan").click()
    expect(admin.locator("#flash")).to_contain_text("attribute definition not found")
