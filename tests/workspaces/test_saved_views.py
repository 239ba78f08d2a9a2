"""Saved views: a page's filters under a name, shared with the workspace or a member's own,
kept as one canonical query string."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from rapport.auth.models import User
from rapport.db import Database
from rapport.privacy.models import AuditLog
from rapport.workspaces.models import SavedView
from rapport.workspaces.saved_views import encode
from tests.conftest import auth
from tests.factories import World, ada_the_admin

VIEWS = "/api/v1/saved-views"


def save(client: TestClient, token: str, **body: Any) -> Any:
    return client.post(
        VIEWS, json={"page": "inbox", "name": "v", "query": "", **body}, headers=auth(token)
    )


def saved(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    r = save(client, token, **body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def stored(database: Database) -> list[tuple[str, str, str, str | None, int]]:
    """Every saved view of every workspace: page, name, query, owner, position."""
    with database.session(write=False) as db:
        rows = [
            (v.page, v.name, v.query, v.owner_id, v.position) for v in db.scalars(select(SavedView))
        ]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3] or "", r[4]))


def audited(database: Database, action: str) -> list[AuditLog]:
    with database.session(write=False) as db:
        return list(
            db.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
        )


def team(client: TestClient, token: str, name: str) -> str:
    r = client.post("/api/v1/teams", json={"name": name}, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_encode_keeps_the_pages_keys_in_its_order_without_blanks_or_defaults() -> None:
    inbox = {
        "sort": "waiting",
        "cursor": "abc",  # a place in a list, never part of a view
        "label": "  VIP ",
        "status": "open",  # the default
        "view": "mine",  # no default: kept
        "team_id": "",
        "channel": None,
        "active_from": " 2026-12-01 ",
        "q": "not the inbox's",
    }
    assert encode("inbox", inbox) == "view=mine&label=vip&active_from=2026-12-01&sort=waiting"
    assert encode("inbox", {"status": "all", "sort": "newest"}) == "status=all"
    assert encode("inbox", {}) == ""
    customers = {"value": " Pro plan ", "attr": "plan", "tag": "Gold", "q": " kim ", "view": "x"}
    assert encode("customers", customers) == "q=kim&tag=gold&attr=plan&value=Pro+plan"
    with pytest.raises(ValueError, match="settings"):
        encode("settings", {})


def test_a_saved_query_is_kept_in_canonical_form(
    client: TestClient, world: World, database: Database
) -> None:
    support = team(client, world.alice, "Support")
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    for i, (page, query, canonical) in enumerate(
        [
            (
                "inbox",
                "?sort=waiting&status=pending&view=all",
                "view=all&status=pending&sort=waiting",
            ),
            ("inbox", "  status=open&sort=newest&view=mine ", "view=mine"),
            ("inbox", "status=+open+&view=+unassigned", "view=unassigned"),
            # No view: the inbox opens on the member's own, and the view says so.
            ("inbox", "", "view=mine"),
            ("inbox", "?", "view=mine"),
            ("inbox", "status=&label=&sort=", "view=mine"),
            (
                "inbox",
                "active_until=2026-12-31&active_from=20261201&channel=api&label=+VIP+",
                "view=mine&label=vip&channel=api&active_from=2026-12-01&active_until=2026-12-31",
            ),
            (
                "inbox",
                f"sort=sla_due&team_id={support}&inbox_id={inbox}&status=all",
                f"view=mine&status=all&inbox_id={inbox}&team_id={support}&sort=sla_due",
            ),
            ("inbox", "sla_state=none&priority=none", "view=mine&priority=none&sla_state=none"),
            (
                "customers",
                "?value=Pro%20plan&attr=plan&q=%20kim%20&tag=Gold",
                "q=kim&tag=gold&attr=plan&value=Pro+plan",
            ),
            ("customers", "q=&tag=", ""),
        ]
    ):
        r = save(client, world.bob, page=page, name=f"v{i}", query=query)
        assert r.status_code == 201, (query, r.text)
        assert r.json()["query"] == canonical, query
        with database.session(write=False) as db:
            row = db.get(SavedView, r.json()["id"])
            assert row is not None and row.query == canonical and row.page == page


def test_a_query_the_page_would_not_take_is_refused_naming_the_key(
    client: TestClient, world: World, database: Database
) -> None:
    for page, query, said in [
        ("inbox", "foo=1", 'query: unknown filter "foo" for the inbox'),
        ("inbox", "Status=open", 'query: unknown filter "Status" for the inbox'),
        ("inbox", "q=kim", 'query: unknown filter "q" for the inbox'),
        ("customers", "status=open", 'query: unknown filter "status" for the customers list'),
        ("inbox", "status=open&status=pending", "query: status is given twice"),
        ("inbox", "label=a&sort=newest&label=b", "query: label is given twice"),
        (
            "inbox",
            "status=closed",
            'query: status must be one of open, pending, snoozed, resolved, all; not "closed"',
        ),
        ("inbox", "status=Open", "query: status must be one of "),
        ("inbox", "view=others", "query: view must be one of mine, unassigned, all"),
        (
            "inbox",
            "priority=asap",
            "query: priority must be one of none, low, medium, high, urgent",
        ),
        ("inbox", "sla_state=late", "query: sla_state must be one of none, ok, warning, breached"),
        ("inbox", "sort=oldest", "query: sort must be one of newest, waiting, sla_due"),
        ("inbox", "channel=fax", "query: channel must be one of "),
        ("inbox", "active_from=yesterday", "query: active_from must be a date, YYYY-MM-DD"),
        ("inbox", "active_until=2026-02-30", "query: active_until must be a date"),
        ("inbox", "label=" + "x" * 101, "query: label is at most 100 characters"),
        ("inbox", "label=a%00b", "query: a filter cannot hold a NUL character"),
        ("inbox", "cursor=abc", "query: cursor is a place in a list"),
        ("customers", "q=kim&cursor=abc", "query: cursor is a place in a list"),
        ("customers", "attr=plan", "query: attr and value go together"),
        ("customers", "value=Pro&attr=+", "query: attr and value go together"),
        ("customers", "q=" + "x" * 321, "query: q is at most 320 characters"),
        ("customers", "tag=" + "x" * 101, "query: tag is at most 100 characters"),
        ("customers", "attr=" + "x" * 201 + "&value=1", "query: attr is at most 200 characters"),
        ("customers", "attr=a&value=" + "x" * 501, "query: value is at most 500 characters"),
        # 320 characters of four bytes each: within q's bound, beyond the query's once encoded
        ("customers", "q=" + "\U0001d11e" * 320, "query: at most 2,000 characters, once encoded"),
    ]:
        r = save(client, world.alice, page=page, query=query)
        assert r.status_code == 422, (query, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith(said), (query, r.json()["detail"])
    for body, field in [
        ({"page": "settings"}, "page"),
        ({"query": "x" * 2_001}, "query"),
        ({"name": "  "}, "name"),
        ({"name": "x" * 81}, "name"),
        ({"position": 10**7}, "position"),
        ({"owner_id": None}, "owner_id"),
    ]:
        r = save(client, world.alice, **body)
        assert r.status_code == 422, (body, r.text)
        assert [e["loc"][:2] for e in r.json()["errors"]] == [["body", field]], r.json()
    assert stored(database) == []


def test_another_workspaces_inbox_or_team_is_not_found_and_nothing_is_stored(
    client: TestClient, world: World, database: Database
) -> None:
    acme_team = team(client, world.alice, "Support")
    acme_inbox = world.acme.inbox.id  # type: ignore[union-attr]
    for key, value in (("inbox_id", acme_inbox), ("team_id", acme_team), ("team_id", "0" * 32)):
        r = save(client, world.mallory, query=f"view=all&{key}={value}")
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith(f"query: {key}: "), r.json()
    assert stored(database) == []
    theirs = saved(client, world.mallory, name="Mine")
    r = client.patch(
        f"{VIEWS}/{theirs['id']}",
        json={"query": f"inbox_id={acme_inbox}"},
        headers=auth(world.mallory),
    )
    assert r.status_code == 404, r.text
    assert stored(database) == [("inbox", "Mine", "view=mine", world.globex.users["mallory"].id, 0)]
    ours = saved(client, world.alice, query=f"inbox_id={acme_inbox}")
    assert ours["query"] == f"view=mine&inbox_id={acme_inbox}"


def test_any_member_saves_their_own_views_and_only_admins_and_owners_share(
    client: TestClient, world: World, database: Database
) -> None:
    ada, ada_token = ada_the_admin(database, world)
    bob, victor = world.acme.users["bob"].id, world.acme.users["victor"].id
    mine = saved(client, world.victor, name="Victor's", query="view=all")
    assert (mine["shared"], mine["mine"]) == (False, True)
    saved(client, world.bob, name="Bob's", page="customers", query="tag=vip")
    for token in (world.bob, world.victor):
        r = save(client, token, name="Not shared", shared=True)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
    shared = saved(client, ada_token, name="Ada's", shared=True, position=2)
    assert (shared["shared"], shared["mine"]) == (True, True)
    saved(client, world.alice, name="Alice's", shared=True)
    assert stored(database) == [
        ("customers", "Bob's", "tag=vip", bob, 0),
        ("inbox", "Ada's", "view=mine", None, 2),
        ("inbox", "Alice's", "view=mine", None, 0),
        ("inbox", "Victor's", "view=all", victor, 0),
    ]
    created = audited(database, "saved_view.create")
    assert [(a.actor_user_id, a.data) for a in created] == [
        (victor, {"page": "inbox", "name": "Victor's", "query": "view=all", "shared": False}),
        (bob, {"page": "customers", "name": "Bob's", "query": "tag=vip", "shared": False}),
        (ada, {"page": "inbox", "name": "Ada's", "query": "view=mine", "shared": True}),
        (
            world.acme.users["alice"].id,
            {"page": "inbox", "name": "Alice's", "query": "view=mine", "shared": True},
        ),
    ]
    assert all(a.target_type == "saved_view" and a.target_id for a in created)


def test_each_member_lists_the_shared_views_and_their_own_by_page_position_and_name(
    client: TestClient, world: World, database: Database
) -> None:
    _, ada = ada_the_admin(database, world)
    saved(client, world.alice, name="zebra", shared=True)
    saved(client, world.alice, name="Alpha", shared=True)
    saved(client, world.alice, name="last", shared=True, position=5)
    saved(client, world.alice, name="first", shared=True, position=-1)
    saved(client, world.bob, name="bob's", query="view=mine")
    saved(client, world.alice, name="Alice only")
    saved(client, world.alice, name="Found", page="customers", query="q=kim", shared=True)
    saved(client, world.bob, name="Mine too", page="customers", query="tag=vip")
    saved(client, world.mallory, name="Globex's", shared=True)

    def listed(token: str, **params: str) -> list[tuple[str, str, bool, bool]]:
        r = client.get(VIEWS, params=params, headers=auth(token))
        assert r.status_code == 200, r.text
        return [(v["page"], v["name"], v["shared"], v["mine"]) for v in r.json()]

    assert listed(world.bob) == [
        ("customers", "Found", True, False),
        ("customers", "Mine too", False, True),
        ("inbox", "first", True, False),
        ("inbox", "Alpha", True, False),
        ("inbox", "bob's", False, True),
        ("inbox", "zebra", True, False),
        ("inbox", "last", True, False),
    ]
    assert listed(world.alice, page="inbox") == [
        ("inbox", "first", True, True),
        ("inbox", "Alice only", False, True),
        ("inbox", "Alpha", True, True),
        ("inbox", "zebra", True, True),
        ("inbox", "last", True, True),
    ]
    assert listed(ada, page="customers") == [("customers", "Found", True, True)]
    assert [name for _, name, _, mine in listed(world.victor) if mine] == []
    assert listed(world.mallory) == [("inbox", "Globex's", True, True)]
    r = client.get(VIEWS, params={"page": "settings"}, headers=auth(world.bob))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    one = client.get(VIEWS, params={"page": "customers"}, headers=auth(world.bob)).json()[0]
    assert set(one) == {
        "id",
        "page",
        "name",
        "query",
        "shared",
        "position",
        "mine",
        "created_at",
        "updated_at",
    }
    assert one["query"] == "q=kim"


def test_who_may_change_and_delete_a_view(
    client: TestClient, world: World, database: Database
) -> None:
    bob, victor = world.acme.users["bob"].id, world.acme.users["victor"].id
    shared = saved(client, world.alice, name="Shared", shared=True)
    own = saved(client, world.bob, name="Own")
    watched = saved(client, world.victor, name="Watched")
    for r in (
        client.patch(f"{VIEWS}/{shared['id']}", json={"name": "x"}, headers=auth(world.bob)),
        client.patch(f"{VIEWS}/{shared['id']}", json={"position": 1}, headers=auth(world.victor)),
        client.delete(f"{VIEWS}/{shared['id']}", headers=auth(world.bob)),
        client.delete(f"{VIEWS}/{shared['id']}", headers=auth(world.victor)),
    ):
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = client.patch(f"{VIEWS}/{own['id']}", json={"name": " Renamed "}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["name"] == "Renamed"
    r = client.patch(
        f"{VIEWS}/{watched['id']}", json={"query": "view=all"}, headers=auth(world.victor)
    )
    assert r.status_code == 200 and r.json()["query"] == "view=all"
    r = client.patch(
        f"{VIEWS}/{shared['id']}", json={"query": "status=all"}, headers=auth(world.alice)
    )
    assert r.status_code == 200 and r.json()["query"] == "view=mine&status=all"
    assert stored(database) == [
        ("inbox", "Renamed", "view=mine", bob, 0),
        ("inbox", "Shared", "view=mine&status=all", None, 0),
        ("inbox", "Watched", "view=all", victor, 0),
    ]
    assert client.delete(f"{VIEWS}/{own['id']}", headers=auth(world.bob)).status_code == 204
    assert client.delete(f"{VIEWS}/{watched['id']}", headers=auth(world.victor)).status_code == 204
    assert client.delete(f"{VIEWS}/{shared['id']}", headers=auth(world.alice)).status_code == 204
    assert stored(database) == []
    assert [(a.target_id, a.data) for a in audited(database, "saved_view.delete")] == [
        (own["id"], {"page": "inbox", "name": "Renamed", "shared": False}),
        (watched["id"], {"page": "inbox", "name": "Watched", "shared": False}),
        (shared["id"], {"page": "inbox", "name": "Shared", "shared": True}),
    ]


def test_another_members_own_view_is_not_found_anywhere(
    client: TestClient, world: World, database: Database
) -> None:
    own = saved(client, world.bob, name="Bob's", query="view=mine")
    url = f"{VIEWS}/{own['id']}"
    for token in (world.alice, world.victor, world.mallory):  # an owner of Acme too
        for r in (
            client.get(url, headers=auth(token)),
            client.patch(url, json={"name": "taken"}, headers=auth(token)),
            client.delete(url, headers=auth(token)),
        ):
            assert r.status_code == 404, r.text
            assert r.headers["content-type"] == "application/problem+json"
        assert own["id"] not in {v["id"] for v in client.get(VIEWS, headers=auth(token)).json()}
    assert stored(database) == [("inbox", "Bob's", "view=mine", world.acme.users["bob"].id, 0)]
    r = client.get(url, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["mine"] is True


def test_another_workspaces_shared_view_is_not_found(
    client: TestClient, world: World, database: Database
) -> None:
    shared = saved(client, world.alice, name="Acme's", shared=True, query="status=all")
    url = f"{VIEWS}/{shared['id']}"
    for r in (
        client.get(url, headers=auth(world.mallory)),
        client.patch(url, json={"name": "Globex's"}, headers=auth(world.mallory)),
        client.delete(url, headers=auth(world.mallory)),
    ):
        assert r.status_code == 404, r.text
    assert client.get(VIEWS, headers=auth(world.mallory)).json() == []
    assert stored(database) == [("inbox", "Acme's", "view=mine&status=all", None, 0)]
    assert client.get(url, headers=auth(world.victor)).json()["mine"] is False


def test_a_name_is_unique_among_the_shared_views_of_a_page_and_among_each_members_own(
    client: TestClient, world: World, database: Database
) -> None:
    saved(client, world.alice, name="Urgent", shared=True)
    r = save(client, world.alice, name=" URGENT ", shared=True)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "“URGENT”" in r.json()["detail"]
    saved(client, world.alice, name="urgent")  # her own: shared and personal may share a name
    r = save(client, world.alice, name="Urgent")
    assert r.status_code == 409, r.text
    saved(client, world.bob, name="Urgent")  # each member's own are apart
    saved(client, world.alice, name="Urgent", page="customers", shared=True)  # another page
    saved(client, world.mallory, name="Urgent", shared=True)  # another workspace
    other = saved(client, world.bob, name="Other")
    r = client.patch(f"{VIEWS}/{other['id']}", json={"name": "uRGENT"}, headers=auth(world.bob))
    assert r.status_code == 409, r.text
    r = client.patch(f"{VIEWS}/{other['id']}", json={"name": "OTHER"}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["name"] == "OTHER"  # its own name, recased
    assert [name for _, name, *_ in stored(database)] == [
        "Urgent",
        "OTHER",
        "Urgent",
        "Urgent",
        "Urgent",
        "urgent",
    ]


def test_a_change_keeps_what_is_left_out_and_makes_a_new_query_canonical(
    client: TestClient, world: World, database: Database
) -> None:
    view = saved(client, world.bob, name="Waiting", query="view=mine&sort=waiting", position=3)
    url = f"{VIEWS}/{view['id']}"
    r = client.patch(url, json={"position": 1}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["query"], r.json()["position"]) == (
        "Waiting",
        "view=mine&sort=waiting",
        1,
    )
    r = client.patch(
        url, json={"query": "?sort=newest&status=pending&view=all "}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["query"], r.json()["position"]) == (
        "Waiting",
        "view=all&status=pending",
        1,
    )
    assert r.json()["updated_at"] > view["updated_at"]
    r = client.patch(url, json={"query": "status=closed"}, headers=auth(world.bob))
    assert r.status_code == 422 and r.json()["detail"].startswith("query: status must be one of")
    r = client.patch(url, json={"page": "customers"}, headers=auth(world.bob))
    assert r.status_code == 422, r.text
    # The same filters in another order change nothing, and nothing is audited for them.
    r = client.patch(url, json={"query": "status=pending&view=all"}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    bob = world.acme.users["bob"].id
    assert stored(database) == [("inbox", "Waiting", "view=all&status=pending", bob, 1)]
    assert [a.data for a in audited(database, "saved_view.change")] == [
        {"position": 1},
        {"query": "view=all&status=pending"},
    ]


def test_a_deleted_member_takes_their_own_views_and_the_shared_ones_stay(
    client: TestClient, world: World, database: Database
) -> None:
    ada, ada_token = ada_the_admin(database, world)
    saved(client, ada_token, name="Ada's shared", shared=True)
    saved(client, ada_token, name="Ada's own")
    saved(client, world.bob, name="Bob's own")
    with database.session() as db:
        db.execute(delete(User).where(User.id == ada))
    bob = world.acme.users["bob"].id
    assert stored(database) == [
        ("inbox", "Ada's shared", "view=mine", None, 0),
        ("inbox", "Bob's own", "view=mine", bob, 0),
    ]
    with database.session(write=False) as db:
        shared = db.scalars(select(SavedView).where(SavedView.owner_id.is_(None))).one()
        assert shared.created_by is None
    names = [v["name"] for v in client.get(VIEWS, headers=auth(world.alice)).json()]
    assert names == ["Ada's shared"]


def test_a_customers_view_the_page_would_refuse_is_not_saved(
    client: TestClient, world: World, database: Database
) -> None:
    # Saved, the page then said "not an attribute name" over an empty list.
    for query, why in (
        ('attr=a"b&value=1', "not an attribute name"),
        (f"attr={'k' * 65}&value=1", "not an attribute name"),
    ):
        r = save(client, world.bob, page="customers", query=query)
        assert r.status_code == 422, (query, r.text)
        assert r.json()["detail"].startswith("query: attr: "), r.json()
        assert why in r.json()["detail"]
    assert stored(database) == []


def test_the_inbox_reads_its_filters_as_a_saved_view_does(client: TestClient, world: World) -> None:
    # ?view= showed everyone's conversations where the view saved from it showed Mine; an
    # id with spaces around it emptied the list where the view found it.
    inbox = world.acme.inbox.id  # type: ignore[union-attr]
    page = client.get(f"/app/inbox?view=&inbox_id=%20{inbox}%20", headers=auth(world.bob))
    assert page.status_code == 200
    assert f'data-query="view=mine&amp;inbox_id={inbox}"' in page.text
    assert 'data-view="mine"' in page.text
    # And lists what the view lists: the conversation of that inbox (spaces and all).
    conv = world.acme.opened.conversation
    client.post(
        f"/api/v1/conversations/{conv.id}/assign",
        json={"assignee_id": world.acme.users["bob"].id},
        headers=auth(world.bob),
    ).raise_for_status()
    page = client.get(
        f"/app/inbox?view=all&inbox_id=%20{inbox}%20&channel=%20api%20", headers=auth(world.bob)
    )
    assert f'data-id="{conv.id}"' in page.text


def test_a_renamed_label_is_followed_by_the_views_that_filter_on_it(
    client: TestClient, world: World, database: Database
) -> None:
    # Renaming a label moved it on every conversation, rule and policy, and left the views
    # filtering on its old name: "VIP queue" showed nothing from then on, to everyone.
    r = client.post("/api/v1/labels", json={"name": "vip"}, headers=auth(world.alice))
    assert r.status_code == 201, r.text
    label = r.json()["id"]
    shared = saved(client, world.alice, name="VIP queue", query="label=vip&status=all", shared=True)
    own = saved(client, world.bob, name="Mine", query="label=VIP&view=all")
    other = saved(client, world.bob, name="Billing", query="label=vipx")
    r = client.patch(f"/api/v1/labels/{label}", json={"name": "Gold"}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        queries = {v.id: v.query for v in db.scalars(select(SavedView))}
    assert queries[shared["id"]] == "view=mine&status=all&label=gold"
    assert queries[own["id"]] == "view=all&label=gold"
    assert queries[other["id"]] == "view=mine&label=vipx"


def test_a_deleted_label_leaves_the_views_that_filtered_on_it_and_the_answer_names_them(
    client: TestClient, world: World, database: Database
) -> None:
    # Deleting a label left the views filtering on it: "VIP queue" showed nothing from then
    # on, to everyone, and nothing said so.
    r = client.post("/api/v1/labels", json={"name": "vip"}, headers=auth(world.alice))
    assert r.status_code == 201, r.text
    label = r.json()["id"]
    shared = saved(client, world.alice, name="VIP queue", query="label=vip&status=all", shared=True)
    hers = saved(client, world.alice, name="Hers", query="label=vip")
    bobs = saved(client, world.bob, name="Mine", query="label=VIP&view=all")
    other = saved(client, world.bob, name="Billing", query="label=vipx")
    r = client.delete(f"/api/v1/labels/{label}", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    # Bob's own view is his to change: named with his name, as his own macro would be.
    assert r.json() == {
        "saved_views": ["your own view 'Hers'", "Bob's own view 'Mine'", "view 'VIP queue'"]
    }
    with database.session(write=False) as db:
        queries = {v.id: v.query for v in db.scalars(select(SavedView))}
    assert queries[shared["id"]] == "view=mine&status=all"
    assert queries[hers["id"]] == "view=mine"
    assert queries[bobs["id"]] == "view=all"
    assert queries[other["id"]] == "view=mine&label=vipx"
    # And the views list what they did but for the label: Bob's own lists every conversation.
    r = client.get("/api/v1/saved-views/counts", headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["counts"][bobs["id"]] == 1, r.text
    # The audit log says which views the deletion changed (it said the label alone), by
    # id, name and owner, whoever reads it later.
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    [entry] = audited(database, "label.delete")
    assert (entry.target_id, entry.actor_user_id) == (label, alice)
    assert entry.data == {
        "name": "vip",
        "saved_views": [
            {"id": hers["id"], "name": "Hers", "owner_id": alice},
            {"id": bobs["id"], "name": "Mine", "owner_id": bob},
            {"id": shared["id"], "name": "VIP queue", "owner_id": None},
        ],
    }
