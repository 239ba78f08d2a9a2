"""Bulk actions and filters in a real browser, at phone width, driven from the keyboard."""

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import PASSWORD, World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_agent_labels_and_resolves_conversations_in_bulk(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    ids = [inbound(client, world, f"bulk{i}", f"bulk{i}@example.com") for i in range(3)]
    # A long message: its one-line preview made the list as wide as its whole text, and
    # the page scrolled sideways at laptop widths (the grid's 1fr column grew to fit it).
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "long", "text": "word " * 300, "from": {"email": "long@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    page = browser.new_page(viewport={"width": 1024, "height": 768})
    sign_in(page, live_server, "bob@acme.test", "/app/inbox?view=all")
    for width in (1024, 390):  # then at phone width
        page.set_viewport_size({"width": width, "height": 844})
        # Nothing sticks out sideways (but the header's links, which scroll in their row).
        wide = page.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect()"
            ".right > window.innerWidth + 1 && !e.closest('.top nav'))"
            ".map(e => e.tagName + '.' + e.className + '#'"
            " + e.name + ' ' + e.getBoundingClientRect().right)"
        )
        assert wide == [], width
        assert page.evaluate("document.documentElement.scrollWidth") <= width
    # On a phone the list comes first: the filters folded, no action before a tick.
    page.reload()
    expect(page.locator("#filters")).to_be_hidden()
    expect(page.locator("#bulk button[data-bulk=resolve]")).to_be_hidden()
    page.locator("#conversation-list input.pick").first.check()
    expect(page.locator("#bulk button[data-bulk=resolve]")).to_be_visible()
    page.set_viewport_size({"width": 1024, "height": 768})
    page.reload()
    expect(page.locator("#filters")).to_be_visible()

    # Two conversations ticked with the keyboard, then labelled.
    for cid in ids[:2]:
        page.focus(f'#conversation-list li[data-id="{cid}"] input.pick')
        page.keyboard.press("Space")
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.fill("#bulk input[name=label]", "Refund <b>")
    page.click("#bulk button[data-bulk=label]")
    expect(page.locator("#bulk-result")).to_have_text("2 updated")
    for cid in ids[:2]:
        expect(page.locator(f'#conversation-list li[data-id="{cid}"] .label')).to_have_text(
            "refund <b>"
        )
    expect(page.locator(f'#conversation-list li[data-id="{ids[2]}"] .label')).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "inbox-bulk.png"), full_page=True)

    # Select all on the page, then resolve: the list (open ones, the inbox's default)
    # empties of them. (Choosing "open" again changes nothing, and fetches nothing.)
    expect(page.locator("#filters select[name=status]")).to_have_value("open")
    page.check("#select-all")
    n = page.locator("#conversation-list input.pick").count()
    expect(page.locator("#bulk-count")).to_have_text(f"{n} selected")
    page.click("#bulk button[data-bulk=resolve]")
    expect(page.locator("#bulk-result")).to_have_text(f"{n} updated")
    expect(page.locator("#conversation-list input.pick")).to_have_count(0)
    for cid in ids:
        c = live_server.http.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
        assert c["status"] == "resolved"

    # The filters survive in the form: resolved ones, by label.
    page.goto(f"{live_server.url}/app/inbox?view=all&status=resolved&label=refund+%3Cb%3E")
    expect(page.locator("#conversation-list li[data-id]")).to_have_count(2)
    expect(page.locator("#filters select[name=status]")).to_have_value("resolved")


