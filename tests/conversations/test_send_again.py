"""A reply that failed can be sent again, after the checks a new reply meets."""

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.config import Settings
from rapport.conversations.models import DeliveryStatus, Message
from rapport.db import Database
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from tests.conftest import auth
from tests.factories import World
from tests.standin import serving


class Receiver:
    """A reply webhook that refuses (400) until it is told to take replies."""

    def __init__(self) -> None:
        self.status = 400
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serving(r.server):
        yield r


def api_conversation(client: TestClient, world: World, url: str) -> tuple[str, str]:
    """An API inbox replying to ``url`` and a customer's conversation in it: their ids."""
    inbox = client.post(
        "/api/v1/inboxes",
        json={"name": "Shop", "channel": "api", "settings": {"webhook_url": url}},
        headers=auth(world.alice),
    ).json()
    conv = client.post(
        f"/api/v1/inboxes/{inbox['id']}/messages",
        json={"external_id": "again-1", "text": "hi", "from": {"email": "again@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]
    return inbox["id"], conv


def failed_reply(
    client: TestClient,
    world: World,
    url: str,
    database: Database,
    settings: Settings,
    *,
    html: str | None = None,
) -> tuple[str, str]:
    _, conv = api_conversation(client, world, url)
    reply = client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "hello", "html": html},
        headers=auth(world.bob),
    ).json()
    for _ in range(100):  # a live server's own worker may be the one to take the job
        Worker(database, settings).run_until_idle(max_jobs=50)
        got = client.get(
            f"/api/v1/conversations/{conv}/messages/{reply['id']}", headers=auth(world.bob)
        ).json()
        if got["status"] == "failed":
            break
        time.sleep(0.1)
    assert got["status"] == "failed" and got["error"] == "webhook answered 400"
    return conv, reply["id"]


def test_a_failed_reply_is_sent_again(
    client: TestClient, world: World, database: Database, settings: Settings, receiver: Receiver
) -> None:
    # A failed reply could only be written again by hand; its reason was a tooltip.
    conv, mid = failed_reply(client, world, receiver.url, database, settings)
    url = f"/api/v1/conversations/{conv}/messages/{mid}/retry"
    assert client.post(url, headers=auth(world.victor)).status_code == 403  # a viewer
    assert client.post(url, headers=auth(world.mallory)).status_code == 404  # elsewhere
    receiver.status = 200
    r = client.post(url, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["error"]) == ("queued", None)
    Worker(database, settings).run_until_idle(max_jobs=50)
    got = client.get(f"/api/v1/conversations/{conv}/messages/{mid}", headers=auth(world.bob))
    assert got.json()["status"] == "sent" and len(receiver.bodies) == 2
    # Only a reply that failed goes again.
    again = client.post(url, headers=auth(world.bob))
    assert again.status_code == 422
    assert again.json()["detail"] == "only a reply that failed can be sent again"


def test_a_reply_the_provider_took_and_then_failed_goes_whole(
    client: TestClient, world: World, database: Database, settings: Settings, receiver: Receiver
) -> None:
    conv, mid = failed_reply(client, world, receiver.url, database, settings)
    with database.session() as db:  # as a provider's report leaves one it had accepted
        row = db.get(Message, mid)
        assert row is not None
        row.external_id = "wamid.TAKEN"
        row.meta = {**row.meta, "parts_sent": {"text": "wamid.TAKEN"}, "keep": 1}
    receiver.status = 200
    r = client.post(f"/api/v1/conversations/{conv}/messages/{mid}/retry", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    with database.session() as db:
        row = db.get(Message, mid)
        assert row is not None and row.status == DeliveryStatus.queued
        assert row.external_id is None and "parts_sent" not in row.meta and row.meta["keep"] == 1
    Worker(database, settings).run_until_idle(max_jobs=50)
    assert len(receiver.bodies) == 2  # sent anew, not skipped as already accepted


def test_a_reply_whose_inbox_was_disabled_is_not_sent_again(
    client: TestClient, world: World, database: Database, settings: Settings, receiver: Receiver
) -> None:
    conv, mid = failed_reply(client, world, receiver.url, database, settings)
    client.patch(
        "/api/v1/inboxes/"
        + client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()["inbox_id"],
        json={"enabled": False},
        headers=auth(world.alice),
    )
    r = client.post(f"/api/v1/conversations/{conv}/messages/{mid}/retry", headers=auth(world.bob))
    assert r.status_code == 422
    assert "gone or disabled" in r.json()["detail"]
    assert len(receiver.bodies) == 1


def test_a_disabled_inbox_takes_no_reply_and_sends_none_already_queued(
    client: TestClient, world: World, database: Database, settings: Settings, receiver: Receiver
) -> None:
    # Switched off by an admin (its credentials revoked, say), an inbox still sent what was
    # queued through it and took new replies.
    receiver.status = 200
    inbox, conv = api_conversation(client, world, receiver.url)
    queued = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "hello"}, headers=auth(world.bob)
    ).json()
    off = client.patch(
        f"/api/v1/inboxes/{inbox}", json={"enabled": False}, headers=auth(world.alice)
    )
    assert off.status_code == 200, off.text
    Worker(database, settings).run_until_idle(max_jobs=50)
    got = client.get(
        f"/api/v1/conversations/{conv}/messages/{queued['id']}", headers=auth(world.bob)
    ).json()
    assert got["status"] == "failed" and got["error"] == "not sent: the inbox “Shop” is disabled"
    assert receiver.bodies == []
    r = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "again"}, headers=auth(world.bob)
    )
    assert r.status_code == 422
    assert r.json()["detail"].startswith("the inbox “Shop” is disabled")
    note = client.post(
        f"/api/v1/conversations/{conv}/notes", json={"text": "still noted"}, headers=auth(world.bob)
    )
    assert note.status_code == 201  # a private note goes nowhere
    # Switched on again, the failed reply goes on request.
    client.patch(f"/api/v1/inboxes/{inbox}", json={"enabled": True}, headers=auth(world.alice))
    url = f"/api/v1/conversations/{conv}/messages/{queued['id']}/retry"
    assert client.post(url, headers=auth(world.bob)).status_code == 200
    Worker(database, settings).run_until_idle(max_jobs=50)
    assert len(receiver.bodies) == 1


