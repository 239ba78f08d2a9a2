"""Requests a fuzzer of the OpenAPI schema found answered with a 500: each is now a
problem document, and none leaves a setting that stops ingest."""

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from rapport.conversations.models import SlaPolicy
from rapport.customers import importer
from rapport.db import Database
from tests.channels.email.test_email import Outbox
from tests.conftest import auth
from tests.factories import World

HUGE = 2**64  # beyond any integer column, and beyond what orjson writes


def problem(r, status: int) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


def inbound(client: TestClient, world: World, external_id: str, text: str = "hello") -> int:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": external_id, "text": text, "from": {"email": "kim@example.com"}},
        headers=auth(world.bob),
    )
    return r.status_code


def test_names_taken_are_conflicts_on_rename_as_on_create(client: TestClient, world: World) -> None:
    admin = auth(world.alice)
    teams = [client.post("/api/v1/teams", json={"name": n}, headers=admin).json() for n in "AB"]
    problem(client.patch(f"/api/v1/teams/{teams[1]['id']}", json={"name": "A"}, headers=admin), 409)
    same = client.patch(f"/api/v1/teams/{teams[1]['id']}", json={"name": "B"}, headers=admin)
    assert same.status_code == 200  # its own name is not taken
    intents = [
        client.post(
            "/api/v1/bot/intents", json={"name": n, "reply": "r", "examples": []}, headers=admin
        ).json()
        for n in ("hours", "refunds")
    ]
    renamed = {"name": "hours", "reply": "r", "examples": []}
    problem(
        client.patch(f"/api/v1/bot/intents/{intents[1]['id']}", json=renamed, headers=admin), 409
    )
    shop = {"name": "orders", "url": "https://shop.example/orders"}
    assert client.post("/api/v1/bot/integrations", json=shop, headers=admin).status_code == 201
    problem(client.post("/api/v1/bot/integrations", json=shop, headers=admin), 409)


def test_an_empty_id_names_nothing(client: TestClient, world: World) -> None:
    admin = auth(world.alice)
    intent = {"name": "hours", "reply": "r", "examples": [], "integration_id": ""}
    problem(client.post("/api/v1/bot/intents", json=intent, headers=admin), 404)
    inbox = {"name": "x", "channel": "api", "team_id": ""}
    problem(client.post("/api/v1/inboxes", json=inbox, headers=admin), 404)
    inbox_id = world.acme.inbox.id  # type: ignore[union-attr]
    problem(client.patch(f"/api/v1/inboxes/{inbox_id}", json={"team_id": ""}, headers=admin), 404)
    other_team = client.post(
        "/api/v1/teams", json={"name": "theirs"}, headers=auth(world.mallory)
    ).json()
    bot = {"enabled": True, "handover_team_id": other_team["id"]}
    problem(client.put(f"/api/v1/bot/inboxes/{inbox_id}", json=bot, headers=admin), 404)
    # An empty external id is no id: two such messages are two messages, not a 500.
    assert [inbound(client, world, ""), inbound(client, world, "")] == [201, 201]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/sla-policies", {"name": "x", "first_response_minutes": HUGE}),
        # Stored fine, then every message it applied to failed: a date too far to compute.
        ("/api/v1/sla-policies", {"name": "x", "first_response_minutes": 10**13}),
        ("/api/v1/kb/collections", {"title": "x", "position": HUGE}),
        (
            "/api/v1/automation-rules",
            {
                "name": "x",
                "event": "message.received",
                "position": HUGE,
                "actions": [{"type": "add_label", "label": "x"}],
            },
        ),  # noqa: E501
        ("/api/v1/customers", {"name": "x", "attributes": {"n": HUGE}}),
        ("/api/v1/inboxes", {"name": "x", "channel": "api", "settings": {"n": HUGE}}),
        (
            "/api/v1/automation-rules",
            {
                "name": "x",
                "event": "message.received",
                "actions": [{"type": "add_label", "label": HUGE}],
            },
        ),  # noqa: E501
        ("/api/v1/webhooks", {"url": "https://[::1/hook"}),
        ("/api/v1/bot/integrations", {"name": "x", "url": "https://shop.example:port/x"}),
    ],
)
def test_what_cannot_be_stored_or_used_is_refused(
    client: TestClient, world: World, path: str, body: dict[str, object]
) -> None:
    problem(client.post(path, json=body, headers=auth(world.alice)), 422)
    assert inbound(client, world, f"after-{path}") == 201


