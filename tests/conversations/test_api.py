"""Conversations over the API: filters, paging, replies, notes, assignment, status, labels."""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.conversations import service, views
from rapport.conversations.models import Conversation
from rapport.db import Database, utcnow
from rapport.jobs.models import Job
from tests.conftest import auth, write_lock_held
from tests.factories import World


def _post(client: TestClient, world: World, ext: str, email: str) -> dict:  # type: ignore[type-arg]
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": ext, "from": {"email": email}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_reply_is_queued_with_its_deliver_job(
    client: TestClient, world: World, database: Database
) -> None:
    conv = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "On it!"}, headers=auth(world.bob)
    )
    assert r.status_code == 201
    assert r.json()["status"] == "queued" and r.json()["direction"] == "out"
    with database.session(write=False) as db:
        jobs = list(db.scalars(select(Job).where(Job.name == "deliver")))
    assert [j.args for j in jobs] == [{"message_id": r.json()["id"]}]
    detail = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    assert detail["first_response_at"] is not None


def test_notes_are_private_and_never_delivered(
    client: TestClient, world: World, database: Database
) -> None:
    conv = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{conv}/notes",
        json={"text": "VIP customer"},
        headers=auth(world.bob),
    )
    assert r.json()["kind"] == "note"
    with database.session(write=False) as db:
        assert list(db.scalars(select(Job).where(Job.name == "deliver"))) == []


def test_filters_by_status_assignee_label_and_inbox(client: TestClient, world: World) -> None:
    a = _post(client, world, "f1", "f1@example.com")["conversation_id"]
    b = _post(client, world, "f2", "f2@example.com")["conversation_id"]
    bob = world.acme.users["bob"].id
    client.post(
        f"/api/v1/conversations/{a}/assign", json={"assignee_id": bob}, headers=auth(world.bob)
    )
    client.post(
        f"/api/v1/conversations/{b}/labels",
        json={"labels": ["Billing", "vip "]},
        headers=auth(world.bob),
    )
    client.post(
        f"/api/v1/conversations/{b}/status", json={"status": "pending"}, headers=auth(world.bob)
    )

    def ids(**params: str) -> set[str]:
        page = client.get("/api/v1/conversations", params=params, headers=auth(world.bob)).json()
        return {c["id"] for c in page["items"]}

    assert ids(assignee="me") == {a}
    assert a not in ids(assignee="none") and b in ids(assignee="none")
    assert ids(label="billing") == {b}
    assert ids(status="pending") == {b}
    assert {a, b} <= ids(inbox_id=world.acme.inbox.id)  # type: ignore[union-attr]
    labels = client.get(f"/api/v1/conversations/{b}", headers=auth(world.bob)).json()["labels"]
    assert labels == ["billing", "vip"]


def test_conversation_pages_do_not_repeat_or_skip(client: TestClient, world: World) -> None:
    for i in range(6):
        _post(client, world, f"pg{i}", f"pg{i}@example.com")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/conversations", params=params, headers=auth(world.bob)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 7


def test_assigning_to_someone_outside_the_workspace_is_not_found(
    client: TestClient, world: World
) -> None:
    conv = world.acme.opened.conversation.id
    mallory = world.globex.users["mallory"].id
    r = client.post(
        f"/api/v1/conversations/{conv}/assign",
        json={"assignee_id": mallory},
        headers=auth(world.bob),
    )
    assert r.status_code == 404
    victor = world.acme.users["victor"].id
    r = client.post(
        f"/api/v1/conversations/{conv}/assign",
        json={"assignee_id": victor},
        headers=auth(world.bob),
    )
    assert r.status_code == 422


def test_snoozing_needs_a_future_time(client: TestClient, world: World) -> None:
    conv = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "snoozed"}, headers=auth(world.bob)
    )
    assert r.status_code == 422
    until = (utcnow() + timedelta(hours=2)).isoformat()
    r = client.post(
        f"/api/v1/conversations/{conv}/status",
        json={"status": "snoozed", "snoozed_until": until},
        headers=auth(world.bob),
    )
    assert r.status_code == 200 and r.json()["status"] == "snoozed"


def test_a_snoozed_conversation_reopens_when_the_customer_writes(
    client: TestClient, world: World
) -> None:
    first = _post(client, world, "s1", "snooze@example.com")
    conv = first["conversation_id"]
    until = (utcnow() + timedelta(days=1)).isoformat()
    client.post(
        f"/api/v1/conversations/{conv}/status",
        json={"status": "snoozed", "snoozed_until": until},
        headers=auth(world.bob),
    )
    again = _post(client, world, "s2", "snooze@example.com")
    assert again["conversation_id"] == conv
    assert (
        client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()["status"]
        == "open"
    )


