"""The agent's day in a real browser: 2FA login, a message arriving live, the customer's
history beside it, a canned reply, a note that notifies a colleague, resolve, search."""

import hashlib
import hmac
import json
import re
import time

import pyotp
import pytest
from fastapi.testclient import TestClient

from rapport.auth.models import Role
from rapport.channels.email import ingest_email
from rapport.config import Settings
from rapport.db import Database
from rapport.workspaces import service as workspaces
from tests.auth.test_login import _enrol
from tests.channels.test_whatsapp import APP_SECRET, message_event
from tests.conftest import auth, on_both_backends
from tests.factories import PASSWORD, World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in, signed_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


@pytest.fixture
def ready(
    world: World, database: Database, client: TestClient, settings: Settings
) -> dict[str, str]:
    """bob with two-factor on, carol as a colleague, a canned response, an email history."""
    with database.session() as db:
        workspaces.add_member(
            db,
            workspace_id=world.acme.workspace.id,
            email="carol@acme.test",
            role=Role.agent,
            password=PASSWORD,
            name="Carol",
            actor_role=Role.owner,
        )
    secret, _ = _enrol(client, world.bob)
    client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "thanks", "text": "Thanks {{ customer.first_name }}, we are on it."},
        headers=auth(world.alice),
    )
    # Earlier, the same customer wrote by email, through the email channel.
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    raw = (
        b"From: Maria Lopez <maria@example.com>\r\nTo: help@acme.test\r\nSubject: Parcel\r\n"
        b"Message-ID: <parcel-1@example.com>\r\n\r\nMy parcel never arrived\r\n"
    )
    with database.session() as db:
        ingest_email(db, raw, inbox_id=mail["id"], settings=settings)
    # She has also given us her phone number, so WhatsApp finds the same customer.
    maria = client.get(
        "/api/v1/customers", params={"q": "maria@example.com"}, headers=auth(world.bob)
    )
    client.post(
        f"/api/v1/customers/{maria.json()['items'][0]['id']}/identities",
        json={"kind": "phone", "value": "+34600111222", "verified": True},
        headers=auth(world.bob),
    )
    wa = client.post(
        "/api/v1/inboxes",
        json={
            "name": "WhatsApp",
            "channel": "whatsapp",
            "settings": {
                "phone_number_id": "106540352242922",
                "access_token": "t",
                "app_secret": APP_SECRET,
                "verify_token": "v",
            },
        },
        headers=auth(world.alice),
    ).json()
    return {"secret": secret, "wa_inbox": wa["id"]}


