"""An email's remote images load only once the agent asks: a tracking pixel told its sender
when an agent opened the conversation, and from where; an image with a relative address
made the agent's browser ask Rapport itself, with the agent's cookies."""

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.channels.email import ingest_email
from rapport.config import Settings
from rapport.conversations.models import Message
from rapport.conversations.service import message_payload
from rapport.db import Database
from rapport.realtime.service import emit
from rapport.sanitize import clean_html
from tests.conftest import auth
from tests.factories import World
from tests.standin import serving
from tests.tls import self_signed
from tests.web.conftest import ARTIFACTS, LiveServer, sign_in

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect

# The smallest GIF: one transparent pixel.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


class Tracker:
    """A sender's image server (HTTPS on 127.0.0.1, a certificate of its own), which
    records every path asked of it."""

    def __init__(self, tmp: Path) -> None:
        self.asked: list[str] = []
        asked = self.asked

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                asked.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", str(len(PIXEL)))
                self.end_headers()
                self.wfile.write(PIXEL)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = self_signed(tmp).wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    t = Tracker(tmp_path)
    with serving(t.server):
        yield t


def test_an_emails_remote_images_load_only_when_the_agent_asks(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
    tracker: Tracker,
) -> None:
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    t = tracker.url
    body = (
        f'<p>Hello</p><img src="{t}/pixel.gif?who=open" alt="pixel" width="1" height="1">'
        # Every other way HTML has to load an address: none may, asked or not.
        f'<img src="{t}/x.gif" srcset="{t}/srcset.gif 2x">'
        f'<div style="background-image: url({t}/style.gif)">styled</div>'
        f'<picture><source srcset="{t}/source.gif"><img alt="p"></picture>'
        f'<table background="{t}/background.gif"><tr><td background="{t}/td.gif">t</td></tr>'
        f'</table><video poster="{t}/poster.gif"></video><input type="image" src="{t}/input.gif">'
        f'<svg><image href="{t}/svg.gif"></image></svg>'
        f'<link rel="stylesheet" href="{t}/sheet.css"><style>@import url({t}/import.css);</style>'
        # Addresses of Rapport's own, asked with the agent's cookies.
        '<img src="/api/v1/me?from-mail=1"><img src="../settings?from-mail=2">'
        '<img src="//127.0.0.1/?from-mail=3">'
    )
    raw = (
        "From: Trent <trent@example.com>\r\nTo: help@acme.test\r\nSubject: Our newsletter\r\n"
        "Message-ID: <trent-1@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + body + "\r\n"
    ).encode()
    with database.session() as db:
        ingest_email(db, raw, inbox_id=mail["id"], settings=settings)
    conv = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"]
    conv_id = next(c["id"] for c in conv if c["subject"] == "Our newsletter")

    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    asked_of_us: list[str] = []
    page.on("request", lambda r: asked_of_us.append(r.url) if "from-mail" in r.url else None)
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv_id}")
    held = page.locator(".msg .held-images")
    expect(held).to_contain_text("2 remote images not loaded")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    assert tracker.asked == [] and asked_of_us == []
    page.screenshot(path=str(ARTIFACTS / "remote-images-held.png"))

    held.get_by_role("button", name="Show images").click()
    expect(held).to_have_count(0)
    pixel = page.locator('.msg .body img[alt="pixel"]')
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=pixel.element_handle()
    )
    # The second image's request may still be on its way when the page goes quiet (once,
    # under load, the tracker had only the pixel's): wait for it, then for anything more.
    for _ in range(100):
        if len(tracker.asked) >= 2:
            break
        page.wait_for_timeout(100)
    page.wait_for_load_state("networkidle")
    assert sorted(tracker.asked) == ["/pixel.gif?who=open", "/x.gif"]
    assert asked_of_us == []


def test_an_email_arriving_live_is_drawn_as_after_a_reload_its_images_held(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
    tracker: Tracker,
) -> None:
    # A message arriving live was drawn from the event's text alone: an email showed as
    # bare text (its links, lists and tables gone) until the agent reloaded the page.
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()

    def receive(n: int, body: str) -> None:
        raw = (
            "From: Trent <trent@example.com>\r\nTo: help@acme.test\r\nSubject: Our order\r\n"
            f"Message-ID: <trent-live-{n}@example.com>\r\n"
            + (f"In-Reply-To: <trent-live-{n - 1}@example.com>\r\n" if n > 1 else "")
            + "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + body
            + "\r\n"
        ).encode()
        with database.session() as db:
            ingest_email(db, raw, inbox_id=mail["id"], settings=settings)

    receive(1, "<p>Where is my order?</p>")
    conv = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"][0]["id"]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    # Which pages it asks for from now on: one message's body, never the whole thread's.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/app/" in r.url else None)
    receive(2, f'<p>It is <b>late</b></p><img src="{tracker.url}/pixel.gif" alt="pixel">')
    item = page.locator("#messages li.msg").nth(1)
    expect(item.locator(".body.html b")).to_have_text("late")
    expect(item.locator(".held-images")).to_contain_text("1 remote image not loaded")
    page.wait_for_load_state("networkidle")
    assert tracker.asked == []
    mid = item.get_attribute("data-id")
    assert asked == [f"{live_server.url}/app/conversations/{conv}/messages/{mid}/body"]
    item.get_by_role("button", name="Show images").click()
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0",
        arg=item.locator('img[alt="pixel"]').element_handle(),
    )
    assert tracker.asked == ["/pixel.gif"]


