"""Custom attributes in a real browser: an admin defines them in Settings, an agent fills
them in on the customer panel (each by its type, only what changed sent), a colleague's
change shows live."""

import httpx
import pytest

from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, sign_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_admin_defines_attributes_and_an_agent_fills_them_in_by_type(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.first
    assert first is not None
    customer = first.customer.id
    api = f"{live_server.url}/api/v1"
    # Set before any definition (an import's column): kept, shown and editable as text.
    httpx.patch(
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
        form.get_by_role("button", name="Define").click()
        expect(admin.locator("#attribute-definitions")).to_contain_text(key)
    rows = admin.locator("#attribute-definitions tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Free, Pro, Enterprise")
    expect(rows.nth(2)).to_contain_text("Vip")  # no label given: made from the key
    defined = httpx.get(f"{api}/attribute-definitions", headers=auth(world.bob)).json()
    assert [(d["key"], d["type"], d["options"]) for d in defined] == [
        ("plan", "list", ["Free", "Pro", "Enterprise"]),
        ("seats", "number", []),
        ("vip", "boolean", []),
    ]

    page = browser.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/customers/{customer}")
    part = page.locator('#panel-extra [data-part="attributes"]')
    expect(part.locator("dt")).to_have_text(["Plan", "Seats", "Vip", "source"], timeout=15_000)
    expect(part.locator("dd")).to_have_text(["—", "—", "—", "fair 2025"])
    part.get_by_role("button", name="Edit attributes").click()
    part.get_by_label("Plan").select_option(["Pro"])
    part.get_by_label("Seats").fill("12")
    part.get_by_label("Vip").select_option("yes")
    part.get_by_role("button", name="Save").click()
    expect(part.locator("dd")).to_have_text(["Pro", "12", "yes", "fair 2025"])
    stored = httpx.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()
    assert stored["attributes"] == {
        "plan": ["Pro"],
        "seats": 12,
        "vip": True,
        "source": "fair 2025",
    }

    # A colleague's change arrives live; clearing a value removes it.
    httpx.patch(
        f"{api}/customers/{customer}", json={"attributes": {"seats": 15}}, headers=auth(world.alice)
    ).raise_for_status()
    expect(part.locator("dd").nth(1)).to_have_text("15", timeout=10_000)
    part.get_by_role("button", name="Edit attributes").click()
    part.get_by_label("source").fill("")
    part.get_by_role("button", name="Save").click()
    expect(part.locator("dt")).to_have_text(["Plan", "Seats", "Vip"])
    stored = httpx.get(f"{api}/customers/{customer}", headers=auth(world.bob)).json()
    assert stored["attributes"] == {"plan": ["Pro"], "seats": 15, "vip": True}

    # A deleted definition leaves the values, untyped.
    admin.reload()
    admin.get_by_role("button", name="Delete attribute seats").click()
    expect(admin.locator("#attribute-definitions tbody tr")).to_have_count(2)
    page.reload()
    expect(part.locator("dt")).to_have_text(["Plan", "Vip", "seats"], timeout=15_000)