@on_both_backends
def test_an_agents_day_in_the_browser(
    live_server: LiveServer,
    browser,
    world: World,
    ready: dict[str, str],
    client: TestClient,  # type: ignore[no-untyped-def]
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/login")
    page.fill("input[name=email]", "bob@acme.test")
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    # The next step's code: the current one went to the activation (a code is good once).
    page.fill("#totp-form input[name=code]", pyotp.TOTP(ready["secret"]).at(time.time() + 30))
    page.click("#totp-form button[type=submit]")
    page.wait_for_url("**/app/inbox")
    page.goto(f"{live_server.url}/app/inbox?view=all")
    page.wait_for_timeout(300)  # the stream connects

    # A WhatsApp message arrives while bob looks at the inbox: it appears without a reload.
    body = json.dumps(
        message_event(
            "wamid.LIVE1", "Hola, any news on my parcel?", wa_id="34600111222", name="Maria Lopez"
        )
    ).encode()
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = live_server.http.post(
        f"/webhooks/whatsapp/{ready['wa_inbox']}",
        content=body,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
    )
    assert r.status_code == 200
    convs = live_server.http.get(
        "/api/v1/conversations",
        params={"inbox_id": ready["wa_inbox"]},
        headers=auth(world.alice),
    ).json()["items"]
    conv = convs[0]["id"]
    page.wait_for_selector(f'#conversation-list li[data-id="{conv}"]')
    page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)

    page.click(f'#conversation-list li[data-id="{conv}"] a')
    page.wait_for_selector("#messages")
    panel = page.inner_text("aside.customer")
    assert "maria@example.com" in panel and "My parcel never arrived" in panel

    # Reply with a canned response, typed as /thanks.
    page.fill("#composer textarea", "")
    page.type("#composer textarea", "/tha")
    page.wait_for_selector("#canned-menu li")
    page.keyboard.press("Enter")
    expect(page.locator("#composer textarea")).to_have_value(re.compile("^Thanks Maria, we are"))
    page.click("#composer button[type=submit]")
    page.wait_for_selector("#messages li.dir-out >> text=Thanks Maria, we are on it.")

    # A private note that mentions Carol notifies her.
    page.check("input[name=mode][value=note]")
    page.fill("#composer textarea", "@carol the courier says Tuesday")
    page.click("#composer button[type=submit]")
    page.wait_for_selector("#messages li.kind-note")
    # Each message says who wrote it (agents' were "user"), live and as the page is drawn.
    for _ in range(2):
        expect(page.locator("#messages li.kind-note .meta")).to_contain_text("Bob · private note")
        expect(page.locator("#messages li.dir-out.kind-message .meta").last).to_contain_text("Bob")
        expect(page.locator("#messages li.dir-in .meta").first).to_contain_text("Maria")
        page.reload()
    page.screenshot(path=str(ARTIFACTS / "conversation.png"), full_page=True)
    carol = client.post(
        "/api/v1/auth/login", json={"email": "carol@acme.test", "password": PASSWORD}
    )
    assert carol.status_code == 200
    notes = client.get("/api/v1/notifications").json()["items"]
    assert [n["kind"] for n in notes] == ["mention"] and notes[0]["conversation_id"] == conv

    page.click("#resolve")
    expect(page.locator("#status")).to_have_text("resolved")

    # Search by the phone number, written another way, finds the conversation.
    page.fill("header .search input", "600 111 222")
    page.press("header .search input", "Enter")
    page.wait_for_selector(f'a[href="/app/conversations/{conv}"]')


def test_hostile_html_runs_nothing_in_the_browser(
    live_server: LiveServer,
    browser,
    world: World,
    client: TestClient,
    settings: Settings,  # type: ignore[no-untyped-def]
) -> None:
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "xss-b",
            "text": hostile,
            "html": hostile,
            "from": {"email": "x@example.com"},
        },
        headers=auth(world.bob),
    )
    page = signed_in(
        browser, live_server, "bob@acme.test", f"/app/conversations/{r.json()['conversation_id']}"
    )
    page.wait_for_selector("#messages")
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert page.get_attribute("#messages img", "onerror") is None
    assert page.locator("#messages script").count() == 0


def test_an_admin_sets_up_a_canned_response_and_an_inbox_in_the_browser(
    live_server: LiveServer,
    browser,
    world: World,
    client: TestClient,  # type: ignore[no-untyped-def]
) -> None:
    page = signed_in(browser, live_server, "alice@acme.test", "/app/settings")
    page.fill("form[data-api='/api/v1/canned-responses'] input[name=shortcut]", "bye")
    page.fill(  # on lines of its own: it was one line, its line breaks lost
        "form[data-api='/api/v1/canned-responses'] textarea[name=text]",
        "Goodbye {{ customer.first_name }}!\nBest, Acme",
    )
    page.click("form[data-api='/api/v1/canned-responses'] button")
    expect(page.locator("#canned input[name=shortcut]")).to_have_value("bye")
    page.fill("form[data-api='/api/v1/inboxes'] input[name=name]", "Help chat")
    page.select_option("form[data-api='/api/v1/inboxes'] select[name=channel]", "webchat")
    page.click("form[data-api='/api/v1/inboxes'] button")
    page.wait_for_selector("text=Help chat")
    assert "/widget.js" in page.inner_text("section:has(h2:text('Inboxes'))")
    page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)
    canned = client.get("/api/v1/canned-responses", headers=auth(world.bob)).json()
    assert [(c["shortcut"], c["text"]) for c in canned] == [
        ("bye", "Goodbye {{ customer.first_name }}!\nBest, Acme")
    ]


