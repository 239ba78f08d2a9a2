"""The routing queue serves the customer who has waited longest, read in its own index."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from rapport.auth.models import Membership
from rapport.conversations import routing
from rapport.conversations.models import Conversation
from rapport.db import Database, utcnow
from tests.conftest import auth, postgresql_only, sqlite_only, sqlite_plans
from tests.conversations.test_routing import assignee, setup_team
from tests.factories import World


def write(client: TestClient, world: World, inbox: str, external_id: str, sender: str) -> str:
    r = client.post(
        f"/api/v1/inboxes/{inbox}/messages",
        json={"external_id": external_id, "text": "hi", "from": {"email": sender}},
        headers=auth(world.bob),
    )
    assert r.status_code in (200, 201), r.text
    return str(r.json()["conversation_id"])


def only_bob_with_room(database: Database, ids: dict[str, str], capacity: int) -> None:
    """bob takes ``capacity`` conversations; carol is busy."""
    with database.session() as db:
        db.execute(
            update(Membership).where(Membership.user_id == ids["bob"]).values(capacity=capacity)
        )
        db.execute(
            update(Membership).where(Membership.user_id == ids["carol"]).values(availability="busy")
        )


def set_times(db: Session, conv: str, **times: Any) -> None:
    db.execute(update(Conversation).where(Conversation.id == conv).values(**times))


def test_a_conversation_reopened_today_waits_behind_a_customer_waiting_since_yesterday(
    client: TestClient, world: World, database: Database
) -> None:
    # The queue was served by when each conversation started: one started weeks ago and
    # reopened by its customer a minute ago went to the agent who freed up, ahead of a
    # customer who had been waiting for hours in a conversation started yesterday.
    ids = setup_team(client, world, database)
    ws = world.acme.workspace.id
    reopened = write(client, world, ids["inbox"], "old-1", "old@example.com")
    r = client.post(
        f"/api/v1/conversations/{reopened}/status",
        json={"status": "resolved"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    waiting = write(client, world, ids["inbox"], "new-1", "new@example.com")
    assert write(client, world, ids["inbox"], "old-2", "old@example.com") == reopened
    now = utcnow()
    with database.session() as db:
        set_times(db, reopened, created_at=now - timedelta(days=30))
        set_times(
            db, waiting, created_at=now - timedelta(days=1), waiting_since=now - timedelta(hours=3)
        )
    only_bob_with_room(database, ids, 1)
    with database.session() as db:
        assert routing.assign_waiting(db, workspace_id=ws) == 1
    assert assignee(client, world, waiting) == ids["bob"]
    assert assignee(client, world, reopened) is None


def test_ties_go_by_id_and_those_nobody_waits_on_come_last(
    client: TestClient, world: World, database: Database
) -> None:
    # Read one at a time, so that each page starts after the last one's key: a tie of
    # waiting_since must not skip the second of the pair, nor the part nobody waits on
    # (after them, however old) be lost between the two reads.
    ids = setup_team(client, world, database)
    ws = world.acme.workspace.id
    answered = write(client, world, ids["inbox"], "a", "answered@example.com")
    first = write(client, world, ids["inbox"], "t1", "first@example.com")
    second = write(client, world, ids["inbox"], "t2", "second@example.com")
    assert first < second
    since = utcnow() - timedelta(hours=2)
    with database.session() as db:
        # Answered, then back in the queue (its agent left): nobody waits on it.
        set_times(db, answered, created_at=since - timedelta(days=60), waiting_since=None)
        # The second of the tied pair started earlier: the tie goes by id, not by age.
        set_times(db, first, waiting_since=since, created_at=since - timedelta(days=1))
        set_times(db, second, waiting_since=since, created_at=since - timedelta(days=2))
    queue = [first, second, answered]
    for capacity in (1, 2, 3):  # bob makes room for one more each time
        only_bob_with_room(database, ids, capacity)
        with database.session() as db:
            assert routing.assign_waiting(db, workspace_id=ws, limit=1) == 1
        served = [c for c in queue if assignee(client, world, c) == ids["bob"]]
        assert served == queue[:capacity]


def queue_in_both_parts(client: TestClient, world: World, database: Database) -> None:
    """Three waiting conversations and two nobody waits on; room for them all."""
    ids = setup_team(client, world, database)
    convs = [write(client, world, ids["inbox"], f"q{n}", f"q{n}@example.com") for n in range(5)]
    with database.session() as db:
        for conv in convs[3:]:
            set_times(db, conv, waiting_since=None)
        db.execute(update(Membership).values(capacity=10))


@sqlite_only
def test_the_queue_is_read_in_its_partial_index_in_order_on_sqlite(
    client: TestClient, world: World, database: Database
) -> None:
    # Two pages of each part (limit 2: three waited on, then two nobody waits on and an
    # empty page after them): each is a range of ix_conversations_queue, in its order.
    queue_in_both_parts(client, world, database)
    with sqlite_plans(database, "FROM conversations JOIN inboxes") as plans:
        with database.session() as db:
            given = routing.assign_waiting(db, workspace_id=world.acme.workspace.id, limit=2)
    assert given == 5
    assert len(plans) == 4
    for _, plan in plans:
        assert "ix_conversations_queue" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


@contextmanager
def statements(database: Database, marker: str) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if marker in statement:
            seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


@postgresql_only
def test_the_queue_is_read_in_its_partial_index_in_order_on_postgresql(
    client: TestClient, world: World, database: Database
) -> None:
    # Each page's statement, planned as a prepared statement's generic plan is (knowing
    # no parameter): the partial index's WHERE is proved from the statement's own text,
    # and its order is the page's, so no sort. With nothing else allowed that could serve
    # the statement, a plan that sorts or scans another way would show here.
    queue_in_both_parts(client, world, database)
    with statements(database, "FROM conversations JOIN inboxes") as seen:
        with database.session() as db:
            given = routing.assign_waiting(db, workspace_id=world.acme.workspace.id, limit=2)
    assert given == 5
    assert len(seen) == 4
    with database.session() as db:
        conn = db.connection()
        driver = conn.connection.driver_connection
        # The indexes and statistics of the rows here, as in a new database, not what
        # earlier tests left (the test database is emptied, not dropped, between tests):
        # with their dead index entries and autovacuum's sample of their rows, the planner
        # sometimes costed the workspace's waiting index (and a filter) below the queue's.
        conn.exec_driver_sql("REINDEX TABLE conversations")
        conn.exec_driver_sql("REINDEX TABLE inboxes")
        conn.exec_driver_sql("ANALYZE conversations, inboxes")
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        for way in ("seqscan", "bitmapscan", "sort"):
            conn.exec_driver_sql(f"SET LOCAL enable_{way} = off")
        for n, (statement, parameters) in enumerate(seen):
            # PREPAREd as the driver's own would be, each parameter a $n of its own.
            names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
            body = statement
            for i, name in enumerate(names, 1):
                body = body.replace(f"%({name})s", f"${i}")
            conn.exec_driver_sql(f"PREPARE page_{n} AS {body}")
            args = ", ".join(sql.Literal(parameters[name]).as_string(driver) for name in names)
            plan = "\n".join(
                r[0] for r in conn.exec_driver_sql(f"EXPLAIN EXECUTE page_{n}({args})")
            )
            assert "$1" in plan  # generic: planned for any parameter
            assert "Index Scan using ix_conversations_queue on conversations" in plan, plan
            assert "Sort" not in plan, plan
