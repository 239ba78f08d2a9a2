"""Drafts: what an agent wrote in a conversation and did not send is kept (in this browser,
for this member) until it is sent or thrown away; a reply typed and left by a link, Back
or a reload was lost."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, sign_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def _drafts(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The drafts this browser keeps, by storage key."""
    return page.evaluate(  # type: ignore[no-any-return]
        "Object.fromEntries(Object.keys(localStorage)"
        ".filter((k) => k.startsWith('rapport.draft.')).map((k) => [k, localStorage.getItem(k)]))"
    )


def test_a_reply_left_unsent_is_there_again_until_sent_or_discarded(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    first = world.acme.opened
    conv = first.conversation.id
    page = browser.new_context().new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    box = page.locator("#composer textarea")
    note = page.locator("#draft-note")
    expect(note).to_be_hidden()
    box.fill("Half a reply about your order")
    # Left by a link: the list says there is a draft, and the conversation opens with it.
    page.goto(f"{live_server.url}/app/inbox?view=all")
    row = page.locator(f"#conversation-list > li[data-id='{conv}']")
    expect(row.locator(".draft-tag")).to_have_text("Draft")
    expect(page.locator("#conversation-list .draft-tag")).to_have_count(1)
    row.locator("a").click()
    page.wait_for_url(f"**/app/conversations/{conv}")
    expect(box).to_have_value("Half a reply about your order")
    expect(note).to_be_visible()
    expect(note).to_contain_text("not sent yet")
    # Written as a note, it comes back a note.
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    page.reload()
    expect(box).to_have_value("Half a reply about your order")
    expect(box).to_have_attribute("aria-label", "Note for colleagues")
    expect(page.locator("#composer button[type=submit]")).to_have_text("Add note")

    # Sent, it is gone: from this page, the next visit and the list.
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    box.press("Control+Enter")
    expect(page.locator("#messages li").last).to_contain_text("Half a reply about your order")
    expect(box).to_have_value("")
    sent = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    assert sent["messages"][-1]["text"] == "Half a reply about your order"
    assert sent["messages"][-1]["direction"] == "out"  # a reply, as the composer was set
    assert _drafts(page) == {}
    page.reload()
    expect(box).to_have_value("")
    expect(note).to_be_hidden()
    page.goto(f"{live_server.url}/app/inbox?view=all")
    expect(page.locator(f"#conversation-list > li[data-id='{conv}']")).to_be_visible()
    expect(page.locator("#conversation-list .draft-tag")).to_have_count(0)

    # Text put in without a keystroke (a canned response, say) is kept as the page goes.
    page.goto(f"{live_server.url}/app/conversations/{conv}")
    page.evaluate("document.querySelector('#composer textarea').value = 'Put in by a script'")
    page.goto(f"{live_server.url}/app/conversations/{conv}")
    expect(box).to_have_value("Put in by a script")
    # Discarded, it stays discarded.
    note.get_by_role("button", name="Discard it").click()
    expect(box).to_have_value("")
    expect(note).to_be_hidden()
    expect(box).to_be_focused()
    page.reload()
    expect(box).to_have_value("")
    assert _drafts(page) == {}


def test_drafts_are_the_members_own_and_signing_out_forgets_them(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    conv = first.conversation.id
    page = browser.new_context().new_page()  # one browser, two members in turn
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.locator("#composer textarea").fill("Bob's words")
    page.goto(f"{live_server.url}/app/inbox?view=all")
    expect(page.locator("#conversation-list .draft-tag")).to_have_count(1)
    assert len(_drafts(page)) == 1
    # Another member signed in on the same browser (Bob's session ended without signing
    # out): not shown Bob's draft.
    page.context.clear_cookies()
    sign_in(page, live_server, "alice@acme.test", f"/app/conversations/{conv}")
    expect(page.locator("#composer textarea")).to_have_value("")
    expect(page.locator("#draft-note")).to_be_hidden()
    page.goto(f"{live_server.url}/app/inbox?view=all")
    expect(page.locator(f"#conversation-list > li[data-id='{conv}']")).to_be_visible()
    expect(page.locator("#conversation-list .draft-tag")).to_have_count(0)
    # Signing out forgets every draft kept in this browser.
    page.click("#logout")
    page.wait_for_url("**/login")
    assert _drafts(page) == {}
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    expect(page.locator("#composer textarea")).to_have_value("")


def test_drafts_older_than_two_weeks_are_dropped(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    conv = first.conversation.id
    page = browser.new_context().new_page()
    sign_in(page, live_server, "bob@acme.test", "/app/inbox?view=all")
    user = page.evaluate("document.body.dataset.user")
    old = 15 * 24 * 3600 * 1000
    page.evaluate(
        f"localStorage.setItem('rapport.draft.{user}.{conv}', JSON.stringify("
        f"{{text: 'old', mode: 'reply', at: Date.now() - {old}}}))"
    )
    page.evaluate(
        f"localStorage.setItem('rapport.draft.{user}.other', JSON.stringify("
        f"{{text: 'recent', mode: 'reply', at: Date.now() - 1000}}))"
    )
    page.reload()
    expect(page.locator(f"#conversation-list > li[data-id='{conv}']")).to_be_visible()
    expect(page.locator("#conversation-list .draft-tag")).to_have_count(0)
    assert list(_drafts(page)) == [f"rapport.draft.{user}.other"]


def test_signing_out_anywhere_keeps_no_draft_of_a_page_still_open(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Signed out from the conversation itself, the page's leaving saved the composer again
    # after the drafts were forgotten; signed out in another tab, a conversation closed
    # later did the same.
    conv = world.acme.opened.conversation.id
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.locator("#composer textarea").fill("Card ending 4242, refund it")
    page.click("#logout")
    page.wait_for_url("**/login")
    assert _drafts(page) == {}

    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    other = context.new_page()
    other.goto(f"{live_server.url}/app/inbox")
    page.locator("#composer textarea").fill("Words in the first tab")
    before = page.evaluate("localStorage.getItem('rapport.signed-out')")
    other.click("#logout")
    other.wait_for_url("**/login")
    # The first tab hears of it (the storage event, dispatched as its copy of the storage
    # changes): a fixed 200 ms wait was once too short under load.
    page.wait_for_function(
        "(before) => localStorage.getItem('rapport.signed-out') !== before", arg=before
    )
    page.close()
    assert _drafts(other) == {}


def test_a_second_tab_on_the_conversation_leaves_the_draft_alone(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    conv = world.acme.opened.conversation.id
    context = browser.new_context()
    first = context.new_page()
    sign_in(first, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    second = context.new_page()
    second.goto(f"{live_server.url}/app/conversations/{conv}")
    expect(second.locator("#composer textarea")).to_have_value("")
    first.locator("#composer textarea").fill("Long careful reply")
    first.goto(f"{live_server.url}/app/inbox")
    second.goto(f"{live_server.url}/app/inbox")  # its composer empty, never touched
    second.goto(f"{live_server.url}/app/conversations/{conv}")
    expect(second.locator("#composer textarea")).to_have_value("Long careful reply")


def test_a_draft_past_two_weeks_is_not_opened_again(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    conv = world.acme.opened.conversation.id
    page = browser.new_context().new_page()
    sign_in(page, live_server, "bob@acme.test", "/app/account")
    user = page.evaluate("document.body.dataset.user")
    page.evaluate(
        f"localStorage.setItem('rapport.draft.{user}.{conv}', JSON.stringify("
        f"{{text: 'three weeks old', mode: 'reply', at: Date.now() - {21 * 24 * 3600 * 1000}}}))"
    )
    page.goto(f"{live_server.url}/app/conversations/{conv}")
    expect(page.locator("#composer textarea")).to_have_value("")
    expect(page.locator("#draft-note")).to_be_hidden()
    page.goto(f"{live_server.url}/app/inbox")
    assert _drafts(page) == {}
