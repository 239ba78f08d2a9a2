"""Editing a rule: replaced whole, checked like a new one, and switched off it stops running."""

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database
from tests.automation.test_rules import conversation, drain, inbound, rule
from tests.conftest import auth
from tests.factories import World


def test_an_edited_rule_runs_as_edited_and_a_disabled_one_not_at_all(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    r = rule(
        client,
        world,
        event="message.received",
        actions=[{"type": "add_label", "value": "first"}],
    )
    body = {**r, "actions": [{"type": "add_label", "value": "second"}], "position": 3}
    del body["id"]
    edited = client.put(f"/api/v1/automation-rules/{r['id']}", json=body, headers=auth(world.alice))
    assert edited.status_code == 200, edited.text
    assert edited.json()["position"] == 3
    conv = inbound(client, world, "e1", "hello", "e1@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["second"]

    off = client.put(
        f"/api/v1/automation-rules/{r['id']}",
        json={**body, "enabled": False},
        headers=auth(world.alice),
    )
    assert off.json()["enabled"] is False
    conv2 = inbound(client, world, "e2", "hello", "e2@example.com")
    drain(database, settings)
    assert conversation(client, world, conv2)["labels"] == []


def test_an_edit_is_checked_and_only_for_admins(client: TestClient, world: World) -> None:
    r = rule(client, world, event="message.received", actions=[{"type": "add_label", "value": "x"}])
    body = {"name": "bad", "event": "message.received", "actions": [{"type": "explode"}]}
    bad = client.put(f"/api/v1/automation-rules/{r['id']}", json=body, headers=auth(world.alice))
    assert bad.status_code == 422 and "explode" in bad.json()["detail"]
    ok = {"name": "n", "event": "message.received", "actions": [{"type": "add_label"}]}
    agent = client.put(f"/api/v1/automation-rules/{r['id']}", json=ok, headers=auth(world.bob))
    assert agent.status_code == 403