def test_status_and_assignment_changes_say_in_the_thread_what_changed_and_who_did_it(
    client: TestClient, world: World
) -> None:
    # The lines said "assigned" (to whom? by whom?) and "status: resolved".
    conv = world.acme.opened.conversation.id
    url = f"/api/v1/conversations/{conv}"
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice))
    assert team.status_code == 201, team.text
    until = datetime(2031, 1, 2, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    for token, path, body in [
        (world.bob, "status", {"status": "resolved"}),
        (world.alice, "status", {"status": "open"}),
        (world.bob, "status", {"status": "snoozed", "snoozed_until": until.isoformat()}),
        (world.bob, "status", {"status": "pending"}),
        (world.alice, "assign", {"assignee_id": bob}),
        (world.bob, "assign", {"assignee_id": bob, "team_id": team.json()["id"]}),
        (world.bob, "assign", {"assignee_id": None}),
        (world.alice, "assign", {"assignee_id": alice}),
        (world.bob, "priority", {"priority": "urgent"}),  # a priority changed said nothing
        (world.bob, "priority", {"priority": "urgent"}),  # the same again: no line
        (world.alice, "priority", {"priority": "none"}),
    ]:
        assert client.post(f"{url}/{path}", json=body, headers=auth(token)).status_code == 200
    detail = client.get(url, headers=auth(world.bob)).json()
    said = [m["text"] for m in detail["messages"] if m["kind"] == "activity"]
    assert said[-10:] == [
        "Resolved by Bob",
        "Reopened by Alice",
        "Snoozed until 2031-01-02 08:30 UTC by Bob",
        "Marked pending by Bob",
        "Assigned to Bob by Alice",
        "Moved to team Billing by Bob",  # Bob kept: what changed is said, not the result
        "Unassigned from Bob by Bob",
        "Alice took the conversation",
        "Priority set to urgent by Bob",
        "Priority cleared by Alice",
    ]


def test_unread_counts_follow_what_the_agent_has_read(client: TestClient, world: World) -> None:
    before = client.get("/api/v1/unread-counts", headers=auth(world.bob)).json()
    conv = _post(client, world, "u1", "unread@example.com")["conversation_id"]
    after = client.get("/api/v1/unread-counts", headers=auth(world.bob)).json()
    assert after["all"] == before["all"] + 1 and after["unassigned"] == before["unassigned"] + 1
    client.post(f"/api/v1/conversations/{conv}/read", headers=auth(world.bob))
    assert client.get("/api/v1/unread-counts", headers=auth(world.bob)).json() == before
    # Read for bob is still unread for alice.
    assert (
        client.get("/api/v1/unread-counts", headers=auth(world.alice)).json()["all"] == after["all"]
    )


def test_unread_counts_stop_at_their_limit(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "UNREAD_LIMIT", 3)
    convs = [
        _post(client, world, f"l{n}", f"limit{n}@example.com")["conversation_id"] for n in range(5)
    ]
    counts = client.get("/api/v1/unread-counts", headers=auth(world.bob)).json()
    assert counts["limit"] == 3 and counts["all"] == 3 and counts["unassigned"] == 3
    for conv in convs[:4]:
        client.post(f"/api/v1/conversations/{conv}/read", headers=auth(world.bob))
    # Below the limit again, the counts are exact (the fixtures' own conversation read too).
    first = world.acme.opened.conversation.id
    client.post(f"/api/v1/conversations/{first}/read", headers=auth(world.bob))
    counts = client.get("/api/v1/unread-counts", headers=auth(world.bob)).json()
    assert (counts["all"], counts["unassigned"], counts["mine"]) == (1, 1, 0)
    bob = world.acme.users["bob"].id
    client.post(
        f"/api/v1/conversations/{convs[4]}/assign",
        json={"assignee_id": bob},
        headers=auth(world.bob),
    )
    counts = client.get("/api/v1/unread-counts", headers=auth(world.bob)).json()
    assert (counts["all"], counts["unassigned"], counts["mine"]) == (1, 0, 1)


def test_the_list_gives_each_conversation_its_last_message(
    client: TestClient, world: World
) -> None:
    conv = _post(client, world, "lm1", "lm@example.com")["conversation_id"]
    client.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "On its way."},
        headers=auth(world.bob),
    ).raise_for_status()
    client.post(
        f"/api/v1/conversations/{conv}/notes", json={"text": "private"}, headers=auth(world.bob)
    ).raise_for_status()
    items = client.get("/api/v1/conversations", headers=auth(world.bob)).json()["items"]
    mine = next(i for i in items if i["id"] == conv)
    assert mine["last_message"] == {"text": "On its way.", "direction": "out", "kind": "message"}
    # Another workspace's list never carries it.
    theirs = client.get("/api/v1/conversations", headers=auth(world.mallory)).json()["items"]
    assert conv not in [i["id"] for i in theirs]


def test_the_same_labels_added_at_once_are_added_once_and_never_fail(
    client: TestClient, world: World
) -> None:
    # Two agents (or a retried call) adding a label at the same moment each get their
    # answer; the label is there once.
    conv = _post(client, world, "l1", "l1@example.com")["conversation_id"]
    url = f"/api/v1/conversations/{conv}/labels"
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(
                    url, json={"labels": ["vip", "billing"]}, headers=auth(world.bob)
                ),
                range(16),
            )
        )
    assert [r.status_code for r in answers] == [200] * 16, [r.text for r in answers]
    labels = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()["labels"]
    assert labels == ["billing", "vip"]