@pytest.mark.parametrize("field", ["priorities", "inbox_ids", "labels"])
def test_an_sla_policy_naming_more_than_a_thousand_of_anything_is_refused(
    client: TestClient, world: World, field: str
) -> None:
    # Accepted with 70,000 inbox ids: each list of ids is to be looked up in one query, and
    # PostgreSQL takes 65,535 parameters at most.
    names = ["high"] * 1_001 if field == "priorities" else [f"{i:x}" for i in range(1_001)]
    policy = {"name": "many", "first_response_minutes": 5, field: names}
    problem(client.post("/api/v1/sla-policies", json=policy, headers=auth(world.alice)), 422)


def test_lists_a_person_or_a_calendar_never_needs_that_long_are_refused(
    client: TestClient, world: World
) -> None:
    # Unbounded: a customer with 100,000 handles was looked up one handle at a time inside
    # one request, and a calendar stored whatever number of holidays it was sent.
    handles = [{"kind": "external", "value": f"h{i}"} for i in range(101)]
    r = client.post("/api/v1/customers", json={"identities": handles}, headers=auth(world.bob))
    problem(r, 422)
    days = [f"{2000 + i // 365}-01-01" for i in range(1001)]
    body = {"timezone": "UTC", "hours": {"mon": [["09:00", "17:00"]]}, "holidays": days}
    problem(client.put("/api/v1/business-hours", json=body, headers=auth(world.alice)), 422)


def test_settings_that_would_stop_ingest_are_refused(client: TestClient, world: World) -> None:
    admin = auth(world.alice)
    too_long = {"settings": {"reopen_window_hours": 10**12}}
    problem(client.patch("/api/v1/workspace", json=too_long, headers=admin), 422)
    problem(client.patch("/api/v1/workspace", json={"settings": {"x": HUGE}}, headers=admin), 422)
    offset = {"timezone": "UTC", "hours": {"mon": [["09:00+05:00", "17:00"]]}}
    problem(client.put("/api/v1/business-hours", json=offset, headers=admin), 422)
    # Never open: every SLA clock started afterwards failed to find its due time.
    for closed in ({}, {"mon": [], "tue": []}):
        body = {"timezone": "UTC", "hours": closed}
        problem(client.put("/api/v1/business-hours", json=body, headers=admin), 422)
    customer = world.acme.opened.customer.id
    event = {"type": "visit", "properties": {"n": HUGE}}
    problem(client.post(f"/api/v1/customers/{customer}/events", json=event, headers=admin), 422)
    assert inbound(client, world, "still-flows") == 201


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_or_infinity_in_free_form_json_is_refused_not_stored_as_null(
    client: TestClient, world: World, literal: str
) -> None:
    # Python reads these as floats and orjson writes them as null: a customer's undefined
    # attribute, an event's nested property or a setting was answered 201 and kept as null.
    admin = {**auth(world.alice), "content-type": "application/json"}
    customer_id = world.acme.opened.customer.id
    rule = (
        '{"name": "x", "event": "message.received", "actions": [{"type": "add_label", '
        '"label": "x"}], "conditions": [{"field": "priority", "op": "gt", "value": %s}]}'
    )
    for method, path, body in (
        ("POST", "/api/v1/customers", '{"name": "x", "attributes": {"n": %s}}'),
        ("PATCH", f"/api/v1/customers/{customer_id}", '{"attributes": {"n": [1, %s]}}'),
        (
            "POST",
            f"/api/v1/customers/{customer_id}/events",
            '{"type": "visit", "properties": {"cart": {"total": %s}}}',
        ),
        ("PATCH", "/api/v1/workspace", '{"settings": {"x": {"y": %s}}}'),
        ("POST", "/api/v1/inboxes", '{"name": "x", "channel": "api", "settings": {"n": %s}}'),
        ("POST", "/api/v1/automation-rules", rule),
    ):
        r = client.request(method, path, content=body % literal, headers=admin)
        problem(r, 422)
        assert "NaN and Infinity are not JSON numbers" in r.text, (path, r.text)
    r = client.get(f"/api/v1/customers/{customer_id}", headers=admin)
    assert "n" not in r.json()["attributes"]


def test_rows_stored_before_the_bounds_are_still_listed(
    client: TestClient, world: World, database: Database
) -> None:
    # Input is bounded now; what an older version stored beyond the bounds is shown as is.
    with database.session() as db:
        db.add(
            SlaPolicy(
                workspace_id=world.acme.workspace.id,
                name="old",
                position=10**7,
                first_response_minutes=10**7,
                inbox_ids=[f"{i:x}" for i in range(1_001)],
            )
        )
    r = client.get("/api/v1/sla-policies", headers=auth(world.alice))
    assert r.status_code == 200 and r.json()[0]["first_response_minutes"] == 10**7
    assert len(r.json()[0]["inbox_ids"]) == 1_001


