"""One person, one customer: linking across channels, merge, and undo that restores exactly."""

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.customers.identity import handle
from rapport.customers.models import ConsentChannel, IdentityKind
from rapport.customers.profile import may_contact
from rapport.db import Database
from rapport.events.models import Order
from rapport.ingest import InboundMessage, receive
from tests.conftest import auth
from tests.factories import World


def snapshot(client: TestClient, world: World, customer_id: str) -> dict:  # type: ignore[type-arg]
    c = client.get(f"/api/v1/customers/{customer_id}", headers=auth(world.bob)).json()
    convs = client.get(
        "/api/v1/conversations",
        params={"customer_id": customer_id, "limit": 100},
        headers=auth(world.bob),
    ).json()["items"]
    events = client.get(
        f"/api/v1/customers/{customer_id}/timeline",
        params={"kind": "event"},
        headers=auth(world.bob),
    ).json()["items"]
    orders = client.get(
        f"/api/v1/customers/{customer_id}/timeline",
        params={"kind": "order"},
        headers=auth(world.bob),
    ).json()["items"]
    return {
        "orders": sorted(o["id"] for o in orders),
        "name": c["name"],
        "email": c["email"],
        "phone": c["phone"],
        "attributes": c["attributes"],
        "first_seen_at": c["first_seen_at"],
        "last_seen_at": c["last_seen_at"],
        "identities": sorted((i["kind"], i["value"]) for i in c["identities"]),
        "conversations": sorted(x["id"] for x in convs),
        "events": sorted(e["id"] for e in events),
        "merged_into_id": c["merged_into_id"],
    }


def test_an_email_customer_writing_on_whatsapp_from_a_known_phone_is_one_customer(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    inbox = world.acme.inbox
    assert inbox is not None
    with database.session() as db:
        first = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="m1",
                text="by email",
                handles=[
                    handle(IdentityKind.email, "zoe@example.com"),
                    handle(IdentityKind.phone, "+447700900123"),
                ],
            ),
            settings=settings,
        )
        second = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="w1",
                text="on WhatsApp",
                handles=[
                    handle(IdentityKind.whatsapp, "447700900123"),
                    handle(IdentityKind.phone, "+447700900123"),
                ],
            ),
            settings=settings,
        )
        assert first.customer.id == second.customer.id
    timeline = client.get(
        f"/api/v1/customers/{first.customer.id}/timeline", headers=auth(world.bob)
    ).json()["items"]
    assert [e["summary"] for e in timeline] == ["on WhatsApp", "by email"]


def test_merge_then_unmerge_restores_both_customers_exactly(
    client: TestClient, world: World
) -> None:
    def make(name: str, email: str, attrs: dict) -> str:  # type: ignore[type-arg]
        c = client.post(
            "/api/v1/customers",
            json={"name": name, "email": email, "attributes": attrs},
            headers=auth(world.bob),
        ).json()
        client.post(
            f"/api/v1/customers/{c['id']}/events",
            json={"type": "Order Completed", "properties": {"total": 100}},
            headers=auth(world.bob),
        )
        client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",
            json={"external_id": f"x-{email}", "text": "hi", "from": {"email": email}},
            headers=auth(world.bob),
        )  # type: ignore[union-attr]
        database = client.app.state.database  # type: ignore[attr-defined]
        with database.session() as db:
            db.add(
                Order(
                    workspace_id=world.acme.workspace.id,
                    customer_id=c["id"],
                    order_id=f"o-{email}",
                    total_minor=1999,
                )
            )
        return str(c["id"])

    a = make("Sam Smith", "sam@example.com", {"plan": "pro", "city": "Leeds"})
    b = make("", "sam.smith@work.example", {"plan": "free", "seats": 3})
    before_a, before_b = snapshot(client, world, a), snapshot(client, world, b)
    merged = client.post(
        f"/api/v1/customers/{a}/merge",
        json={"merged_id": b, "reason": "same person"},
        headers=auth(world.bob),
    )
    assert merged.status_code == 201, merged.text
    during = snapshot(client, world, a)
    assert (
        len(during["identities"]) == 2
        and len(during["conversations"]) == 2
        and len(during["events"]) == 2
        and len(during["orders"]) == 2
    )
    history = client.get(
        f"/api/v1/customers/{a}/timeline", params={"kind": "merge"}, headers=auth(world.bob)
    ).json()["items"]
    assert [h["type"] for h in history] == ["customer.merged"]
    assert "same person" in history[0]["summary"]
    assert during["attributes"] == {
        "plan": "pro",
        "city": "Leeds",
        "seats": 3,
    }  # the survivor's values win
    assert snapshot(client, world, b)["merged_into_id"] == a
    hits = client.get(
        "/api/v1/customers", params={"q": "sam.smith@work.example"}, headers=auth(world.bob)
    ).json()["items"]
    assert [c["id"] for c in hits] == [a]  # the merged record no longer shows

    undo = client.post(
        f"/api/v1/customer-merges/{merged.json()['id']}/undo", headers=auth(world.bob)
    )
    assert undo.status_code == 200
    assert snapshot(client, world, a) == before_a
    assert snapshot(client, world, b) == before_b
    again = client.post(
        f"/api/v1/customer-merges/{merged.json()['id']}/undo", headers=auth(world.bob)
    )
    assert again.status_code == 409
    kinds = [e["action"] for e in _audit(client, world)]
    assert "customer.merge" in kinds and "customer.unmerge" in kinds


