"""The conversation page in a real browser: priority, labels, and snoozing until a time."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from rapport.config import Settings
from rapport.conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
)
from rapport.conversations.service import add_message, message_payload, messages_deleted
from rapport.db import Database
from rapport.realtime.service import emit
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.conversations.test_send_again import Receiver, failed_reply, receiver  # noqa: F401
from tests.factories import PASSWORD, World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in
from tests.web.test_customers_browser import HeldStream

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_an_agent_sets_priority_labels_and_a_snooze(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    cid = inbound(client, world, "conv-ui", "conv-ui@example.com")
    page = browser.new_page(viewport={"width": 390, "height": 844}, timezone_id="Europe/Madrid")
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{cid}")

    # Times read on the agent's clock (they read as local times, in UTC): the customer's
    # message, written in the thread and in the customer's timeline.
    written = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
    at = datetime.fromisoformat(written["messages"][0]["created_at"])
    madrid = at.astimezone(ZoneInfo("Europe/Madrid")).strftime("%Y-%m-%d %H:%M")
    expect(page.locator("#messages li.dir-in time").first).to_have_text(madrid)
    expect(page.locator("#timeline time").first).to_have_text(madrid)

    # Open: Resolve is offered, Reopen is not; a first conversation has no earlier ones.
    expect(page.locator("#reopen")).to_be_hidden()
    expect(page.locator("aside.customer")).to_contain_text("None: this is their first.")
    page.select_option("#priority", "urgent")
    page.fill("#label-form input", "Billing <i>")
    page.press("#label-form input", "Enter")
    expect(page.locator("#label-list .label")).to_have_text(["billing <i>"])
    page.fill("#label-form input", "vip")
    page.click("#label-form button")
    expect(page.locator("#label-list .label")).to_have_text(["billing <i>", "vip"])
    page.click('#label-list button[data-label="vip"]')
    expect(page.locator("#label-list .label")).to_have_text(["billing <i>"])

    # Snooze until 1 March 2030, 09:30 in the agent's own time zone (Madrid, UTC+1 then).
    expect(page.locator("#snooze-until")).to_be_hidden()
    page.select_option("#status-select", "snoozed")
    expect(page.locator("#snooze-until")).to_be_visible()
    page.fill("#snooze-input", "2030-03-01T09:30")
    page.click("#status-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("snoozed")
    page.screenshot(path=str(ARTIFACTS / "conversation-snooze.png"), full_page=True)

    c = live_server.http.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
    assert c["priority"] == "urgent"
    assert c["labels"] == ["billing <i>"]
    assert c["status"] == "snoozed"
    until = datetime.fromisoformat(c["snoozed_until"])
    assert until.astimezone(UTC) == datetime(2030, 3, 1, 8, 30, tzinfo=UTC)

    # After a reload the page shows what was saved, the snooze in local time.
    page.reload()
    expect(page.locator("#priority")).to_have_value("urgent")
    expect(page.locator("#snooze-input")).to_have_value("2030-03-01T09:30")
    expect(page.locator("#reopen")).to_be_visible()  # snoozed: it can be reopened
    page.click("#resolve")
    expect(page.locator("#status")).to_have_text("resolved")
    expect(page.locator("#snooze-until")).to_be_hidden()
    # One way out of each state: a resolved conversation offers Reopen, not Resolve.
    expect(page.locator("#resolve")).to_be_hidden()
    page.click("#reopen")
    expect(page.locator("#status")).to_have_text("open")
    expect(page.locator("#reopen")).to_be_hidden()
    expect(page.locator("#resolve")).to_be_visible()


def test_a_conversation_whose_session_ended_sends_the_agent_to_sign_in_and_back(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # An email arriving live once the session had ended stayed bare text (its body's fetch
    # answered 401), and nothing said the page no longer followed anything.
    cid = inbound(client, world, "ended-body-1", "ended-body@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    page.context.clear_cookies()  # the session gone (its socket still open)
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "ended-body-2",
            "text": "It is late",
            "html": "<p>It is <b>late</b></p>",
            "from": {"email": "ended-body@example.com"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201 and r.json()["conversation_id"] == cid, r.text
    page.wait_for_url(f"**/login?next=%2Fapp%2Fconversations%2F{cid}")
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"**/app/conversations/{cid}")
    expect(page.locator("#messages .body.html b")).to_have_text("late")


def test_an_agent_attaches_files_removes_one_and_sends_the_reply(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    import base64

    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "files-ui",
            "text": "my receipt",
            "from": {"email": "files-ui@example.com"},
            "attachments": [
                {
                    "filename": "receipt.jpg",
                    "content_type": "image/jpeg",
                    "data_base64": base64.b64encode(b"\xff\xd8\xff receipt").decode(),
                }
            ],
        },
        headers=auth(world.bob),
    )
    cid = r.json()["conversation_id"]
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    # The customer's file is in the thread, as a download.
    expect(page.locator(".msg.dir-in .files a.file")).to_have_text(["receipt.jpg"])

    page.set_input_files(
        "#attach-input",
        files=[
            {"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 inv"},
            {"name": "wrong.txt", "mimeType": "text/plain", "buffer": b"not this one"},
        ],
    )
    expect(page.locator("#attached li:not(.uploading)")).to_have_count(2)
    page.click('#attached button[aria-label="Remove wrong.txt"]')
    expect(page.locator("#attached li span")).to_have_text(["invoice.pdf"])
    page.fill("#composer textarea", "Here is your invoice.")
    page.click("#composer button[type=submit]")
    mine = page.locator(".msg.dir-out.kind-message").last
    expect(mine.locator(".body")).to_have_text("Here is your invoice.")
    expect(mine.locator(".files a.file")).to_have_text(["invoice.pdf"])
    expect(page.locator("#attached li")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "conversation-files.png"), full_page=True)
    with page.expect_download() as download:
        mine.locator(".files a.file").click()
    assert download.value.suggested_filename == "invoice.pdf"

    c = live_server.http.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
    out = c["messages"][-1]
    assert out["text"] == "Here is your invoice."
    assert [(a["filename"], a["content_type"]) for a in out["attachments"]] == [
        ("invoice.pdf", "application/pdf")
    ]
    # After a reload the server-rendered thread shows both sides' files.
    page.reload()
    expect(page.locator(".msg .files a.file")).to_have_text(["receipt.jpg", "invoice.pdf"])


def test_an_admin_exports_then_erases_a_customer_after_typing_erase_and_an_agent_cannot(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    cid = inbound(client, world, "erase-ui", "erase-ui@example.com")
    customer = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()[
        "customer_id"
    ]

    agent = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    expect(agent.locator("#conversation")).to_be_visible()
    expect(agent.locator("#erase-form")).to_have_count(0)

    page = signed_in(browser, live_server, "alice@acme.test", f"/app/conversations/{cid}")
    # The panel fills in below the customer's details as its requests answer: a click
    # while they still move the layout can land beside the summary.
    page.wait_for_load_state("networkidle")
    page.click(".privacy summary")
    expect(page.locator(".privacy")).to_have_js_property("open", True)
    page.screenshot(path=str(ARTIFACTS / "conversation-privacy.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#export-customer")
    assert download.value.suggested_filename == f"customer-{customer}.json"
    exported = Path(download.value.path()).read_text()
    assert '"text": "hello erase-ui"' in exported
    page.fill("#erase-form input[name=confirm]", "yes")
    page.click("#erase-form button[type=submit]")
    expect(page.locator("#flash")).to_have_text("Type erase to confirm.")
    assert client.get(f"/api/v1/customers/{customer}", headers=auth(world.bob)).status_code == 200

    page.fill("#erase-form input[name=confirm]", "erase")
    page.click("#erase-form button[type=submit]")
    page.wait_for_url("**/app/inbox")
    assert client.get(f"/api/v1/customers/{customer}", headers=auth(world.bob)).status_code == 404
    assert client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).status_code == 404


def test_an_erased_customer_goes_from_the_pages_agents_have_open(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The erasure told no page: Bob's went on showing the customer's messages and took a
    # reply to them, their page showed them, and his inbox listed the conversation, until
    # a reload.
    cid = inbound(client, world, "erase-live", "erase-live@example.com")
    customer = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()[
        "customer_id"
    ]
    thread = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    expect(thread.locator("#messages li")).to_have_count(1)
    inbox = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    expect(inbox.locator(f'#conversation-list li[data-id="{cid}"]')).to_have_count(1)
    profile = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{customer}")
    for page in (thread, inbox, profile):
        expect(page.locator("body[data-stream-open]")).to_have_count(1)
    r = live_server.http.delete(f"/api/v1/customers/{customer}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    expect(thread.locator(".erased-notice")).to_contain_text("This customer was erased")
    expect(thread.locator("#messages")).to_have_count(0)
    expect(thread.locator("#composer")).to_have_count(0)
    expect(thread.locator("aside.customer")).to_have_count(0)
    thread.screenshot(path=str(ARTIFACTS / "conversation-erased.png"))
    expect(profile.locator(".erased-notice")).to_contain_text("This customer was erased")
    expect(profile.locator("#customer-conversations")).to_have_count(0)
    expect(inbox.locator(f'#conversation-list li[data-id="{cid}"]')).to_have_count(0)


def test_pages_away_from_the_stream_during_an_erasure_hear_of_it_when_back(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # Back on the stream after the erasure had removed its copies, a page is replayed its
    # events blanked (``erased``, nothing saying whom): the conversation and the inbox
    # ignored them, and went on showing the erased customer until a reload.
    cid = inbound(client, world, "erase-away", "erase-away@example.com")
    kept = inbound(client, world, "erase-stays", "erase-stays@example.com")
    customer = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()[
        "customer_id"
    ]
    thread, inbox = browser.new_page(), browser.new_page()
    streams = [HeldStream(thread), HeldStream(inbox)]
    sign_in(thread, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    sign_in(inbox, live_server, "bob@acme.test", "/app/inbox?view=all")
    for page in (thread, inbox):
        expect(page.locator("body[data-stream-open]")).to_have_count(1)
    expect(inbox.locator(f'#conversation-list li[data-id="{cid}"]')).to_have_count(1)
    for stream in streams:
        stream.hold()
    r = client.delete(f"/api/v1/customers/{customer}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    for stream in streams:
        stream.release_once_blanked(database)
    expect(thread.locator(".erased-notice")).to_contain_text("This customer was erased")
    expect(thread.locator("#composer")).to_have_count(0)
    expect(inbox.locator(f'#conversation-list li[data-id="{cid}"]')).to_have_count(0)
    expect(inbox.locator(f'#conversation-list li[data-id="{kept}"]')).to_have_count(1)


def test_the_conversation_page_keeps_label_colours_and_bare_key_shortcuts(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # Labels were grey on the conversation page (the inbox list painted them), and Ctrl+E
    # (the browser's find) resolved the conversation: the shortcuts ignored modifier keys.
    r = client.post(
        "/api/v1/labels", json={"name": "vip", "colour": "#ffaa00"}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    cid = inbound(client, world, "keys-ui", "keys-ui@example.com")
    r = client.post(
        f"/api/v1/conversations/{cid}/labels", json={"labels": ["vip"]}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    orange = "rgb(255, 170, 0)"
    expect(page.locator("#label-list .label")).to_have_css("background-color", orange)
    page.fill("#label-form input", "later")
    page.press("#label-form input", "Enter")
    expect(page.locator("#label-list .label")).to_have_text(["later", "vip"])
    expect(page.locator("#label-list .label").last).to_have_css("background-color", orange)

    page.click("h1")  # out of the form: shortcuts are for the page
    for chord in ("Control+e", "Meta+e", "Alt+e"):
        page.keyboard.press(chord)
    page.wait_for_timeout(500)
    status = live_server.http.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob))
    assert status.json()["status"] == "open"
    page.keyboard.press("e")
    expect(page.locator("#status")).to_have_text("resolved")


def test_a_failed_reply_says_why_and_is_sent_again_from_the_thread(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
    receiver: Receiver,  # noqa: F811
) -> None:
    conv, mid = failed_reply(client, world, receiver.url, database, settings)
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    item = page.locator(f'#messages li[data-id="{mid}"]')
    expect(item.locator(".failure .why")).to_have_text("webhook answered 400")
    receiver.status = 200
    item.locator("button.send-again").click()
    item = page.locator(f'#messages li[data-id="{mid}"]')
    expect(item.locator(".delivery")).to_contain_text("sent")
    expect(item.locator(".failure")).to_have_count(0)
    assert len(receiver.bodies) == 2


def test_a_reply_sent_again_keeps_its_html_and_held_images_as_its_status_changes(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
    receiver: Receiver,  # noqa: F811
) -> None:
    # Each live update of a message (the retry's answer, then the delivery receipt) drew it
    # again from the event's text alone: the sanitized HTML, and its held images' notice, went.
    html = '<p>Your <b>refund</b> is on its way</p><img src="https://tracker.example/p.gif">'
    conv, mid = failed_reply(client, world, receiver.url, database, settings, html=html)
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    item = page.locator(f'#messages li[data-id="{mid}"]')
    expect(item.locator(".body.html b")).to_have_text("refund")
    expect(item.locator(".held-images")).to_be_visible()
    receiver.status = 200
    item.locator("button.send-again").click()
    expect(item.locator(".delivery")).to_have_text("sent")
    expect(item.locator(".body.html b")).to_have_text("refund")
    expect(item.locator(".body.html img[data-remote-src]")).to_have_count(1)
    expect(item.locator(".held-images")).to_be_visible()
    item.locator("button.show-images").click()
    expect(item.locator(".held-images")).to_have_count(0)


def test_the_team_is_chosen_beside_the_agent_and_another_page_sees_both_live(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The team could be set from the inbox's bulk bar only, and choosing an agent here
    # dropped the conversation's team (the API sets both, one left out is cleared).
    cid = inbound(client, world, "team-ui", "team-ui@example.com")
    bob, alice = world.acme.users["bob"].id, world.acme.users["alice"].id
    team = client.post(
        "/api/v1/teams", json={"name": "Billing", "member_ids": [bob]}, headers=auth(world.alice)
    ).json()
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    other = browser.new_context().new_page()
    sign_in(other, live_server, "alice@acme.test", f"/app/conversations/{cid}")
    other.wait_for_timeout(300)  # the stream connects

    def held() -> tuple[str | None, str | None]:
        c = live_server.http.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob))
        return c.json()["assignee_id"], c.json()["team_id"]

    page.select_option("#assign", bob)
    expect(other.locator("#assign")).to_have_value(bob)
    page.select_option("#team", label="Billing")
    expect(other.locator("#team")).to_have_value(team["id"])
    assert held() == (bob, team["id"])
    page.screenshot(path=str(ARTIFACTS / "conversation-team.png"))
    line = other.locator("#messages li.kind-activity").last
    expect(line).to_contain_text("Moved to team Billing by Bob")

    # Alice hands it to herself: the team stays, and bob's page follows.
    other.select_option("#assign", alice)
    expect(page.locator("#assign")).to_have_value(alice)
    expect(page.locator("#team")).to_have_value(team["id"])
    assert held() == (alice, team["id"])
    page.select_option("#team", "")
    expect(other.locator("#team")).to_have_value("")
    assert held() == (alice, None)
    expect(other.locator("#messages li.kind-activity").last).to_contain_text(
        "Removed from team Billing by Bob"  # what was done (it said "Assigned to Alice")
    )
    # A team made after the page was drawn, given elsewhere, is shown by its name.
    later = client.post(
        "/api/v1/teams", json={"name": "Returns", "member_ids": []}, headers=auth(world.alice)
    ).json()
    client.post(
        f"/api/v1/conversations/{cid}/assign",
        json={"assignee_id": alice, "team_id": later["id"]},
        headers=auth(world.alice),
    ).raise_for_status()
    expect(page.locator("#team")).to_have_value(later["id"])
    expect(page.locator("#team option:checked")).to_have_text("Returns")
    page.reload()
    expect(page.locator("#team")).to_have_value(later["id"])


def test_the_conversation_page_keys_and_letters_typed_in_the_composer(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    cid = inbound(client, world, "keys-conv", "keys-conv@example.com")
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    textarea = page.locator("#composer textarea")
    help_ = page.get_by_role("dialog", name="Keyboard shortcuts")
    page.wait_for_selector("#messages")

    # n: a private note; letters typed there are letters, not keys.
    page.keyboard.press("n")
    expect(textarea).to_be_focused()
    expect(page.locator("input[name=mode][value=note]")).to_be_checked()
    page.keyboard.type("je?n")
    expect(textarea).to_have_value("je?n")
    expect(help_).to_be_hidden()
    expect(page.locator("input[name=mode][value=note]")).to_be_checked()
    expect(page.locator("#status")).to_have_text("open")
    # Escape leaves the field, and the keys are the page's again: r for a reply.
    page.keyboard.press("Escape")
    expect(textarea).not_to_be_focused()
    page.keyboard.press("r")
    expect(textarea).to_be_focused()
    expect(page.locator("input[name=mode][value=reply]")).to_be_checked()
    page.keyboard.press("Escape")

    page.keyboard.press("?")
    expect(help_).to_be_visible()
    expect(help_).to_contain_text("Write a private note")
    page.screenshot(path=str(ARTIFACTS / "conversation-keys.png"))
    page.keyboard.press("e")  # the dialog's keys only, while it is open
    page.keyboard.press("Escape")
    expect(help_).to_be_hidden()
    expect(page.locator("#status")).to_have_text("open")
    page.keyboard.press("/")
    expect(page.locator("header .search input")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("e")
    expect(page.locator("#status")).to_have_text("resolved")
    c = live_server.http.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob))
    assert c.json()["status"] == "resolved"


def test_a_long_conversation_opens_at_its_newest_message_with_the_composer_in_view(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # The page was as tall as the customer panel: the composer sat below the fold, a long
    # thread opened at its oldest message, and r or n scrolled the thread out of sight.
    conv = world.acme.opened.conversation.id
    for n in range(30):
        client.post(
            f"/api/v1/conversations/{conv}/notes",
            json={"text": f"note {n}"},
            headers=auth(world.bob),
        ).raise_for_status()
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.set_viewport_size({"width": 1280, "height": 720})
    page.reload()
    newest = page.locator("#messages li.kind-note", has_text="note 29")
    expect(newest).to_be_in_viewport()
    expect(page.locator("#messages li", has_text="Hello Acme")).not_to_be_in_viewport()
    expect(page.locator("#composer button[type=submit]")).to_be_in_viewport()
    page.keyboard.press("n")
    expect(page.locator("#composer textarea")).to_be_focused()
    assert page.evaluate("window.scrollY") == 0  # the page did not move; the thread did not
    expect(newest).to_be_in_viewport()
    # What is sent is drawn at the end, in view.
    page.fill("#composer textarea", "one more")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#messages li", has_text="one more")).to_be_in_viewport()
    # Reading further up, what arrives is added at the end without moving the thread.
    page.locator("#messages").evaluate("t => { t.scrollTop = 0; }")
    oldest = page.locator("#messages li", has_text="Hello Acme")
    expect(oldest).to_be_in_viewport()
    live_server.http.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "late",
            "text": "A late question",
            "from": {"email": "customer@acme.example"},
        },
        headers=auth(world.bob),
    ).raise_for_status()
    late = page.locator("#messages li", has_text="A late question")
    expect(late).to_be_attached()
    expect(late).not_to_be_in_viewport()
    expect(oldest).to_be_in_viewport()
    # A phone keeps the page's own scrolling: thread, composer, then the panel, one column.
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollHeight > 3 * innerHeight")
    assert page.evaluate(
        "document.querySelector('#messages').scrollHeight"
        " === document.querySelector('#messages').clientHeight"
    )  # not a box of its own


def test_a_conversation_says_at_once_while_its_reply_inbox_is_disabled(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    # An admin disabling the inbox left the page offering Send: the reply written was refused.
    cid = inbound(client, world, "inbox-off", "inbox-off@example.com")
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    page = browser.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    notice = page.locator("#inbox-off")
    send = page.locator("#composer button[type=submit]")
    expect(notice).to_be_hidden()
    expect(send).to_be_enabled()

    def switch(on: bool) -> None:
        r = client.patch(
            f"/api/v1/inboxes/{inbox}", json={"enabled": on}, headers=auth(world.alice)
        )
        assert r.status_code == 200, r.text

    def sent() -> int:
        got = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
        return sum(m["direction"] == "out" for m in got["messages"])

    switch(False)
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(
        "Replies through the inbox “Acme API” are refused while it is switched off"
    )
    expect(send).to_be_disabled()
    page.locator("#composer textarea").fill("Your parcel left today.")
    page.locator("#composer textarea").press("Control+Enter")  # nor from the keyboard
    page.wait_for_timeout(300)
    assert sent() == 0
    page.screenshot(path=str(ARTIFACTS / "conversation-inbox-disabled.png"))
    # A private note still goes in.
    page.get_by_label("Private note").check()
    expect(send).to_be_enabled()
    page.get_by_label("Reply", exact=True).check()
    expect(send).to_be_disabled()
    # Drawn so from the start, too.
    page.reload()
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    expect(notice).to_be_visible()
    expect(send).to_be_disabled()

    switch(True)
    expect(notice).to_be_hidden()
    expect(send).to_be_enabled()
    page.locator("#composer textarea").fill("Your parcel left today.")
    send.click()
    expect(page.locator("#messages li.dir-out .body")).to_have_text("Your parcel left today.")
    assert sent() == 1


def test_a_control_switched_off_looks_it_anywhere_on_the_page(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Only the composer's Send looked switched off: a viewer's Resolve, agent, status and
    # "Attach files" looked as if a click would act.
    page = signed_in(
        browser,
        live_server,
        "victor@acme.test",
        f"/app/conversations/{world.acme.opened.conversation.id}",
    )

    def look(selector: str) -> tuple[str, str]:
        return tuple(  # type: ignore[return-value]
            page.locator(selector).evaluate(
                "(el) => [getComputedStyle(el).cursor, getComputedStyle(el).opacity]"
            )
        )

    for selector in ("#resolve", "#assign", "#priority", "#status-select", "#attach-input"):
        expect(page.locator(selector)).to_be_disabled()
    for selector in ("#resolve", "#assign", "#priority", "#status-select", "#composer .attach"):
        assert look(selector) == ("not-allowed", "0.5"), selector
    # What a viewer may use is not: Sign out, the search box.
    assert look("#logout") == ("pointer", "1")
    assert look(".top .search input") == ("text", "1")
    page.screenshot(path=str(ARTIFACTS / "conversation-viewer-switched-off.png"))


def test_a_message_deleted_leaves_the_open_thread_and_the_inbox_preview(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    # Nothing told the pages that a message was deleted (an echo's copy its send took over,
    # a "Reopened" line a merge undone took back): an open thread showed it, and the inbox
    # previewed it, until a reload. Deleted here as those services delete one.
    cid = inbound(client, world, "deleted-live", "deleted-live@example.com")
    ws = world.acme.workspace.id
    with database.session() as db:
        conv = db.get(Conversation, cid)
        assert conv is not None
        copy = add_message(
            db,
            conversation=conv,
            direction=Direction.outbound,
            kind=MessageKind.message,
            sender_type="user",
            sender_id=None,
            text="Sent from the Page inbox",
            status=DeliveryStatus.sent,
            meta={"sent_elsewhere": True},
        )
        db.flush()
        mid, payload, conv_customer = copy.id, message_payload(copy), conv.customer_id
    thread = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{cid}")
    expect(thread.locator("#messages li.msg")).to_have_count(2)
    inbox = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    preview = inbox.locator(f'#conversation-list li[data-id="{cid}"] .preview')
    profile = signed_in(browser, live_server, "bob@acme.test", f"/app/customers/{conv_customer}")
    listed = profile.locator(f'#customer-conversations li[data-id="{cid}"] .preview')
    for shown in (preview, listed):
        expect(shown).to_contain_text("Sent from the Page inbox")
    for page in (thread, inbox, profile):
        expect(page.locator("body[data-stream-open]")).to_have_count(1)
    with database.session() as db:
        db.execute(delete(Message).where(Message.id == mid))
        messages_deleted(db, workspace_id=ws, conversation_id=cid, message_ids=[mid])
    expect(thread.locator(f'#messages li[data-id="{mid}"]')).to_have_count(0)
    expect(thread.locator("#messages li.msg .body")).to_have_text(["hello deleted-live"])
    for shown in (preview, listed):
        expect(shown).to_have_text("hello deleted-live")
    thread.screenshot(path=str(ARTIFACTS / "conversation-message-deleted.png"))
    # An event about it heard after (a late commit, replayed) does not draw it again; a
    # change the page shows, after it, says it was handled.
    with database.session() as db:
        emit(db, workspace_id=ws, type="message.updated", payload=payload)
    r = client.post(
        f"/api/v1/conversations/{cid}/status", json={"status": "pending"}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    expect(thread.locator("#status")).to_have_text("pending")
    assert thread.locator(f'#messages li[data-id="{mid}"]').count() == 0
