from tests.web.conftest import browser, chromium, live_server  # noqa: F401  (shared browser fixtures)
