"""The widget on host pages that do not mean it well: their styles reach none of it."""

import pytest
from fastapi.testclient import TestClient

from tests.channels.webchat.test_widget import _Host, embedded, host_page  # noqa: F401
from tests.factories import World
from tests.web.conftest import ARTIFACTS, LiveServer

HOSTILE = (
    "<style>"
    "* { all: unset !important; }"
    "html { visibility: hidden !important; color: transparent !important; "
    "text-transform: uppercase !important; letter-spacing: 1em !important; "
    "direction: rtl !important; cursor: none !important; }"
    "#rapport-widget, div { display: none !important; }"
    "</style>"
)


def test_the_widget_shows_and_works_on_a_page_whose_own_css_is_hostile(
    live_server: LiveServer,
    browser,  # type: ignore[no-untyped-def]
    client: TestClient,
    world: World,
    host_page: tuple[str, type[_Host]],  # noqa: F811
) -> None:
    # A page's `* { all: unset }`, or its rules for every div, reached the widget's host
    # element, and through it what the widget inherits: it was hidden, or its text was
    # transparent, spaced out and upper case.
    expect = pytest.importorskip("playwright.sync_api", reason="playwright not installed").expect
    embedded(client, world, live_server, host_page)
    origin, handler = host_page
    handler.page = handler.page.replace(b"<body>", HOSTILE.encode() + b"<body>")
    page = browser.new_page()
    page.goto(origin)
    launcher = page.locator("#rapport-widget >> css=.launcher")
    expect(launcher).to_be_visible()
    launcher.click()
    page.fill("#rapport-widget >> css=textarea", "Is anyone there?")
    page.keyboard.press("Enter")
    sent = page.locator("#rapport-widget >> css=.m.in")
    expect(sent).to_have_text("Is anyone there?")
    expect(sent).to_be_visible()
    style = sent.evaluate(
        "(e) => { const s = getComputedStyle(e); return [s.textTransform, s.letterSpacing,"
        " s.direction, s.color]; }"
    )
    assert style == ["none", "normal", "ltr", "rgb(255, 255, 255)"]
    page.screenshot(path=str(ARTIFACTS / "widget-hostile-page.png"))
