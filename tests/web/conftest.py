"""A real server on a free port, and headless Chromium driven by Playwright."""

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from rapport.app import create_app
from rapport.config import Settings
from rapport.db import Database
from rapport.guard import WEBSOCKET_MESSAGE_LIMIT
from tests.factories import PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, settings: Settings, database: Database, **changes: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Settings of its own: the test's, with ``changes``. Changed on the test's own
        # object, they reached every app made from it after (the ``client`` fixture's too).
        self.settings = settings.model_copy(update={"public_url": self.url, **changes})
        config = uvicorn.Config(
            create_app(self.settings, database=database),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="websockets-sansio",
            ws_max_size=WEBSOCKET_MESSAGE_LIMIT,  # as `rapport serve`
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        # A test's own API calls, beside the browser's. A loaded CI machine runs two test
        # workers, their servers and browsers on two cores: httpx's 5 s default was missed.
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)


def sign_in(page: Any, live_server: LiveServer, email: str, then: str) -> None:
    """Sign a browser page in as one of the personas (their password), then open ``then``.

    Through the endpoint the sign-in page posts to, its cookies set in the page's own
    context: the sign-in page itself (and the inbox it opens) took two page loads a test.
    tests/web/test_browser.py, test_account_browser.py and others sign in by the form."""
    answer = page.request.post(
        f"{live_server.url}/api/v1/auth/login", data={"email": email, "password": PASSWORD}
    )
    assert answer.ok, answer.text()
    page.goto(f"{live_server.url}{then}")


def signed_in(browser: Any, live_server: LiveServer, email: str, then: str) -> Any:
    """A new page of its own, signed in as one of the personas, at ``then``."""
    page = browser.new_page()
    sign_in(page, live_server, email, then)
    return page


@pytest.fixture
def live_server(settings: Settings, database: Database) -> Iterator[LiveServer]:
    """A real server, with the job worker inside it as `rapport serve` runs one: the only
    worker of the test (a ``client`` beside it runs none, as the test's settings say)."""
    with LiveServer(settings, database, worker_in_process=True) as server:
        yield server


@pytest.fixture(scope="module")
def chromium():  # type: ignore[no-untyped-def]
    """One headless Chromium for a module's tests (each test gets contexts of its own):
    starting Playwright and Chromium took 1.5 s a test. Per module, not per session: while
    Playwright's sync API runs, a test's own asyncio.run() would fail."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium not installed at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    # What a page shows after a server round trip: 5 s by default, missed on a loaded run.
    expect.set_options(timeout=15_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def browser(chromium):  # type: ignore[no-untyped-def]
    """The module's Chromium, each page and context a test opened closed after it."""
    yield chromium
    for context in chromium.contexts:
        context.close()