def _audit(client: TestClient, world: World) -> list[dict]:  # type: ignore[type-arg]
    from sqlalchemy import select

    from rapport.privacy.models import AuditLog

    database = client.app.state.database  # type: ignore[attr-defined]
    with database.session(write=False) as db:
        return [
            {"action": r.action}
            for r in db.scalars(
                select(AuditLog).where(AuditLog.workspace_id == world.acme.workspace.id)
            )
        ]


def test_customers_of_another_workspace_cannot_be_merged(client: TestClient, world: World) -> None:
    theirs = world.globex.opened.customer.id
    ours = world.acme.opened.customer.id
    r = client.post(
        f"/api/v1/customers/{ours}/merge", json={"merged_id": theirs}, headers=auth(world.bob)
    )
    assert r.status_code == 404


def test_a_merge_carries_consent_and_tags_and_undo_takes_them_back(
    client: TestClient, world: World, database: Database
) -> None:
    # Consent and tags stayed on the hidden record: the survivor's older "yes" was in force
    # for someone who had opted out, and the merged record's tags were gone.
    def make(email: str, tags: list[str]) -> str:
        c = client.post(
            "/api/v1/customers", json={"name": "Sam", "email": email}, headers=auth(world.bob)
        ).json()
        client.put(
            f"/api/v1/customers/{c['id']}/tags", json={"tags": tags}, headers=auth(world.bob)
        )
        return str(c["id"])

    def consent(customer_id: str, channel: str, granted: bool) -> None:
        r = client.post(
            f"/api/v1/customers/{customer_id}/consents",
            json={"channel": channel, "purpose": "marketing", "granted": granted},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text

    def state(customer_id: str) -> tuple[list[str], list[tuple[str, bool]], int]:
        p = client.get(f"/api/v1/customers/{customer_id}/profile", headers=auth(world.bob))
        h = client.get(f"/api/v1/customers/{customer_id}/consents", headers=auth(world.bob))
        current = [(c["channel"], c["granted"]) for c in p.json()["consents"]]
        return p.json()["tags"], current, len(h.json()["history"])

    survivor = make("sam@example.com", ["shared"])
    merged = make("sam.smith@work.example", ["shared", "vip"])
    consent(survivor, "email", True)
    consent(merged, "sms", True)
    consent(merged, "email", False)  # newer than the survivor's yes: in force after
    consent(survivor, "sms", False)  # newer than the merged record's yes: still in force
    before_survivor, before_merged = state(survivor), state(merged)
    assert before_survivor == (["shared"], [("email", True), ("sms", False)], 2)

    m = client.post(
        f"/api/v1/customers/{survivor}/merge", json={"merged_id": merged}, headers=auth(world.bob)
    )
    assert m.status_code == 201, m.text
    assert state(survivor) == (["shared", "vip"], [("email", False), ("sms", False)], 4)
    with database.session(write=False) as db:
        for channel in (ConsentChannel.email, ConsentChannel.sms):
            assert not may_contact(db, customer_id=survivor, channel=channel, purpose="marketing")
    # The hidden record can still be tagged: a moved tag it was given again is not doubled.
    r = client.put(
        f"/api/v1/customers/{merged}/tags",
        json={"tags": ["shared", "vip"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 200

    undo = client.post(f"/api/v1/customer-merges/{m.json()['id']}/undo", headers=auth(world.bob))
    assert undo.status_code == 200, undo.text
    assert state(survivor) == before_survivor
    assert state(merged) == before_merged


def make(client: TestClient, world: World, **fields: str) -> str:
    r = client.post("/api/v1/customers", json=fields, headers=auth(world.bob))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def into(
    client: TestClient, world: World, survivor: str, merged: str, take: list[str] | None = None
) -> str:
    """Merge ``merged`` into ``survivor`` (taking the fields named); the merge's id."""
    r = client.post(
        f"/api/v1/customers/{survivor}/merge",
        json={"merged_id": merged, "take": take or []},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def undo(client: TestClient, world: World, merge_id: str) -> None:
    r = client.post(f"/api/v1/customer-merges/{merge_id}/undo", headers=auth(world.bob))
    assert r.status_code == 200, r.text


def test_a_merge_is_undone_only_after_the_later_merge_of_its_survivor(
    client: TestClient, world: World
) -> None:
    # A into B, then B into C: undoing the first merge answered 200, brought A back with no
    # identity (C kept them) and marked the merge undone for good.
    a, b, c = (make(client, world, email=f"{x}@example.com") for x in "abc")
    before_a, before_c = snapshot(client, world, a), snapshot(client, world, c)
    first = into(client, world, b, a)
    later = into(client, world, c, b)
    r = client.post(f"/api/v1/customer-merges/{first}/undo", headers=auth(world.bob))
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert "undo the later merge first" in r.json()["detail"]
    assert snapshot(client, world, a)["merged_into_id"] == b
    assert len(snapshot(client, world, c)["identities"]) == 3

    for merge_id in (later, first):
        r = client.post(f"/api/v1/customer-merges/{merge_id}/undo", headers=auth(world.bob))
        assert r.status_code == 200, r.text
    assert snapshot(client, world, a) == before_a
    assert snapshot(client, world, c) == before_c


def test_undoing_a_merge_leaves_the_survivor_showing_a_handle_it_still_has(
    client: TestClient, world: World
) -> None:
    # Undo put back the survivor's email from before the merge (none), although a later
    # merge had given it another: it showed no email while holding one.
    b = make(client, world, name="B", phone="+14155550100")
    a = make(client, world, email="a@example.com")
    c = make(client, world, email="c@example.com")
    first = into(client, world, b, a)
    into(client, world, b, c)
    r = client.post(f"/api/v1/customer-merges/{first}/undo", headers=auth(world.bob))
    assert r.status_code == 200, r.text
    survivor, merged = snapshot(client, world, b), snapshot(client, world, a)
    assert survivor["email"] == "c@example.com" and survivor["phone"] == "+14155550100"
    assert merged["email"] == "a@example.com"


def test_a_merge_takes_the_values_chosen_where_the_two_differ_and_undo_gives_them_back(
    client: TestClient, world: World
) -> None:
    # Where both records held a value, the survivor's was kept without a word.
    def make(name: str, email: str, attrs: dict) -> str:  # type: ignore[type-arg]
        r = client.post(
            "/api/v1/customers",
            json={"name": name, "email": email, "attributes": attrs},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    kept = make("Kim Lee", "kim@old.example", {"plan": "Pro", "city": "Oslo", "seats": 3})
    gone = make("Kimberly Lee", "kim@new.example", {"plan": "Enterprise", "seats": 3, "vip": True})
    before = snapshot(client, world, kept)
    preview = client.get(
        f"/api/v1/customers/{kept}/merge-preview",
        params={"merged_id": gone},
        headers=auth(world.bob),
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["conflicts"] == [
        {"field": "name", "survivor": "Kim Lee", "merged": "Kimberly Lee"},
        {"field": "email", "survivor": "kim@old.example", "merged": "kim@new.example"},
        {"field": "attributes.plan", "survivor": "Pro", "merged": "Enterprise"},
    ]
    # Only a field where the two differ can be taken.
    for wrong in (["attributes.seats"], ["attributes.nope"], ["phone"], ["customer_id"]):
        r = client.post(
            f"/api/v1/customers/{kept}/merge",
            json={"merged_id": gone, "take": wrong},
            headers=auth(world.bob),
        )
        assert r.status_code == 422 and r.json()["detail"].startswith("take: "), r.text
    assert snapshot(client, world, kept) == before
    r = client.post(
        f"/api/v1/customers/{kept}/merge",
        json={"merged_id": gone, "take": ["attributes.plan", "name"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert [(c["field"], c["kept"]) for c in r.json()["moved"]["conflicts"]] == [
        ("name", "merged"),
        ("email", "survivor"),
        ("attributes.plan", "merged"),
    ]
    after = client.get(f"/api/v1/customers/{kept}", headers=auth(world.bob)).json()
    assert after["name"] == "Kimberly Lee" and after["email"] == "kim@old.example"
    assert after["attributes"] == {"plan": "Enterprise", "city": "Oslo", "seats": 3, "vip": True}
    undone = client.post(f"/api/v1/customer-merges/{r.json()['id']}/undo", headers=auth(world.bob))
    assert undone.status_code == 200, undone.text
    assert snapshot(client, world, kept) == before
    # Preview checks as a merge does: another workspace's customer is not found.
    theirs = world.globex.opened.customer.id
    r = client.get(
        f"/api/v1/customers/{kept}/merge-preview",
        params={"merged_id": theirs},
        headers=auth(world.bob),
    )
    assert r.status_code == 404, r.text


def test_two_merges_into_one_customer_undone_in_either_order_give_back_the_first_state(
    client: TestClient, world: World
) -> None:
    # Undo wrote back the survivor's fields as they were before its own merge, over what a
    # later merge (or an agent) had set since: undone out of order, values came back from
    # a record no longer merged.
    def make(name: str, attrs: dict) -> str:  # type: ignore[type-arg]
        r = client.post(
            "/api/v1/customers",
            json={"name": name, "attributes": attrs},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def held(cid: str) -> tuple[str, dict]:  # type: ignore[type-arg]
        c = client.get(f"/api/v1/customers/{cid}", headers=auth(world.bob)).json()
        return c["name"], c["attributes"]

    b = make("Bee", {"plan": "b", "tier": ""})
    a = make("Ay", {"plan": "a", "tier": "gold"})
    c = make("Cee", {"plan": "c"})
    first = into(client, world, b, a, ["name", "attributes.plan"])
    # An empty value on the survivor is none: the other's came with the merge.
    assert held(b) == ("Ay", {"plan": "a", "tier": "gold"})
    second = into(client, world, b, c, ["name", "attributes.plan"])
    assert held(b) == ("Cee", {"plan": "c", "tier": "gold"})
    # What the second set stands; what only the first set goes.
    undo(client, world, first)
    assert held(b) == ("Cee", {"plan": "c", "tier": ""})
    undo(client, world, second)  # back to before both
    assert held(b) == ("Bee", {"plan": "b", "tier": ""})
    # An agent's edit after a merge survives its undo.
    third = into(client, world, b, a, ["attributes.plan"])
    assert held(b) == ("Bee", {"plan": "a", "tier": "gold"})
    r = client.patch(
        f"/api/v1/customers/{b}", json={"attributes": {"plan": "edited"}}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    undo(client, world, third)
    assert held(b) == ("Bee", {"plan": "edited", "tier": ""})
    # Undone latest first, likewise.
    fourth, fifth = (
        into(client, world, b, a, ["attributes.plan"]),
        into(client, world, b, c, ["attributes.plan"]),
    )
    assert held(b) == ("Bee", {"plan": "c", "tier": "gold"})
    undo(client, world, fifth)
    assert held(b) == ("Bee", {"plan": "a", "tier": "gold"})
    undo(client, world, fourth)
    assert held(b) == ("Bee", {"plan": "edited", "tier": ""})


def test_undo_in_any_order_gives_back_first_seen_and_a_value_a_later_merge_owns(
    client: TestClient, world: World, database: Database
) -> None:
    # Undone out of order, the survivor kept a "first seen" from a record no longer merged;
    # an earlier merge's undo took back a value a later merge had set (the agent's edit
    # between them then lost for good).
    from datetime import timedelta

    from rapport.customers.models import Customer
    from rapport.db import utcnow

    def make(name: str, days_ago: int) -> str:
        r = client.post("/api/v1/customers", json={"name": name}, headers=auth(world.bob))
        assert r.status_code == 201, r.text
        with database.session() as db:
            row = db.get(Customer, r.json()["id"])
            assert row is not None
            row.first_seen_at = utcnow() - timedelta(days=days_ago)
        return str(r.json()["id"])

    def held(cid: str) -> tuple[str, str]:
        c = client.get(f"/api/v1/customers/{cid}", headers=auth(world.bob)).json()
        return c["name"], c["first_seen_at"]

    s, a, b = make("S", 1), make("X", 30), make("X", 10)
    own = held(s)
    first = into(client, world, s, a, ["name"])
    r = client.patch(f"/api/v1/customers/{s}", json={"name": "Y"}, headers=auth(world.bob))
    assert r.status_code == 200, r.text
    second = into(client, world, s, b, ["name"])
    assert held(s)[0] == "X"
    # b's "X" is the second merge's to give back; b is still merged: 10 days.
    undo(client, world, first)
    assert held(s) == ("X", held(b)[1])
    undo(client, world, second)
    assert held(s) == ("Y", own[1])


def test_an_event_added_to_a_merged_record_goes_on_the_survivors_timeline(
    client: TestClient, world: World
) -> None:
    # Added by its old id (a link kept, an integration that knew it), the event was written
    # on the hidden record: on no timeline, while the merge stood.
    ann, bea = (
        client.post(
            "/api/v1/customers",
            json={"name": name, "email": f"{name}@example.com"},
            headers=auth(world.bob),
        ).json()["id"]
        for name in ("ann", "bea")
    )
    r = client.post(
        f"/api/v1/customers/{ann}/merge", json={"merged_id": bea}, headers=auth(world.bob)
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/customers/{bea}/events",
        json={"type": "Called", "properties": {"minutes": 5}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    assert r.json()["customer_id"] == ann
    items = client.get(f"/api/v1/customers/{ann}/timeline", headers=auth(world.bob)).json()
    assert [i["type"] for i in items["items"] if i["kind"] == "event"] == ["Called"]
