"""``GET /api/v1/events``: the events of the stream for a client that cannot hold it open."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from rapport.db import Database, utcnow
from rapport.realtime import service
from rapport.realtime.models import StreamEvent
from tests.conftest import auth, postgresql_only
from tests.factories import World
from tests.realtime.test_stream import post


def poll(
    client: TestClient,
    token: str,
    after: int | None = None,
    pending: list[int] | None = None,
    *,
    stragglers: bool = False,
) -> dict:  # type: ignore[type-arg]
    params: dict[str, str | int] = {} if after is None else {"after": after}
    if pending is not None:
        params["pending"] = ",".join(map(str, pending))
    if stragglers:
        params["stragglers"] = 1
    r = client.get("/api/v1/events", params=params, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def then(client: TestClient, token: str, page: dict) -> dict:  # type: ignore[type-arg]
    """The next poll, as the page makes it: from the last one's cursor, naming its pending."""
    return poll(client, token, page["cursor"], page["pending"])


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
    first = then(client, world.bob, start)
    created = [e for e in first["events"] if e["type"] == "message.created"]
    assert [e["payload"]["id"] for e in created] == [stored["id"]]
    assert created[0]["payload"]["text"] == "is anyone there?"
    assert all(e["id"] > start["cursor"] for e in first["events"])
    # Recent: the cursor stays, so the next poll brings them again (handled once by id).
    assert first["cursor"] == start["cursor"]
    assert then(client, world.bob, first)["events"] == first["events"]
    settle(database)
    later = then(client, world.bob, first)
    assert [e["id"] for e in later["events"]] == [e["id"] for e in first["events"]]
    assert later["cursor"] == first["events"][-1]["id"]
    assert then(client, world.bob, later)["events"] == []


def test_an_event_that_commits_after_a_later_one_still_comes_in_a_poll(
    client: TestClient, world: World, database: Database
) -> None:
    # Ids are allocated at insert: on PostgreSQL id 10 can commit after id 11. A poll that
    # saw 11 must not move its cursor past 10 before 10 can have committed.
    ws_id = world.acme.workspace.id
    post(client, world, "poll-s")
    settle(database)
    start = poll(client, world.bob)
    last = start["cursor"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
    seen = then(client, world.bob, start)
    assert [e["type"] for e in seen["events"]] == ["test.early"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 1, workspace_id=ws_id, type="test.late", payload={}))
    again = then(client, world.bob, seen)
    assert [e["type"] for e in again["events"]] == ["test.late", "test.early"]


def test_a_poll_carries_only_the_callers_workspace_and_own_notifications(
    client: TestClient, world: World, database: Database
) -> None:
    bob_from, mallory_from = poll(client, world.bob), poll(client, world.mallory)
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
    bob = then(client, world.bob, bob_from)["events"]
    assert [(e["type"], e["payload"].get("text")) for e in bob] == [
        ("notification.created", "for bob")
    ]
    mallory = then(client, world.mallory, mallory_from)["events"]
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
    start = poll(client, world.bob)
    for n in range(4):
        post(client, world, f"burst-{n}")
    monkeypatch.setattr(service, "PAGE", 3)
    got: list[int] = []
    page = then(client, world.bob, start)
    while True:
        got += [e["id"] for e in page["events"]]
        if not page["more"]:
            break
        page = then(client, world.bob, page)
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
    assert poll(client, world.bob, ids[0], [])["reset"] is True
    assert poll(client, world.bob, ids[-1] - 1, [])["events"][0]["id"] == ids[-1]