def test_an_emails_body_changed_live_is_drawn_anew_and_one_unchanged_is_kept(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
    tracker: Tracker,
) -> None:
    # The page kept the body it had drawn through every message.updated, whatever the event
    # said: markup changed since stayed the old one until a reload.
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    first = f'<p>First <b>draft</b></p><img src="{tracker.url}/pixel.gif" alt="pixel">'
    raw = (
        "From: Trent <trent@example.com>\r\nTo: help@acme.test\r\nSubject: Our order\r\n"
        "Message-ID: <trent-changed@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + first + "\r\n"
    ).encode()
    with database.session() as db:
        ingest_email(db, raw, inbox_id=mail["id"], settings=settings)
    conv = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"][0]["id"]
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    item = page.locator("#messages li.msg").first
    mid = item.get_attribute("data-id")
    item.get_by_role("button", name="Show images").click()
    expect(item.locator(".held-images")).to_have_count(0)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/app/" in r.url else None)
    status = "pending"

    def updated(html: str | None, text: str) -> None:
        # No path rewrites a stored email's markup today (a colleague's note proved had
        # none, and is drawn as any message given HTML): the page must not count on it.
        nonlocal status
        with database.session() as db:
            m = db.get(Message, mid)
            assert m is not None
            m.html, m.text = (m.html if html == "as stored" else html and clean_html(html)), text
            emit(
                db, workspace_id=m.workspace_id, type="message.updated", payload=message_payload(m)
            )
        # Then a change the page shows: the update before it has been handled by then.
        status = "open" if status == "pending" else "pending"
        r = client.post(
            f"/api/v1/conversations/{conv}/status", json={"status": status}, headers=auth(world.bob)
        )
        assert r.status_code == 200, r.text
        expect(page.locator("#status")).to_have_text(status)

    # The same markup (its text stored anew, as a status moving sends it again): the body
    # stays, with the images the agent chose to see, and nothing is asked of the server.
    updated("as stored", "First draft")
    expect(item.locator(".body.html b")).to_have_text("draft")
    expect(item.locator(".held-images")).to_have_count(0)
    page.wait_for_load_state("networkidle")
    assert asked == []
    # Other markup: drawn anew as the server draws it, its own remote image held.
    updated(f'<p>Second <i>version</i></p><img src="{tracker.url}/other.gif" alt="o">', "2nd")
    expect(item.locator(".body.html i")).to_have_text("version")
    expect(item.locator(".body.html")).not_to_contain_text("draft")
    expect(item.locator(".held-images")).to_contain_text("1 remote image not loaded")
    page.wait_for_load_state("networkidle")
    assert asked == [f"{live_server.url}/app/conversations/{conv}/messages/{mid}/body"]
    # No markup left: its text.
    updated(None, "Plain words now.")
    expect(item.locator(".body")).to_have_text("Plain words now.")
    expect(item.locator(".body.html, .held-images")).to_have_count(0)
    assert tracker.asked == ["/pixel.gif"]


def test_a_body_asked_for_before_the_markup_went_is_not_drawn_over_the_text(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
    client: TestClient,
    database: Database,
    settings: Settings,
) -> None:
    # The markup changed, the page asked for the new body; before the answer came, the
    # markup went (the text alone now): the answer, the markup of a moment before, was
    # drawn over the text, and stayed until a reload.
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    raw = (
        b"From: Trent <trent@example.com>\r\nTo: help@acme.test\r\nSubject: Our order\r\n"
        b"Message-ID: <trent-gone@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>First <b>draft</b></p>\r\n"
    )
    with database.session() as db:
        ingest_email(db, raw, inbox_id=mail["id"], settings=settings)
    conv = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"][0]["id"]
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    expect(page.locator("body[data-stream-open]")).to_have_count(1)
    item = page.locator("#messages li.msg").first
    mid = item.get_attribute("data-id")
    held: list[Any] = []  # (route, the server's answer), answered when the test says

    def hold(route: Any) -> None:
        held.append((route, route.fetch()))

    page.route(f"**/app/conversations/{conv}/messages/{mid}/body", hold)

    def updated(html: str | None, text: str) -> None:
        with database.session() as db:
            m = db.get(Message, mid)
            assert m is not None
            m.html, m.text = html and clean_html(html), text
            emit(
                db, workspace_id=m.workspace_id, type="message.updated", payload=message_payload(m)
            )

    updated("<p>Second <i>version</i></p>", "Second version")
    expect(item.locator(".body")).to_have_text("Second version")  # its text, meanwhile
    for _ in range(200):  # the page asks for the new body
        if held:
            break
        page.wait_for_timeout(50)
    [(route, answer)] = held
    assert "<i>version</i>" in answer.text()
    updated(None, "Plain words now.")
    expect(item.locator(".body")).to_have_text("Plain words now.")
    with page.expect_event("requestfinished"):
        route.fulfill(response=answer)
    # The answer read and handled: the page's next tasks once it is in.
    page.evaluate("() => new Promise((done) => setTimeout(done, 100))")
    assert item.locator(".body.html").count() == 0
    expect(item.locator(".body")).to_have_text("Plain words now.")
    context.close()
