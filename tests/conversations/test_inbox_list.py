"""The inbox list: filters (status, channel, priority, SLA state, dates) and sorts
(newest, oldest waiting, SLA due first), each paging with a cursor and scoped to the workspace."""

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from rapport.conversations.models import Conversation, ConversationSla, SlaState
from rapport.db import Database, utcnow
from tests.conftest import auth
from tests.factories import World


def inbound(client: TestClient, world: World, ext: str, email: str, inbox: str = "") -> str:
    r = client.post(
        f"/api/v1/inboxes/{inbox or world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": f"hello {ext}", "from": {"email": email}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def listed(client: TestClient, world: World, **params: str) -> list[str]:
    r = client.get("/api/v1/conversations", params=params, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()["items"]]


def all_pages(client: TestClient, world: World, **params: str) -> list[str]:
    out: list[str] = []
    cursor = ""
    while True:
        q = {**params, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/conversations", params=q, headers=auth(world.bob)).json()
        out += [c["id"] for c in page["items"]]
        if not page["next_cursor"]:
            return out
        cursor = page["next_cursor"]


def test_filters_by_status_priority_and_channel(client: TestClient, world: World) -> None:
    a = inbound(client, world, "f1", "f1@example.com")
    b = inbound(client, world, "f2", "f2@example.com")
    client.post(
        f"/api/v1/conversations/{a}/priority", json={"priority": "urgent"}, headers=auth(world.bob)
    )
    client.post(
        f"/api/v1/conversations/{b}/status", json={"status": "resolved"}, headers=auth(world.bob)
    )
    assert listed(client, world, priority="urgent") == [a]
    assert b in listed(client, world, status="resolved")
    assert a not in listed(client, world, status="resolved")
    mail = client.post(
        "/api/v1/inboxes",
        json={"name": "Email", "channel": "email", "settings": {"address": "help@acme.test"}},
        headers=auth(world.alice),
    ).json()
    assert listed(client, world, channel="email") == []
    assert set(listed(client, world, channel="api")) >= {a, b}
    assert mail["channel"] == "email"


def test_the_label_filter_finds_a_label_however_it_is_typed(
    client: TestClient, world: World
) -> None:
    # Labels are kept trimmed and lower-cased, the filter compared them as typed: ?label=Billing
    # found nothing.
    billed = inbound(client, world, "l1", "l1@example.com")
    inbound(client, world, "l2", "l2@example.com")
    r = client.post(
        f"/api/v1/conversations/{billed}/labels",
        json={"labels": ["Billing"]},
        headers=auth(world.bob),
    )
    assert r.json() == ["billing"]
    for typed in ("Billing", " BILLING ", "billing"):
        assert listed(client, world, label=typed) == [billed]


def test_filters_by_activity_dates(client: TestClient, world: World, database: Database) -> None:
    old = inbound(client, world, "d1", "d1@example.com")
    new = inbound(client, world, "d2", "d2@example.com")
    long_ago = utcnow() - timedelta(days=40)
    with database.session() as db:
        db.execute(
            update(Conversation)
            .where(Conversation.id == old)
            .values(last_activity_at=long_ago, created_at=long_ago)
        )
    since = (utcnow() - timedelta(days=1)).isoformat()
    assert new in listed(client, world, active_from=since)
    assert old not in listed(client, world, active_from=since)
    until = (utcnow() - timedelta(days=30)).isoformat()
    assert listed(client, world, active_until=until) == [old]


def test_oldest_waiting_lists_unanswered_conversations_longest_wait_first(
    client: TestClient, world: World, database: Database
) -> None:
    first = inbound(client, world, "w1", "w1@example.com")
    second = inbound(client, world, "w2", "w2@example.com")
    answered = inbound(client, world, "w3", "w3@example.com")
    third = inbound(client, world, "w4", "w4@example.com")
    now = utcnow()
    with database.session() as db:
        for i, cid in enumerate((first, second, third)):
            db.execute(
                update(Conversation)
                .where(Conversation.id == cid)
                .values(waiting_since=now - timedelta(hours=10 - i))
            )
    r = client.post(
        f"/api/v1/conversations/{answered}/messages",
        json={"text": "on it"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201
    # A second customer message does not reset the wait: it counts from the first unanswered.
    inbound(client, world, "w1b", "w1@example.com")
    waiting = all_pages(client, world, sort="waiting")
    assert waiting[:3] == [first, second, third]
    assert answered not in waiting
    # The newest-first order still lists everyone, most recent activity first.
    assert all_pages(client, world)[0] == first


def test_sla_due_first_and_the_sla_state_filter(
    client: TestClient, world: World, database: Database
) -> None:
    r = client.post(
        "/api/v1/sla-policies",
        json={"name": "Std", "first_response_minutes": 60},
        headers=auth(world.alice),
    )
    assert r.status_code == 201
    ids = [inbound(client, world, f"s{i}", f"s{i}@example.com") for i in range(3)]
    now = utcnow()
    with database.session() as db:
        dues = {ids[0]: 30, ids[1]: 5, ids[2]: 90}
        for cid, minutes in dues.items():
            db.execute(
                update(ConversationSla)
                .where(ConversationSla.conversation_id == cid)
                .values(
                    next_due_at=now + timedelta(minutes=minutes),
                    state=SlaState.breached if cid == ids[2] else SlaState.ok,
                )
            )
    due = all_pages(client, world, sort="sla_due")
    assert due == [ids[1], ids[0], ids[2]]
    assert listed(client, world, sla_state="breached") == [ids[2]]
    assert set(listed(client, world, sla_state="ok")) == {ids[0], ids[1]}


def test_the_list_never_shows_another_workspaces_conversations(
    client: TestClient, world: World
) -> None:
    theirs = world.globex.opened.conversation.id
    for params in ({}, {"sort": "waiting"}, {"sort": "sla_due"}, {"channel": "api"}):
        r = client.get("/api/v1/conversations", params=params, headers=auth(world.bob))
        assert theirs not in [c["id"] for c in r.json()["items"]]


def test_unknown_sorts_and_filters_are_refused(client: TestClient, world: World) -> None:
    for params in ({"sort": "random"}, {"sla_state": "late"}, {"priority": "meh"}):
        r = client.get("/api/v1/conversations", params=params, headers=auth(world.bob))
        assert r.status_code == 422


def test_activity_dates_without_a_utc_equivalent_are_refused(
    client: TestClient, world: World
) -> None:
    # Converting these to UTC overflows the calendar: an OverflowError, answered with a 500.
    for moment in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        for bound in ("active_from", "active_until"):
            r = client.get("/api/v1/conversations", params={bound: moment}, headers=auth(world.bob))
            assert r.status_code == 422, r.text
            assert r.headers["content-type"] == "application/problem+json"
    # The calendar's own ends, and a time without an offset (UTC), are fine.
    assert listed(client, world, active_from="0001-01-01T00:00:00Z") != []
    assert listed(client, world, active_until="9999-12-31T23:59:59") != []
