"""``GET /api/v1/events``: the events of the stream for a client that cannot hold it open."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from rapport.db import Database, utcnow
from rapport.realtime import service
from rapport.realtime.models import StreamEvent
from tests.conftest import auth
from tests.factories import World
from tests.realtime.test_stream import post


def poll(client: TestClient, token: str, after: int | None = None) -> dict:  # type: ignore[type-arg]
    params = {} if after is None else {"after": after}
    r = client.get("/api/v1/events", params=params, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def settle(database: Database) -> None:
    """As if every event had been stored longer ago than a poll waits for stragglers."""
    with database.session() as db:
        db.execute(
            update(StreamEvent).values(
                created_at=utcnow() - timedelta(seconds=service.POLL_SETTLE_SECONDS + 1)
            )
        )


def test_a_poll_repeats_recent_events_and_moves_past_them_once_they_settle(
    client: TestClient, world: World, database: Database
) -> None:
    start = poll(client, world.bob)
    assert start["events"] == [] and start["more"] is False and start["reset"] is False
    stored = post(client, world, "poll-1", "is anyone there?")
    first = poll(client, world.bob, start["cursor"])
    created = [e for e in first["events"] if e["type"] == "message.created"]
    assert [e["payload"]["id"] for e in created] == [stored["id"]]
    assert created[0]["payload"]["text"] == "is anyone there?"
    assert all(e["id"] > start["cursor"] for e in first["events"])
    # Recent: the cursor stays, so the next poll brings them again (handled once by id).
    assert first["cursor"] == start["cursor"]
    assert poll(client, world.bob, first["cursor"])["events"] == first["events"]
    settle(database)
    later = poll(client, world.bob, first["cursor"])
    assert [e["id"] for e in later["events"]] == [e["id"] for e in first["events"]]
    assert later["cursor"] == first["events"][-1]["id"]
    assert poll(client, world.bob, later["cursor"])["events"] == []


def test_an_event_that_commits_after_a_later_one_still_comes_in_a_poll(
    client: TestClient, world: World, database: Database
) -> None:
    # Ids are allocated at insert: on PostgreSQL id 10 can commit after id 11. A poll that
    # saw 11 must not move its cursor past 10 before 10 can have committed.
    ws_id = world.acme.workspace.id
    post(client, world, "poll-s")
    settle(database)
    last = poll(client, world.bob)["cursor"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
    seen = poll(client, world.bob, last)
    assert [e["type"] for e in seen["events"]] == ["test.early"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 1, workspace_id=ws_id, type="test.late", payload={}))
    again = poll(client, world.bob, seen["cursor"])
    assert [e["type"] for e in again["events"]] == ["test.late", "test.early"]


def test_a_poll_carries_only_the_callers_workspace_and_own_notifications(
    client: TestClient, world: World, database: Database
) -> None:
    bob_from, mallory_from = (
        poll(client, world.bob)["cursor"],
        poll(client, world.mallory)["cursor"],
    )
    with database.session() as db:
        for user in ("bob", "alice"):
            db.add(
                StreamEvent(
                    workspace_id=world.acme.workspace.id,
                    type="notification.created",
                    payload={"user_id": world.acme.users[user].id, "text": f"for {user}"},
                )
            )
        db.add(StreamEvent(workspace_id=world.globex.workspace.id, type="test.there", payload={}))
    bob = poll(client, world.bob, bob_from)["events"]
    assert [(e["type"], e["payload"].get("text")) for e in bob] == [
        ("notification.created", "for bob")
    ]
    mallory = poll(client, world.mallory, mallory_from)["events"]
    assert [e["type"] for e in mallory] == ["test.there"]


def test_a_viewer_polls_and_a_stranger_is_refused(client: TestClient, world: World) -> None:
    assert "cursor" in poll(client, world.victor)
    r = client.get("/api/v1/events", params={"after": 0})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.get("/api/v1/events", params={"after": -1}, headers=auth(world.bob))
    assert r.status_code == 422


def test_a_full_page_is_followed_at_once_even_when_none_of_it_has_settled(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = poll(client, world.bob)["cursor"]
    for n in range(4):
        post(client, world, f"burst-{n}")
    monkeypatch.setattr(service, "PAGE", 3)
    got: list[int] = []
    page = poll(client, world.bob, start)
    while True:
        got += [e["id"] for e in page["events"]]
        if not page["more"]:
            break
        page = poll(client, world.bob, page["cursor"])
    ids = sorted(set(got))
    assert len(ids) >= 4 and ids == sorted(ids)
    assert page["events"], "the last page reached the newest events"


def test_a_poll_from_an_event_pruned_since_is_told_to_reload(
    client: TestClient, world: World, database: Database
) -> None:
    for n in range(3):
        post(client, world, f"gone-{n}")
    with database.session() as db:
        ids = sorted(db.scalars(select(StreamEvent.id)))
        db.execute(delete(StreamEvent).where(StreamEvent.id < ids[-1]))  # as pruning does
    assert poll(client, world.bob, ids[0])["reset"] is True
    assert poll(client, world.bob, ids[-1] - 1)["events"][0]["id"] == ids[-1]
