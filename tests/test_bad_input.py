"""Requests a fuzzer of the OpenAPI schema found answered with a 500: each is now a
problem document, and none leaves a setting that stops ingest."""

import pytest
from fastapi.testclient import TestClient

from rapport.conversations.models import SlaPolicy
from rapport.db import Database
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


def test_settings_that_would_stop_ingest_are_refused(client: TestClient, world: World) -> None:
    admin = auth(world.alice)
    too_long = {"settings": {"reopen_window_hours": 10**12}}
    problem(client.patch("/api/v1/workspace", json=too_long, headers=admin), 422)
    problem(client.patch("/api/v1/workspace", json={"settings": {"x": HUGE}}, headers=admin), 422)
    offset = {"timezone": "UTC", "hours": {"mon": [["09:00+05:00", "17:00"]]}}
    problem(client.put("/api/v1/business-hours", json=offset, headers=admin), 422)
    customer = world.acme.first.customer.id  # type: ignore[union-attr]
    event = {"type": "visit", "properties": {"n": HUGE}}
    problem(client.post(f"/api/v1/customers/{customer}/events", json=event, headers=admin), 422)
    assert inbound(client, world, "still-flows") == 201


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
            )
        )
    r = client.get("/api/v1/sla-policies", headers=auth(world.alice))
    assert r.status_code == 200 and r.json()[0]["first_response_minutes"] == 10**7