def test_a_poll_names_the_ids_still_pending_and_the_next_brings_their_late_events(
    client: TestClient, world: World, database: Database
) -> None:
    # The cursor moved past an event once it was POLL_SETTLE_SECONDS old; one whose id was
    # taken before and that committed later still (on PostgreSQL: its transaction waited)
    # lay behind the cursor, and no poll ever returned it.
    ws_id = world.acme.workspace.id
    post(client, world, "poll-p")
    settle(database)
    start = poll(client, world.bob)
    last = start["cursor"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
    settle(database)  # long since: the cursor moves past it
    seen = then(client, world.bob, start)
    assert [e["type"] for e in seen["events"]] == ["test.early"]
    assert seen["cursor"] == last + 2
    assert last + 1 in seen["pending"] and last + 2 not in seen["pending"]
    quiet = then(client, world.bob, seen)
    assert quiet["events"] == [] and last + 1 in quiet["pending"]
    with database.session() as db:  # it commits at last
        db.add(StreamEvent(id=last + 1, workspace_id=ws_id, type="test.late", payload={}))
    settle(database)
    late = then(client, world.bob, quiet)
    assert [e["type"] for e in late["events"]] == ["test.late"]
    assert late["cursor"] == last + 2 and last + 1 not in late["pending"]
    assert then(client, world.bob, late)["events"] == []


def test_a_page_that_polls_gets_the_events_pending_as_it_rendered(
    client: TestClient, world: World, database: Database
) -> None:
    # The page names the ids pending as it rendered; its socket was sent their events, its
    # polls were not: a page behind a proxy that drops WebSockets lost them for good.
    import re

    from sqlalchemy import text

    from tests.factories import PASSWORD

    ws_id = world.acme.workspace.id
    post(client, world, "render-p")
    settle(database)
    last = poll(client, world.bob)["cursor"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
        if not database.is_sqlite:  # the ids given by hand, as the sequence had given them
            db.execute(
                text("SELECT setval(pg_get_serial_sequence('stream_events', 'id'), :n)"),
                {"n": last + 2},
            )
    settle(database)
    client.post("/api/v1/auth/login", json={"email": "bob@acme.test", "password": PASSWORD})
    page = client.get("/app/inbox").text
    client.cookies.clear()
    rendered = int(re.search(r'data-last-event-id="(\d+)"', page)[1])  # type: ignore[index]
    named = re.search(r'data-pending-event-ids="([\d,]*)"', page)[1]  # type: ignore[index]
    assert rendered == last + 2 and str(last + 1) in named.split(",")
    with database.session() as db:  # committed after the render
        db.add(StreamEvent(id=last + 1, workspace_id=ws_id, type="test.late", payload={}))
    settle(database)
    first = poll(client, world.bob, rendered, [int(i) for i in named.split(",")])
    assert [e["type"] for e in first["events"]] == ["test.late"]  # what the page shows: not
    assert last + 1 not in first["pending"]


def test_a_poll_asking_for_stragglers_gets_the_recent_events_at_or_below_its_cursor(
    client: TestClient, world: World, database: Database
) -> None:
    # A page whose socket closed polls from the socket's last event, knowing no pending ids:
    # as a socket's reconnect, it is sent the recent events at or below it (stragglers).
    ws_id = world.acme.workspace.id
    post(client, world, "poll-r")
    last = poll(client, world.bob)["cursor"]
    with database.session() as db:
        db.add(StreamEvent(id=last + 2, workspace_id=ws_id, type="test.early", payload={}))
        db.add(StreamEvent(id=last + 1, workspace_id=ws_id, type="test.late", payload={}))
    types = [e["type"] for e in poll(client, world.bob, last + 2, stragglers=True)["events"]]
    assert "test.late" in types and "test.early" in types
    # Naming none pending, or nothing at all (an API client polling as it always did), it
    # gets only what follows its cursor: what it was given before is not given again.
    assert poll(client, world.bob, last + 2, [])["events"] == []
    assert poll(client, world.bob, last + 2)["events"] == []


@pytest.mark.parametrize(
    "pending", ["x", "1,,2", "1,-2", "9223372036854775808", ",".join(["1"] * 201)]
)
def test_pending_ids_that_are_no_ids_are_a_problem(
    client: TestClient, world: World, pending: str
) -> None:
    r = client.get(
        "/api/v1/events", params={"after": 1, "pending": pending}, headers=auth(world.bob)
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@postgresql_only
def test_two_transactions_that_commit_out_of_id_order_both_reach_a_polling_page(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One transaction takes an event id and stays open; another takes the next id and
    # commits. The polls see the later one, their cursor moves past it once it has settled;
    # then the first commits. A poll from that cursor that does not name its id never
    # returns it.
    from sqlalchemy import insert

    from rapport.realtime.service import emit

    ws_id = world.acme.workspace.id
    monkeypatch.setattr(service, "POLL_SETTLE_SECONDS", 0)  # as if the polls went on a while
    start = poll(client, world.bob)
    slow = database.engine.connect()
    try:
        tx = slow.begin()
        late_id = slow.execute(
            insert(StreamEvent)
            .values(workspace_id=ws_id, type="test.late", payload={}, created_at=utcnow())
            .returning(StreamEvent.id)
        ).scalar_one()
        with database.session() as db:
            emit(db, workspace_id=ws_id, type="test.early", payload={})
        seen = then(client, world.bob, start)
        assert [e["type"] for e in seen["events"]] == ["test.early"]
        assert seen["cursor"] > late_id and late_id in seen["pending"]
        meanwhile = then(client, world.bob, seen)
        assert meanwhile["events"] == [] and late_id in meanwhile["pending"]
        tx.commit()
    finally:
        slow.close()
    after = then(client, world.bob, meanwhile)
    assert [(e["id"], e["type"]) for e in after["events"]] == [(late_id, "test.late")]
    assert late_id not in after["pending"]


def test_a_poll_says_who_is_viewing_and_typing_once(client: TestClient, world: World) -> None:
    # A page that polls heard nothing of what is said and never stored: no collision notice
    # behind a proxy that drops WebSockets.
    import time

    conv = world.acme.opened.conversation.id
    start = poll(client, world.bob)
    for said in ("viewing", "typing"):
        r = client.post(f"/api/v1/conversations/{conv}/{said}", headers=auth(world.alice))
        assert r.status_code == 204
    page = then(client, world.bob, start)
    for _ in range(50):  # heard on the server's bus a moment later
        if len(page["said"]) == 2:
            break
        time.sleep(0.1)
        page = then(client, world.bob, start)
    assert [(e["type"], e["payload"]["user_id"]) for e in page["said"]] == [
        ("agent.viewing", world.acme.users["alice"].id),
        ("agent.typing", world.acme.users["alice"].id),
    ]
    assert page["said"][0]["payload"]["conversation_id"] == conv
    params = {"after": page["cursor"], "said_after": page["said_at"]}
    again = client.get("/api/v1/events", params=params, headers=auth(world.bob)).json()
    assert again["said"] == []
    # Another workspace hears none of it.
    assert poll(client, world.mallory, 0, [])["said"] == []
