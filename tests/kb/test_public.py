"""The public help center as a deployment serves it: its limits shared by every process."""

import subprocess
import sys
import uuid

import pytest
from fastapi.testclient import TestClient

from rapport import bus
from rapport.app import create_app
from rapport.config import Settings
from rapport.db import Database
from tests.conftest import REDIS_URL, auth
from tests.factories import World
from tests.kb.test_kb import setup_center

ARTICLE = "/help/acme/articles/refunds-and-returns"

# Another `rapport serve` process on the same database and Redis: one reader (``address``)
# reads the article once and votes as often as the budget allows.
_OTHER_PROCESS = """
import sys
from fastapi.testclient import TestClient
from rapport import bus
from rapport.app import create_app
from rapport.config import Settings

url, redis_url, secret, address, votes = sys.argv[1:]
settings = Settings(
    database_url=url, redis_url=redis_url, secret_key=secret, worker_in_process=False,
    public_url="http://testserver", log_json=False,
)
with TestClient(create_app(settings), client=(address, 50000)) as reader:
    assert reader.get("/help/acme/articles/refunds-and-returns").status_code == 200
    for _ in range(int(votes)):
        r = reader.post(
            "/help/acme/articles/refunds-and-returns/feedback",
            data={"helpful": "yes"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
bus.set_bus(bus.LocalBus())
"""


@pytest.mark.redis
def test_with_redis_two_processes_share_one_readers_view_and_vote_budget(
    settings: Settings, database: Database, world: World
) -> None:
    # Each process counted in its own memory: behind a balancer a reader's reload counted a
    # view at every process, and an address had the vote budget once per process.
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    app = create_app(settings.model_copy(update={"redis_url": REDIS_URL}), database=database)
    address = f"reader-{uuid.uuid4().hex}"  # Redis outlives the test: a budget of its own
    try:
        with TestClient(app) as client:
            ids = setup_center(client, world)
            votes = app.state.help_limits.votes.limit
            other = subprocess.run(
                [sys.executable, "-c", _OTHER_PROCESS]
                + [settings.database_url, REDIS_URL, settings.secret_key.get_secret_value()]
                + [address, str(votes)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert other.returncode == 0, other.stderr
            with TestClient(app, client=(address, 50000)) as reader:
                assert reader.get(ARTICLE).status_code == 200
                # The reader changes their mind past the budget the other process spent.
                reader.post(f"{ARTICLE}/feedback", data={"helpful": "no"})
            article = client.get(
                f"/api/v1/kb/articles/{ids['Refunds and returns']}", headers=auth(world.bob)
            ).json()
    finally:
        bus.set_bus(bus.LocalBus())
    assert article["views"] == 1
    assert (article["helpful"], article["not_helpful"]) == (1, 0)
