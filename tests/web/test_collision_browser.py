"""Collision notice in Chromium: agents on one conversation see who else has it open and who
is typing, said over their sockets; a page without one says it by request."""

from typing import Any

import pytest

from tests.factories import World
from tests.web.conftest import LiveServer, sign_in
from tests.web.test_browser import NO_SOCKETS

expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect


def said_by_request(page: Any) -> list[str]:
    """The presence requests a page makes (a list it keeps filling)."""
    asked: list[str] = []
    page.on(
        "request",
        lambda r: asked.append(r.url) if r.url.endswith(("/viewing", "/typing")) else None,
    )
    return asked


def test_two_agents_on_a_conversation_see_each_other_over_their_sockets(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Each page asked by request every 15 s that it was viewing, and every 3 s of typing;
    # a colleague who closed the conversation stayed "viewing" for 40 s.
    conv = world.acme.opened.conversation.id
    pages, asked = {}, {}
    for email in ("alice@acme.test", "bob@acme.test"):
        page = browser.new_context().new_page()
        asked[email] = said_by_request(page)
        sign_in(page, live_server, email, f"/app/conversations/{conv}")
        pages[email] = page
    alice, bob = pages["alice@acme.test"], pages["bob@acme.test"]
    expect(alice.locator("#collision")).to_contain_text("Bob is viewing this conversation")
    expect(bob.locator("#collision")).to_contain_text("Alice is viewing this conversation")
    alice.fill("#composer textarea", "Looking into it")
    expect(bob.locator("#collision")).to_contain_text("Alice is typing a reply")
    assert asked == {"alice@acme.test": [], "bob@acme.test": []}
    alice.close()  # she moves on: gone from Bob's notice at once, not 40 s later
    expect(bob.locator("#collision")).to_be_hidden(timeout=5_000)


def test_a_page_without_a_socket_is_still_seen_viewing_and_typing(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    conv = world.acme.opened.conversation.id
    bob = browser.new_context().new_page()
    sign_in(bob, live_server, "bob@acme.test", f"/app/conversations/{conv}")
    behind_a_proxy = browser.new_context()
    behind_a_proxy.add_init_script(NO_SOCKETS)
    alice = behind_a_proxy.new_page()
    asked = said_by_request(alice)
    sign_in(alice, live_server, "alice@acme.test", f"/app/conversations/{conv}")
    expect(bob.locator("#collision")).to_contain_text("Alice is viewing this conversation")
    alice.fill("#composer textarea", "Looking into it")
    expect(bob.locator("#collision")).to_contain_text("Alice is typing a reply")
    assert any(u.endswith("/viewing") for u in asked) and any(u.endswith("/typing") for u in asked)


def test_two_agents_whose_pages_poll_see_each_other(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    world: World,
) -> None:
    # Polls carried only stored events: behind a proxy that drops WebSockets neither page
    # ever showed the other's agent viewing or typing.
    conv = world.acme.opened.conversation.id
    pages = {}
    for email in ("alice@acme.test", "bob@acme.test"):
        context = browser.new_context()
        context.add_init_script(NO_SOCKETS)
        page = context.new_page()
        sign_in(page, live_server, email, f"/app/conversations/{conv}")
        pages[email] = page
    alice, bob = pages["alice@acme.test"], pages["bob@acme.test"]
    expect(alice.locator("#collision")).to_contain_text("Bob is viewing this conversation")
    expect(bob.locator("#collision")).to_contain_text("Alice is viewing this conversation")
    alice.fill("#composer textarea", "Looking into it")
    expect(bob.locator("#collision")).to_contain_text("Alice is typing a reply")
