from tests.web.conftest import browser, live_server  # noqa: F401  (shared browser fixtures)