def test_the_customer_panel_offers_a_duplicate_and_a_parallel_conversation(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    """The panel shows the profile, the chat the customer opened meanwhile (merged from
    the panel), and a suggested duplicate (dismissed from the panel); a furious message
    carries its triage badge."""
    from rapport.customers.models import MergeSuggestion

    chat = client.post(
        "/api/v1/inboxes", json={"name": "Chat", "channel": "api"}, headers=auth(world.alice)
    ).json()
    posted = [
        client.post(
            f"/api/v1/inboxes/{inbox_id}/messages",
            json={"external_id": ext, "text": text, "from": {"email": "zed@example.com"}},
            headers=auth(world.bob),
        ).json()
        for inbox_id, ext, text in (
            (world.acme.inbox.id, "z1", "This is terrible, I am furious, nothing works"),  # type: ignore[union-attr]
            (chat["id"], "z2", "Hello, anyone on chat?"),
        )
    ]
    zed = posted[0]["customer_id"]
    other = client.post(
        "/api/v1/customers", json={"name": "Zed Twin"}, headers=auth(world.bob)
    ).json()
    with database.session() as db:
        left, right = sorted([zed, other["id"]])
        db.add(
            MergeSuggestion(
                workspace_id=world.acme.workspace.id,
                left_id=left,
                right_id=right,
                probability=0.93,
                reason="Same date of birth; first name nearly the same",
            )
        )
    page = browser.new_page()
    sign_in(
        page, live_server, "alice@acme.test", f"/app/conversations/{posted[0]['conversation_id']}"
    )
    expect(page.locator(".triage.mood-negative").first).to_be_visible()
    expect(page.locator("#panel-extra")).to_contain_text("93 % likely the same person as Zed Twin")
    twin = page.locator("#panel-extra a", has_text="Zed Twin")
    assert twin.get_attribute("href") == f"/app/customers/{other['id']}"
    expect(page.locator("#panel-extra")).to_contain_text("first name nearly the same")
    expect(page.locator("#panel-extra")).to_contain_text("Also writing on another channel")
    page.screenshot(path=str(ARTIFACTS / "customer-panel.png"), full_page=True)
    page.click("text=Not the same")
    expect(page.locator("#panel-extra")).not_to_contain_text("likely the same person")
    page.click("text=Merge into this one")
    expect(page.locator("#messages")).to_contain_text("Hello, anyone on chat?")
    expect(page.locator("#panel-extra")).not_to_contain_text("Also writing on another channel")
    pending = client.get("/api/v1/merge-suggestions", headers=auth(world.bob)).json()
    assert pending == []


def test_two_agents_on_one_conversation_see_each_other(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    conv = world.acme.opened.conversation.id
    pages = {}
    for email in ("alice@acme.test", "bob@acme.test"):
        context = browser.new_context()
        page = context.new_page()
        sign_in(page, live_server, email, f"/app/conversations/{conv}")
        pages[email] = page
    # Bob opened it last: Alice's page heard his ping and answers with hers at once (Bob's
    # learnt of Alice at her next ping, up to 15 s later; well under that now).
    expect(pages["alice@acme.test"].locator("#collision")).to_contain_text(
        "Bob is viewing this conversation"
    )
    expect(pages["bob@acme.test"].locator("#collision")).to_contain_text(
        "Alice is viewing this conversation", timeout=8_000
    )
    pages["alice@acme.test"].fill("#composer textarea", "Looking into it")
    expect(pages["bob@acme.test"].locator("#collision")).to_contain_text("Alice is typing a reply")


# A browser behind a proxy that drops WebSockets: every socket closes before it opens.
NO_SOCKETS = (
    "window.WebSocket = function () {"
    "  var ws = {}; setTimeout(function () { ws.onclose({ code: 1006 }); }, 20); return ws;"
    "};"
)


def test_where_no_socket_can_open_an_agents_pages_poll_and_messages_still_arrive(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Behind such a proxy the conversation and the inbox never changed until reloaded.
    conv = world.acme.opened.conversation.id
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    context = browser.new_context()
    context.add_init_script(NO_SOCKETS)
    page = context.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    page.wait_for_selector("#messages")

    def write(ext: str, email: str, text: str) -> dict:  # type: ignore[type-arg]
        r = live_server.http.post(
            f"/api/v1/inboxes/{inbox}/messages",
            json={"external_id": ext, "text": text, "from": {"email": email}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    assert write("poll-1", "customer@acme.example", "Still waiting")["conversation_id"] == conv
    page.wait_for_selector("#messages li >> text=Still waiting")
    page.goto(f"{live_server.url}/app/inbox?view=all")
    page.wait_for_selector("#conversation-list")
    other = write("poll-2", "newcomer@example.com", "Hello from a new customer")
    page.wait_for_selector(f'#conversation-list li[data-id="{other["conversation_id"]}"]')
    # Each message shown once: the polls that follow bring recent events again.
    page.goto(f"{live_server.url}/app/conversations/{conv}")
    write("poll-3", "customer@acme.example", "And one more thing")
    page.wait_for_selector("#messages li >> text=And one more thing")
    page.wait_for_timeout(3_500)  # another poll, which brings the same events again
    expect(page.locator("#messages li", has_text="And one more thing")).to_have_count(1)


def test_an_agent_sees_a_mention_counted_finds_it_listed_and_opening_it_reads_it(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
) -> None:
    conv = world.acme.opened.conversation.id
    page = signed_in(browser, live_server, "bob@acme.test", "/app/inbox?view=all")
    page.wait_for_selector("#conversation-list")
    badge = page.locator("#notif-badge")
    expect(badge).to_be_hidden()
    page.wait_for_timeout(300)  # the stream connects
    client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "@bob the courier called back"},
        headers=auth(world.alice),
    )
    expect(badge).to_have_text("1")
    page.click("#notifications-link")
    item = page.locator("#notification-list li.unread")
    expect(item).to_contain_text("the courier called back")
    # Another comes while the list is open: it is drawn, and counted.
    client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "@bob and the customer too"},
        headers=auth(world.alice),
    )
    expect(page.locator("#notification-list li.unread")).to_have_count(2)
    expect(badge).to_have_text("2")
    page.locator("#notification-list li.unread a").first.click()
    page.wait_for_selector("#messages")
    expect(badge).to_be_hidden()  # opening the conversation read its own
    page.goto(f"{live_server.url}/app/notifications")
    expect(page.locator("#notification-list li")).to_have_count(2)
    expect(page.locator("#notification-list li.unread")).to_have_count(0)
    expect(page.locator("#notifications-all-read")).to_be_disabled()


def test_the_panel_shows_a_total_spend_past_what_a_double_holds_to_the_cent(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
) -> None:
    # The panel divided the JSON integer by 100 in JavaScript: 2**53 + 1 cents showed as
    # 90071992547409.92 EUR (JSON.parse had already rounded it).
    from rapport.events.models import Order

    first = world.acme.opened
    with database.session() as db:
        db.add(
            Order(
                workspace_id=world.acme.workspace.id,
                customer_id=first.customer.id,
                order_id="big",
                total_minor=2**53 + 1,
                currency="EUR",
                status="completed",
            )
        )
    page = signed_in(
        browser, live_server, "bob@acme.test", f"/app/conversations/{first.conversation.id}"
    )  # type: ignore[union-attr]
    # The panel asks for the profile once the page is up: on a loaded machine (the whole
    # suite on two cores) that took over expect's 5 seconds once.
    expect(page.locator("#panel-extra")).to_contain_text("total spend")
    expect(page.locator("#panel-extra")).to_contain_text("90071992547409.93 EUR")


def test_a_note_whose_mention_fits_two_colleagues_tells_its_author_in_the_browser(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    database: Database,
    client: TestClient,
) -> None:
    with database.session() as db:
        workspaces.add_member(
            db,
            workspace_id=world.acme.workspace.id,
            email="bobby@acme.test",
            role=Role.agent,
            password=PASSWORD,
            name="Bob Stone",
            actor_role=Role.owner,
        )
    conv = world.acme.opened.conversation.id
    page = signed_in(browser, live_server, "alice@acme.test", f"/app/conversations/{conv}")
    composer = page.locator("#composer")
    expect(composer.locator("button[type=submit]")).to_have_text("Send")
    page.check("input[name=mode][value=note]")
    # A note looks like one while it is written (it looked like a reply).
    expect(composer).to_have_class(re.compile(r"\bnote-mode\b"))
    expect(composer.locator("button[type=submit]")).to_have_text("Add note")
    expect(composer.get_by_role("textbox", name="Note for colleagues")).to_be_visible()
    page.fill("#composer textarea", "@bob can you call her back?")
    page.click("#composer button[type=submit]")
    page.wait_for_selector("#messages li.kind-note")
    expect(page.locator("#flash")).to_contain_text("Not notified")
    expect(page.locator("#flash")).to_contain_text("bobby@acme.test")
    assert client.get("/api/v1/notifications", headers=auth(world.bob)).json()["items"] == []
    # A handle that fits nobody is said too (a typo went unnoticed), and the next note that
    # goes through clears what was said of the last.
    page.fill("#composer textarea", "@bob.stone and @carl, see above")
    page.click("#composer button[type=submit]")
    expect(page.locator("#flash")).to_have_text(
        "Not notified: @carl names no colleague who can be mentioned (agents and admins, by "
        "first name, @first.last or email)."
    )
    # What the page does on its own (presence, read receipts) leaves it said.
    page.select_option("#presence", "busy")
    page.wait_for_timeout(500)
    expect(page.locator("#flash")).to_contain_text("@carl names no colleague")
    page.fill("#composer textarea", "@bob.stone thanks")
    page.click("#composer button[type=submit]")
    # The world's own note and these three (it said 3, and passed only when it looked
    # before the last had arrived).
    notes = page.locator("#messages li.kind-note")
    expect(notes).to_have_count(4)
    expect(notes.last).to_contain_text("@bob.stone thanks")
    expect(page.locator("#flash")).to_have_count(0)


def test_the_api_docs_render_from_rapport_alone_in_the_browser(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
) -> None:
    # /docs loaded Swagger UI from a CDN: on a machine offline the page was blank.
    page = browser.new_page()
    elsewhere: list[str] = []

    def only_rapport(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_rapport)
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector("#operations-tag-conversations", timeout=20_000)
    assert page.locator('.opblock-summary-path[data-path="/api/v1/conversations"]').count() >= 1
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"))
    assert elsewhere == []


def test_an_agent_goes_from_a_conversation_to_its_customers_page_in_the_browser(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    first = world.acme.opened
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{first.conversation.id}")
    page.click("aside.customer h2 a")
    page.wait_for_url(f"**/app/customers/{first.customer.id}")
    # The panel works without a conversation: the profile and the consent form are there.
    page.wait_for_selector("#panel-extra [data-part=profile] dl")
    page.wait_for_selector("#panel-extra [data-part=consent] form")
    page.click(f'#customer-conversations a[href="/app/conversations/{first.conversation.id}"]')
    page.wait_for_url(f"**/app/conversations/{first.conversation.id}")
    page.click("header nav >> text=Customers")
    page.wait_for_selector(f'#customer-list a[href="/app/customers/{first.customer.id}"]')
    page.screenshot(path=str(ARTIFACTS / "customers.png"), full_page=True)
    assert errors == []


def test_a_suggested_duplicate_merged_from_the_panel_asks_which_name_stays(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
) -> None:
    from rapport.customers.models import MergeSuggestion

    posted = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "mia-1",
            "text": "Hi",
            "from": {"name": "Mia Holm", "email": "mia@x.test"},
        },
        headers=auth(world.bob),
    ).json()
    twin = client.post(
        "/api/v1/customers",
        json={"name": "Mia H.", "phone": "+4790000001"},
        headers=auth(world.bob),
    ).json()
    with database.session() as db:
        left, right = sorted([posted["customer_id"], twin["id"]])
        db.add(
            MergeSuggestion(
                workspace_id=world.acme.workspace.id,
                left_id=left,
                right_id=right,
                probability=0.9,
                reason="first name the same",
            )
        )
    page = signed_in(
        browser, live_server, "bob@acme.test", f"/app/conversations/{posted['conversation_id']}"
    )
    suggestion = page.locator("#panel-extra li", has_text="likely the same person as Mia H.")
    suggestion.get_by_role("button", name="Merge", exact=True).click()
    expect(suggestion.locator(".merge-field")).to_have_text(["name: Mia Holm Mia H."])
    suggestion.get_by_label("Mia H.").check()
    suggestion.get_by_role("button", name="Merge, keeping what is chosen").click()
    expect(page.locator("#panel-extra")).not_to_contain_text("likely the same person")
    kept = client.get(f"/api/v1/customers/{posted['customer_id']}", headers=auth(world.bob)).json()
    assert kept["name"] == "Mia H."
    gone = client.get(f"/api/v1/customers/{twin['id']}", headers=auth(world.bob)).json()
    assert gone["merged_into_id"] == posted["customer_id"]