LONG_DOMAIN = "ü." * 157 + "com"  # 317 characters; IDNA-encoded, over 1,200


def test_values_too_long_for_their_column_are_refused_or_kept_within_it(
    client: TestClient, world: World, tmp_path: Path, database: Database
) -> None:
    """Found by a PostgreSQL fuzz (SQLite keeps any length): each was a 500 there."""
    admin = auth(world.alice)
    customer_id = world.acme.opened.customer.id
    identities = f"/api/v1/customers/{customer_id}/identities"
    long_email = {"kind": "email", "value": f"a@{LONG_DOMAIN}"}
    assert "at most 320" in problem_detail(client.post(identities, json=long_email, headers=admin))
    long_handle = {"kind": "telegram", "value": "İ" * 320}  # lower-cased, twice as long
    assert "at most 320" in problem_detail(client.post(identities, json=long_handle, headers=admin))
    intent = {"name": "long", "reply": "r", "examples": ["x" * 1001]}
    problem(client.post("/api/v1/bot/intents", json=intent, headers=admin), 422)

    key = client.post("/api/v1/event-sources", json={"name": "site"}, headers=admin).json()
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key['write_key']}:".encode()).decode()}
    order = {"userId": "u1", "event": "Order Completed", "properties": {"order_id": "o" * 201}}
    for path, body in (
        ("track", {"userId": "u1", "event": "E", "messageId": "m" * 201}),
        ("track", {"userId": "u" * 400, "event": "E"}),
        ("alias", {"userId": "u1", "previousId": "p" * 400}),
        ("track", order),
    ):
        problem(client.post(f"/api/v1/events/{path}", json=body, headers=basic), 422)
    named = {"userId": "u2", "traits": {"name": "N" * 400, "email": f"a@{LONG_DOMAIN}"}}
    assert client.post("/api/v1/events/identify", json=named, headers=basic).status_code == 200

    people = tmp_path / "people.csv"
    people.write_text(f"name,email\n{'N' * 301},n@example.com\nAda,a@{LONG_DOMAIN}\n")
    report = importer.import_customers(
        database, workspace_id=world.acme.workspace.id, path=people, mapping={}
    )
    assert [(e.line, "at most" in e.reason) for e in report.errors] == [(2, True), (3, True)]


def problem_detail(r) -> str:  # type: ignore[no-untyped-def]
    problem(r, 422)
    return str(r.json()["detail"])


@pytest.mark.parametrize(
    "moment", ["2026-01-01T00:00:00", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
)
def test_a_moment_without_an_offset_or_beyond_utc_is_refused(
    client: TestClient, world: World, moment: str
) -> None:
    agent = auth(world.bob)
    customer_id = world.acme.opened.customer.id
    conv = world.acme.opened.conversation.id
    event = {"type": "t", "occurred_at": moment}
    problem(client.post(f"/api/v1/customers/{customer_id}/events", json=event, headers=agent), 422)
    snooze = {"status": "snoozed", "snoozed_until": moment}
    problem(client.post(f"/api/v1/conversations/{conv}/status", json=snooze, headers=agent), 422)
    cursor = base64.urlsafe_b64encode(orjson.dumps([moment, "a"])).decode().rstrip("=")
    problem(client.get("/api/v1/customers", params={"cursor": cursor}, headers=agent), 422)


def test_the_same_thing_created_at_once_is_one_and_a_conflict_never_a_500(
    client: TestClient, world: World, relay: Outbox
) -> None:
    """Each request checks first, then inserts: on PostgreSQL two can both pass the check,
    and the database refuses the second (SQLite takes writers one at a time)."""
    admin = auth(world.alice)
    member = {"email": "new@acme.test", "role": "agent"}
    # An invitation sent again replaces the pending one (202); a label is created once (201).
    for path, body, created in (
        ("/api/v1/members", member, 202),
        ("/api/v1/labels", {"name": "vip"}, 201),
    ):
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda _, p=path, b=body: client.post(p, json=b, headers=admin), range(8))
            )
        assert created in {r.status_code for r in codes}, [r.text for r in codes]
        if created == 201:
            assert [r.status_code for r in codes].count(201) == 1, [r.text for r in codes]
        for r in codes:
            if r.status_code != created:
                problem(r, 409)
    assert len(client.get("/api/v1/invitations", headers=admin).json()) == 1
