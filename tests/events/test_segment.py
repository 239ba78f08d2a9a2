"""The Segment-compatible events API: write keys, the call types, batches stored once."""

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from rapport.customers.models import Event
from rapport.db import Database
from rapport.events import service as event_service
from rapport.events import views as event_views
from rapport.events.models import Order
from tests.conftest import auth, record_write_lock, sqlite_only
from tests.factories import World


def source(client: TestClient, world: World) -> str:
    r = client.post("/api/v1/event-sources", json={"name": "website"}, headers=auth(world.alice))
    assert r.status_code == 201, r.text
    return str(r.json()["write_key"])


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def events(database: Database) -> int:
    with database.session(write=False) as db:
        return int(db.scalar(select(func.count()).select_from(Event)) or 0)


def test_a_batch_of_a_thousand_events_is_stored_once_even_when_sent_twice(
    client: TestClient, world: World, database: Database
) -> None:
    key = source(client, world)
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "Product Viewed",
                "userId": f"u{i % 50}",
                "messageId": str(uuid.uuid4()),
                "properties": {"product_id": f"p{i}"},
                "timestamp": "2026-11-01T10:00:00Z",
            }
            for i in range(1000)
        ]
    }
    before = events(database)
    first = client.post("/api/v1/events/batch", json=batch, headers=basic(key))
    assert first.status_code == 200 and first.json() == {
        "success": True,
        "stored": 1000,
        "duplicates": 0,
    }
    again = client.post("/api/v1/events/batch", json=batch, headers=basic(key))
    assert again.json() == {"success": True, "stored": 0, "duplicates": 1000}
    assert events(database) == before + 1000


def test_identify_fills_the_profile_and_orders_make_the_purchase_history(
    client: TestClient, world: World
) -> None:
    key = source(client, world)
    client.post(
        "/api/v1/events/identify",
        json={
            "userId": "user-9",
            "traits": {
                "email": "nina@example.com",
                "firstName": "Nina",
                "lastName": "Kay",
                "plan": "gold",
            },
        },
        headers=basic(key),
    )
    client.post(
        "/api/v1/events/track",
        json={
            "userId": "user-9",
            "event": "Order Completed",
            "properties": {"order_id": "o-1", "total": 59.9, "currency": "eur"},
        },
        headers=basic(key),
    )
    client.post(
        "/api/v1/events/track",
        json={
            "userId": "user-9",
            "event": "Order Completed",
            "properties": {"order_id": "o-2", "total": 10},
        },
        headers=basic(key),
    )
    client.post(
        "/api/v1/events/track",
        json={"userId": "user-9", "event": "Order Refunded", "properties": {"order_id": "o-2"}},
        headers=basic(key),
    )
    [nina] = client.get("/api/v1/customers", params={"q": "Nina"}, headers=auth(world.bob)).json()[
        "items"
    ]
    assert nina["name"] == "Nina Kay" and nina["attributes"]["plan"] == "gold"
    orders = client.get(f"/api/v1/customers/{nina['id']}/orders", headers=auth(world.bob)).json()
    assert sorted(
        (o["order_id"], o["total_minor"], o["currency"], o["status"]) for o in orders
    ) == [("o-1", 5990, "EUR", "completed"), ("o-2", 1000, "USD", "refunded")]
    timeline = client.get(
        f"/api/v1/customers/{nina['id']}/timeline",
        params={"kind": "event"},
        headers=auth(world.bob),
    ).json()["items"]
    assert {e["type"] for e in timeline} >= {"Identify", "Order Completed", "Order Refunded"}


def test_traits_are_stored_in_their_defined_type_and_one_that_does_not_fit_refuses_the_batch(
    client: TestClient, world: World, database: Database
) -> None:
    # Traits went into the profile as sent: a number attribute kept "abc" and "12" stayed
    # text, where the customers API converts the one and refuses the other.
    admin = auth(world.alice)
    for key_, type_ in (("seats", "number"), ("beta", "boolean"), ("group_id", "number")):
        r = client.post(
            "/api/v1/attribute-definitions", json={"key": key_, "type": type_}, headers=admin
        )
        assert r.status_code == 201, r.text
    key = source(client, world)
    before = events(database)
    good = {"type": "identify", "userId": "typed-1", "traits": {"seats": "12", "beta": "yes"}}
    for bad, detail in (
        ({**good, "traits": {"seats": "abc"}}, "batch[1]: seats is a number, not 'abc'"),
        (
            {"type": "identify", "userId": "typed-1", "context": {"traits": {"beta": "perhaps"}}},
            "batch[1]: beta is true or false, not 'perhaps'",
        ),
        (
            {"type": "group", "userId": "typed-1", "groupId": "acme"},
            "batch[1]: group_id is a number, not 'acme'",
        ),
    ):
        r = client.post("/api/v1/events/batch", json={"batch": [good, bad]}, headers=basic(key))
        assert (r.status_code, r.json()["detail"]) == (422, detail)
        assert events(database) == before
    r = client.post(
        "/api/v1/events/batch",
        json={"batch": [good, {"type": "group", "userId": "typed-1", "groupId": "42"}]},
        headers=basic(key),
    )
    assert r.status_code == 200, r.text
    [typed] = client.get(
        "/api/v1/customers", params={"q": "typed-1"}, headers=auth(world.bob)
    ).json()["items"]
    assert typed["attributes"] == {"seats": 12, "beta": True, "group_id": 42}


