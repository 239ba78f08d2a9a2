"""Saved views' counts: how many conversations each inbox view lists for the member who
sees it, counted as the inbox lists them and up to a limit."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.db import Database
from tests.conftest import auth, sqlite_only, sqlite_plans
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
    assert got["limit"] == conversations.COUNT_LIMIT == 1_000
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
    assert counts(client, world.bob) == {"counts": {}, "limit": 1_000}


@sqlite_only
def test_every_view_is_counted_in_one_statement_read_from_indexes(
    client: TestClient, world: World, database: Database
) -> None:
    for name, query in [
        ("All", "view=all"),
        ("Mine", "view=mine&status=pending"),
        ("Urgent", "view=all&priority=urgent&sort=waiting"),
        ("Breached", "view=all&sla_state=breached"),
        ("Labelled", "view=unassigned&label=vip"),
    ]:
        saved(client, world.bob, name=name, query=query)
    with sqlite_plans(database, "count(") as plans:
        assert len(counts(client, world.bob)["counts"]) == 5
    assert len(plans) == 1
    # Each count walks an index of its workspace's rows, never the whole table.
    assert "SCAN conversations" not in plans[0][1], plans[0][1]


def test_the_inbox_sidebar_shows_each_views_count_a_capped_one_as_limit_less_one_plus(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conversations, "COUNT_LIMIT", 3)
    customers_write(database, settings, world, 4)
    saved(client, world.bob, name="All", query="view=all")
    saved(client, world.bob, name="Done", query="view=all&status=resolved")
    saved(client, world.bob, name="VIP", page="customers", query="tag=vip")
    page = client.get("/app/inbox", headers=auth(world.bob)).text
    assert 'data-count="3" title="At least 3 conversations">2+</span>' in page
    assert 'data-count="0" title="0 conversations">0</span>' in page
    # The customers list's views hold no conversations: no count beside them.
    assert "view-count" not in client.get("/app/customers", headers=auth(world.bob)).text
