"""The composer's copies in Chromium: they follow the thread as mail arrives, stay with a
draft, and are there only while a reply goes by email."""

import pytest
from fastapi.testclient import TestClient

from tests.channels.email.test_email import (  # noqa: F401  (the stand-in mail servers)
    Outbox,
    conversations,
    customer_mail,
    mail_inbox,
    outbox,
    send,
    smtp_port,
)
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def test_the_copies_follow_the_thread_stay_with_a_draft_and_go_with_email_only(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    mail_inbox: str,  # noqa: F811
    smtp_port: int,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    def through_the_api(text: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": text, "text": text, "from": {"email": "dana@example.org"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    # She wrote through the API channel first, then by email; the two threads are one.
    chat = through_the_api("Hello from the app")
    first = customer_mail("Our invoice is wrong.", Cc="fox@example.org")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    merged = client.post(
        f"/api/v1/conversations/{conv['id']}/merge",
        json={"merged_id": chat},
        headers=auth(world.bob),
    )
    assert merged.status_code == 200, merged.text
    page = signed_in(browser, live_server, "bob@acme.test", f"/app/conversations/{conv['id']}")
    composer = page.locator("#composer")
    cc, bcc = composer.locator("input[name=cc]"), composer.locator("input[name=bcc]")
    expect(cc).to_have_value("fox@example.org")
    expect(page.locator("#messages li.dir-in .copies")).to_have_text("Cc: fox@example.org")

    # Her next mail copies Walter instead: the composer follows (it offered Fox still).
    second = customer_mail("Copying Walter instead.", Cc="walter@example.org")
    second["In-Reply-To"] = first["Message-ID"]
    send(smtp_port, second)
    expect(page.locator("#messages li.dir-in")).to_have_count(3)
    expect(cc).to_have_value("walter@example.org")

    # A note leaves the reply's Bcc alone (it was emptied by any send).
    bcc.fill("audit@acme.test")
    composer.locator("input[name=mode][value=note]").check()
    expect(cc).to_be_hidden()
    composer.locator("textarea").fill("Checking with billing first.")
    composer.locator("button[type=submit]").click()
    expect(page.locator("#messages li.kind-note")).to_have_count(1)
    composer.locator("input[name=mode][value=reply]").check()
    expect(bcc).to_have_value("audit@acme.test")

    # Walter taken out of a reply written and left: the draft keeps him out.
    cc.fill("")
    composer.locator("textarea").fill("Between us: the invoice was ours to fix.")
    page.reload()
    expect(composer.locator("textarea")).to_have_value("Between us: the invoice was ours to fix.")
    expect(cc).to_have_value("")
    expect(bcc).to_have_value("audit@acme.test")
    # And a mail arriving meanwhile does not put him back: the Cc is hers now.
    third = customer_mail("Any news?", Cc="walter@example.org")
    third["In-Reply-To"] = first["Message-ID"]
    send(smtp_port, third)
    expect(page.locator("#messages li.dir-in")).to_have_count(4)
    page.wait_for_timeout(300)
    expect(cc).to_have_value("")

    # She writes through the API channel again: a reply goes there, with no copies to
    # offer (the reply was refused for its Cc until the page was reloaded).
    through_the_api("Or here")
    expect(page.locator("#messages li.dir-in")).to_have_count(5)
    expect(composer.locator("#copies")).to_be_hidden()
    composer.locator("textarea").fill("Answering here, then.")
    composer.locator("button[type=submit]").click()
    expect(page.locator("#messages li.dir-out.kind-message .body")).to_have_text(
        ["Answering here, then."]
    )
    expect(page.locator("#flash")).to_be_hidden()


def test_a_cc_left_as_offered_follows_the_thread_and_never_costs_another_tab_its_draft(
    client: TestClient,
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    mail_inbox: str,  # noqa: F811
    smtp_port: int,  # noqa: F811
    outbox: tuple[Outbox, int],  # noqa: F811
) -> None:
    first = customer_mail("Our invoice is wrong.", Cc="fox@example.org")
    send(smtp_port, first)
    [conv] = conversations(client, world, mail_inbox)
    path = f"/app/conversations/{conv['id']}"
    drafts = "() => Object.keys(localStorage).filter((k) => k.startsWith('rapport.draft.'))"
    context = browser.new_context()
    b = context.new_page()  # open on the conversation, its composer left empty
    sign_in(b, live_server, "bob@acme.test", path)
    expect(b.locator("#composer input[name=cc]")).to_have_value("fox@example.org")
    a = context.new_page()  # another tab: half an answer, the Cc never touched, left
    a.goto(f"{live_server.url}{path}")
    a.locator("#composer textarea").fill("Half an answer.")
    a.close()
    [kept] = b.evaluate(drafts)

    # Her next mail copies Walter, not Fox: the tab still open follows, and leaving it
    # does not erase the draft the other tab wrote (it did: its Cc had changed).
    second = customer_mail("Now copying Walter, not Fox.", Cc="walter@example.org")
    second["In-Reply-To"] = first["Message-ID"]
    send(smtp_port, second)
    expect(b.locator("#composer input[name=cc]")).to_have_value("walter@example.org")
    b.goto(f"{live_server.url}/app/inbox")
    assert b.evaluate(drafts) == [kept]
    # Opened again, the draft is back, and the Cc is the thread's, not the one it had when
    # written (Fox, whom she dropped, would have been copied).
    b.goto(f"{live_server.url}{path}")
    expect(b.locator("#composer textarea")).to_have_value("Half an answer.")
    expect(b.locator("#composer input[name=cc]")).to_have_value("walter@example.org")