def test_the_list_keeps_up_while_messages_keep_coming(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    """Messages arriving closer together than the list's 150 ms wait: the list still
    refreshes while they come (a debounce would wait for a pause that never comes)."""
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    page.wait_for_timeout(300)  # the stream connects
    posted: list[str] = []
    done = threading.Event()

    def flow() -> None:
        with httpx.Client(base_url=live_server.url, headers=auth(world.bob)) as http:
            for n in range(60):
                r = http.post(
                    f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
                    json={"external_id": f"flow{n}", "text": "hi", "from": {"email": f"f{n}@x.io"}},
                )
                posted.append(r.json()["conversation_id"])
                time.sleep(0.05)
        done.set()

    sender = threading.Thread(target=flow)
    sender.start()
    try:
        while not posted:
            time.sleep(0.01)
        page.wait_for_selector(f'#conversation-list li[data-id="{posted[0]}"]')
        assert not done.is_set(), "the list refreshed only once the messages stopped"
    finally:
        sender.join()
    # And the last of them shows once the flow ends.
    page.wait_for_selector(f'#conversation-list li[data-id="{posted[-1]}"]')


def test_an_open_inbox_drops_the_badges_of_a_deleted_sla_policy(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Deleting a policy emitted nothing: an open inbox went on showing its conversations'
    # SLA badges, for clocks that had stopped, until the agent reloaded the page.
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "Fast", "first_response_minutes": 60},
        headers=auth(world.alice),
    ).json()
    conv = inbound(client, world, "badge", "badge@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    badge = page.locator(f'#conversation-list li[data-id="{conv}"] .sla')
    expect(badge).to_have_text("SLA ok")
    page.wait_for_timeout(300)  # the stream connects
    gone = live_server.http.delete(
        f"/api/v1/sla-policies/{policy['id']}", headers=auth(world.alice)
    )
    assert gone.status_code == 204
    expect(badge).to_have_count(0)
    expect(page.locator(f'#conversation-list li[data-id="{conv}"]')).to_have_count(1)


def test_the_inbox_opens_on_open_conversations_and_shows_others_when_asked(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # "All" listed resolved conversations among those to act on.
    waiting = inbound(client, world, "st-open", "st-open@example.com")
    done = inbound(client, world, "st-done", "st-done@example.com")
    client.post(
        f"/api/v1/conversations/{done}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    row = '#conversation-list li[data-id="{}"]'.format
    expect(page.locator(row(waiting))).to_have_count(1)
    expect(page.locator(row(done))).to_have_count(0)
    expect(page.locator("#filters select[name=status]")).to_have_value("open")

    page.select_option("#filters select[name=status]", "resolved")  # applied once chosen
    page.wait_for_url("**status=resolved**")  # the choice is in the address, to share
    expect(page.locator(row(done))).to_have_count(1)
    expect(page.locator(row(waiting))).to_have_count(0)
    page.select_option("#filters select[name=status]", "all")
    page.wait_for_url("**status=all**")
    expect(page.locator(row(done))).to_have_count(1)
    expect(page.locator(row(waiting))).to_have_count(1)
    page.go_back()  # and the back button goes back to the resolved ones
    page.wait_for_url("**status=resolved**")
    expect(page.locator(row(waiting))).to_have_count(0)
    expect(page.locator("#filters select[name=status]")).to_have_value("resolved")


def test_a_filter_chosen_applies_at_once_and_words_and_dates_wait_for_apply(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # A status, channel, priority, SLA state or sort chosen did nothing until Apply.
    urgent = inbound(client, world, "f-urgent", "f-urgent@example.com")
    calm = inbound(client, world, "f-calm", "f-calm@example.com")
    client.post(
        f"/api/v1/conversations/{urgent}/priority",
        json={"priority": "urgent"},
        headers=auth(world.bob),
    ).raise_for_status()
    row = '#conversation-list li[data-id="{}"]'.format
    page = browser.new_page(viewport={"width": 390, "height": 844})
    sign_in(page, live_server, "bob@acme.test", "/app/inbox?view=all")
    expect(page.locator("#filters")).to_be_hidden()  # a phone: folded while none is on
    page.click("#filter-box summary")
    page.select_option("#filters select[name=priority]", "urgent")
    page.wait_for_url("**priority=urgent**")
    assert "view=all" in page.url and "status=open" in page.url  # the whole form, as Apply
    expect(page.locator(row(urgent))).to_have_count(1)
    expect(page.locator(row(calm))).to_have_count(0)
    expect(page.locator("#filters")).to_be_visible()  # a filter on: the box stays open
    expect(page.locator("#filter-box summary")).to_have_text("Filters (1 on)")
    page.select_option("#filters select[name=sort]", "waiting")
    page.wait_for_url("**sort=waiting**")
    assert "priority=urgent" in page.url
    # Words and dates wait for Apply (a list fetched at each key would be no help).
    page.fill("#filters input[name=label]", "vip")
    page.fill("#filters input[name=active_from]", "2020-01-01")
    page.wait_for_timeout(300)
    assert "label=vip" not in page.url and "active_from=2020" not in page.url
    page.click("#filters button[type=submit]")
    page.wait_for_url("**label=vip**")
    assert "active_from=2020-01-01" in page.url
    expect(page.locator(row(urgent))).to_have_count(0)  # no vip label on it
    # Back, the form says what the list shows (not what was chosen before leaving it).
    page.go_back()
    page.wait_for_url(lambda url: "label=vip" not in url)
    expect(page.locator("#filters input[name=label]")).to_have_value("")
    expect(page.locator("#filters select[name=sort]")).to_have_value("waiting")


def test_the_inbox_list_is_worked_from_the_keyboard(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    for n in range(3):
        inbound(client, world, f"key{n}", f"key{n}@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    rows = page.locator("#conversation-list > li[data-id]")
    ids = [rows.nth(i).get_attribute("data-id") for i in range(3)]
    selected = page.locator("#conversation-list > li.selected")
    page.wait_for_timeout(300)  # the stream connects

    # "?" shows the keys in a dialog, which Escape closes.
    help_ = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_).to_be_hidden()
    page.keyboard.press("?")
    expect(help_).to_be_visible()
    expect(help_).to_contain_text("Open the selected conversation")
    page.keyboard.press("Escape")
    expect(help_).to_be_hidden()

    # "/" goes to the search box, where a "j" is a letter; Escape leaves it.
    search = page.locator("header .search input")
    page.keyboard.press("/")
    expect(search).to_be_focused()
    page.keyboard.type("jj")
    expect(search).to_have_value("jj")
    expect(selected).to_have_count(0)
    page.keyboard.press("Escape")
    expect(search).not_to_be_focused()

    # j, j, j, k: the second; the arrows move too, once in the list.
    for key in "jjjk":
        page.keyboard.press(key)
    expect(selected).to_have_attribute("data-id", ids[1])  # type: ignore[arg-type]
    expect(selected.locator("a")).to_have_attribute("aria-current", "true")
    expect(selected.locator("a")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(selected).to_have_attribute("data-id", ids[2])  # type: ignore[arg-type]
    page.keyboard.press("ArrowUp")
    expect(selected).to_have_attribute("data-id", ids[1])  # type: ignore[arg-type]
    page.screenshot(path=str(ARTIFACTS / "inbox-keys.png"))

    # A conversation arriving redraws the list: the same one stays selected, focused.
    new = inbound(client, world, "key-new", "key-new@example.com")
    expect(page.locator(f'#conversation-list > li[data-id="{new}"]')).to_have_count(1)
    expect(selected).to_have_attribute("data-id", ids[1])  # type: ignore[arg-type]
    expect(selected.locator("a")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/app/conversations/{ids[1]}")
    page.go_back()
    # The list drawn anew selects the conversation left (it started from the top again).
    expect(selected).to_have_attribute("data-id", ids[1])  # type: ignore[arg-type]
    expect(selected.locator("a")).to_be_focused()
    page.keyboard.press("k")
    expect(selected).to_have_attribute("data-id", ids[0])  # type: ignore[arg-type]
    page.keyboard.press("k")
    page.keyboard.press("o")
    page.wait_for_url(f"**/app/conversations/{new}")
    page.go_back()
    expect(selected).to_have_attribute("data-id", new)
    # Each selection was written to the page's history entry: Safari refuses more than 100
    # writes in 30 s, so holding j down left the keys dead. Now at most one a second.
    page.evaluate(
        """() => {
             window.writes = 0;
             const write = history.replaceState.bind(history);
             history.replaceState = (...a) => { window.writes += 1; return write(...a); };
           }"""
    )
    for _ in range(40):
        page.keyboard.press("j")
    expect(selected).to_have_attribute("data-id", rows.last.get_attribute("data-id"))  # type: ignore[arg-type]
    assert page.evaluate("window.writes") <= 2


def test_from_a_conversation_opened_in_the_inbox_j_and_k_go_through_the_list_and_u_back(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Working a queue meant going back to the inbox between each conversation.
    for n in range(3):
        inbound(client, world, f"q{n}", f"q{n}@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    rows = page.locator("#conversation-list > li[data-id]")
    expect(rows).to_have_count(4)  # the world's own too
    ids = [rows.nth(i).get_attribute("data-id") for i in range(4)]
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(f"**/app/conversations/{ids[0]}")
    expect(page.locator("#queue-place")).to_have_text("1 of 4 in the list")
    page.keyboard.press("k")  # nothing before the first
    page.keyboard.press("j")
    page.wait_for_url(f"**/app/conversations/{ids[1]}")
    page.keyboard.press("j")
    page.wait_for_url(f"**/app/conversations/{ids[2]}")
    expect(page.locator("#queue-place")).to_have_text("3 of 4 in the list")
    page.keyboard.press("k")
    page.wait_for_url(f"**/app/conversations/{ids[1]}")
    # Typed in the composer, a j is a letter.
    page.locator("#composer textarea").type("jk")
    expect(page.locator("#composer textarea")).to_have_value("jk")
    page.wait_for_timeout(300)
    assert page.url.endswith(f"/app/conversations/{ids[1]}")
    # What is written stays as a draft: u leaves without asking.
    asked: list[str] = []

    def dismiss(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.keyboard.press("Escape")
    page.keyboard.press("u")
    page.wait_for_url("**/app/inbox?view=all")
    assert asked == []
    # Back on the list, the conversation left is selected, marked as holding a draft.
    selected = page.locator("#conversation-list > li.selected")
    expect(selected).to_have_attribute("data-id", ids[1])  # type: ignore[arg-type]
    expect(selected.locator(".draft-tag")).to_have_text("Draft")
    # Files chosen and not sent would be lost to a key: asked first (dismissed), it stays.
    page.keyboard.press("o")
    page.wait_for_url(f"**/app/conversations/{ids[1]}")
    expect(page.locator("#composer textarea")).to_have_value("jk")
    page.set_input_files(
        "#attach-input", files=[{"name": "a.txt", "mimeType": "text/plain", "buffer": b"hi"}]
    )
    expect(page.locator("#attached li")).to_have_count(1)
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("u")
    page.wait_for_timeout(300)
    assert asked == ["Leave this conversation? The files you chose are not sent."]
    assert page.url.endswith(f"/app/conversations/{ids[1]}")
    expect(page.locator("#queue-place")).to_have_text("2 of 4 in the list")
    page.remove_listener("dialog", dismiss)
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("u")
    page.wait_for_url("**/app/inbox?view=all")
    expect(selected).to_have_attribute("data-id", ids[1])  # type: ignore[arg-type]
    # One reached another way (its address), though in that list, has no place in it.
    page.goto(f"{live_server.url}/app/conversations/{ids[2]}")
    page.wait_for_selector("#composer")
    expect(page.locator("#queue-place")).to_be_hidden()
    # Shift+E resolves and opens the next.
    page.goto(f"{live_server.url}/app/inbox?view=all")
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(f"**/app/conversations/{ids[0]}")
    page.keyboard.press("Shift+E")
    page.wait_for_url(f"**/app/conversations/{ids[1]}")
    done = client.get(f"/api/v1/conversations/{ids[0]}", headers=auth(world.bob)).json()
    assert done["status"] == "resolved"
    expect(page.locator("#queue-place")).to_have_text("2 of 4 in the list")
    # Here Bob's draft waits (the "jk" above): resolving without sending it is asked first.
    expect(page.locator("#composer textarea")).to_have_value("jk")
    page.on("dialog", dismiss)
    page.keyboard.press("Shift+E")
    page.wait_for_timeout(300)
    assert asked[-1] == "Resolve it without sending what you wrote? It stays here as a draft."
    assert page.url.endswith(f"/app/conversations/{ids[1]}")
    kept = client.get(f"/api/v1/conversations/{ids[1]}", headers=auth(world.bob)).json()
    assert kept["status"] != "resolved"
    page.remove_listener("dialog", dismiss)
    # One not in that list (begun since) has no place in it, and j does nothing there.
    later = inbound(client, world, "q-later", "q-later@example.com")
    page.goto(f"{live_server.url}/app/conversations/{later}")
    page.wait_for_selector("#composer")
    expect(page.locator("#queue-place")).to_be_hidden()
    page.keyboard.press("j")
    page.wait_for_timeout(300)
    assert page.url.endswith(f"/app/conversations/{later}")


def test_an_inbox_whose_session_ended_sends_the_agent_to_sign_in_and_back(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The list redrew itself from the sign-in page the server answered with once the
    # session had ended: it drew nothing, ever again, and looked live.
    first = inbound(client, world, "ended-1", "ended1@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    expect(page.locator(f'#conversation-list li[data-id="{first}"]')).to_have_count(1)
    page.context.clear_cookies()  # the session gone (its socket still open)
    inbound(client, world, "ended-2", "ended2@example.com")
    page.wait_for_url("**/login?next=%2Fapp%2Finbox%3Fview%3Dall")
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/app/inbox?view=all")
    expect(page.locator("#conversation-list li[data-id]", has_text="ended2")).to_have_count(1)
