"""The live server fixture keeps its settings to itself."""

import threading

from fastapi.testclient import TestClient

from rapport.config import Settings
from tests.web.conftest import LiveServer


def test_a_live_server_runs_the_only_worker_beside_a_client(
    live_server: LiveServer, client: TestClient, settings: Settings
) -> None:
    # It set worker_in_process on the test's settings: the client's app, made after,
    # started a second worker (and ingest writer and checkpointer) in the same process.
    workers = [t for t in threading.enumerate() if t.name == "rapport-worker" and t.is_alive()]
    assert len(workers) == 1
    assert live_server.settings.worker_in_process and not settings.worker_in_process
    assert client.app.state.settings.public_url == "http://testserver"  # type: ignore[attr-defined]
    assert live_server.http.get("/healthz").text == "ok"
