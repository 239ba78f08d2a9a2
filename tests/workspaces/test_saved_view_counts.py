"""Saved views' counts: how many conversations each inbox view lists for the member who
sees it, counted as the inbox lists them and up to a limit."""

import time
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from rapport import cache
from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.db import Database
from tests.conftest import auth, postgresql_only, sqlite_only, sqlite_plans
from tests.factories import World, inbound
from tests.workspaces.test_saved_views import saved

COUNTS = "/api/v1/saved-views/counts"


def counts(client: TestClient, token: str) -> dict[str, Any]:
    r = client.get(COUNTS, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def customers_write(database: Database, settings: Settings, world: World, n: int) -> None:
    """``n`` more customers of Acme write in, each opening a conversation nobody has."""
    assert world.acme.inbox is not None
    with database.session() as db:
        for i in range(n):
            inbound(
                db,
                settings,
                world.acme.inbox,
                external_id=f"more-{i}",
                email=f"more{i}@acme.example",
            )


def listed(client: TestClient, token: str, query: str) -> int:
    """How many conversations the inbox page lists for ``query``."""
    page = client.get(f"/app/inbox?{query}", headers=auth(token))
    assert page.status_code == 200
    return page.text.count('<li data-id="')


def test_each_view_counts_what_the_inbox_lists_for_it(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    customers_write(database, settings, world, 2)
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    views = {
        "everyone's": saved(client, world.alice, name="All", query="view=all", shared=True),
        "nobody's": saved(client, world.alice, name="Queue", query="view=unassigned", shared=True),
        "mine": saved(client, world.bob, name="Mine"),
        "of the inbox": saved(
            client, world.bob, name="API", query=f"view=all&inbox_id={inbox}&channel=api"
        ),
        "no such label": saved(client, world.bob, name="VIP", query="view=all&label=vip"),
        "resolved": saved(client, world.bob, name="Done", query="view=all&status=resolved"),
        "waiting": saved(client, world.bob, name="Waiting", query="view=all&sort=waiting"),
        # No SLA policy applies: none has a due time, all have no SLA.
        "due": saved(client, world.bob, name="Due", query="view=all&sort=sla_due"),
        "no SLA": saved(client, world.bob, name="No SLA", query="view=all&sla_state=none"),
        "breached": saved(client, world.bob, name="Late", query="view=all&sla_state=breached"),
    }
    saved(client, world.bob, name="Customers", page="customers", query="tag=vip")
    first = world.acme.opened.conversation.id
    client.post(
        f"/api/v1/conversations/{first}/assign",
        json={"assignee_id": world.acme.users["bob"].id},
        headers=auth(world.bob),
    ).raise_for_status()
    got = counts(client, world.bob)
    assert got["limit"] == conversations.COUNT_LIMIT == 100
    # Inbox views alone, by id; a view whose filters match nothing counts 0.
    assert got["counts"] == {
        views["everyone's"]["id"]: 3,
        views["nobody's"]["id"]: 2,
        views["mine"]["id"]: 1,
        views["of the inbox"]["id"]: 3,
        views["no such label"]["id"]: 0,
        views["resolved"]["id"]: 0,
        views["waiting"]["id"]: 3,
        views["due"]["id"]: 0,
        views["no SLA"]["id"]: 3,
        views["breached"]["id"]: 0,
    }
    for view in views.values():
        assert got["counts"][view["id"]] == listed(client, world.bob, view["query"]), view


def test_a_count_stops_at_the_limit(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conversations, "COUNT_LIMIT", 3)
    customers_write(database, settings, world, 4)
    everyone = saved(client, world.bob, name="All", query="view=all")
    resolved = saved(client, world.bob, name="Done", query="view=all&status=resolved")
    assert counts(client, world.bob) == {
        "counts": {everyone["id"]: 3, resolved["id"]: 0},
        "limit": 3,
    }


def test_another_workspaces_conversations_and_views_are_never_counted(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    customers_write(database, settings, world, 2)
    acme = saved(client, world.alice, name="All", query="view=all", shared=True)
    globex = saved(client, world.mallory, name="All", query="view=all", shared=True)
    assert counts(client, world.mallory)["counts"] == {globex["id"]: 1}
    assert counts(client, world.alice)["counts"] == {acme["id"]: 3}


def test_a_viewer_sees_the_shared_views_counts_and_their_own_not_another_members(
    client: TestClient, world: World
) -> None:
    everyone = saved(client, world.alice, name="All", query="view=all", shared=True)
    # Mine is the member's own: nothing is ever assigned to a viewer.
    shared_mine = saved(client, world.alice, name="Mine", shared=True)
    own = saved(client, world.victor, name="Queue", query="view=unassigned")
    saved(client, world.bob, name="Bob's", query="view=all")
    first = world.acme.opened.conversation.id
    client.post(
        f"/api/v1/conversations/{first}/assign",
        json={"assignee_id": world.acme.users["alice"].id},
        headers=auth(world.alice),
    ).raise_for_status()
    assert counts(client, world.victor)["counts"] == {
        everyone["id"]: 1,
        shared_mine["id"]: 0,
        own["id"]: 0,
    }
    assert counts(client, world.alice)["counts"][shared_mine["id"]] == 1


def test_no_view_no_count(client: TestClient, world: World) -> None:
    assert counts(client, world.bob) == {"counts": {}, "limit": 100}


@sqlite_only
def test_each_view_is_counted_from_an_index_in_a_statement_of_its_own(
    client: TestClient, world: World, database: Database
) -> None:
    for name, query in [
        ("All", "view=all"),
        ("Mine", "view=mine&status=pending"),
        ("Urgent", "view=all&priority=urgent&sort=waiting"),
        ("Breached", "view=all&sla_state=breached"),
        ("Labelled", "view=unassigned&label=vip"),
        ("Due", "view=all&sort=sla_due"),
    ]:
        saved(client, world.bob, name=name, query=query)
    with sqlite_plans(database, "count(") as plans:
        assert len(counts(client, world.bob)["counts"]) == 6
    # One statement a view, each under its own budget of rows read.
    assert len(plans) == 6
    for statement, plan in plans:
        # Each count walks an index of its workspace's rows, never the whole table, in no
        # order: at most COUNT_LIMIT of them.
        assert "SCAN conversations" not in plan, plan
        assert "ORDER BY" not in statement, statement


@sqlite_only
def test_a_view_too_costly_to_count_has_no_count_the_others_theirs(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customers_write(database, settings, world, 3)
    everyone = saved(client, world.bob, name="All", query="view=all")
    urgent = saved(client, world.bob, name="Urgent", query="view=all&priority=urgent")
    # The budget reached while counting urgent ones (here by the view's statement alone:
    # at scale, the rows its filters make it read).
    real = conversations._count

    def costly(db: Any, workspace_id: str, filters: Any) -> int | None:
        monkeypatch.setattr(conversations, "COUNT_BUDGET", 0 if filters.get("priority") else 10_000)
        monkeypatch.setattr(conversations, "COUNT_STEPS", 1)
        return real(db, workspace_id, filters)

    monkeypatch.setattr(conversations, "_count", costly)
    assert counts(client, world.bob)["counts"] == {everyone["id"]: 4, urgent["id"]: None}
    # The connection counts at full speed again after: no budget left behind.
    assert len(client.get("/app/inbox?view=all", headers=auth(world.bob)).text) > 0


@postgresql_only
def test_a_view_too_slow_to_count_on_postgresql_has_no_count_the_others_theirs(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PostgreSQL counted without a bound: one slow view held the whole sidebar's answer.
    customers_write(database, settings, world, 3)
    asleep = saved(client, world.bob, name="Asleep", query="view=all&priority=urgent")
    everyone = saved(client, world.bob, name="Everyone", query="view=all")
    # The urgent ones' count takes five times the budget (here by sleeping in it: at scale,
    # the rows its filters make it read), and is counted first: the one after it is counted
    # in the same transaction, which the cancelled statement left usable.
    real_matching = conversations._matching

    def matching(db: Any, **filters: Any) -> Any:
        listed = real_matching(db, **filters)
        if filters.get("priority"):
            listed = listed.where(text("(SELECT true FROM pg_sleep(0.25))"))
        return listed

    timeouts: list[str] = []
    real_count = conversations._count

    def count(db: Any, workspace_id: str, filters: Any) -> int | None:
        try:
            return real_count(db, workspace_id, filters)
        finally:
            timeouts.append(db.scalar(text("SHOW statement_timeout")))

    monkeypatch.setattr(conversations, "_matching", matching)
    monkeypatch.setattr(conversations, "_count", count)
    assert counts(client, world.bob)["counts"] == {asleep["id"]: None, everyone["id"]: 4}
    # Each count's timeout went with it: the request's transaction ran on without one.
    assert timeouts == ["0", "0"]


def test_counts_are_kept_a_few_seconds_each_list_counted_once_for_everyone(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    everyone = saved(client, world.alice, name="All", query="view=all", shared=True)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "count(" in statement:
            statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        assert counts(client, world.alice)["counts"] == {everyone["id"]: 1}
        assert len(statements) == 1
        customers_write(database, settings, world, 2)
        # Within the time it is kept, the same list's count is served again, to another
        # member too, without a query: a few seconds old.
        assert counts(client, world.bob)["counts"] == {everyone["id"]: 1}
        assert counts(client, world.alice)["counts"] == {everyone["id"]: 1}
        assert len(statements) == 1
        # Past it, counted afresh.
        later = time.monotonic() + conversations._COUNTS.ttl
        monkeypatch.setattr(cache, "time", SimpleNamespace(monotonic=lambda: later))
        assert counts(client, world.bob)["counts"] == {everyone["id"]: 3}
        assert len(statements) == 2
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)


def test_the_inbox_page_is_drawn_without_counting_its_views(
    client: TestClient, world: World, database: Database
) -> None:
    saved(client, world.bob, name="All", query="view=all")
    saved(client, world.bob, name="VIP", page="customers", query="tag=vip")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        page = client.get("/app/inbox", headers=auth(world.bob)).text
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    assert statements, "the page was drawn from the database"
    # The unread badges (counted against what was read) are the page's; the views' counts
    # (conversations' ids counted) are app.js's to ask for.
    counted = [
        s for s in statements if "(SELECT conversations.id" in s and "conversation_reads" not in s
    ]
    assert not counted, counted
    assert '<span class="view-count" data-view="' in page
    # The customers list's views hold no conversations: no place for a count beside them.
    assert "view-count" not in client.get("/app/customers", headers=auth(world.bob)).text
