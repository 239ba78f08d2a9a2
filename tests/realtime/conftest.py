from tests.web.conftest import live_server  # noqa: F401  (a real server for socket tests)
