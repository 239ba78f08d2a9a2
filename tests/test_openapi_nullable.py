"""What the API's document says of null in a PATCH or a PUT is what the API does with it.

Every nullable field of every such body says what null means (it clears the value, it
keeps it, it skips a check), and does that; every other field refuses null with a 422
problem (the document said null was fine, then the service refused it, or stored it)."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World
from tests.test_isolation import _acme_ids

KEEPS = re.compile(r"\(or null\) (stay|keeps)|null keeps")
CLEARS = "null clears it"
SKIPS = "null (or left out) skips"

# What a request needs beside the field tried: a note's text, the help center's address
# (a PUT that sets it up).
BASE: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/customers/{customer_id}/notes/{note_id}"): {"text": "VIP"},
    ("PUT", "/api/v1/kb/help-center"): {"slug": "acme-help", "title": "Help"},
    ("PUT", "/api/v1/canned-responses/{canned_id}"): {"shortcut": "hi", "text": "Hello"},
    ("PUT", "/api/v1/automation-rules/{rule_id}"): {
        "name": "r",
        "event": "message.received",
        "actions": [{"type": "add_label", "value": "x"}],
    },
    ("PUT", "/api/v1/business-hours"): {"timezone": "UTC", "week": {}},
    ("PUT", "/api/v1/customers/{customer_id}/tags"): {"tags": []},
}
# Of a field null clears: a value to set first (from the workspace's ids), to see it go.
SET_FIRST: dict[tuple[str, str], Callable[[dict[str, str]], Any]] = {
    ("/api/v1/bot/inboxes/{inbox_id}", "handover_team_id"): lambda ids: ids["team_id"],
    ("/api/v1/bot/intents/{intent_id}", "integration_id"): lambda ids: ids["integration_id"],
    ("/api/v1/inboxes/{inbox_id}", "team_id"): lambda ids: ids["team_id"],
    ("/api/v1/sla-policies/{policy_id}", "first_response_minutes"): lambda _: 30,
    ("/api/v1/sla-policies/{policy_id}", "next_response_minutes"): lambda _: 30,
    ("/api/v1/sla-policies/{policy_id}", "resolution_minutes"): lambda _: 30,
}

# Fields an answer does not show (an article's answer has no position of its own).
NOT_ECHOED = {
    ("/api/v1/kb/articles/{article_id}", "position"),
    ("/api/v1/kb/articles/{article_id}", "translation_of"),
}


def _nullable(prop: dict[str, Any]) -> bool:
    kinds = prop.get("anyOf", [prop])
    return any(kind.get("type") == "null" for kind in kinds)


def _bodies(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """Each PATCH and PUT with a JSON body: its method, path and body schema."""
    spec = client.app.openapi()  # type: ignore[attr-defined]
    schemas = spec["components"]["schemas"]
    out = []
    for path, ops in sorted(spec["paths"].items()):
        for method in ("patch", "put"):
            body = ops.get(method, {}).get("requestBody", {}).get("content", {})
            schema = body.get("application/json", {}).get("schema", {})
            # An optional body is documented as "this schema, or null".
            refs = [s["$ref"] for s in schema.get("anyOf", [schema]) if "$ref" in s]
            if refs:
                out.append((method.upper(), path, schemas[refs[0].rsplit("/", 1)[1]]))
    return out


@pytest.fixture
def ids(client: TestClient, world: World, relay: Any) -> dict[str, str]:
    return _acme_ids(client, world)


def test_every_change_body_is_walked(client: TestClient) -> None:
    walked = {(m, p) for m, p, _ in _bodies(client)}
    assert len(walked) >= 25 and set(BASE) <= walked
    assert ("PATCH", "/api/v1/sla-policies/{policy_id}") in walked
    assert ("PUT", "/api/v1/kb/articles/{article_id}/draft") in walked


def test_a_nullable_field_says_what_null_does_and_does_it(
    client: TestClient, world: World, ids: dict[str, str]
) -> None:
    tried = 0
    for method, path, schema in _bodies(client):
        url = path.format(**ids)
        base = BASE.get((method, path), {})

        def send(body: dict[str, Any], what: str) -> dict[str, Any]:
            r = client.request(method, url, json=body, headers=auth(world.alice))  # noqa: B023
            assert r.status_code in (200, 201, 204), (method, path, what, r.text)  # noqa: B023
            return r.json() if r.content else {}  # type: ignore[no-any-return]

        for field, prop in schema.get("properties", {}).items():
            if not _nullable(prop):
                continue
            tried += 1
            said = prop.get("description", "")
            where = (method, path, field)
            if CLEARS in said:
                value = SET_FIRST[(path, field)](ids)
                assert send({**base, field: value}, "set")[field] == value, where
                assert send({**base, field: None}, "cleared")[field] is None, where
            elif SKIPS in said:
                send({**base, field: None}, "skipped")
            else:
                assert KEEPS.search(said) or KEEPS.search(schema.get("description", "")), (
                    f"{where}: nullable, but what null does is not said"
                )
                before = send(base, "as it is")
                after = send({**base, field: None}, "kept")
                if (path, field) not in NOT_ECHOED:
                    assert after[field] == before[field], where
    assert tried >= 40


def test_a_field_not_said_to_be_nullable_refuses_null(
    client: TestClient, world: World, ids: dict[str, str]
) -> None:
    tried = 0
    for method, path, schema in _bodies(client):
        url = path.format(**ids)
        base = BASE.get((method, path), {})
        for field, prop in schema.get("properties", {}).items():
            if _nullable(prop):
                continue
            tried += 1
            r = client.request(method, url, json={**base, field: None}, headers=auth(world.alice))
            assert r.status_code == 422, (method, path, field, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    assert tried >= 20


def test_a_kept_field_of_a_policy_refuses_null_and_a_target_set_to_null_is_none(
    client: TestClient, world: World, ids: dict[str, str]
) -> None:
    # The document said name, position and the rest could be null; a null name was then
    # refused ("name cannot be null"), unlike what it said.
    url = f"/api/v1/sla-policies/{ids['policy_id']}"
    r = client.patch(url, json={"name": None}, headers=auth(world.alice))
    assert r.status_code == 422 and "cannot be null" in r.text
    r = client.patch(url, json={"first_response_minutes": None}, headers=auth(world.alice))
    assert r.status_code == 200 and r.json()["first_response_minutes"] is None
    assert r.json()["name"] == "Std"
