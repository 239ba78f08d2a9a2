"""Customers over the API: create, find, update, identities, timeline."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.customers import service
from rapport.db import Database
from rapport.privacy.models import AuditLog
from tests.conftest import auth
from tests.factories import World
from tests.web.test_pages import sign_in


def test_create_customer_normalizes_handles_and_refuses_a_taken_one(
    client: TestClient, world: World
) -> None:
    r = client.post(
        "/api/v1/customers",
        json={"name": "Ines", "email": " Ines@Exämple.COM ", "phone": "+33 6 12 34 56 78"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "ines@xn--exmple-cua.com"
    assert body["phone"] == "+33612345678"
    assert {i["kind"] for i in body["identities"]} == {"email", "phone"}
    again = client.post(
        "/api/v1/customers", json={"phone": "+33612345678"}, headers=auth(world.bob)
    )
    assert again.status_code == 409 and again.json()["type"].endswith("/conflict")


def test_search_finds_a_customer_by_name_email_or_phone(client: TestClient, world: World) -> None:
    client.post(
        "/api/v1/customers",
        json={"name": "Oskar Berg", "email": "oskar@example.se", "phone": "+46701234567"},
        headers=auth(world.bob),
    )
    for q in ("oskar", "OSKAR@example.se", "+46 70 123 45 67", "Berg"):
        items = client.get("/api/v1/customers", params={"q": q}, headers=auth(world.bob)).json()[
            "items"
        ]
        assert [c["name"] for c in items] == ["Oskar Berg"], q


def test_a_search_matching_more_than_it_pages_through_says_so(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past 200 matches the pages simply ended, as if there were no more customers.
    monkeypatch.setattr(service, "SEARCH_CAP", 5)
    made = [
        client.post(
            "/api/v1/customers",
            json={"name": f"Zed {i}", "email": f"zed{i}@example.com"},
            headers=auth(world.bob),
        ).json()["id"]
        for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"q": "zed", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/customers", params=params, headers=auth(world.bob)).json()
        assert page["truncated"] is True
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(made[2:])  # the most recently added five
    # A handle typed whole is always found; fewer matches than the cap are not cut.
    page = client.get(
        "/api/v1/customers", params={"q": "zed0@example.com"}, headers=auth(world.bob)
    ).json()
    assert [c["id"] for c in page["items"]] == [made[0]] and page["truncated"] is False


@pytest.mark.parametrize("few", [2, 100])
def test_a_search_finds_the_newest_matches_whether_a_word_is_rare_or_common(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    # On PostgreSQL a word few customers have was searched for along the key, matching
    # every customer's text on the way (2.6 s at a million customers). It is now read
    # through the index unless it has more than FEW_CUSTOMERS hits (2: the walk; 100: the
    # index): either way the same customers, newest first.
    from rapport import search

    monkeypatch.setattr(search, "FEW_CUSTOMERS", few)
    made = [
        client.post(
            "/api/v1/customers",
            json={"name": f"Quill {i}", "email": f"quill{i}@example.org"},
            headers=auth(world.bob),
        ).json()["id"]
        for i in range(4)
    ]
    with client.app.state.database.session(write=False) as db:  # type: ignore[attr-defined]
        ws = world.acme.workspace.id
        assert search.customer_ids(db, workspace_id=ws, q="quill", limit=3) == made[::-1][:3]
        assert search.customer_ids(db, workspace_id=ws, q="quill2") == [made[2]]
        assert search.customer_ids(db, workspace_id=ws, q="nobody") == []


def test_customer_list_pages_with_a_cursor_without_gaps_or_repeats(
    client: TestClient, world: World
) -> None:
    for i in range(7):
        client.post(
            "/api/v1/customers",
            json={"name": f"C{i}", "email": f"c{i}@example.com"},
            headers=auth(world.bob),
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/customers", params=params, headers=auth(world.bob)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 8  # seven plus the world's first customer


def test_a_forged_cursor_is_a_clear_error(client: TestClient, world: World) -> None:
    r = client.get("/api/v1/customers", params={"cursor": "garbage"}, headers=auth(world.bob))
    assert r.status_code == 422 and "cursor" in r.json()["detail"]


def test_update_merges_attributes_and_none_removes_one(client: TestClient, world: World) -> None:
    cid = world.acme.opened.customer.id
    client.patch(
        f"/api/v1/customers/{cid}",
        json={"attributes": {"plan": "pro", "seats": 5}},
        headers=auth(world.bob),
    )
    r = client.patch(
        f"/api/v1/customers/{cid}",
        json={"name": "Renamed", "attributes": {"seats": None}},
        headers=auth(world.bob),
    )
    assert r.json()["name"] == "Renamed" and r.json()["attributes"] == {"plan": "pro"}


def test_identities_can_be_added_and_removed(client: TestClient, world: World) -> None:
    cid = world.acme.opened.customer.id
    added = client.post(
        f"/api/v1/customers/{cid}/identities",
        json={"kind": "telegram", "value": "@SomeOne"},
        headers=auth(world.bob),
    )
    assert added.status_code == 201 and added.json()["value"] == "someone"
    ident = added.json()["id"]
    assert (
        client.delete(
            f"/api/v1/customers/{cid}/identities/{ident}", headers=auth(world.bob)
        ).status_code
        == 204
    )
    kinds = [
        i["kind"]
        for i in client.get(f"/api/v1/customers/{cid}", headers=auth(world.bob)).json()[
            "identities"
        ]
    ]
    assert kinds == ["email"]


def test_a_handle_told_joins_no_message_until_it_is_proved_and_each_step_is_audited(
    client: TestClient, world: World, database: Database
) -> None:
    cid = world.acme.opened.customer.id
    url = f"/api/v1/customers/{cid}/identities"

    def write(ext: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": "hi", "from": {"email": "told@example.com"}},
            headers=auth(world.bob),
        )
        return str(r.json()["customer_id"])

    told = client.post(
        url, json={"kind": "email", "value": "told@example.com"}, headers=auth(world.bob)
    )
    assert told.status_code == 201 and told.json()["verified"] is False
    again = client.post(
        url,
        json={"kind": "email", "value": "told@example.com", "verified": True},
        headers=auth(world.bob),
    )
    assert again.status_code == 201 and again.json()["id"] == told.json()["id"]
    assert again.json()["verified"] is True  # theirs already: now proved, not a conflict
    assert write("proved-1") == cid
    with database.session(write=False) as db:
        steps = db.scalars(
            select(AuditLog.data)
            .where(AuditLog.action == "customer.identity_add", AuditLog.target_id == cid)
            .order_by(AuditLog.created_at)
        ).all()
    assert steps == [{"kind": "email", "verified": False}, {"kind": "email", "verified": True}]


def test_removing_the_primary_email_or_phone_falls_back_to_the_oldest_left(
    client: TestClient, world: World
) -> None:
    # The customer's email (or phone) became None although another handle of that kind
    # remained.
    c = client.post(
        "/api/v1/customers",
        json={"name": "Eve", "email": "one@example.com", "phone": "+447700900001"},
        headers=auth(world.bob),
    ).json()
    customer = f"/api/v1/customers/{c['id']}"
    for kind, value in (
        ("email", "two@example.com"),
        ("email", "three@example.com"),
        ("phone", "+447700900002"),
    ):
        r = client.post(
            f"{customer}/identities", json={"kind": kind, "value": value}, headers=auth(world.bob)
        )
        assert r.status_code == 201, r.text

    def remove(value: str) -> dict:  # type: ignore[type-arg]
        now = client.get(customer, headers=auth(world.bob)).json()
        [gone] = [i["id"] for i in now["identities"] if i["value"] == value]
        r = client.delete(f"{customer}/identities/{gone}", headers=auth(world.bob))
        assert r.status_code == 204
        return client.get(customer, headers=auth(world.bob)).json()  # type: ignore[no-any-return]

    after = remove("one@example.com")
    assert (after["email"], after["phone"]) == ("two@example.com", "+447700900001")
    after = remove("+447700900001")
    assert (after["email"], after["phone"]) == ("two@example.com", "+447700900002")
    after = remove("three@example.com")  # not the primary: it stays
    assert after["email"] == "two@example.com"
    after = remove("two@example.com")
    assert after["email"] is None


def test_an_order_event_added_through_the_api_enters_the_purchase_history(
    client: TestClient, world: World
) -> None:
    # Only an events source's calls made orders: the same "Order Completed" added to the
    # customer through the API (or by the demo) showed in the timeline, while the
    # profile said 0 orders and no spend.
    cid = world.acme.opened.customer.id
    url = f"/api/v1/customers/{cid}/events"
    order = {"order_id": "A-1", "total": "59.90", "currency": "EUR"}
    r = client.post(
        url, json={"type": "Order Completed", "properties": order}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    orders = client.get(f"/api/v1/customers/{cid}/orders", headers=auth(world.bob)).json()
    assert [(o["order_id"], o["total_minor"], o["currency"], o["status"]) for o in orders] == [
        ("A-1", 5990, "EUR", "completed")
    ]
    figures = client.get(f"/api/v1/customers/{cid}/profile", headers=auth(world.bob)).json()
    assert figures["figures"]["total_spend"] == {"EUR": "59.90"}
    refund = {"type": "Order Refunded", "properties": {"order_id": "A-1"}}
    assert client.post(url, json=refund, headers=auth(world.bob)).status_code == 201
    orders = client.get(f"/api/v1/customers/{cid}/orders", headers=auth(world.bob)).json()
    assert [o["status"] for o in orders] == ["refunded"]
    # Another customer's order is not theirs to complete or refund through this one.
    other = client.post(
        "/api/v1/customers",
        json={"name": "Other", "email": "other@example.com"},
        headers=auth(world.bob),
    ).json()["id"]
    for kind in ("Order Completed", "Order Refunded"):
        r = client.post(
            f"/api/v1/customers/{other}/events",
            json={"type": kind, "properties": {"order_id": "A-1", "total": "1.00"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 409, r.text
        assert r.json()["detail"] == "order A-1 is another customer's; add its events to them"
    orders = client.get(f"/api/v1/customers/{cid}/orders", headers=auth(world.bob)).json()
    assert [(o["total_minor"], o["status"]) for o in orders] == [(5990, "refunded")]
    assert (
        client.get(f"/api/v1/customers/{other}/timeline", headers=auth(world.bob)).json()["items"]
        == []
    )
    # An order that cannot be recorded as sent is refused, the timeline left as it was.
    before = client.get(f"/api/v1/customers/{cid}/timeline", headers=auth(world.bob)).json()
    bad = {"type": "Order Completed", "properties": {"order_id": "A-2", "total": "abc"}}
    r = client.post(url, json=bad, headers=auth(world.bob))
    assert r.status_code == 422 and "abc is not an amount" in r.json()["detail"]
    after = client.get(f"/api/v1/customers/{cid}/timeline", headers=auth(world.bob)).json()
    assert after == before


def test_timeline_mixes_messages_and_events_and_filters_by_kind(
    client: TestClient, world: World
) -> None:
    cid = world.acme.opened.customer.id
    conv = world.acme.opened.conversation.id
    client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "On it"}, headers=auth(world.bob)
    )
    client.post(
        f"/api/v1/customers/{cid}/events",
        json={
            "type": "Order Completed",
            "properties": {"total": 1999},
            "occurred_at": "2020-01-01T00:00:00Z",
        },
        headers=auth(world.bob),
    )
    everything = client.get(f"/api/v1/customers/{cid}/timeline", headers=auth(world.bob)).json()[
        "items"
    ]
    assert [e["kind"] for e in everything] == ["message", "message", "event"]
    events = client.get(
        f"/api/v1/customers/{cid}/timeline", params={"kind": "event"}, headers=auth(world.bob)
    ).json()["items"]
    assert [e["type"] for e in events] == ["Order Completed"]
    api_only = client.get(
        f"/api/v1/customers/{cid}/timeline",
        params={"channel": "api", "limit": 1},
        headers=auth(world.bob),
    ).json()
    assert len(api_only["items"]) == 1 and api_only["next_cursor"]
    rest = client.get(
        f"/api/v1/customers/{cid}/timeline",
        params={"channel": "api", "cursor": api_only["next_cursor"]},
        headers=auth(world.bob),
    ).json()["items"]
    assert len(rest) == 1 and rest[0]["id"] != api_only["items"][0]["id"]


def test_tags_are_added_and_removed_on_many_customers_at_once_or_on_none(
    client: TestClient, world: World
) -> None:
    def made(name: str, token: str) -> str:
        r = client.post("/api/v1/customers", json={"name": name}, headers=auth(token))
        return str(r.json()["id"])

    def tags(cid: str) -> list[str]:
        r = client.get(f"/api/v1/customers/{cid}/profile", headers=auth(world.bob))
        return list(r.json()["tags"])

    a, b = made("A", world.bob), made("B", world.bob)
    client.patch(f"/api/v1/customers/{a}/tags", json={"add": ["old"]}, headers=auth(world.bob))
    url = "/api/v1/customers/bulk-tags"
    r = client.post(url, json={"customer_ids": [a, b, a], "add": ["VIP "]}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json() == {"changed": 2}
    assert tags(a) == ["old", "vip"] and tags(b) == ["vip"]
    r = client.post(url, json={"customer_ids": [a, b], "remove": ["vip"]}, headers=auth(world.bob))
    assert r.json() == {"changed": 2} and tags(a) == ["old"] and tags(b) == []
    # Another workspace's customer among them: a 404, and no one is tagged.
    theirs = made("G", world.mallory)
    r = client.post(url, json={"customer_ids": [a, theirs], "add": ["x"]}, headers=auth(world.bob))
    assert r.status_code == 404 and tags(a) == ["old"]
    assert (
        client.post(
            url, json={"customer_ids": [a], "add": ["x"]}, headers=auth(world.victor)
        ).status_code
        == 403
    )
    many = {"customer_ids": [a] * 101, "add": ["x"]}
    assert client.post(url, json=many, headers=auth(world.bob)).status_code == 422


def test_the_timeline_is_what_passed_with_the_customer_not_the_teams_notes(
    client: TestClient, world: World
) -> None:
    # A private note and the "assigned" line were listed as the customer's messages (on
    # the customer's page, under the channel's badge: an email to them, it seemed).
    cid = world.acme.opened.customer.id
    conv = world.acme.opened.conversation.id
    bob = world.acme.users["bob"].id
    for path, body in (
        ("notes", {"text": "internal: check the refund"}),
        ("assign", {"assignee_id": bob}),
        ("messages", {"text": "Your refund is on its way"}),
    ):
        r = client.post(f"/api/v1/conversations/{conv}/{path}", json=body, headers=auth(world.bob))
        assert r.status_code in (200, 201), r.text
    items = client.get(f"/api/v1/customers/{cid}/timeline", headers=auth(world.bob)).json()["items"]
    messages = [(e["type"], e["data"]["kind"]) for e in items if e["kind"] == "message"]
    assert messages[0] == ("message.out", "message")
    assert all(kind in ("message", "bot") for _, kind in messages)
    assert not any("internal" in e["summary"] for e in items)
    sign_in(client, "bob@acme.test")
    page = client.get(f"/app/customers/{cid}").text
    assert "We wrote:</span> Your refund is on its way" in page  # (a first message is no reply)
    assert "They wrote:" in page and "check the refund" not in page
