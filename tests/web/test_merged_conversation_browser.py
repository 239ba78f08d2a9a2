"""A conversation merged by a colleague while an agent has it (or the other) open, a link
to a merged conversation opened later, and a merge undone (their customers') while both
are open; an open conversation's header and customer panel follow its customers' merge
and its undo."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.conversations.models import Conversation
from rapport.conversations.service import conversation_payload
from rapport.db import Database
from rapport.realtime.service import emit
from tests.conftest import auth
from tests.customers.test_undo_after_conversation_merge import (
    conversation_of,
    customer_of,
    merge,
    post,
    undo,
)
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def by_email(client: TestClient, world: World) -> str:
    """The first customer's conversation in an email inbox too; its id."""
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    r = client.post(
        "/api/v1/conversations",
        json={
            "customer_id": world.acme.opened.customer.id,
            "inbox_id": mail["id"],
            "text": "We wrote by email too.",
            "subject": "Your order",
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_both_open_pages_say_at_once_that_a_colleague_merged_their_conversations(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Neither page changed: the merged one kept an empty thread whose reply box still sent,
    # the other showed none of the messages it had taken in.
    gone = world.acme.opened.conversation.id
    kept = by_email(client, world)
    merged_page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{gone}")
    kept_page = signed_in(browser, live_server, "alice@acme.test", f"/app/conversations/{kept}")
    for page in (merged_page, kept_page):
        page.wait_for_function("() => document.body.dataset.streamOpen === '1'")
    merged_page.fill("#composer textarea", "Half a reply")
    r = client.post(
        f"/api/v1/conversations/{kept}/merge", json={"merged_id": gone}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text

    notice = merged_page.locator("#merged-notice")
    expect(notice).to_contain_text("merged into another")
    expect(merged_page.locator("#composer button[type=submit]")).to_be_disabled()
    expect(merged_page.locator("#composer textarea")).to_have_value("Half a reply")
    merged_page.click("#merged-notice a")
    merged_page.wait_for_url(f"**/app/conversations/{kept}")

    expect(kept_page.locator("#merged-notice")).to_contain_text("merged into this one")
    kept_page.click("#merged-notice button")
    expect(kept_page.locator("#messages")).to_contain_text("Hello Acme")


def test_a_link_to_a_merged_conversation_opens_the_one_it_was_merged_into(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # A notification's link (or an old tab) opened the emptied thread.
    gone = world.acme.opened.conversation.id
    kept = by_email(client, world)
    r = client.post(
        f"/api/v1/conversations/{kept}/merge", json={"merged_id": gone}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{gone}")
    page.wait_for_url(f"**/app/conversations/{kept}")
    expect(page.locator("#messages")).to_contain_text("Hello Acme")
    expect(page.locator("#messages")).to_contain_text("We wrote by email too.")


def ann_and_ben_merged(client: TestClient, world: World) -> tuple[str, str, str]:
    """Ann and Ben, a conversation each, Ben's record merged into Ann's: (her conversation,
    his, the merge's id)."""
    post(client, world, "ann-1", "ann@example.com", "Ann writes")
    post(client, world, "ben-1", "ben@example.com", "Ben writes first")
    ann = customer_of(client, world, "ann@example.com")["id"]
    ben = customer_of(client, world, "ben@example.com")["id"]
    ann_conv, ben_conv = conversation_of(client, world, ann), conversation_of(client, world, ben)
    return ann_conv, ben_conv, merge(client, world, ann, ben)


def merge_conversations(client: TestClient, world: World, survivor: str, merged: str) -> None:
    r = client.post(
        f"/api/v1/conversations/{survivor}/merge",
        json={"merged_id": merged},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text


def streaming(*pages: Any) -> None:
    for page in pages:
        expect(page.locator("body[data-stream-open]")).to_have_count(1)


def test_a_merge_undone_takes_its_messages_from_the_open_thread_back_to_their_own(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Their customers' merge undone, Ben's messages went back to his conversation, but an
    # open page of hers went on showing them until a reload (the undo's event named no
    # message, and the page did not follow it); his own page still said it was merged
    # away, refused to send, and showed nothing he wrote while merged.
    ann_conv, ben_conv, merge_id = ann_and_ben_merged(client, world)
    his = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{ben_conv}")
    streaming(his)
    merge_conversations(client, world, ann_conv, ben_conv)
    expect(his.locator("#merged-notice")).to_contain_text("merged into another")
    expect(his.locator("#composer button[type=submit]")).to_be_disabled()
    post(client, world, "ben-2", "ben@example.com", "Ben writes while merged")
    hers = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{ann_conv}")
    inbox = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    streaming(hers, inbox)
    shown = hers.locator("#messages li.kind-message .body")
    expect(shown).to_have_text(["Ann writes", "Ben writes first", "Ben writes while merged"])
    his.fill("#composer textarea", "Half a reply")

    assert undo(client, world, merge_id).status_code == 200
    expect(shown).to_have_text(["Ann writes"])
    expect(his.locator("#messages li.kind-message .body")).to_have_text(
        ["Ben writes first", "Ben writes while merged"]
    )
    expect(his.locator("#merged-notice")).to_contain_text("merge was undone")
    expect(his.locator("#composer button[type=submit]")).to_be_enabled()
    expect(his.locator("#composer textarea")).to_have_value("Half a reply")
    expect(his.locator("#status")).to_have_text("open")
    row = inbox.locator(f'#conversation-list li[data-id="{ben_conv}"]')
    expect(row.locator(".status")).to_have_text("open")
    expect(row.locator(".preview")).to_have_text("Ben writes while merged")
    preview = inbox.locator(f'#conversation-list li[data-id="{ann_conv}"] .preview')
    expect(preview).to_have_text("Ann writes")
    hers.screenshot(path=str(ARTIFACTS / "merge-undone-thread-left.png"))
    his.screenshot(path=str(ARTIFACTS / "merge-undone-thread-back.png"))
    # What the page has now is the thread as the server has it.
    his.reload()
    expect(his.locator("#messages li.kind-message .body")).to_have_text(
        ["Ben writes first", "Ben writes while merged"]
    )


def test_the_lines_a_merge_and_its_undo_write_show_in_the_open_threads(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # "Merged with the conversation from ...", "... went back to it: the merge was undone":
    # stored without an event, open threads showed none of them until a reload.
    ann_conv, ben_conv, merge_id = ann_and_ben_merged(client, world)
    hers = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{ann_conv}")
    his = signed_in(browser, live_server, "alice@acme.test", f"/app/conversations/{ben_conv}")
    streaming(hers, his)
    lines = hers.locator("#messages li.kind-activity .body")
    merge_conversations(client, world, ann_conv, ben_conv)
    expect(lines).to_have_text(["Merged with the conversation from Acme API"])
    expect(his.locator("#messages li.kind-activity .body").last).to_have_text(
        "Merged into the conversation from Acme API"
    )
    assert undo(client, world, merge_id).status_code == 200
    expect(lines).to_have_text(
        [
            "Merged with the conversation from Acme API",
            "The merged-in conversation's messages went back to it: the merge was undone",
        ]
    )
    expect(his.locator("#messages li.kind-activity .body")).to_contain_text(
        ["Parted from the other conversation: their customers' merge was undone"]
    )
    hers.screenshot(path=str(ARTIFACTS / "merge-lines-live.png"))


def named(client: TestClient, world: World, customer_id: str, name: str) -> None:
    r = client.patch(
        f"/api/v1/customers/{customer_id}", json={"name": name}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text


def noted(client: TestClient, world: World, customer_id: str, text: str) -> None:
    r = client.post(
        f"/api/v1/customers/{customer_id}/notes", json={"text": text}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text


def ann_and_ben_named(client: TestClient, world: World) -> tuple[str, str, str, str]:
    """Ann Archer and Ben Baker, a conversation each and a note each: (her id, his, her
    conversation, his)."""
    post(client, world, "ann-1", "ann@example.com", "Ann writes")
    post(client, world, "ben-1", "ben@example.com", "Ben writes first")
    ann = customer_of(client, world, "ann@example.com")["id"]
    ben = customer_of(client, world, "ben@example.com")["id"]
    named(client, world, ann, "Ann Archer")
    named(client, world, ben, "Ben Baker")
    noted(client, world, ann, "Ann prefers mornings")
    noted(client, world, ben, "Ben likes tea")
    return ann, ben, conversation_of(client, world, ann), conversation_of(client, world, ben)


def shows_customer(page: Any, name: str, customer_id: str) -> None:
    """The page's header and panel are of this customer, the panel's parts mounted once."""
    expect(page.locator("#conversation .thread > header > h1")).to_have_text(name)
    expect(page.locator("aside.customer > h2")).to_have_text(name)
    expect(page).to_have_title(f"{name} · Rapport")
    expect(page.locator("#panel-extra")).to_have_attribute("data-customer", customer_id)
    expect(page.locator("#customer-name")).to_have_attribute("data-customer", customer_id)
    expect(page.locator('#panel-extra [data-part="notes"]')).to_have_count(1)


def test_an_open_conversation_follows_its_customers_merge_and_its_undo(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Ben's conversation went to Ann's record with the merge, and back with its undo, but
    # its open page went on showing Ben (then Ann) in its header and panel until a reload;
    # her page went on without what the merge gave her record (his handle, his note).
    ann, ben, ann_conv, ben_conv = ann_and_ben_named(client, world)
    his = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{ben_conv}")
    hers = signed_in(browser, live_server, "alice@acme.test", f"/app/conversations/{ann_conv}")
    streaming(his, hers)
    shows_customer(his, "Ben Baker", ben)
    his_notes = his.locator('#panel-extra [data-part="notes"]')
    her_notes = hers.locator('#panel-extra [data-part="notes"]')
    expect(his_notes).to_contain_text("Ben likes tea")
    expect(her_notes).not_to_contain_text("Ben likes tea")
    his.fill("#composer textarea", "Half a reply")

    merge_id = merge(client, world, ann, ben)
    shows_customer(his, "Ann Archer", ann)
    expect(his_notes).to_contain_text("Ann prefers mornings")
    expect(his.locator("#customer-handles")).to_contain_text("ann@example.com")
    expect(his.locator("#previous-conversations")).to_contain_text("open")
    expect(his.locator("#composer textarea")).to_have_value("Half a reply")
    # Hers is the same record, with what the merge brought it.
    shows_customer(hers, "Ann Archer", ann)
    expect(hers.locator("#customer-handles")).to_contain_text("ben@example.com")
    expect(her_notes).to_contain_text("Ben likes tea")
    his.screenshot(path=str(ARTIFACTS / "customer-merged-panel.png"))

    assert undo(client, world, merge_id).status_code == 200
    shows_customer(his, "Ben Baker", ben)
    expect(his_notes).to_contain_text("Ben likes tea")
    expect(his_notes).not_to_contain_text("Ann prefers mornings")
    expect(his.locator("#customer-handles")).not_to_contain_text("ann@example.com")
    expect(his.locator("#composer textarea")).to_have_value("Half a reply")
    shows_customer(hers, "Ann Archer", ann)
    expect(hers.locator("#customer-handles")).not_to_contain_text("ben@example.com")
    expect(her_notes).not_to_contain_text("Ben likes tea")
    # The panel follows the record it shows now: his tag, not hers.
    r = client.patch(
        f"/api/v1/customers/{ben}/tags", json={"add": ["vip"]}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    expect(his.locator('#panel-extra [data-part="profile"] .tag')).to_have_text(["vip×"])
    his.screenshot(path=str(ARTIFACTS / "customer-unmerged-panel.png"))
    # And no longer the one it showed before: Ann erased, his page stays.
    assert client.delete(f"/api/v1/customers/{ann}", headers=auth(world.alice)).status_code == 204
    expect(hers.locator(".erased-notice")).to_have_count(1)
    his.wait_for_timeout(500)
    expect(his.locator(".erased-notice")).to_have_count(0)
    shows_customer(his, "Ben Baker", ben)


def test_a_conversation_started_while_merged_shows_the_writer_once_it_goes_back_whole(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Ben wrote in another inbox while his record was merged into Ann's: the undo gave the
    # conversation whole to him (``conversation.updated`` alone said so), and its open page
    # went on naming Ann until a reload.
    ann, ben, _, _ = ann_and_ben_named(client, world)
    app = client.post(
        "/api/v1/inboxes", json={"name": "Shop app", "channel": "api"}, headers=auth(world.alice)
    ).json()
    merge_id = merge(client, world, ann, ben)
    r = client.post(
        f"/api/v1/inboxes/{app['id']}/messages",
        json={
            "external_id": "ben-app",
            "text": "Ben in the app",
            "from": {"email": "ben@example.com"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    started = r.json()["conversation_id"]
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{started}")
    streaming(page)
    shows_customer(page, "Ann Archer", ann)
    assert undo(client, world, merge_id).status_code == 200
    shows_customer(page, "Ben Baker", ben)
    expect(page.locator("#messages li.kind-message .sender")).to_have_text(["Ben Baker"])
    expect(page.locator('#panel-extra [data-part="notes"]')).to_contain_text("Ben likes tea")


def test_an_event_giving_the_open_conversation_to_another_record_redraws_its_customer(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
    database: Database,
) -> None:
    # ``give_whole`` tells of it by ``conversation.updated`` alone (its customer_id): a page
    # of the conversation that hears nothing else still shows the record it has now.
    ann, ben, _, ben_conv = ann_and_ben_named(client, world)
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{ben_conv}")
    streaming(page)
    shows_customer(page, "Ben Baker", ben)
    with database.session() as db:
        conv = db.get(Conversation, ben_conv)
        assert conv is not None
        conv.customer_id = ann
        emit(
            db,
            workspace_id=conv.workspace_id,
            type="conversation.updated",
            payload=conversation_payload(conv),
        )
    shows_customer(page, "Ann Archer", ann)


def test_the_merged_into_notice_says_so_once_an_undo_took_those_messages_back(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Her page said another conversation was merged into hers, its messages not on the
    # screen yet, "Show them": the undo took them back, and it went on offering them.
    ann_conv, ben_conv, merge_id = ann_and_ben_merged(client, world)
    hers = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{ann_conv}")
    streaming(hers)
    merge_conversations(client, world, ann_conv, ben_conv)
    notice = hers.locator("#merged-notice")
    expect(notice).to_contain_text("merged into this one")
    expect(notice.locator("button")).to_have_text("Show them")
    assert undo(client, world, merge_id).status_code == 200
    expect(notice).to_contain_text("took its messages back")
    expect(notice).not_to_contain_text("not on the screen")
    expect(notice.locator("button")).to_have_count(0)
    expect(hers.locator("#messages li.kind-message .body")).to_have_text(["Ann writes"])
    hers.screenshot(path=str(ARTIFACTS / "merged-into-notice-undone.png"))
