"""Round-robin routing among online agents, within capacity, with a waiting queue."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from rapport.auth import service as auth_service
from rapport.auth.models import Membership, Role
from rapport.config import Settings
from rapport.conversations import routing
from rapport.conversations import service as conversations
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database, utcnow
from rapport.ingest import InboundMessage, receive_batch, with_triage
from rapport.jobs.models import Job
from rapport.jobs.service import enqueue
from rapport.jobs.worker import Worker
from rapport.workspaces import service as workspaces
from tests.conftest import auth, postgresql_only, sqlite_only, sqlite_plans
from tests.factories import PASSWORD, World


def setup_team(client: TestClient, world: World, database: Database) -> dict[str, str]:
    """bob and carol online with room for 2 each, dave offline; an auto-assigning inbox."""
    ws = world.acme.workspace.id
    with database.session() as db:
        _, carol = workspaces.add_member(
            db,
            workspace_id=ws,
            email="carol@acme.test",
            role=Role.agent,
            password=PASSWORD,
            actor_role=Role.owner,
        )
        _, dave = workspaces.add_member(
            db,
            workspace_id=ws,
            email="dave@acme.test",
            role=Role.agent,
            password=PASSWORD,
            actor_role=Role.owner,
        )
        db.execute(update(Membership).where(Membership.workspace_id == ws).values(capacity=2))
        ids = {"bob": world.acme.users["bob"].id, "carol": carol.id, "dave": dave.id}
    with database.session() as db:
        carol_token, _ = auth_service.create_token(
            db, user_id=carol.id, workspace_id=ws, name="t", role=Role.agent
        )
    for token in (world.bob, carol_token):
        r = client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(token))
        assert r.status_code == 200 and r.json()["online"] is True
    with database.session() as db:  # dave says online but his browser went away long ago
        db.execute(
            update(Membership)
            .where(Membership.user_id == dave.id)
            .values(availability="online", last_seen_at=utcnow() - timedelta(hours=1))
        )
    inbox = client.post(
        "/api/v1/inboxes",
        json={"name": "Routed", "channel": "api", "auto_assign": True},
        headers=auth(world.alice),
    ).json()
    ids["inbox"] = inbox["id"]
    return ids


def write(client: TestClient, world: World, inbox: str, n: int) -> str:
    r = client.post(
        f"/api/v1/inboxes/{inbox}/messages",
        json={"external_id": f"r{n}", "text": "hi", "from": {"email": f"r{n}@example.com"}},
        headers=auth(world.bob),
    )
    return str(r.json()["conversation_id"])


def assignee(client: TestClient, world: World, conv: str) -> str | None:
    return client.get(f"/api/v1/conversations/{conv}", headers=auth(world.alice)).json()[
        "assignee_id"
    ]  # type: ignore[no-any-return]


def test_round_robin_skips_offline_agents_and_never_exceeds_capacity(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    convs = []
    for n in range(6):
        convs.append(write(client, world, ids["inbox"], n))
        worker.run_until_idle()
    owners = [assignee(client, world, c) for c in convs]
    assert owners[:4].count(ids["bob"]) == 2 and owners[:4].count(ids["carol"]) == 2
    assert owners[0] != owners[1]  # alternating, not filling one agent first
    assert ids["dave"] not in owners
    assert owners[4:] == [None, None]  # everyone is full: these wait
    messages = client.get(f"/api/v1/conversations/{convs[0]}", headers=auth(world.alice)).json()[
        "messages"
    ]
    (line,) = [m["text"] for m in messages if m["kind"] == "activity"]
    assert line.startswith("Assigned to ") and line.endswith(" by auto-assignment")

    # bob resolves one: the oldest waiting conversation goes to him.
    first_of_bob = convs[owners.index(ids["bob"])]
    client.post(
        f"/api/v1/conversations/{first_of_bob}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    worker.run_until_idle()
    assert assignee(client, world, convs[4]) == ids["bob"]
    assert assignee(client, world, convs[5]) is None


def test_an_agent_coming_online_takes_waiting_conversations(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ws = world.acme.workspace.id
    inbox = client.post(
        "/api/v1/inboxes",
        json={"name": "Night", "channel": "api", "auto_assign": True},
        headers=auth(world.alice),
    ).json()["id"]
    worker = Worker(database, settings)
    conv = write(client, world, inbox, 99)
    worker.run_until_idle()
    assert assignee(client, world, conv) is None
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    worker.run_until_idle()
    assert assignee(client, world, conv) == world.acme.users["bob"].id
    with database.session(write=False) as db:
        member = db.scalar(
            select(Membership).where(
                Membership.workspace_id == ws, Membership.user_id == world.acme.users["bob"].id
            )
        )
        assert member is not None and member.availability == "online"


def test_a_snoozed_conversation_that_reopens_unassigned_is_offered_at_once(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Reopened with nobody on it, it waited for something else to wake routing (an agent
    # coming online, another conversation arriving), however free the agents were.
    inbox = client.post(
        "/api/v1/inboxes",
        json={"name": "Later", "channel": "api", "auto_assign": True},
        headers=auth(world.alice),
    ).json()["id"]
    worker = Worker(database, settings)
    convs = [write(client, world, inbox, n) for n in (51, 52)]
    worker.run_until_idle()
    for conv in convs:
        r = client.post(
            f"/api/v1/conversations/{conv}/status",
            json={
                "status": "snoozed",
                "snoozed_until": (utcnow() + timedelta(hours=1)).isoformat(),
            },
            headers=auth(world.bob),
        )
        assert r.status_code == 200, r.text
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    worker.run_until_idle()  # snoozed: not in the queue yet
    assert [assignee(client, world, c) for c in convs] == [None, None]
    with database.session() as db:
        assert conversations.unsnooze_due(db, now=utcnow() + timedelta(hours=2)) == 2
        woken = db.scalars(select(Job).where(Job.name == "route_waiting", Job.state == "queued"))
        assert len(list(woken)) == 1  # one pass for the lot
    worker.run_until_idle()
    bob = world.acme.users["bob"].id
    assert [assignee(client, world, c) for c in convs] == [bob, bob]


def test_a_backlog_pass_asks_once_per_full_team(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Everyone is full and 10 conversations wait: the pass that runs when someone resolves
    # one fills the freed place, then asks no more (each question reads every agent's load,
    # inside the write transaction that holds SQLite's one writer).
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    convs = [write(client, world, ids["inbox"], n) for n in range(14)]
    worker.run_until_idle()
    asked: list[str | None] = []
    pick = routing.pick_agent

    def counted(db: Session, *, workspace_id: str, team_id: str | None) -> str | None:
        asked.append(team_id)
        return pick(db, workspace_id=workspace_id, team_id=team_id)

    monkeypatch.setattr(routing, "pick_agent", counted)
    owners = [assignee(client, world, c) for c in convs]
    assert owners.count(None) == 10
    with database.session() as db:
        assert routing.assign_waiting(db, workspace_id=world.acme.workspace.id) == 0
    assert asked == [None]
    resolved = convs[owners.index(ids["bob"])]
    client.post(
        f"/api/v1/conversations/{resolved}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    asked.clear()
    worker.run_until_idle()
    assert asked == [None, None]  # one given to bob, then the team is full again
    assert [assignee(client, world, c) for c in convs].count(None) == 9


@sqlite_only
def test_an_agents_load_is_counted_from_their_open_conversations_alone(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Picking an agent runs inside the transaction that assigns, for every conversation
    # routed. It reads the open and pending conversations of the agents it chooses among,
    # in the (workspace, assignee, status) index; it used to walk every conversation ever
    # assigned in the workspace (0.3 s at 300,000 with 30,000 open, growing with history).
    ids = setup_team(client, world, database)
    Worker(database, settings).run_until_idle()
    with sqlite_plans(database, "FROM conversations") as plans:
        with database.session(write=False) as db:
            picked = routing.pick_agent(db, workspace_id=world.acme.workspace.id, team_id=None)
    assert picked in (ids["bob"], ids["carol"])
    assert plans
    for _, plan in plans:
        # A seek per (agent, status), not a range over every assigned conversation.
        assert "ix_conversations_ws_assignee_status" in plan, plan
        assert "assignee_id=? AND status=?" in plan, plan


@sqlite_only
def test_the_queue_is_read_oldest_first_in_an_index_without_sorting_it(
    client: TestClient, world: World, database: Database
) -> None:
    # A pass found the open conversations nobody has in the (workspace, assignee, status)
    # index, then sorted every one of them by age before handing out the first page: a
    # queue of thousands was read and sorted whole, in the write transaction, per pass.
    # (The queue has an index of its own since 0036, in the order it is served.)
    ids = setup_team(client, world, database)
    for n in range(5):
        write(client, world, ids["inbox"], n)
    with sqlite_plans(database, "FROM conversations JOIN inboxes") as plans:
        with database.session() as db:
            given = routing.assign_waiting(db, workspace_id=world.acme.workspace.id, limit=2)
    assert given == 4  # bob and carol, two each; the fifth waits
    assert len(plans) >= 2  # the first page and the next ones, after a key
    for _, plan in plans:
        assert "ix_conversations_queue" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_a_queue_head_no_one_can_take_does_not_hold_up_those_behind_it(
    client: TestClient, world: World, database: Database
) -> None:
    # A pass read the oldest waiting conversations, one page of them, and skipped those
    # of a team with nobody free and those the bot still held: when the page was all of
    # that kind, newer conversations were never given to the agents who had room.
    ids = setup_team(client, world, database)
    team = client.post(
        "/api/v1/teams",
        json={"name": "Nights", "member_ids": [ids["dave"]]},
        headers=auth(world.alice),
    ).json()["id"]
    bot_inbox = client.post(
        "/api/v1/inboxes",
        json={"name": "Bot first", "channel": "api", "auto_assign": True},
        headers=auth(world.alice),
    ).json()["id"]
    r = client.put(
        f"/api/v1/bot/inboxes/{bot_inbox}", json={"enabled": True}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    for_dave = write(client, world, ids["inbox"], 1)  # dave is offline
    for_the_bot = write(client, world, bot_inbox, 2)
    behind = [write(client, world, ids["inbox"], n) for n in (3, 4)]
    r = client.post(
        f"/api/v1/conversations/{for_dave}/assign",
        json={"assignee_id": None, "team_id": team},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    with database.session() as db:
        assert routing.assign_waiting(db, workspace_id=world.acme.workspace.id, limit=1) == 2
    assert {assignee(client, world, c) for c in behind} == {ids["bob"], ids["carol"]}
    assert assignee(client, world, for_dave) is None
    assert assignee(client, world, for_the_bot) is None


def test_a_pass_that_reads_its_last_page_leaves_the_rest_to_the_next(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paging on must stop somewhere: the pass holds the write transaction throughout.
    ids = setup_team(client, world, database)
    for n in range(3):
        write(client, world, ids["inbox"], n)
    monkeypatch.setattr(routing, "PAGES_PER_PASS", 2)
    ws = world.acme.workspace.id
    with database.session() as db:
        db.execute(delete(Job))
        assert routing.assign_waiting(db, workspace_id=ws, limit=1) == 2
        assert db.scalars(select(Job.name)).all() == ["route_waiting"]


def test_a_route_job_leaves_a_conversation_of_an_inbox_that_stopped_auto_assigning(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The queue's pass asked the inbox, the route job did not: queued while the inbox
    # auto-assigned, it gave the conversation to bob after an admin had turned that off.
    # Ingest queues the pass now; a route job queued before that changed still runs.
    ids = setup_team(client, world, database)
    conv = write(client, world, ids["inbox"], 1)
    with database.session() as db:
        enqueue(
            db, name="route", args={"conversation_id": conv}, workspace_id=world.acme.workspace.id
        )
    r = client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": False}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        queued = db.scalars(select(Job.name).where(Job.state == "queued"))
        assert set(queued) == {"route", "route_waiting"}
    Worker(database, settings).run_until_idle()
    assert assignee(client, world, conv) is None
    with database.session(write=False) as db:
        assert set(db.scalars(select(Job.state).where(Job.name.like("route%")))) == {"done"}


def test_a_new_conversation_never_takes_a_free_agent_ahead_of_one_waiting_longer(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The route job gave its own conversation the agent who had just freed up, though an
    # older one of the queue had waited for them (the pass that would have given it them
    # had not run yet). The newest conversation's own pass runs first here.
    ids = setup_team(client, world, database)
    worker = Worker(database, settings)
    convs = []
    for n in range(5):
        convs.append(write(client, world, ids["inbox"], n))
        worker.run_until_idle()
    waiting = convs[4]
    assert assignee(client, world, waiting) is None  # bob and carol are full
    mine = next(c for c in convs if assignee(client, world, c) == ids["bob"])
    r = client.post(
        f"/api/v1/conversations/{mine}/status", json={"status": "resolved"}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    with database.session() as db:  # the pass bob's resolving queued runs last
        db.execute(
            update(Job)
            .where(Job.name == "route_waiting", Job.state == "queued")
            .values(run_at=utcnow() + timedelta(hours=1))
        )
    newest = write(client, world, ids["inbox"], 5)
    with database.session() as db:  # a legacy route job, queued before ingest woke routing
        enqueue(
            db,
            name="route",
            args={"conversation_id": newest},
            workspace_id=world.acme.workspace.id,
        )
    worker.run_until_idle()
    assert assignee(client, world, waiting) == ids["bob"]
    assert assignee(client, world, newest) is None  # its turn comes after


def test_new_conversations_stored_together_queue_one_pass_that_leaves_other_inboxes_alone(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Each new conversation of an auto-assigning inbox queued a route job of its own, and
    # each ran the whole workspace's pass: a burst of 64 queued 64 passes.
    ids = setup_team(client, world, database)
    manual = world.acme.inbox.id  # type: ignore[union-attr]
    with database.session() as db:
        db.execute(delete(Job))

    def message(inbox: str, n: int) -> InboundMessage:
        return with_triage(
            InboundMessage(
                inbox_id=inbox,
                external_id=f"burst-{n}",
                text="hi",
                handles=[handle(IdentityKind.email, f"burst{n}@example.com")],
            )
        )

    batch = [message(ids["inbox"], 1), message(manual, 2), message(ids["inbox"], 3)]
    with database.session() as db:
        stored = receive_batch(db, batch, settings=settings)
    first, by_hand, second = (s.conversation_id for s in stored if not isinstance(s, Exception))
    with database.session(write=False) as db:
        routings = db.execute(select(Job.name, Job.workspace_id).where(Job.name.like("route%")))
        assert routings.all() == [("route_waiting", world.acme.workspace.id)]
    Worker(database, settings).run_until_idle()
    assert {assignee(client, world, first), assignee(client, world, second)} == {
        ids["bob"],
        ids["carol"],
    }
    assert assignee(client, world, by_hand) is None  # its inbox does not auto-assign


@postgresql_only
def test_two_passes_at_once_give_each_waiting_conversation_once(
    client: TestClient, world: World, database: Database
) -> None:
    # Side by side on PostgreSQL each pass read the other's conversation as waiting and
    # the agent's room as free: both gave it out (bob twice over his capacity of one).
    import threading

    ids = setup_team(client, world, database)
    ws = world.acme.workspace.id
    with database.session() as db:
        db.execute(update(Membership).where(Membership.user_id == ids["bob"]).values(capacity=1))
        db.execute(
            update(Membership).where(Membership.user_id == ids["carol"]).values(availability="busy")
        )
    older, newer = write(client, world, ids["inbox"], 1), write(client, world, ids["inbox"], 2)
    first_done, first_may_commit = threading.Event(), threading.Event()
    given: list[int] = []

    def run_pass(first: bool) -> None:
        with database.session() as db:
            given.append(routing.assign_waiting(db, workspace_id=ws))
            if first:
                first_done.set()
                assert first_may_commit.wait(10)

    first = threading.Thread(target=run_pass, args=(True,))
    first.start()
    assert first_done.wait(10)
    second = threading.Thread(target=run_pass, args=(False,))
    second.start()
    second.join(0.5)  # it waits for the first meanwhile
    first_may_commit.set()
    first.join(10)
    second.join(10)
    assert given == [1, 0]
    assert (assignee(client, world, older), assignee(client, world, newer)) == (ids["bob"], None)
