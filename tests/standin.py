"""The suite's stand-in servers (a provider's API, a webhook receiver, a page embedding the
widget) on a thread of their own for as long as a test needs them."""

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

S = TypeVar("S", bound=socketserver.BaseServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Serve ``server`` until the block ends, then close it. It looks for the stop every
    10 ms: at ``serve_forever``'s default half second, each test waited that long at its end."""
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