def test_a_typed_email_in_traits_never_joins_a_known_customer(
    client: TestClient, world: World
) -> None:
    key = source(client, world)
    known = world.acme.opened.customer.id
    client.post(
        "/api/v1/events/identify",
        json={"anonymousId": "a-1", "traits": {"email": "customer@acme.example"}},
        headers=basic(key),
    )
    hits = client.get(
        "/api/v1/customers", params={"q": "customer@acme.example"}, headers=auth(world.bob)
    ).json()["items"]
    assert [c["id"] for c in hits] == [known]


def test_alias_joins_an_anonymous_visitor_to_the_signed_in_user(
    client: TestClient, world: World
) -> None:
    key = source(client, world)
    client.post(
        "/api/v1/events/page",
        json={"anonymousId": "anon-77", "name": "Pricing"},
        headers=basic(key),
    )
    client.post(
        "/api/v1/events/identify",
        json={"userId": "user-77", "traits": {"name": "Omar"}},
        headers=basic(key),
    )
    r = client.post(
        "/api/v1/events/alias",
        json={"previousId": "anon-77", "userId": "user-77"},
        headers=basic(key),
    )
    assert r.status_code == 200, r.text
    [omar] = client.get("/api/v1/customers", params={"q": "Omar"}, headers=auth(world.bob)).json()[
        "items"
    ]
    types = [
        e["type"]
        for e in client.get(
            f"/api/v1/customers/{omar['id']}/timeline",
            params={"kind": "event"},
            headers=auth(world.bob),
        ).json()["items"]
    ]
    assert "Page Viewed" in types and "Alias" in types


def test_a_wrong_write_key_stores_nothing(
    client: TestClient, world: World, database: Database
) -> None:
    before = events(database)
    r = client.post(
        "/api/v1/events/track", json={"userId": "u", "event": "X"}, headers=basic("wk_forged")
    )
    assert r.status_code == 401
    # Who sends comes before what: a stranger's body of the wrong shape is still a 401.
    wrong = {"userId": ["u"], "properties": "x"}
    r = client.post("/api/v1/events/track", json=wrong, headers=basic("wk_forged"))
    assert r.status_code == 401
    r = client.post("/api/v1/events/batch", content=b"not json", headers=basic("wk_forged"))
    assert r.status_code == 401
    key = source(client, world)
    r = client.post("/api/v1/events/batch", content=b"not json", headers=basic(key))
    assert (r.status_code, r.json()["detail"]) == (422, "the body is not JSON")
    r = client.post(
        "/api/v1/events/track",
        json={"userId": "u", "event": "X", "writeKey": key},
    )
    assert r.status_code == 200
    assert events(database) == before + 1


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("track", {"userId": " ", "event": "x"}, "userId is blank"),
        ("track", {"anonymousId": " ", "event": "x"}, "anonymousId is blank"),
        ("track", {"userId": ["a"], "event": "x"}, "userId: Input should be a valid string"),
        ("track", {"userId": "u", "properties": "abc"}, "properties: must be a JSON object"),
        ("track", {"userId": "u", "traits": ["a"]}, "traits: must be a JSON object"),
        ("track", {"userId": "u", "context": "abc"}, "context: must be a JSON object"),
        (
            "track",
            {"userId": "u", "context": {"traits": 1}},
            "context.traits: must be a JSON object",
        ),
        # A batch is one transaction: a bad event in it stores none, and is named.
        (
            "batch",
            {"batch": [{"type": "track", "userId": "a", "event": "x"}], "context": "abc"},
            "context: must be a JSON object",
        ),
        (
            "batch",
            {"batch": [{"type": "track", "userId": "a"}, {"type": "track", "properties": []}]},
            "batch[1].properties: must be a JSON object",
        ),
        (
            "batch",
            {"batch": [{"type": "track", "userId": "a"}, {"type": "track", "userId": " "}]},
            "batch[1]: userId is blank",
        ),
        (
            "batch",
            {"batch": [{"type": "track", "userId": "a"}, {"type": "track", "event": "x"}]},
            "batch[1]: an event needs a userId or an anonymousId",
        ),
        # A group with no id was stored as the group "None" (null) or "" (left out).
        ("group", {"userId": "u"}, "a group call needs its groupId (text or a number)"),
        (
            "group",
            {"userId": "u", "groupId": None},
            "a group call needs its groupId (text or a number)",
        ),
        (
            "group",
            {"userId": "u", "groupId": " "},
            "a group call needs its groupId (text or a number)",
        ),
    ],
)
def test_an_event_of_the_wrong_shape_is_refused_naming_it_and_nothing_stored(
    client: TestClient,
    world: World,
    database: Database,
    path: str,
    body: dict[str, Any],
    detail: str,
) -> None:
    key = source(client, world)
    before = events(database)
    r = client.post(f"/api/v1/events/{path}", json=body, headers=basic(key))
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    assert r.json()["detail"] == detail
    assert events(database) == before


