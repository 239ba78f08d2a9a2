"""Customers in the browser: an admin reviews the possible duplicates (merges one pair
keeping the side she chose, once asked, undoes it, keeps another apart, asks for a scan) and
imports a file; two agents tag one customer at once; customers ticked on the list are
tagged, merged two at a time or erased by an admin; a viewer sees and cannot act."""

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from rapport.conversations.models import Conversation, Message, MessageKind, Status
from rapport.conversations.service import conversation_payload, messages_deleted
from rapport.customers import duplicates
from rapport.db import Database
from rapport.realtime.models import StreamEvent
from rapport.realtime.service import emit
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in
from tests.web.test_pages import sign_in as sign_in_client

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def customer(client: TestClient, token: str, **body: str) -> str:
    r = client.post("/api/v1/customers", json=body, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def answer(page: Any, *, accept: bool) -> list[str]:
    """The page's next dialog, accepted or dismissed; what it asked lands in the list."""
    asked: list[str] = []

    def handle(dialog: Any) -> None:
        asked.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", handle)
    return asked


def pairs(client: TestClient, world: World, database: Database) -> dict[str, str]:
    """Two pending pairs in Acme (Dana seen first, then Dana W.; Eli and Eli M.), one in
    Globex; the customers' ids by name."""
    ids = {
        "Dana Whitfield": customer(
            client, world.bob, name="Dana Whitfield", email="dana@example.com"
        ),
        "Dana W.": customer(client, world.bob, name="Dana W.", phone="+14155550100"),
        "Eli Moss": customer(client, world.bob, name="Eli Moss", email="eli@example.com"),
        "Eli M.": customer(client, world.bob, name="Eli M.", email="eli.m@example.net"),
        "Gus": customer(client, world.mallory, name="Gus Globex", email="gus@globex.test"),
        "Gus G.": customer(client, world.mallory, name="Gus G.", email="gus@else.test"),
    }
    with database.session() as db:
        for a, b, p, why in (
            ("Dana Whitfield", "Dana W.", 0.93, "similar names, same postcode"),
            ("Eli Moss", "Eli M.", 0.71, "similar names"),
            ("Gus", "Gus G.", 0.99, "Globex's own pair"),
        ):
            ws = world.globex.workspace.id if a == "Gus" else world.acme.workspace.id
            duplicates.suggest(db, workspace_id=ws, a=ids[a], b=ids[b], probability=p, reason=why)
    return ids


def test_an_admin_reviews_the_possible_duplicates(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
) -> None:
    # Pairs could be reviewed only one customer at a time, from a conversation's panel,
    # which never said who the other customer was.
    ids = pairs(client, world, database)
    page = signed_in(browser, live_server, "alice@acme.test", "/app/customers")
    page.click("text=2 possible duplicates to review")
    page.wait_for_url("**/app/customers/duplicates")
    cards = page.locator("li.pair")
    expect(cards).to_have_count(2)  # Globex's pair is not Acme's business
    first = cards.nth(0)  # likeliest first
    expect(first).to_contain_text("93 % likely the same person")
    expect(first).to_contain_text("similar names, same postcode")
    expect(first.locator(f'.side[data-customer="{ids["Dana Whitfield"]}"]')).to_contain_text(
        "dana@example.com"
    )
    expect(first.locator(f'.side[data-customer="{ids["Dana Whitfield"]}"]')).to_contain_text(
        "seen first"
    )
    expect(first.locator(f'.side[data-customer="{ids["Dana W."]}"]')).to_contain_text(
        "+14155550100"
    )
    page.screenshot(path=str(ARTIFACTS / "duplicates.png"), full_page=True)

    # One click merged two people's records, unasked. Where the two differ, the first click
    # shows it (the one kept's value chosen); then asked: dismissed, both stay.
    keep_later = first.locator(f'.side[data-customer="{ids["Dana W."]}"] button.merge')
    keep_later.click()
    expect(first.locator(".merge-field")).to_have_text(["name: Dana W. Dana Whitfield"])
    expect(keep_later).to_have_text("Merge, keeping what is chosen")
    asked = answer(page, accept=False)
    keep_later.click()
    assert asked == [
        # Each named with a handle: two records of one person often share a name.
        "Merge Dana Whitfield (dana@example.com) into Dana W. (+14155550100)? Their handles,"
        " conversations and timeline move to Dana W. (+14155550100); it can be undone from"
        " Dana W. (+14155550100)'s page."
    ]
    expect(first.locator("button.merge")).to_have_count(2)
    expect(page.locator("#duplicates-count")).to_have_text("2 pairs to review.")
    for name in ("Dana Whitfield", "Dana W."):
        left = client.get(f"/api/v1/customers/{ids[name]}", headers=auth(world.bob))
        assert left.json()["merged_into_id"] is None
    # Merged, keeping the later one as she chose; the pair says so, and where to undo it.
    asked = answer(page, accept=True)
    keep_later.click()
    expect(first.locator("p[role=status]")).to_have_text(
        "Merged Dana Whitfield (dana@example.com) into Dana W. (+14155550100): it can be"
        " undone from Dana W. (+14155550100)'s page."
    )
    expect(first.get_by_role("link", name="Dana W. (+14155550100)'s page")).to_have_attribute(
        "href", f"/app/customers/{ids['Dana W.']}#merges"
    )
    expect(page.locator("#duplicates-count")).to_have_text("1 pair to review.")
    merged = client.get(f"/api/v1/customers/{ids['Dana Whitfield']}", headers=auth(world.bob))
    assert merged.json()["merged_into_id"] == ids["Dana W."]
    kept_name = client.get(f"/api/v1/customers/{ids['Dana W.']}", headers=auth(world.bob))
    assert kept_name.json()["name"] == "Dana W."  # its own, as chosen by default
    # The customer kept lists the record merged into it, and the merge can be undone there.
    kept = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{ids['Dana W.']}")
    merged_in = kept.locator("#merges li")
    expect(merged_in).to_have_count(1)
    expect(merged_in).to_contain_text("Dana Whitfield · dana@example.com")
    expect(merged_in).to_contain_text("by Alice (merge suggestion accepted: similar names")
    kept.on("dialog", lambda dialog: dialog.accept())
    merged_in.locator("button.undo-merge").click()
    expect(kept.locator("#merges")).to_have_count(0)  # the page read again: nothing merged
    back = client.get(f"/api/v1/customers/{ids['Dana Whitfield']}", headers=auth(world.bob))
    assert back.json()["merged_into_id"] is None
    # A viewer sees what was merged, and no button to undo it.
    again = client.post(
        f"/api/v1/customers/{ids['Dana W.']}/merge",
        json={"merged_id": ids["Dana Whitfield"], "reason": "same person"},
        headers=auth(world.bob),
    )
    assert again.status_code == 201, again.text
    viewer = signed_in(browser, live_server, "victor@acme.test", f"/app/customers/{ids['Dana W.']}")
    expect(viewer.locator("#merges li")).to_contain_text("by Bob (same person)")
    expect(viewer.locator("button.undo-merge")).to_have_count(0)

    # Kept apart: not suggested again.
    cards.nth(1).locator("button.dismiss").click()
    expect(cards.nth(1)).to_contain_text("Kept apart")
    expect(page.locator("#duplicates-count")).to_have_text("0 pairs to review.")
    assert client.get("/api/v1/merge-suggestions", headers=auth(world.bob)).json() == []
    page.reload()
    expect(page.locator("li.empty")).to_have_text("No possible duplicates to review.")

    # An admin asks for a scan now rather than at the nightly pass.
    page.click("#scan-duplicates")
    expect(page.locator("#scan-said")).to_contain_text("A scan is queued")


def test_a_viewer_sees_the_pairs_and_cannot_act_on_them(
    client: TestClient, world: World, database: Database
) -> None:
    ids = pairs(client, world, database)
    sign_in_client(client, "victor@acme.test")
    page = client.get("/app/customers/duplicates")
    assert page.status_code == 200
    assert ids["Dana W."] in page.text and ids["Eli M."] in page.text
    assert ids["Gus"] not in page.text and "Globex" not in page.text
    assert "button" not in page.text.split('id="duplicates"')[1].split("</section>")[0]
    assert "2 possible duplicates to review" in client.get("/app/customers").text
    # The page's path is not taken for a customer's id.
    assert client.get("/app/customers/duplicates", follow_redirects=False).status_code == 200


def test_an_admin_imports_customers_from_the_customers_page(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    tmp_path: Path,
) -> None:
    # Imports and exports were only the CLI and the API: an admin had no way in the app.
    csv = tmp_path / "people.csv"
    csv.write_text(
        "name,email,phone,plan\n"
        "Hana Ito,hana@example.jp,,gold\n"
        "Bad Row,not-an-email,,\n"
        "Omar <b>Said</b>,omar@example.com,+14155550111,silver\n",
        encoding="utf-8",
    )
    page = signed_in(browser, live_server, "alice@acme.test", "/app/customers")
    page.click("details.customer-files summary")
    page.set_input_files("#customer-import input[type=file]", str(csv))
    page.click("#customer-import button.check")
    report = page.locator("#import-report")
    expect(report).to_contain_text("3 rows: 2 new, 0 updated would be, 1 with errors")
    expect(report).to_contain_text("line 3: ")
    assert (
        client.get(
            "/api/v1/customers", params={"q": "hana@example.jp"}, headers=auth(world.bob)
        ).json()["items"]
        == []
    )
    page.click("#customer-import button[type=submit]")
    expect(report).to_contain_text("3 rows: 2 new, 0 updated, 1 with errors (skipped).")
    assert report.locator("b").count() == 0
    found = client.get(
        "/api/v1/customers", params={"q": "hana@example.jp"}, headers=auth(world.bob)
    )
    (hana,) = found.json()["items"]
    assert hana["name"] == "Hana Ito" and hana["attributes"]["plan"] == "gold"
    # Again: updated, not added twice.
    page.click("#customer-import button[type=submit]")
    expect(report).to_contain_text("3 rows: 0 new, 2 updated, 1 with errors (skipped).")
    # The export links download every customer.
    with page.expect_download() as download:
        page.click("text=CSV")
    assert "hana@example.jp" in Path(download.value.path()).read_text(encoding="utf-8")
    # An agent sees no import or export.
    agent = signed_in(browser, live_server, "bob@acme.test", "/app/customers")
    expect(agent.locator("details.customer-files")).to_have_count(0)


def test_two_agents_tag_one_customer_at_once_and_both_tags_stay(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Tags could be set through the API only, and only all at once: two agents tagging at
    # the same time would have lost one of the two.
    customer_id = world.acme.opened.customer.id
    pages = []
    for who in ("alice@acme.test", "bob@acme.test"):
        page = signed_in(browser, live_server, who, f"/app/customers/{customer_id}")
        page.wait_for_selector("#panel-extra form.add-tag")
        pages.append(page)
    alice, bob = pages
    alice.fill("#panel-extra form.add-tag input", "VIP ")
    bob.fill("#panel-extra form.add-tag input", "churn risk")
    alice.press("#panel-extra form.add-tag input", "Enter")
    bob.press("#panel-extra form.add-tag input", "Enter")
    for page in pages:  # each page hears the other's change and redraws
        expect(page.locator("#panel-extra .tag")).to_have_text(["churn risk×", "vip×"])
    r = client.get(f"/api/v1/customers/{customer_id}/profile", headers=auth(world.bob))
    assert r.json()["tags"] == ["churn risk", "vip"]
    bob.click('#panel-extra button[aria-label="Remove tag vip"]')
    expect(alice.locator("#panel-extra .tag")).to_have_text(["churn risk×"])
    # A tag half typed stays typed while a colleague's change redraws the panel (it was
    # wiped, and Enter then sent nothing).
    bob.fill("#panel-extra form.add-tag input", "renew")
    alice.fill("#panel-extra form.add-tag input", "q4")
    alice.press("#panel-extra form.add-tag input", "Enter")
    expect(bob.locator("#panel-extra .tag")).to_have_text(["churn risk×", "q4×"])
    assert bob.input_value("#panel-extra form.add-tag input") == "renew"
    bob.press("#panel-extra form.add-tag input", "Enter")
    expect(alice.locator("#panel-extra .tag")).to_have_text(["churn risk×", "q4×", "renew×"])
    # A tag that is not one is refused, said plainly.
    alice.fill("#panel-extra form.add-tag input", "!!")
    alice.press("#panel-extra form.add-tag input", "Enter")
    expect(alice.locator("#flash")).to_contain_text("not a tag: '!!'")
    # A viewer reads the tags and has no editor.
    viewer = signed_in(browser, live_server, "victor@acme.test", f"/app/customers/{customer_id}")
    expect(viewer.locator("#panel-extra dd", has_text="churn risk, q4, renew")).to_be_visible()
    expect(viewer.locator("#panel-extra form.add-tag")).to_have_count(0)


def test_an_agent_corrects_a_name_and_adds_a_handle_from_the_panel(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # A customer's name and handles could be changed through the API only: an agent told
    # a phone number on a call had nowhere to put it.
    conv = world.acme.opened.conversation.id
    customer_id = world.acme.opened.customer.id
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.fill("#composer textarea", "A reply I am still writing")
    page.click("summary:has-text('Edit name or add a handle')")
    page.fill("#customer-name input[name=name]", "Ines <i>Duarte</i>")
    page.click("#customer-name button")
    expect(page.locator("aside.customer h2")).to_have_text("Ines <i>Duarte</i>")
    page.select_option("#customer-handle select", "phone")
    page.fill("#customer-handle input[name=value]", "+1 (415) 555-0133")
    page.click("#customer-handle button")
    expect(page.locator("#customer-handles")).to_contain_text("+14155550133")  # as kept
    assert page.input_value("#composer textarea") == "A reply I am still writing"
    detail = client.get(f"/api/v1/customers/{customer_id}", headers=auth(world.bob)).json()
    assert detail["name"] == "Ines <i>Duarte</i>"
    added = [i for i in detail["identities"] if i["value"] == "+14155550133"]
    assert added and added[0]["verified"] is False  # told, not proven
    # She reads back the code texted there: proved, the same number is marked so, and a
    # message from it later is hers.
    page.fill("#customer-handle input[name=value]", "+14155550133")
    page.check("#customer-handle input[name=verified]")
    page.click("#customer-handle button")
    expect(page.locator("#customer-handles dd", has_text="+14155550133")).to_have_text(
        "+14155550133 ✓"
    )
    expect(page.locator("#customer-handle input[name=verified]")).not_to_be_checked()
    detail = client.get(f"/api/v1/customers/{customer_id}", headers=auth(world.bob)).json()
    assert [i["verified"] for i in detail["identities"] if i["value"] == "+14155550133"] == [True]
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "sms-proved", "text": "it's me", "from": {"phone": "+14155550133"}},
        headers=auth(world.bob),
    )
    assert r.json()["customer_id"] == customer_id
    # A handle that is not one is refused, said plainly.
    page.select_option("#customer-handle select", "email")
    page.fill("#customer-handle input[name=value]", "not an address")
    page.click("#customer-handle button")
    expect(page.locator("#flash")).to_contain_text("not an email address")
    # On the customer's own page the heading follows the name at once (it kept the old one
    # until a reload), and a name cleared reads as their email, as the customer list has it.
    page.goto(f"{live_server.url}/app/customers/{customer_id}")
    page.click("summary:has-text('Edit name or add a handle')")
    page.fill("#customer-name input[name=name]", "Inês Duarte")
    page.click("#customer-name button")
    expect(page.locator(".customer-page h1")).to_have_text("Inês Duarte")
    page.fill("#customer-name input[name=name]", "  ")
    page.click("#customer-name button")
    email = client.get(f"/api/v1/customers/{customer_id}", headers=auth(world.bob)).json()["email"]
    expect(page.locator(".customer-page h1")).to_have_text(email)
    page.goto(f"{live_server.url}/app/customers")
    expect(page.locator(f'tr[data-customer="{customer_id}"] td a').first).to_have_text(email)
    # A viewer has no such forms.
    viewer = signed_in(browser, live_server, "victor@acme.test", f"/app/customers/{customer_id}")
    expect(viewer.locator("details.edit-customer")).to_have_count(0)


def test_an_agent_finds_another_record_of_a_customer_and_merges_it_then_undoes_it(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # A merge detection had not suggested took the API: the customer's page had no way to it.
    kept = customer(client, world.bob, name="Rosa Diaz", email="rosa@example.com")
    other = customer(client, world.bob, name="R. Diaz", phone="+14155550177")
    customer(client, world.mallory, name="Rosa Globex", email="rosa@globex.test")
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, live_server, "bob@acme.test", f"/app/customers/{kept}")
    page.click("#merge-with summary")
    page.fill("#merge-search input[name=q]", "diaz")
    page.click("#merge-search button[type=submit]")
    found = page.locator("#merge-candidates li[data-customer]")
    expect(found).to_have_count(1)  # not Rosa herself, not another workspace's
    expect(found).to_contain_text("R. Diaz")
    expect(found).to_contain_text("+14155550177")
    # The two names differ: shown first, Rosa's chosen; the other's picked, then merged.
    found.locator("button.merge").click()
    differ = found.locator(".merge-field")
    expect(differ).to_have_text(["name: Rosa Diaz R. Diaz"])
    expect(found.locator("button.merge")).to_have_text("Merge, keeping what is chosen")
    differ.get_by_label("R. Diaz").check()
    found.locator("button.merge").click()
    merged = page.locator("#merges li")
    expect(merged).to_contain_text("R. Diaz")
    expect(merged).to_contain_text("merged by hand")
    assert (
        client.get(f"/api/v1/customers/{other}", headers=auth(world.bob)).json()["merged_into_id"]
        == kept
    )
    assert client.get(f"/api/v1/customers/{kept}", headers=auth(world.bob)).json()["name"] == (
        "R. Diaz"
    )
    # A customer already merged is not offered again.
    page.click("#merge-with summary")
    page.fill("#merge-search input[name=q]", "diaz")
    page.click("#merge-search button[type=submit]")
    expect(page.locator("#merge-candidates li.empty")).to_have_text("No other customer matches.")
    merged.locator("button.undo-merge").click()
    expect(page.locator("#merges li")).to_have_count(0)
    back = client.get(f"/api/v1/customers/{other}", headers=auth(world.bob)).json()
    assert back["merged_into_id"] is None


def test_a_viewer_is_not_offered_a_merge_on_a_customers_page(
    client: TestClient, world: World
) -> None:
    kept = customer(client, world.bob, name="Rosa Diaz", email="rosa@example.com")
    sign_in_client(client, "victor@acme.test")
    assert 'id="merge-with"' not in client.get(f"/app/customers/{kept}").text
    client.cookies.clear()
    sign_in_client(client, "bob@acme.test")
    assert 'id="merge-with"' in client.get(f"/app/customers/{kept}").text


def test_an_agent_tags_the_customers_ticked_on_the_customers_page(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Tagging took a visit to each customer's panel, one at a time.
    ids = [
        customer(client, world.bob, name=f"Bulk {n}", email=f"bulk{n}@example.com")
        for n in range(3)
    ]
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=bulk")
    bar = page.locator("#customer-bulk")
    expect(bar).to_be_hidden()
    for cid in ids[:2]:
        page.check(f'#customer-list tr[data-customer="{cid}"] input.pick')
    expect(page.locator("#customer-bulk-count")).to_have_text("2 selected")
    bar.locator("input[name=tag]").fill("Spring sale")
    bar.locator("button[value=add]").click()
    expect(page.locator("#customer-bulk-said")).to_have_text("Tagged 2 customers.")
    tagged = client.get("/api/v1/customers", params={"tag": "spring sale"}, headers=auth(world.bob))
    assert sorted(c["id"] for c in tagged.json()["items"]) == sorted(ids[:2])
    # The Tags column says so, the two still ticked for what comes next.
    for cid in ids:
        cell = page.locator(f'#customer-list tr[data-customer="{cid}"] td.tags')
        expect(cell).to_have_text("spring sale" if cid in ids[:2] else "")
    expect(page.locator("#customer-bulk-count")).to_have_text("2 selected")
    # Every one shown, then the tag taken off them all.
    page.check("#customer-list input.pick-all")
    expect(page.locator("#customer-bulk-count")).to_have_text("3 selected")
    bar.locator("button[value=remove]").click()
    expect(page.locator("#customer-bulk-said")).to_have_text("Untagged 3 customers.")
    left = client.get("/api/v1/customers", params={"tag": "spring sale"}, headers=auth(world.bob))
    assert left.json()["items"] == []
    expect(page.locator("#customer-list td.tags", has_text="spring sale")).to_have_count(0)


def test_an_agent_merges_two_customers_ticked_keeping_the_one_she_chose(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # Two records of one person seen in the list took a visit to one's page and a search
    # there for the other.
    park = customer(client, world.bob, name="Lena Park", email="lena@example.com")
    short = customer(client, world.bob, name="Lena P.", phone="+14155550122")
    third = customer(client, world.bob, name="Lena Third", email="lena3@example.com")
    with database.session() as db:  # detection saw them too
        duplicates.suggest(
            db, workspace_id=world.acme.workspace.id, a=park, b=short, probability=0.9, reason="x"
        )
    row = '#customer-list tr[data-customer="{}"]'.format
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=lena")
    hint = page.locator("#duplicates-hint")
    expect(hint).to_have_text("1 possible duplicate to review")
    merge = page.locator("#customer-merge")
    page.check(f"{row(park)} input.pick")
    expect(merge).to_be_hidden()  # exactly two, or no merge
    page.check(f"{row(third)} input.pick")
    page.check(f"{row(short)} input.pick")
    expect(merge).to_be_hidden()
    page.uncheck(f"{row(third)} input.pick")
    expect(merge).to_be_visible()
    choices = merge.locator("label")
    expect(choices).to_have_count(2)
    expect(merge.locator(f'label:has(input[value="{park}"])')).to_have_text(
        "Lena Park (lena@example.com)"
    )
    expect(merge.locator(f'label:has(input[value="{short}"])')).to_have_text(
        "Lena P. (+14155550122)"
    )
    expect(merge.locator("input:checked")).to_have_count(0)  # she chooses; none is for her
    page.screenshot(path=str(ARTIFACTS / "customers-merge-two.png"), full_page=True)
    # Nothing chosen: the browser asks which one stays, and nothing is sent.
    merge.locator("button").click()
    assert merge.locator("input").first.evaluate("radio => radio.validity.valueMissing")
    # Chosen, then asked first: dismissed, both stay.
    merge.locator(f'input[value="{short}"]').check()
    asked = answer(page, accept=False)
    merge.locator("button").click()
    assert asked == [
        "Merge Lena Park (lena@example.com) into Lena P. (+14155550122)? Their handles,"
        " conversations and timeline move to Lena P. (+14155550122); it can be undone from"
        " Lena P. (+14155550122)'s page."
    ]
    for cid in (park, short):
        left = client.get(f"/api/v1/customers/{cid}", headers=auth(world.bob))
        assert left.json()["merged_into_id"] is None
    # Accepted: merged into the one she kept, the list drawn again without the other.
    answer(page, accept=True)
    merge.locator("button").click()
    said = page.locator("#customer-bulk-said")
    expect(said).to_have_text(
        "Merged Lena Park (lena@example.com) into Lena P. (+14155550122): it can be undone"
        " from Lena P. (+14155550122)'s page."
    )
    expect(page.locator(row(park))).to_have_count(0)
    expect(page.locator(row(short))).to_have_count(1)
    expect(page.locator("#customer-bulk")).to_be_hidden()  # nothing ticked any more
    expect(hint).to_have_text("Possible duplicates")  # the pair merged (it still said 1)
    gone = client.get(f"/api/v1/customers/{park}", headers=auth(world.bob)).json()
    assert gone["merged_into_id"] == short
    kept = client.get(f"/api/v1/customers/{short}", headers=auth(world.bob)).json()
    assert kept["merged_into_id"] is None
    # The link said leads to the page kept, where the merge is listed with its undo.
    said.get_by_role("link", name="Lena P. (+14155550122)'s page").click()
    page.wait_for_url(f"**/app/customers/{short}#merges")
    undo = page.locator("#merges li", has_text="Lena Park")
    expect(undo).to_contain_text("merged by hand")
    expect(undo.locator("button.undo-merge")).to_be_visible()
    # A merge the server refuses (one of the two merged elsewhere meanwhile) is said: on a
    # page that has not heard of that merge yet (its stream held here; once heard, the row
    # merged away leaves the list).
    page.route_web_socket("**/api/v1/stream**", lambda ws: None)
    page.goto(f"{live_server.url}/app/customers?q=lena")
    page.check(f"{row(short)} input.pick")
    page.check(f"{row(third)} input.pick")
    r = client.post(
        f"/api/v1/customers/{short}/merge", json={"merged_id": third}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    merge.locator(f'input[value="{short}"]').check()
    answer(page, accept=True)
    merge.locator("button").click()
    expect(page.locator("#flash")).to_contain_text("already merged into another")


def test_an_admin_erases_the_customers_ticked_and_each_failure_is_named(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Erasing took a visit to each customer's panel, one at a time.
    ids = [
        customer(client, world.bob, name=f"Gone {n}", email=f"gone{n}@example.com")
        for n in range(3)
    ]
    kept = customer(client, world.bob, name="Gone Not", email="gone.not@example.com")
    row = '#customer-list tr[data-customer="{}"]'.format
    page = browser.new_page()
    # Its stream held: one erased elsewhere is still listed, as on a page not told yet
    # (once told, the row leaves the list).
    page.route_web_socket("**/api/v1/stream**", lambda ws: None)
    sign_in(page, live_server, "alice@acme.test", "/app/customers?q=gone")
    for cid in ids:
        page.check(f"{row(cid)} input.pick")
    erase = page.locator("#customer-erase")
    erase.locator("summary").click()
    expect(erase).to_contain_text("Erasing deletes the 3 customers selected for good")
    page.screenshot(path=str(ARTIFACTS / "customers-erase.png"), full_page=True)
    # A click alone is too easy: the word is typed.
    erase.locator("input[name=confirm]").fill("yes")
    erase.locator("button.danger").click()
    expect(page.locator("#flash")).to_contain_text("Type erase to confirm.")
    assert client.get(f"/api/v1/customers/{ids[0]}", headers=auth(world.bob)).status_code == 200
    # One of them is erased elsewhere meanwhile: named, and the others still erased.
    r = client.delete(f"/api/v1/customers/{ids[1]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    erase.locator("input[name=confirm]").fill(" Erase ")
    erase.locator("button.danger").click()
    expect(page.locator("#customer-bulk-said")).to_have_text("Erased 2 customers.")
    expect(page.locator("#flash")).to_contain_text("Not erased: Gone 1 (")
    for cid in ids:
        expect(page.locator(row(cid))).to_have_count(0)
        assert client.get(f"/api/v1/customers/{cid}", headers=auth(world.bob)).status_code == 404
    expect(page.locator(row(kept))).to_have_count(1)
    assert client.get(f"/api/v1/customers/{kept}", headers=auth(world.bob)).status_code == 200
    # An agent ticks and tags, and is not offered to erase.
    agent = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=gone")
    agent.check(f"{row(kept)} input.pick")
    expect(agent.locator("#customer-tags")).to_be_visible()
    expect(agent.locator("#customer-erase")).to_have_count(0)
    # A viewer has nothing to tick and no action at all.
    viewer = signed_in(browser, live_server, "victor@acme.test", "/app/customers?q=gone")
    expect(viewer.locator(row(kept))).to_have_count(1)
    expect(viewer.locator("#customer-list input.pick")).to_have_count(0)
    expect(viewer.locator("#customer-bulk")).to_have_count(0)
    expect(viewer.locator("#customer-erase")).to_have_count(0)


def test_a_customers_page_lists_a_conversation_of_theirs_that_begins_while_it_is_open(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Their list stayed as drawn until reloaded.
    first = world.acme.opened
    page = signed_in(browser, live_server, "alice@acme.test", f"/app/customers/{first.customer.id}")
    rows = page.locator("#customer-conversations > li[data-id]")
    expect(rows).to_have_count(1)
    page.wait_for_timeout(300)  # the stream connects
    other = live_server.http.post(
        "/api/v1/inboxes", json={"name": "Shop", "channel": "api"}, headers=auth(world.alice)
    ).json()
    r = live_server.http.post(
        f"/api/v1/inboxes/{other['id']}/messages",
        json={
            "external_id": "shop-1",
            "text": "From the shop",
            "from": {"email": first.customer.email},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    started = page.locator(f'#customer-conversations > li[data-id="{r.json()["conversation_id"]}"]')
    expect(started).to_contain_text("Shop")
    expect(started).to_contain_text("From the shop")
    expect(rows).to_have_count(2)
    expect(page.locator("#timeline")).to_contain_text("They wrote: From the shop")
    # Another record merged into them by a colleague: its conversations come too.
    other_customer = live_server.http.post(
        f"/api/v1/inboxes/{other['id']}/messages",
        json={"external_id": "shop-2", "text": "Other me", "from": {"email": "second@example.com"}},
        headers=auth(world.bob),
    ).json()
    live_server.http.post(
        f"/api/v1/customers/{first.customer.id}/merge",
        json={"merged_id": other_customer["customer_id"], "reason": "same person"},
        headers=auth(world.bob),
    ).raise_for_status()
    expect(rows).to_have_count(3)


def test_a_merge_asks_which_value_stays_where_the_two_differ(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The survivor's value was kept without a word, the other's gone with the merge.
    def made(name: str, email: str, plan: str) -> str:
        r = client.post(
            "/api/v1/customers",
            json={"name": name, "email": email, "attributes": {"plan": plan}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    kept = made("Ola Nord", "ola@old.example", "Pro")
    gone = made("Ola Nordmann", "ola@new.example", "Enterprise")
    row = '#customer-list tr[data-customer="{}"]'.format
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=ola")
    page.on("dialog", lambda dialog: dialog.accept())
    page.check(f"{row(kept)} input.pick")
    page.check(f"{row(gone)} input.pick")
    merge = page.locator("#customer-merge")
    differ = merge.locator(".merge-conflicts")
    expect(differ).to_be_hidden()  # which stays not chosen yet
    # Merge pressed before the choices arrive: they were taken as the survivor's unasked.
    held: list = []  # type: ignore[type-arg]
    page.route("**/merge-preview*", lambda route: held.append(route))
    merge.locator(f'input[value="{kept}"]').check()
    while not held:
        page.wait_for_timeout(20)
    merge.locator("button[type=submit]").click()
    held[0].continue_()
    page.unroute("**/merge-preview*")
    fields = differ.locator(".merge-field")
    expect(fields).to_have_count(3)  # shown to choose from, nothing merged
    page.wait_for_timeout(300)
    left = client.get(f"/api/v1/customers/{gone}", headers=auth(world.bob)).json()
    assert left["merged_into_id"] is None
    expect(fields).to_have_text(
        [
            "name: Ola Nord Ola Nordmann",
            "email: ola@old.example ola@new.example",
            "plan: Pro Enterprise",
        ]
    )
    expect(differ.locator("input[value=survivor]:checked")).to_have_count(3)
    fields.nth(2).get_by_label("Enterprise").check()
    merge.locator("button[type=submit]").click()
    expect(page.locator(row(gone))).to_have_count(0)
    after = client.get(f"/api/v1/customers/{kept}", headers=auth(world.bob)).json()
    assert after["name"] == "Ola Nord" and after["email"] == "ola@old.example"
    assert after["attributes"] == {"plan": "Enterprise"}


def test_the_customers_list_drops_those_erased_or_merged_away_elsewhere_at_once(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # They stayed listed until a reload: a link to a page gone, offered to tag or merge.
    ids = [
        customer(client, world.bob, name=f"Live {n}", email=f"live{n}@example.com")
        for n in range(4)
    ]
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=live")
    viewer = signed_in(browser, live_server, "victor@acme.test", "/app/customers?q=live")
    for p in (page, viewer):
        expect(p.locator("body[data-stream-open]")).to_have_count(1)
        expect(p.locator("#customer-list tr[data-customer]")).to_have_count(4)
    for cid in ids[:2]:
        page.check(f'#customer-list tr[data-customer="{cid}"] input.pick')
    expect(page.locator("#customer-bulk-count")).to_have_text("2 selected")
    expect(page.locator("#customer-merge")).to_be_visible()

    def rows(p: Any) -> Any:
        return p.locator("#customer-list tr[data-customer]")

    # Erased by an admin elsewhere: gone from both lists, no longer counted as ticked.
    r = client.delete(f"/api/v1/customers/{ids[0]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    for p in (page, viewer):
        expect(p.locator(f'tr[data-customer="{ids[0]}"]')).to_have_count(0)
        expect(rows(p)).to_have_count(3)
    expect(page.locator("#customer-bulk-count")).to_have_text("1 selected")
    expect(page.locator("#customer-merge")).to_be_hidden()
    # Merged into another: the one merged away goes, the survivor stays.
    r = client.post(
        f"/api/v1/customers/{ids[3]}/merge",
        json={"merged_id": ids[2]},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    for p in (page, viewer):
        expect(p.locator(f'tr[data-customer="{ids[2]}"]')).to_have_count(0)
        expect(rows(p)).to_have_count(2)
        expect(p.locator(f'tr[data-customer="{ids[3]}"]')).to_have_count(1)
    # The last ones erased together: the list says there is none, the bar goes.
    for cid in (ids[1], ids[3]):
        r = client.delete(f"/api/v1/customers/{cid}", headers=auth(world.alice))
        assert r.status_code == 204, r.text
    for p in (page, viewer):
        expect(rows(p)).to_have_count(0)
        expect(p.locator("#customer-list tr.empty")).to_have_text("No customer matches.")
    expect(page.locator("#customer-bulk")).to_be_hidden()


def test_a_merge_undone_elsewhere_lists_the_customer_again_at_once(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The list dropped one merged away live, and showed them again only on a reload.
    kept = customer(client, world.bob, name="Undo Kept", email="undo.kept@example.com")
    other = customer(client, world.bob, name="Undo Other", phone="+14155550123")
    third = customer(client, world.bob, name="Undo Third", email="undo.third@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=undo")
    viewer = signed_in(browser, live_server, "victor@acme.test", "/app/customers?q=undo")
    for p in (page, viewer):
        expect(p.locator("body[data-stream-open]")).to_have_count(1)
        expect(p.locator("#customer-list tr[data-customer]")).to_have_count(3)
    r = client.post(
        f"/api/v1/customers/{kept}/merge", json={"merged_id": other}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    for p in (page, viewer):
        expect(p.locator(f'tr[data-customer="{other}"]')).to_have_count(0)
    # Ticked meanwhile: still ticked once the list is drawn again.
    page.check(f'#customer-list tr[data-customer="{third}"] input.pick')
    expect(page.locator("#customer-bulk-count")).to_have_text("1 selected")
    undone = client.post(
        f"/api/v1/customer-merges/{r.json()['id']}/undo", headers=auth(world.alice)
    )
    assert undone.status_code == 200, undone.text
    for p in (page, viewer):
        expect(p.locator(f'tr[data-customer="{other}"]')).to_have_count(1)
        expect(p.locator(f'tr[data-customer="{other}"] td.phone')).to_have_text("+14155550123")
        expect(p.locator("#customer-list tr[data-customer]")).to_have_count(3)
    expect(page.locator(f'tr[data-customer="{third}"] input.pick')).to_be_checked()
    expect(page.locator("#customer-bulk-count")).to_have_text("1 selected")


def test_the_search_pages_customers_follow_erasures_merges_and_their_undo(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Search results named customers erased or merged away until a reload, and one given
    # back by an undo stayed out.
    ids = [
        customer(client, world.bob, name=f"Sought {n}", email=f"sought{n}@example.com")
        for n in range(3)
    ]
    page = signed_in(browser, live_server, "bob@acme.test", "/app/search?q=sought")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    rows = page.locator("#customer-hits tr[data-customer]")
    expect(rows).to_have_count(3)
    r = client.post(
        f"/api/v1/customers/{ids[1]}/merge", json={"merged_id": ids[2]}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    expect(page.locator(f'#customer-hits tr[data-customer="{ids[2]}"]')).to_have_count(0)
    expect(rows).to_have_count(2)
    undone = client.post(
        f"/api/v1/customer-merges/{r.json()['id']}/undo", headers=auth(world.alice)
    )
    assert undone.status_code == 200, undone.text
    expect(page.locator(f'#customer-hits tr[data-customer="{ids[2]}"]')).to_have_count(1)
    expect(rows).to_have_count(3)
    for cid in ids:
        r = client.delete(f"/api/v1/customers/{cid}", headers=auth(world.alice))
        assert r.status_code == 204, r.text
    expect(rows).to_have_count(0)
    expect(page.locator("#customer-hits tr.empty")).to_have_text("No customer matches.")


def sought_conversations(client: TestClient, world: World, n: int) -> list[str]:
    """A conversation each of ``n`` customers the search for "sought" finds, by their email."""
    return [inbound(client, world, f"sought-{i}", f"sought{i}@example.com") for i in range(n)]


def test_the_search_pages_conversations_of_a_customer_erased_leave_at_once(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The customers found left the page at once, their conversations stayed until a reload,
    # linking to pages that are no more.
    ids = sought_conversations(client, world, 2)
    page = signed_in(browser, live_server, "bob@acme.test", "/app/search?q=sought")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    rows = page.locator("#conversation-hits li[data-id]")
    expect(rows).to_have_count(2)
    owners = {cid: conversation_customer(client, world, cid) for cid in ids}
    r = client.delete(f"/api/v1/customers/{owners[ids[0]]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    expect(page.locator(f'#conversation-hits li[data-id="{ids[0]}"]')).to_have_count(0)
    expect(page.locator(f'#conversation-hits li[data-id="{ids[1]}"]')).to_have_count(1)
    r = client.delete(f"/api/v1/customers/{owners[ids[1]]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    expect(rows).to_have_count(0)
    expect(page.locator("#conversation-hits li.empty")).to_have_text("No conversation matches.")


def test_the_search_page_hears_of_an_erasure_made_while_its_stream_was_away(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # Back on the stream after the erasure had removed its copies, the page was replayed
    # its events blanked (``erased``, without a payload) and ignored them: the customer and
    # their conversation stayed listed until a reload.
    ids = sought_conversations(client, world, 2)
    owners = {cid: conversation_customer(client, world, cid) for cid in ids}
    page = browser.new_page()
    stream = HeldStream(page)
    sign_in(page, live_server, "bob@acme.test", "/app/search?q=sought")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    expect(page.locator("#conversation-hits li[data-id]")).to_have_count(2)
    expect(page.locator("#customer-hits tr[data-customer]")).to_have_count(2)
    stream.hold()
    r = client.delete(f"/api/v1/customers/{owners[ids[0]]}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    stream.release_once_blanked(database)
    expect(page.locator(f'#conversation-hits li[data-id="{ids[0]}"]')).to_have_count(0)
    expect(page.locator(f'#customer-hits tr[data-customer="{owners[ids[0]]}"]')).to_have_count(0)
    expect(page.locator(f'#conversation-hits li[data-id="{ids[1]}"]')).to_have_count(1)
    expect(page.locator(f'#customer-hits tr[data-customer="{owners[ids[1]]}"]')).to_have_count(1)


def second_inbox(client: TestClient, world: World) -> str:
    r = client.post(
        "/api/v1/inboxes", json={"name": "Chat", "channel": "api"}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def message_of(database: Database, conversation_id: str) -> str:
    """The conversation's one message (the customer's)."""
    with database.session(write=False) as db:
        return db.scalars(
            select(Message.id).where(
                Message.conversation_id == conversation_id, Message.kind == MessageKind.message
            )
        ).one()


def test_the_search_pages_conversations_follow_merges_deletions_and_changes(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # Search results followed nothing of their conversations: one merged into another stayed
    # listed (its link opening the other), one whose matched message was deleted or erased
    # went on showing it, and a status changed showed the old one, until a reload.
    ws = world.acme.workspace.id
    merged = inbound(client, world, "zebra-1", "one@example.com")
    survivor = inbound(
        client, world, "other-1", "one@example.com", inbox=second_inbox(client, world)
    )
    deleted = inbound(client, world, "zebra-2", "two@example.com")
    erased = inbound(client, world, "zebra-3", "three@example.com")
    changed = inbound(client, world, "zebra-4", "four@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/search?q=zebra")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    rows = page.locator("#conversation-hits li[data-id]")
    expect(rows).to_have_count(4)

    def row(cid: str) -> Any:
        return page.locator(f'#conversation-hits li[data-id="{cid}"]')

    # Merged into a conversation the search did not find: it goes, and the survivor, which
    # holds the message that matched now, is found.
    r = client.post(
        f"/api/v1/conversations/{survivor}/merge",
        json={"merged_id": merged},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    expect(row(merged)).to_have_count(0)
    expect(row(survivor).locator(".preview mark")).to_have_text(["zebra"])

    # The message that matched deleted (as a send taking over an echo's copy deletes one),
    # or erased from another's thread (its writer erased): the row showing it goes, and
    # does not come back (nothing else of it matches).
    gone = {cid: message_of(database, cid) for cid in (deleted, erased)}
    with database.session() as db:
        db.execute(delete(Message).where(Message.id.in_(list(gone.values()))))
        messages_deleted(db, workspace_id=ws, conversation_id=deleted, message_ids=[gone[deleted]])
        emit(
            db,
            workspace_id=ws,
            type="customer.erased",
            payload={"customer_ids": [], "conversation_ids": [], "message_ids": [gone[erased]]},
        )
    expect(row(deleted)).to_have_count(0)
    expect(row(erased)).to_have_count(0)
    expect(rows).to_have_count(2)

    # A burst of changes to one listed: drawn as it is now, by one fetch of the page.
    page.wait_for_timeout(1000)  # the redraws above are done
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/app/search" in r.url else None)
    with database.session() as db:
        conv = db.get(Conversation, changed)
        assert conv is not None
        conv.status = Status.pending
        for _ in range(20):
            emit(
                db, workspace_id=ws, type="conversation.updated", payload=conversation_payload(conv)
            )
    expect(row(changed).locator(".status")).to_have_text("pending")
    page.wait_for_timeout(1000)
    assert len(fetched) == 1, fetched
    expect(rows).to_have_count(2)  # those that went are not found again
    page.screenshot(path=str(ARTIFACTS / "search-follows-conversations.png"))


def conversation_customer(client: TestClient, world: World, conversation_id: str) -> str:
    r = client.get(f"/api/v1/conversations/{conversation_id}", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return str(r.json()["customer_id"])


def wait_for(page: Any, done: Any, seconds: float = 20) -> None:
    """Until ``done()`` holds, letting the page (and its socket routes) run meanwhile."""
    for _ in range(int(seconds * 10)):
        if done():
            return
        page.wait_for_timeout(100)
    raise AssertionError("not done in time")


class HeldStream:
    """A page's stream that a test takes away (the socket drops, the next one opens and
    hears nothing, as on a network gone a while) and gives back: the page's socket then
    replays from the last event it saw."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.sockets: list[Any] = []
        self.held = False
        page.route_web_socket("**/api/v1/stream**", self._route)

    def _route(self, ws: Any) -> None:
        self.sockets.append(ws)
        if not self.held:
            ws.connect_to_server()

    def _reopen(self) -> None:
        opened = len(self.sockets)
        self.sockets[-1].close()
        wait_for(self.page, lambda: len(self.sockets) > opened)

    def hold(self) -> None:
        self.held = True
        self._reopen()

    def release_once_blanked(self, database: Database) -> None:
        """Back once the erasure's job has blanked its events (``erased``, no payload)."""

        def blanked() -> bool:
            with database.session(write=False) as db:
                types = set(db.scalars(select(StreamEvent.type)))
            return "erased" in types and "customer.erased" not in types

        wait_for(self.page, blanked)
        self.held = False
        self._reopen()


def test_the_search_pages_rows_name_a_customer_renamed_meanwhile(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # A customer renamed (here, in another tab, by a colleague): the search page's rows of
    # them and of their conversations went on with the old name until a reload.
    conv = inbound(client, world, "quill-1", "quill@example.com")
    other = inbound(client, world, "quill-2", "other.quill@example.com")
    quill = conversation_customer(client, world, conv)
    page = signed_in(browser, live_server, "bob@acme.test", "/app/search?q=quill")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    row = page.locator(f'#conversation-hits li[data-id="{conv}"] .who')
    expect(row).to_have_text("quill@example.com")
    expect(page.locator("#conversation-hits li[data-id]")).to_have_count(2)
    page.wait_for_timeout(1000)  # nothing drawn anew since the page loaded
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/app/search" in r.url else None)
    # A note changes nothing any row shows: not drawn anew for it.
    r = client.post(
        f"/api/v1/customers/{quill}/notes",
        json={"text": "Writes with a quill"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    page.wait_for_timeout(1000)
    assert fetched == []
    r = client.patch(
        f"/api/v1/customers/{quill}", json={"name": "Quentin Quill"}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    expect(row).to_have_text("Quentin Quill")
    expect(page.locator(f'#customer-hits tr[data-customer="{quill}"] a')).to_have_text(
        "Quentin Quill"
    )
    expect(page.locator(f'#conversation-hits li[data-id="{other}"] .who')).to_have_text(
        "other.quill@example.com"
    )
    assert len(fetched) == 1, fetched
    page.screenshot(path=str(ARTIFACTS / "search-follows-renames.png"))


def test_the_customers_list_names_a_customer_renamed_or_tagged_elsewhere(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Their row kept the old name and tags until a reload.
    kept = customer(client, world.bob, name="Rowan Old", email="rowan@example.com")
    ticked = customer(client, world.bob, name="Rowan Other", email="rowan.other@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/customers?q=rowan")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    page.check(f'#customer-list tr[data-customer="{ticked}"] input.pick')
    r = client.patch(
        f"/api/v1/customers/{kept}", json={"name": "Rowan New"}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    r = client.patch(
        f"/api/v1/customers/{kept}/tags", json={"add": ["vip"]}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    row = page.locator(f'#customer-list tr[data-customer="{kept}"]')
    expect(row.locator("a").first).to_have_text("Rowan New")
    expect(row.locator("td.tags")).to_have_text("vip")
    expect(page.locator(f'tr[data-customer="{ticked}"] input.pick')).to_be_checked()
    expect(page.locator("#customer-bulk-count")).to_have_text("1 selected")
