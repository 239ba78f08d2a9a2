"""Routing, SLAs and rules where they met each other: what frees room wakes the queue, a
conversation is given once, a breach is told once, a calendar counts an hour once, and a
rule's regex cannot stall the worker."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.auth.models import Membership
from rapport.config import Settings
from rapport.conversations import sla
from rapport.db import Database, utcnow
from rapport.jobs.worker import Worker
from rapport.problems import Invalid
from tests.conftest import auth, postgresql_only
from tests.conversations.test_routing import assignee, setup_team, write
from tests.factories import World


def _one_slot_for_bob(database: Database, ids: dict[str, str]) -> None:
    with database.session() as db:
        db.execute(update(Membership).where(Membership.user_id == ids["bob"]).values(capacity=1))
        db.execute(
            update(Membership).where(Membership.user_id == ids["carol"]).values(availability="busy")
        )


def team(client: TestClient, world: World, name: str, members: list[str]) -> str:
    """A new team of these members; its id."""
    r = client.post(
        "/api/v1/teams", json={"name": name, "member_ids": members}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_snoozing_a_conversation_frees_room_and_the_queue_moves(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Load counts open and pending conversations only: a snoozed one frees a place, as a
    # resolved one does; the waiting conversation should be handed out.
    ids = setup_team(client, world, database)
    _one_slot_for_bob(database, ids)
    worker = Worker(database, settings)
    first = write(client, world, ids["inbox"], 1)
    worker.run_until_idle()
    second = write(client, world, ids["inbox"], 2)
    worker.run_until_idle()
    assert (assignee(client, world, first), assignee(client, world, second)) == (ids["bob"], None)
    until = (utcnow() + timedelta(days=1)).isoformat()
    r = client.post(
        f"/api/v1/conversations/{first}/status",
        json={"status": "snoozed", "snoozed_until": until},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    worker.run_until_idle()
    assert assignee(client, world, second) == ids["bob"]


def test_a_waiting_conversation_moved_to_a_team_with_room_is_handed_out(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    # Team "Nobody" has only dave (offline); team "Billing" has bob (online, room).
    nobody = team(client, world, "Nobody", [ids["dave"]])
    billing = team(client, world, "Billing", [ids["bob"]])
    r = client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"team_id": nobody}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    conv = write(client, world, ids["inbox"], 1)
    worker.run_until_idle()
    assert assignee(client, world, conv) is None  # its team has no one online
    r = client.post(
        f"/api/v1/conversations/{conv}/assign",
        json={"team_id": billing},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    worker.run_until_idle()
    assert assignee(client, world, conv) == ids["bob"]


def test_an_agent_added_to_a_team_takes_its_waiting_conversations(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    support = team(client, world, "Support", [ids["dave"]])
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"team_id": support}, headers=auth(world.alice)
    )
    conv = write(client, world, ids["inbox"], 1)
    worker.run_until_idle()
    assert assignee(client, world, conv) is None
    r = client.patch(
        f"/api/v1/teams/{support}",
        json={"member_ids": [ids["dave"], ids["bob"]]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    worker.run_until_idle()
    assert assignee(client, world, conv) == ids["bob"]


def test_an_inbox_switched_to_auto_assign_routes_its_waiting_conversations(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": False}, headers=auth(world.alice)
    )
    conv = write(client, world, ids["inbox"], 1)
    worker.run_until_idle()
    assert assignee(client, world, conv) is None
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": True}, headers=auth(world.alice)
    )
    worker.run_until_idle()
    assert assignee(client, world, conv) in (ids["bob"], ids["carol"])


def test_overlapping_opening_spans_are_refused() -> None:
    # 09:00-13:00 and 12:00-18:00 counted 12:00-13:00 twice: ten hours open, not nine, and
    # due times came early (a 5-hour target from 09:00 fell due at 13:00, not 14:00).
    with pytest.raises(Invalid, match="overlap"):
        sla.parse("UTC", {"mon": [["09:00", "13:00"], ["12:00", "18:00"]]}, [])
    with pytest.raises(Invalid, match="overlap"):
        sla.parse("UTC", {"mon": [["12:00", "24:00"], ["13:00", "14:00"]]}, [])
    for span in (["09:00", "13:00", "18:00"], ["09:00:00.5", "13:00"], ["9:00", "13:00"]):
        with pytest.raises(Invalid, match="is not an opening and a closing time"):
            sla.parse("UTC", {"mon": [span]}, [])  # a part of it was read, the rest ignored
    touching = sla.parse("UTC", {"mon": [["09:00", "13:00"], ["13:00", "18:00"]]}, [])
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert sla.business_minutes_between(monday, monday + timedelta(hours=12), touching) == 9 * 60


@postgresql_only
def test_two_rules_round_robin_at_once_never_put_an_agent_over_capacity(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rule's round-robin picks "the online agent below capacity" (routing.pick_agent)
    # outside the workspace lock routing's own passes take: two automation jobs side by
    # side both see bob's one free place and both take it.
    import threading

    from rapport.automation import service as automation
    from rapport.conversations import routing
    from rapport.crypto import box_for

    ids = setup_team(client, world, database)
    _one_slot_for_bob(database, ids)
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": False}, headers=auth(world.alice)
    )
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "rr",
            "event": "conversation.created",
            "conditions": [],
            "actions": [{"type": "assign_round_robin"}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    a, b = write(client, world, ids["inbox"], 1), write(client, world, ids["inbox"], 2)
    original = routing.pick_agent
    barrier = threading.Barrier(2, timeout=3)

    def slow_pick(db, **kw):  # type: ignore[no-untyped-def]
        agent = original(db, **kw)
        try:
            barrier.wait()  # both have read the room before either gives it out
        except threading.BrokenBarrierError:
            pass  # one waited on a lock: serialised, as it should be
        return agent

    monkeypatch.setattr(routing, "pick_agent", slow_pick)
    box = box_for(settings.secret_key.get_secret_value())
    errors: list[BaseException] = []

    def run(conv: str) -> None:
        try:
            with database.session() as db:
                automation.run(
                    db,
                    workspace_id=world.acme.workspace.id,
                    event="conversation.created",
                    conversation_id=conv,
                    message_id=None,
                    customer_id=None,
                    caused_by=[],
                    box=box,
                )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    owners = [assignee(client, world, a), assignee(client, world, b)]
    assert owners.count(ids["bob"]) <= 1, owners  # bob's capacity is 1


@postgresql_only
def test_a_routing_pass_never_overwrites_an_assignment_made_meanwhile(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pass reads the waiting conversations, then assigns them one by one; it locks the
    # workspace row, but a member's "assign" does not take that lock, nor does the pass
    # look at the conversation again: a conversation carol took while the pass ran is
    # silently given to bob (its activity saying it was unassigned before).
    import threading

    from rapport.conversations import routing
    from rapport.conversations import service as conversations

    ids = setup_team(client, world, database)
    with database.session() as db:
        db.execute(
            update(Membership).where(Membership.user_id == ids["carol"]).values(availability="busy")
        )
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": False}, headers=auth(world.alice)
    )
    conv = write(client, world, ids["inbox"], 1)
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": True}, headers=auth(world.alice)
    )
    original = routing.pick_agent

    def pick_while_carol_takes_it(db, **kw):  # type: ignore[no-untyped-def]
        def take() -> None:
            with database.session() as other:
                c = conversations.get(
                    other, workspace_id=world.acme.workspace.id, conversation_id=conv
                )
                conversations.assign(
                    other,
                    conversation=c,
                    assignee_id=ids["carol"],
                    team_id=None,
                    actor_id=ids["carol"],
                )

        t = threading.Thread(target=take)
        t.start()
        t.join(10)
        return original(db, **kw)

    monkeypatch.setattr(routing, "pick_agent", pick_while_carol_takes_it)
    with database.session() as db:
        routing.assign_waiting(db, workspace_id=world.acme.workspace.id)
    assert assignee(client, world, conv) == ids["carol"]


def _sla_policy(client: TestClient, world: World, **body: object) -> None:
    r = client.post("/api/v1/sla-policies", json={"name": "P", **body}, headers=auth(world.alice))
    assert r.status_code == 201, r.text


def _inbound(client: TestClient, world: World, ext: str, email: str = "s@example.com") -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": "help", "from": {"email": email}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def _sla_of(client: TestClient, world: World, conv: str) -> dict:  # type: ignore[type-arg]
    return client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()  # type: ignore[no-any-return]


@postgresql_only
def test_two_sla_checks_at_once_announce_a_breach_once(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sla_check runs every minute; one that takes longer than that (or a job run again
    # after its worker died) runs beside the next. Neither locks the rows it announces.
    import threading

    from rapport.realtime.models import StreamEvent

    _sla_policy(client, world, first_response_minutes=5)
    conv = _inbound(client, world, "dup-1")
    due = datetime.fromisoformat(_sla_of(client, world, conv)["first_response_due_at"])
    original = sla._announce
    barrier = threading.Barrier(2, timeout=3)

    def announce(db, row, **kw):  # type: ignore[no-untyped-def]
        try:
            barrier.wait()  # both have read the row before either announces
        except threading.BrokenBarrierError:
            pass
        return original(db, row, **kw)

    monkeypatch.setattr(sla, "_announce", announce)

    def run() -> None:
        with database.session() as db:
            sla.check(db, now=due + timedelta(minutes=1))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    with database.session(write=False) as db:
        types = list(db.scalars(select(StreamEvent.type).where(StreamEvent.type == "sla.breached")))
    assert types == ["sla.breached"]
    assert _sla_of(client, world, conv)["breaches"] == 1


def test_a_conversation_reopened_after_its_agent_left_goes_back_to_the_queue(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # release() leaves resolved conversations with who handled them. When the customer
    # writes again, ingest reopens the conversation still assigned to the former member,
    # and routes it only when it has no assignee: nobody who can answer ever gets it.
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    conv = write(client, world, ids["inbox"], 1)
    worker.run_until_idle()
    holder = assignee(client, world, conv)
    assert holder in (ids["bob"], ids["carol"])
    r = client.post(
        f"/api/v1/conversations/{conv}/status",
        json={"status": "resolved"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    r = client.delete(f"/api/v1/members/{holder}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    worker.run_until_idle()
    # The customer writes again (same address, same inbox): reopened.
    r = client.post(
        f"/api/v1/inboxes/{ids['inbox']}/messages",
        json={
            "external_id": "r1-again",
            "text": "still broken",
            "from": {"email": "r1@example.com"},
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201 and r.json()["conversation_id"] == conv, r.text
    worker.run_until_idle()
    detail = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.alice)).json()
    assert detail["status"] == "open"
    assert detail["assignee_id"] != holder  # not left with someone no longer here


def test_a_regex_condition_that_takes_seconds_to_compile_is_refused(
    client: TestClient, world: World
) -> None:
    # REGEX_SECONDS bounds the search only: nested counted repeats took seconds (and
    # more, up to hours) to compile, in every worker that read the rule.
    import time

    import regex

    from rapport.automation import service as automation

    pattern = "(((a{100}){100}){100}){10}"
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "bomb",
            "event": "message.received",
            "conditions": [{"field": "message.text", "op": "regex", "value": pattern}],
            "actions": [{"type": "add_label", "value": "x"}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 422 and "repeats" in r.json()["detail"], r.text
    regex.purge()  # a worker that has not compiled it yet, the rule saved before
    started = time.monotonic()
    with pytest.raises(Invalid, match="repeats a part"):
        automation.holds(
            {"field": "message.text", "op": "regex", "value": pattern},
            {"message.text": "hello"},
        )
    assert time.monotonic() - started < 10 * automation.REGEX_SECONDS
    ok = {"field": "message.text", "op": "regex", "value": r"order #\d{4,6}"}
    assert automation.holds(ok, {"message.text": "where is order #12345"})
