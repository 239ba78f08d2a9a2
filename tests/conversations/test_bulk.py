"""Bulk actions: many conversations assigned, labelled or resolved in one request, each
change the single-conversation one (events, automation, audit), all or nothing per workspace."""

from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.db import Database
from rapport.jobs.models import Job
from rapport.privacy.models import AuditLog
from rapport.realtime.models import StreamEvent
from tests.conftest import auth
from tests.conversations.test_inbox_list import inbound
from tests.factories import World


def bulk(client: TestClient, token: str, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/conversations/bulk", json=body, headers=auth(token))


def _events(database: Database, world: World, kind: str) -> list[dict]:  # type: ignore[type-arg]
    with database.session(write=False) as db:
        return [
            e.payload
            for e in db.scalars(
                select(StreamEvent)
                .where(
                    StreamEvent.workspace_id == world.acme.workspace.id, StreamEvent.type == kind
                )
                .order_by(StreamEvent.id)
            )
        ]


def test_bulk_assign_notifies_emits_and_audits_each_conversation(
    client: TestClient, world: World, database: Database
) -> None:
    ids = [inbound(client, world, f"b{i}", f"b{i}@example.com") for i in range(3)]
    before = len(_events(database, world, "conversation.updated"))
    r = bulk(client, world.alice, ids=ids, action="assign", assignee_id=world.acme.users["bob"].id)
    assert r.status_code == 200, r.text
    assert [c["assignee_id"] for c in r.json()["items"]] == [world.acme.users["bob"].id] * 3
    updated = _events(database, world, "conversation.updated")[before:]
    assert {e["id"] for e in updated} == set(ids)
    bob_notes = [
        e
        for e in _events(database, world, "notification.created")
        if e["user_id"] == world.acme.users["bob"].id
    ]
    assert {n["conversation_id"] for n in bob_notes} >= set(ids)
    with database.session(write=False) as db:
        audited = db.scalars(
            select(AuditLog.target_id).where(AuditLog.action == "conversation.bulk_assign")
        ).all()
    assert sorted(audited) == sorted(ids)


def test_bulk_team_assignment_keeps_the_agent(client: TestClient, world: World) -> None:
    ids = [inbound(client, world, f"t{i}", f"t{i}@example.com") for i in range(2)]
    bob = world.acme.users["bob"].id
    bulk(client, world.bob, ids=ids[:1], action="assign", assignee_id=bob)
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice)).json()
    r = bulk(client, world.bob, ids=ids, action="assign", team_id=team["id"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [c["team_id"] for c in items] == [team["id"]] * 2
    assert [c["assignee_id"] for c in items] == [bob, None]


def test_bulk_label_and_resolve(client: TestClient, world: World, database: Database) -> None:
    ids = [inbound(client, world, f"l{i}", f"l{i}@example.com") for i in range(2)]
    r = bulk(client, world.bob, ids=ids, action="label", labels=["  VIP "])
    assert [c["labels"] for c in r.json()["items"]] == [["vip"], ["vip"]]
    assert bulk(client, world.bob, ids=ids, action="label", labels=[]).status_code == 422
    r = bulk(client, world.bob, ids=ids, action="resolve")
    assert [c["status"] for c in r.json()["items"]] == ["resolved", "resolved"]
    for cid in ids:
        thread = client.get(f"/api/v1/conversations/{cid}", headers=auth(world.bob)).json()
        assert "Resolved by Bob" in [m["text"] for m in thread["messages"]]


def test_bulk_resolve_triggers_the_status_changed_rules(
    client: TestClient, world: World, database: Database
) -> None:
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "closing",
            "event": "conversation.status_changed",
            "actions": [{"type": "add_label", "value": "closed"}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    ids = [inbound(client, world, f"r{i}", f"r{i}@example.com") for i in range(2)]
    bulk(client, world.bob, ids=ids, action="resolve")
    with database.session(write=False) as db:
        jobs = [
            j
            for j in db.scalars(select(Job).where(Job.name == "automation"))
            if j.args.get("conversation_id") in ids
        ]
    assert sorted(j.args["conversation_id"] for j in jobs) == sorted(ids)
    assert {j.args["event"] for j in jobs} == {"conversation.status_changed"}


def test_bulk_is_all_or_nothing_and_blind_to_other_workspaces(
    client: TestClient, world: World
) -> None:
    mine = inbound(client, world, "m1", "m1@example.com")
    theirs = world.globex.opened.conversation.id
    r = bulk(client, world.bob, ids=[mine, theirs], action="resolve")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    mine_now = client.get(f"/api/v1/conversations/{mine}", headers=auth(world.bob)).json()
    assert mine_now["status"] == "open"
    # mallory cannot touch Acme's conversation either.
    assert bulk(client, world.mallory, ids=[mine], action="resolve").status_code == 404


def test_viewers_cannot_act_in_bulk(client: TestClient, world: World) -> None:
    mine = inbound(client, world, "v1", "v1@example.com")
    assert bulk(client, world.victor, ids=[mine], action="resolve").status_code == 403


def test_a_bulk_request_is_bounded(client: TestClient, world: World) -> None:
    r = bulk(client, world.bob, ids=["x"] * 101, action="resolve")
    assert r.status_code == 422
    assert bulk(client, world.bob, ids=[], action="resolve").status_code == 422