def test_an_order_with_an_unstorable_time_is_still_recorded(
    client: TestClient, world: World, database: Database
) -> None:
    key = source(client, world)
    r = client.post(
        "/api/v1/events/track",
        json={
            "userId": "user-old",
            "event": "Order Completed",
            "properties": {"order_id": "o-old", "total": "12.50", "currency": "EUR"},
            "timestamp": "0001-01-01T00:00:00+01:00",
        },
        headers=basic(key),
    )
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        assert db.scalar(select(Order.total_minor).where(Order.order_id == "o-old")) == 1250


@pytest.mark.parametrize(
    ("total", "currency", "detail"),
    [
        ("abc", "EUR", "abc is not an amount"),
        ("NaN", "EUR", "NaN is not an amount"),
        ("Infinity", "EUR", "Infinity is not an amount"),
        ("", "EUR", " is not an amount"),
        (True, "EUR", "True is not an amount"),
        ({"amount": 5}, "EUR", "{'amount': 5} is not an amount"),
        ("1e999999", "EUR", "1e999999 is too large an amount"),
        ("92233720368547758.08", "USD", "more than the 19 digits of minor units an order holds"),
        ("5", "XAU", "XAU has no minor unit in ISO 4217: 5 XAU is no count of them"),
        (5, "xdr", "XDR has no minor unit in ISO 4217: 5 XDR is no count of them"),
        (
            5,
            "euros",
            "properties.currency: euros is not an ISO 4217 code (three letters, such as EUR)",
        ),
        (0, 978, "properties.currency: 978 is not an ISO 4217 code (three letters, such as EUR)"),
        (5, "XXX", "XXX has no minor unit in ISO 4217: 5 XXX is no count of them"),
    ],
)
def test_an_order_total_that_cannot_be_recorded_as_sent_refuses_the_batch(
    client: TestClient,
    world: World,
    database: Database,
    total: object,
    currency: str,
    detail: str,
) -> None:
    # Recorded as 0 before: an order of "abc" (or "1e999999", or 5 of no currency) was a
    # paid order of nothing, and the sender never learnt that its totals were unreadable.
    key = source(client, world)
    before = events(database)
    good = {"order_id": "ok", "total": "1.00", "currency": "EUR"}
    bad = {"order_id": "unreadable", "total": total, "currency": currency}
    batch = [
        {"type": "track", "userId": "u-x", "event": "Order Completed", "properties": props}
        for props in (good, bad)
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    assert r.json()["index"] == 1
    if not detail.startswith("properties."):
        detail = f"properties.total: {detail}; send the amount as the decimal text it was paid in"
    assert r.json()["detail"] == f"batch[1]: {detail}"
    assert events(database) == before


def test_an_order_with_no_total_is_recorded_as_zero_in_any_currency(
    client: TestClient, world: World, database: Database
) -> None:
    key = source(client, world)
    sent = {"z-1": {}, "z-2": {"total": None, "currency": "XAU"}, "z-3": {"total": "0.00"}}
    batch = [
        {
            "type": "track",
            "userId": "u-z",
            "event": "Order Completed",
            "properties": {"order_id": order_id, **props},
        }
        for order_id, props in sent.items()
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        stored = dict(db.execute(select(Order.order_id, Order.total_minor)).all())
    assert stored == {"z-1": 0, "z-2": 0, "z-3": 0}


def test_events_for_one_new_person_at_once_are_all_stored(
    client: TestClient, world: World, database: Database
) -> None:
    """On PostgreSQL, requests making the same new customer at once collide; a sender's
    library would drop a 409, so the API tries the batch again itself."""
    key = source(client, world)
    before = events(database)
    for round_ in range(3):
        body = {"userId": f"racer-{round_}", "event": "Signed Up"}
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda _, b=body: (
                        client.post(  # type: ignore[misc]
                            "/api/v1/events/track", json=b, headers=basic(key)
                        ).status_code
                    ),
                    range(8),
                )
            )
        assert codes == [200] * 8
    assert events(database) == before + 24


