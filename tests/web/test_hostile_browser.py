"""What customers control, at its most hostile, on every page an agent opens in Chromium:
shown as text (never markup), no script runs, no Content-Security-Policy violation, and no
page wider than the window."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.channels.email import ingest_email
from rapport.config import Settings
from rapport.db import Database
from tests.conftest import auth
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect

BAIT = '<img src=x onerror="window.__pwned=1">'
NAME = f"Eve{BAIT}</title><script>window.__pwned=1</script>"
LONG = "x" * 400
RTL = "\u202eمرحبا بالعالم\u202c שלום"


@pytest.fixture
def hostile(
    world: World, database: Database, client: TestClient, settings: Settings
) -> dict[str, str]:
    """A customer's email with a hostile name, subject, HTML body and file name; a message
    of one long unbroken word and RTL text; hostile attributes, label and note."""
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    raw = (
        'From: "Eve<img src=x onerror=window.__pwned=1>" <eve@example.com>\r\n'
        "To: help@acme.test\r\n"
        f"Subject: {BAIT} {LONG}\r\n"
        "Message-ID: <eve-1@example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        f"<p>Hi {BAIT}<script>window.__pwned=1</script>"
        f'<a href="javascript:window.__pwned=1">click</a> {LONG} {RTL}</p>'
        "<style>body{display:none}</style>"
        '<img src="https://127.0.0.1:1/banner.png" width="2400" height="40" alt="banner">'
        f"<pre>{'a line of a log that does not wrap ' * 30}</pre>\r\n"
        "--b\r\nContent-Type: application/pdf\r\n"
        f'Content-Disposition: attachment; filename="{BAIT}.pdf"\r\n\r\n%PDF-1.4\r\n'
        "--b--\r\n"
    ).encode()
    with database.session() as db:
        ingest_email(db, raw, inbox_id=mail["id"], settings=settings)
    found = client.get(
        "/api/v1/customers", params={"q": "eve@example.com"}, headers=auth(world.bob)
    ).json()["items"][0]
    customer = found["id"]
    r = client.patch(
        f"/api/v1/customers/{customer}",
        json={"name": NAME, "attributes": {BAIT: f"{BAIT} {LONG}", "plan": RTL}},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    convs = client.get(
        "/api/v1/conversations", params={"customer_id": customer}, headers=auth(world.bob)
    ).json()["items"]
    conv = convs[0]["id"]
    r = client.post(
        f"/api/v1/conversations/{conv}/labels",
        json={"labels": [f"vip{BAIT}"[:100]]},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": f"@alice look {BAIT} {LONG}"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return {"conversation": conv, "customer": customer}


def failed(message: Any) -> bool:
    # The email's sanitized <img src=x> asks the server for it: a 404, no fault of the page.
    return bool(message.type == "error" and "Failed to load resource" not in message.text)


def watch(page: Any) -> list[str]:
    """Every script error, console error (a CSP violation is one) and dialog of the page."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if failed(m) else None)
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    return problems


def unharmed(page: Any, where: str) -> list[str]:
    page.wait_for_load_state("networkidle")
    out = []
    if page.evaluate("window.__pwned"):
        out.append(f"{where}: a script ran")
    if page.locator('img[onerror], script:not([src]), a[href^="javascript:"]').count():
        out.append(f"{where}: markup of the customer's was drawn")
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if wide > 0:
        out.append(f"{where}: {wide}px wider than the window")
    # A panel that scrolls (the customer beside the conversation) scrolling sideways too.
    sideways = page.evaluate(
        """[...document.querySelectorAll('main *')].filter((e) => {
            const x = getComputedStyle(e).overflowX;
            return (x === 'auto' || x === 'scroll') && e.scrollWidth > e.clientWidth + 1
              && !e.matches('.table-wrap, .table-wrap *');
        }).map((e) => `${e.tagName}.${e.className}`)"""
    )
    out += [f"{where}: {e} scrolls sideways" for e in sideways]
    return out


def test_a_hostile_customer_breaks_no_page_an_agent_opens(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    hostile: dict[str, str],
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems = watch(page)
    sign_in(page, live_server, "alice@acme.test", "/app/inbox")
    found: list[str] = []
    for where in (
        "/app/inbox",
        f"/app/conversations/{hostile['conversation']}",
        f"/app/customers/{hostile['customer']}",
        "/app/customers",
        "/app/search?q=eve",
        "/app/search?q=onerror",
        "/app/notifications",
    ):
        page.goto(f"{live_server.url}{where}")
        found += unharmed(page, where)
        page.screenshot(
            path=str(ARTIFACTS / f"hostile{where.replace('/', '-').replace('?', '-')}.png"),
            full_page=True,
        )
    assert (found, problems) == ([], [])


def test_a_message_in_a_right_to_left_script_reads_right_to_left(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
) -> None:
    # Every message was laid out left to right: a Hebrew or Arabic question had its
    # question mark at the wrong end, and its lines started at the left.
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "rtl-1",
            "text": "שלום, איפה ההזמנה שלי?",
            "from": {"email": "d@x.test"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code in (200, 201), r.text
    page = browser.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{r.json()['conversation_id']}")
    body = page.locator(".msg .body", has_text="שלום")
    expect(body).to_be_visible()
    # Where the question mark is drawn: left of the first word, as a reader of Hebrew expects.
    mark_left, first_left = body.evaluate(
        """(e) => {
            const text = e.firstChild, at = (i) => {
                const r = document.createRange(); r.setStart(text, i); r.setEnd(text, i + 1);
                return r.getBoundingClientRect().left;
            };
            return [at(text.length - 1), at(0)];
        }"""
    )
    assert mark_left < first_left