def test_the_team_changes_beside_an_agent_kept_who_is_no_longer_one(
    client: TestClient, world: World
) -> None:
    # The conversation page sends the agent it holds with each team change (the API sets
    # both at once): one made a viewer since (a resolved conversation keeps who handled it)
    # was checked again as if newly assigned, and the team could not change.
    conv = _post(client, world, "tm1", "tm1@example.com")["conversation_id"]
    other = _post(client, world, "tm2", "tm2@example.com")["conversation_id"]
    bob = world.acme.users["bob"].id
    team = client.post(
        "/api/v1/teams", json={"name": "Billing", "member_ids": []}, headers=auth(world.alice)
    ).json()
    client.post(
        f"/api/v1/conversations/{conv}/assign", json={"assignee_id": bob}, headers=auth(world.bob)
    ).raise_for_status()
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    client.patch(
        f"/api/v1/members/{bob}", json={"role": "viewer"}, headers=auth(world.alice)
    ).raise_for_status()
    r = client.post(
        f"/api/v1/conversations/{conv}/assign",
        json={"assignee_id": bob, "team_id": team["id"]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["assignee_id"], r.json()["team_id"]) == (bob, team["id"])
    thread = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.alice)).json()
    assert thread["messages"][-1]["kind"] == "activity"
    assert thread["messages"][-1]["text"] == "Moved to team Billing by Alice"
    # Given anew, a viewer is still refused.
    r = client.post(
        f"/api/v1/conversations/{other}/assign",
        json={"assignee_id": bob},
        headers=auth(world.alice),
    )
    assert r.status_code == 422


def test_assigning_keeps_what_is_left_out_and_the_line_says_what_changed(
    client: TestClient, world: World
) -> None:
    # Every field left out was cleared: an agent choosing a team while a colleague took the
    # conversation undid the colleague's assignment, and the lines said the result ("Bob
    # removing the team" read "Assigned to Carol by Bob").
    conv = _post(client, world, "keep1", "keep1@example.com")["conversation_id"]
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice))
    url = f"/api/v1/conversations/{conv}/assign"
    steps = [
        (world.alice, {"team_id": team.json()["id"]}, (None, team.json()["id"])),
        (world.bob, {"assignee_id": bob}, (bob, team.json()["id"])),  # the team kept
        (world.alice, {"team_id": None}, (bob, None)),  # the agent kept
        (world.alice, {"assignee_id": None}, (None, None)),
        (
            world.alice,
            {"assignee_id": alice, "team_id": team.json()["id"]},
            (alice, team.json()["id"]),
        ),
    ]
    for token, body, held in steps:
        r = client.post(url, json=body, headers=auth(token))
        assert r.status_code == 200, r.text
        assert (r.json()["assignee_id"], r.json()["team_id"]) == held
    detail = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    said = [m["text"] for m in detail["messages"] if m["kind"] == "activity"]
    assert said[-5:] == [
        "Moved to team Billing by Alice",
        "Bob took the conversation",
        "Removed from team Billing by Alice",
        "Unassigned from Bob by Alice",
        "Assigned to Alice in team Billing by Alice",
    ]


@pytest.mark.parametrize("path", ["one", "bulk"])
def test_a_field_left_out_keeps_what_a_colleague_committed_after_it_was_read(
    client: TestClient,
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    # The route read the conversation, then a colleague's team change committed, then the
    # route wrote back the team it had read: the colleague's change was undone, and the
    # answer, its event and its audit entry said the old team.
    conv = _post(client, world, f"race-{path}", f"race-{path}@example.com")["conversation_id"]
    bob = world.acme.users["bob"].id
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice))
    team_id = team.json()["id"]
    real_hold = views._held_afresh

    held_already: list[bool] = []

    def colleague_first(db, rows):  # type: ignore[no-untyped-def]
        if database.is_sqlite:
            # One writer: the request holds the write lock from its read on, so no colleague
            # can commit in between (what PostgreSQL's row lock and fresh read provide).
            held_already.append(write_lock_held(database))
        else:
            with database.session() as other:  # commits as it closes
                for conv in rows:
                    other.get(Conversation, conv.id).team_id = team_id
        real_hold(db, rows)

    monkeypatch.setattr(views, "_held_afresh", colleague_first)
    if path == "one":
        url, body = f"/api/v1/conversations/{conv}/assign", {"assignee_id": bob}
    else:
        url, body = (
            "/api/v1/conversations/bulk",
            {"ids": [conv], "action": "assign", "assignee_id": bob},
        )
    r = client.post(url, json=body, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    answered = r.json() if path == "one" else r.json()["items"][0]
    if database.is_sqlite:
        assert held_already == [True]
        assert answered["assignee_id"] == bob
        return
    assert (answered["assignee_id"], answered["team_id"]) == (bob, team_id)
    with database.session(write=False) as db:
        stored = db.get(Conversation, conv)
        assert stored is not None and (stored.assignee_id, stored.team_id) == (bob, team_id)