@sqlite_only
def test_a_batch_is_validated_with_no_write_lock_held(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 500 KB of events take a while to validate: not inside the transaction that stores
    # them, where SQLite's one writer (ingest included) would wait.
    key = source(client, world)
    held = record_write_lock(monkeypatch, event_views, "_events", database)
    r = client.post(
        "/api/v1/events/track",
        json={"userId": "u1", "event": "Signed Up", "messageId": str(uuid.uuid4())},
        headers=basic(key),
    )
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert held == [False]


def test_a_large_batch_is_checked_whole_then_stored_a_chunk_per_transaction(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 500 KB of events for new people held the database's write lock for seconds in one
    # transaction (SQLite has one writer: every inbound message waited). They are stored
    # CHUNK per transaction; a bad event anywhere still refuses the batch before any is.
    monkeypatch.setattr(event_service, "CHUNK", 10)
    key = source(client, world)
    batch: list[dict[str, Any]] = [
        {
            "type": "identify",
            "userId": f"chunky-{i}",
            "messageId": f"chunk-{i}",
            "traits": {"email": f"chunky{i}@example.com"},
        }
        for i in range(25)
    ]
    before = events(database)
    bad = [*batch[:24], {"type": "alias", "userId": "chunky-24", "messageId": "chunk-24"}]
    r = client.post("/api/v1/events/batch", json={"batch": bad}, headers=basic(key))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "batch[24]: alias needs previousId and userId"
    assert events(database) == before

    commits: list[object] = []

    def committed(conn: Any) -> None:
        if conn.get_execution_options().get("sqlite_write"):  # a write session's (any database)
            commits.append(conn)

    event.listen(database.engine, "commit", committed)
    try:
        r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    finally:
        event.remove(database.engine, "commit", committed)
    assert r.json() == {"success": True, "stored": 25, "duplicates": 0}
    assert len(commits) == 3  # 10 + 10 + 5
    assert events(database) == before + 25
    again = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert again.json() == {"success": True, "stored": 0, "duplicates": 25}


def test_an_order_is_recorded_in_its_currencys_decimals(
    client: TestClient, world: World, database: Database
) -> None:
    # Every total was multiplied by 100: 1500 yen became 150000 minor units (shown as
    # "1500.00") and 1.234 dinars 123 (the last fils rounded away).
    key = source(client, world)
    sent = {"o-jpy": (1500, "JPY"), "o-kwd": ("1.234", "KWD"), "o-kwd2": (0.5, "kwd")}
    batch = [
        {
            "type": "track",
            "userId": "user-fx",
            "event": "Order Completed",
            "properties": {"order_id": order_id, "total": total, "currency": currency},
        }
        for order_id, (total, currency) in sent.items()
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        stored = dict(db.execute(select(Order.order_id, Order.total_minor)).all())
        customer_id = db.scalar(select(Order.customer_id).where(Order.order_id == "o-jpy"))
    assert stored == {"o-jpy": 1500, "o-kwd": 1234, "o-kwd2": 500}
    r = client.get(f"/api/v1/customers/{customer_id}/profile", headers=auth(world.bob))
    assert r.json()["figures"]["total_spend"] == {"JPY": "1500", "KWD": "1.734"}


def test_an_order_total_sent_as_a_json_number_is_read_as_written(
    client: TestClient, world: World, database: Database
) -> None:
    # orjson reads a JSON number with a fraction as a double: 900719925474099.33 became
    # 90071992547409940 cents, and 92233720368547758.07 (the column's largest) 0.
    key = source(client, world)
    body = (
        b'{"batch": ['
        b'{"type": "track", "userId": "u-n", "event": "Order Completed",'
        b' "properties": {"order_id": "n-1", "total": 900719925474099.33}},'
        b'{"type": "track", "userId": "u-n", "event": "Order Completed",'
        b' "properties": {"order_id": "n-2", "revenue": 92233720368547758.07}},'
        b'{"type": "track", "userId": "u-n", "event": "Order Completed",'
        b' "properties": {"order_id": "n-3", "total": 0.1e1, "currency": "JPY"}},'
        b'{"type": "track", "userId": "u-n", "event": "Product Viewed",'
        b' "properties": {"price": 19.99}}'
        b"]}"
    )
    r = client.post(
        "/api/v1/events/batch",
        content=body,
        headers={**basic(key), "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        stored = dict(db.execute(select(Order.order_id, Order.total_minor)).all())
        props = dict(db.execute(select(Order.order_id, Order.properties)).all())
    assert stored == {"n-1": 90071992547409933, "n-2": 2**63 - 1, "n-3": 1}
    # The event itself keeps the number as JSON does, a number.
    assert props["n-1"]["total"] == 900719925474099.33


@pytest.mark.parametrize(
    ("total", "currency", "detail"),
    [
        ("19.999", "EUR", "19.999 has more decimals than EUR's 2"),
        (19.999, None, "19.999 has more decimals than USD's 2"),
        (0.30000000000000004, "USD", "0.30000000000000004 has more decimals than USD's 2"),
        (1500.5, "JPY", "1500.5 has decimals, and JPY has none"),
        ("1.2345", "KWD", "1.2345 has more decimals than KWD's 3"),
    ],
)
def test_an_order_total_finer_than_its_currency_refuses_the_batch(
    client: TestClient,
    world: World,
    database: Database,
    total: str | float,
    currency: str | None,
    detail: str,
) -> None:
    # Rounded before, silently: 19.999 EUR was recorded as 20.00 paid.
    key = source(client, world)
    before = events(database)
    good = {"order_id": "fine", "total": "1.00", "currency": "EUR"}
    bad = {"order_id": "fine-2", "total": total, "currency": currency}
    batch = [
        {"type": "track", "userId": "u-p", "event": "Order Completed", "properties": props}
        for props in (good, bad)
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    if not detail.startswith("properties."):
        detail = f"properties.total: {detail}; send the amount as the decimal text it was paid in"
    assert r.json()["detail"] == f"batch[1]: {detail}"
    assert events(database) == before


@pytest.mark.parametrize("name", ["Order Completed", "Order Refunded"])
def test_an_order_id_too_long_refuses_the_batch_before_any_chunk_is_stored(
    client: TestClient,
    world: World,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    # The length was checked only while storing: the batch's earlier chunks were stored,
    # then the request answered 422, and a sender retrying the whole batch stored them twice.
    monkeypatch.setattr(event_service, "CHUNK", 2)
    key = source(client, world)
    before = events(database)
    batch = [
        {"type": "track", "userId": "u-o", "event": "Viewed", "messageId": f"o-{n}"}
        for n in range(4)
    ] + [
        {
            "type": "track",
            "userId": "u-o",
            "event": name,
            "properties": {"order_id": "x" * 201, "total": "1.00", "currency": "EUR"},
        }
    ]
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert (r.status_code, r.headers["content-type"]) == (422, "application/problem+json")
    assert r.json()["detail"] == "batch[4]: properties.order_id is at most 200 characters"
    assert events(database) == before


def test_an_event_after_an_alias_in_one_batch_lands_on_the_survivor(
    client: TestClient, world: World, database: Database
) -> None:
    # The batch remembered each sender's customer: the one an alias had just merged away
    # kept getting the events after it, which no timeline shows.
    from rapport.customers.models import Customer

    batch = [
        {"type": "page", "anonymousId": "anon-9", "name": "Pricing"},
        {"type": "identify", "userId": "user-9", "traits": {"name": "Omar"}},
        {"type": "alias", "previousId": "anon-9", "userId": "user-9"},
        {"type": "page", "anonymousId": "anon-9", "name": "Checkout"},
    ]
    key = source(client, world)
    r = client.post("/api/v1/events/batch", json={"batch": batch}, headers=basic(key))
    assert r.status_code == 200, r.text
    with database.session(write=False) as db:
        rows = db.execute(
            select(Event.properties, Customer.merged_into_id)
            .join(Customer, Customer.id == Event.customer_id)
            .where(Event.type == "Page Viewed")
        ).all()
    assert [p["name"] for p, merged in rows if merged is not None] == []
    assert sorted(p["name"] for p, _ in rows) == ["Checkout", "Pricing"]