def test_retrying_a_dead_deliver_job_sends_the_reply(
    client: TestClient, world: World, database: Database, settings: Settings, receiver: Receiver
) -> None:
    conv, mid = failed_reply(client, world, receiver.url, database, settings)
    with database.session(write=False) as db:
        dead = db.scalars(
            select(Job).where(Job.name == "deliver", Job.state == JobState.dead)
        ).one()
    receiver.status = 200  # the provider is fixed; the admin retries the dead job
    r = client.post(f"/api/v1/jobs/{dead.id}/retry", headers=auth(world.alice))
    assert r.status_code == 200 and r.json()["state"] == "queued"
    Worker(database, settings).run_until_idle(max_jobs=50)
    with database.session(write=False) as db:
        assert db.get(Job, dead.id).state == JobState.done  # type: ignore[union-attr]
        msg = db.get(Message, mid)
    # The job succeeded and sent it (where it sent nothing and the message stayed failed).
    assert (msg.status, len(receiver.bodies)) == (DeliveryStatus.sent, 2)  # type: ignore[union-attr]


def test_a_dead_job_retried_after_its_reply_was_sent_again_sends_nothing_more(
    client: TestClient, world: World, database: Database, settings: Settings, receiver: Receiver
) -> None:
    conv, mid = failed_reply(client, world, receiver.url, database, settings)
    with database.session(write=False) as db:
        dead = db.scalars(
            select(Job).where(Job.name == "deliver", Job.state == JobState.dead)
        ).one()
    receiver.status = 200
    url = f"/api/v1/conversations/{conv}/messages/{mid}/retry"
    assert client.post(url, headers=auth(world.bob)).status_code == 200  # an agent
    r = client.post(f"/api/v1/jobs/{dead.id}/retry", headers=auth(world.alice))  # an admin
    assert r.status_code == 200 and r.json()["state"] == "done"
    Worker(database, settings).run_until_idle(max_jobs=50)
    with database.session(write=False) as db:
        assert db.get(Message, mid).status == DeliveryStatus.sent  # type: ignore[union-attr]
    assert len(receiver.bodies) == 2  # the failed try, then one send: never two
