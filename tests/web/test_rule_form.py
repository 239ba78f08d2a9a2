"""The automation rule form offers what the server takes: its fields, ops and choices come
from the automation module's own tables, so the two cannot drift apart."""

import html
import json
import re
from typing import Any

from fastapi.testclient import TestClient

from rapport.automation import service as automation
from tests.conftest import auth
from tests.factories import PASSWORD, World


def settings_page(client: TestClient) -> str:
    """The settings page as alice, the admin, sees it."""
    r = client.post("/api/v1/auth/login", json={"email": "alice@acme.test", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return client.get("/app/settings").text


def form_conditions(client: TestClient) -> dict[str, Any]:
    page = settings_page(client)
    blob = re.search(r'<script type="application/json" id="rule-conditions">(.*?)</script>', page)
    assert blob is not None
    spec: dict[str, Any] = json.loads(blob.group(1))
    return spec


def test_the_form_offers_every_field_with_the_ops_the_server_takes(
    client: TestClient, world: World
) -> None:
    spec = form_conditions(client)
    assert set(spec["fields"]) == set(automation.FIELDS)
    for name, field in automation.FIELDS.items():
        assert set(spec["fields"][name]["ops"]) == field.ops, name
        # A field whose values are checked is offered them (or labels), never a free text.
        checked = field.choices is not None or field.ids is not None or field.labels
        offered = {"pick", "labels"} if checked else {"text"}
        assert spec["fields"][name]["kind"] in offered, name
    assert set(spec["attribute"]["ops"]) == automation.OPERATORS
    assert set(spec["op_names"]) == automation.OPERATORS
    assert set(spec["events"]) == automation.EVENTS


def test_every_choice_the_form_offers_is_one_the_server_accepts(
    client: TestClient, world: World
) -> None:
    client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice))
    spec = form_conditions(client)
    picks = {n: f["choices"] for n, f in spec["fields"].items() if f["kind"] == "pick"}
    assert {"channel", "priority", "status", "inbox_id", "assignee_id", "team_id"} <= set(picks)
    # Those who can be given conversations, by name: the viewer is not among them.
    assert [name for _, name in picks["assignee_id"]] == ["Alice", "Bob"]
    assert [name for _, name in picks["team_id"]] == ["Billing"]
    rule = {
        "name": "all of them",
        "event": "message.received",  # comes with a conversation, a message and a customer
        "conditions": [
            {"field": n, "op": "in", "value": [value for value, _ in choices]}
            for n, choices in picks.items()
        ],
        "actions": [{"type": "add_label", "value": "x"}],
    }
    r = client.post("/api/v1/automation-rules", json=rule, headers=auth(world.alice))
    assert r.status_code == 201, r.text


def test_the_list_of_rules_names_what_a_rule_names_by_id(client: TestClient, world: World) -> None:
    bob = world.acme.users["bob"].id
    client.post(
        "/api/v1/automation-rules",
        json={
            "name": "to Bob",
            "event": "conversation.created",
            "conditions": [{"field": "assignee_id", "op": "exists", "value": False}],
            "actions": [{"type": "assign_agent", "value": bob}],
        },
        headers=auth(world.alice),
    ).raise_for_status()
    page = html.unescape(settings_page(client))
    row = page[page.index("<tr data-id=", page.index('id="rule-rows"')) :]
    row = row[: row.index("</tr>")]
    assert "assign agent Bob" in row and bob not in row
    assert "assignee_id exists false" in row
