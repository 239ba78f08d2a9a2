"""Every query is scoped to the caller's workspace: mallory (Globex) can reach nothing of Acme."""

import re

import pytest
from fastapi.testclient import TestClient

from rapport.customers.models import MergeSuggestion
from tests.auth.test_login import in_a_browser
from tests.channels.email.test_email import Outbox
from tests.conftest import auth
from tests.factories import PASSWORD, World, dead_job

# Bodies valid enough to get past validation, so the answer is about the ids alone.
BODIES: dict[tuple[str, str], object] = {
    ("POST", "/api/v1/members/{user_id}/totp/reset"): {"password": PASSWORD},
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): {"enabled": False},
    ("PATCH", "/api/v1/inboxes/{inbox_id}"): {"name": "renamed"},
    ("PATCH", "/api/v1/sla-policies/{policy_id}"): {"first_response_minutes": 1},
    ("POST", "/api/v1/inboxes/{inbox_id}/messages"): {
        "external_id": "x-1",
        "text": "hi",
        "from": {"email": "someone@example.com"},
    },
    ("PATCH", "/api/v1/customers/{customer_id}"): {"name": "renamed"},
    ("POST", "/api/v1/customers/{customer_id}/identities"): {
        "kind": "email",
        "value": "new@example.com",
    },
    ("POST", "/api/v1/customers/{customer_id}/events"): {"type": "Viewed"},
    ("POST", "/api/v1/customers/{customer_id}/notes"): {"text": "a note"},
    ("PATCH", "/api/v1/customers/{customer_id}/notes/{note_id}"): {"text": "changed"},
    ("POST", "/api/v1/customers/{customer_id}/merge"): {"merged_id": "x" * 32},
    ("PUT", "/api/v1/customers/{customer_id}/tags"): {"tags": ["x"]},
    ("PUT", "/api/v1/canned-responses/{canned_id}"): {"shortcut": "x", "text": "x"},
    ("PATCH", "/api/v1/customers/{customer_id}/tags"): {"add": ["x"]},
    ("PATCH", "/api/v1/kb/collections/{collection_id}"): {"title": "x"},
    ("PATCH", "/api/v1/kb/articles/{article_id}"): {"title": "x"},
    ("PATCH", "/api/v1/bot/intents/{intent_id}"): {"name": "x", "reply": "x"},
    ("POST", "/api/v1/bot/intents/{intent_id}/examples"): {"text": "x"},
    ("PUT", "/api/v1/bot/inboxes/{inbox_id}"): {"enabled": True},
    ("POST", "/api/v1/conversations/{conversation_id}/merge"): {"merged_id": "x" * 32},
    ("POST", "/api/v1/customers/{customer_id}/consents"): {
        "channel": "email",
        "purpose": "marketing",
        "granted": True,
    },
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"text": "hello"},
    ("POST", "/api/v1/conversations/{conversation_id}/notes"): {"text": "note"},
    ("POST", "/api/v1/conversations/{conversation_id}/assign"): {"assignee_id": None},
    ("POST", "/api/v1/conversations/{conversation_id}/status"): {"status": "resolved"},
    ("POST", "/api/v1/conversations/{conversation_id}/priority"): {"priority": "high"},
    ("POST", "/api/v1/conversations/{conversation_id}/labels"): {"labels": ["vip"]},
    ("PATCH", "/api/v1/members/{user_id}"): {"capacity": 3},
    ("PATCH", "/api/v1/labels/{label_id}"): {"name": "renamed"},
    ("PUT", "/api/v1/automation-rules/{rule_id}"): {
        "name": "r",
        "event": "message.received",
        "actions": [{"type": "add_label", "value": "x"}],
    },
    ("PATCH", "/api/v1/teams/{team_id}"): {"name": "x"},
    ("PATCH", "/api/v1/macros/{macro_id}"): {"name": "x"},
    ("PATCH", "/api/v1/saved-views/{saved_view_id}"): {"name": "x"},
}
# Multipart bodies (file uploads), likewise valid.
FILES: dict[tuple[str, str], dict[str, tuple[str, bytes, str]]] = {
    ("POST", "/api/v1/conversations/{conversation_id}/uploads"): {
        "file": ("invoice.pdf", b"%PDF-1.4 hello", "application/pdf")
    },
    ("POST", "/api/v1/customers/{customer_id}/uploads"): {
        "file": ("invoice.pdf", b"%PDF-1.4 hello", "application/pdf")
    },
}


def _acme_ids(client: TestClient, world: World) -> dict[str, str]:
    acme = world.acme
    assert acme.first is not None and acme.inbox is not None
    customer = client.get(
        f"/api/v1/customers/{acme.first.customer.id}", headers=auth(world.alice)
    ).json()
    team = client.post("/api/v1/teams", json={"name": "Support"}, headers=auth(world.alice)).json()
    tokens = client.get("/api/v1/tokens", headers=auth(world.alice)).json()
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "Std", "first_response_minutes": 60},
        headers=auth(world.alice),
    ).json()
    reply = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "hi", "text": "Hello"},
        headers=auth(world.alice),
    ).json()
    rule = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "r",
            "event": "message.received",
            "actions": [{"type": "add_label", "value": "x"}],
        },
        headers=auth(world.alice),
    ).json()
    hook = client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(world.alice)
    ).json()
    label = client.post("/api/v1/labels", json={"name": "vip"}, headers=auth(world.alice)).json()
    macro = client.post(
        "/api/v1/macros",
        json={"name": "Close", "actions": [{"type": "set_status", "value": "resolved"}]},
        headers=auth(world.alice),
    ).json()
    view = client.post(
        "/api/v1/saved-views",
        json={"page": "inbox", "name": "Open", "query": "view=all", "shared": True},
        headers=auth(world.alice),
    ).json()
    database = client.app.state.database  # type: ignore[attr-defined]
    return {
        "inbox_id": acme.inbox.id,
        "customer_id": acme.first.customer.id,
        "conversation_id": acme.first.conversation.id,
        "message_id": acme.first.message.id,
        "identity_id": customer["identities"][0]["id"],
        "note_id": client.post(
            f"/api/v1/customers/{acme.first.customer.id}/notes",
            json={"text": "VIP"},
            headers=auth(world.alice),
        ).json()["id"],
        "team_id": team["id"],
        "user_id": acme.users["bob"].id,
        "token_id": tokens[0]["id"],
        "policy_id": policy["id"],
        "canned_id": reply["id"],
        "rule_id": rule["id"],
        "macro_id": macro["id"],
        "saved_view_id": view["id"],
        "attachment_id": "0" * 32,
        "merge_id": "0" * 32,
        "suggestion_id": _suggestion(client, world),
        "intent_id": client.post(
            "/api/v1/bot/intents",
            json={"name": "hours", "reply": "9 to 5"},
            headers=auth(world.alice),
        ).json()["id"],
        "integration_id": client.post(
            "/api/v1/bot/integrations",
            json={"name": "orders", "url": "https://shop.example/o/{{ order_number }}"},
            headers=auth(world.alice),
        ).json()["id"],
        "collection_id": client.post(
            "/api/v1/kb/collections", json={"title": "Orders"}, headers=auth(world.alice)
        ).json()["id"],
        "article_id": client.post(
            "/api/v1/kb/articles", json={"title": "Refunds"}, headers=auth(world.alice)
        ).json()["id"],
        "definition_id": client.post(
            "/api/v1/attribute-definitions",
            json={"key": "plan", "type": "text"},
            headers=auth(world.alice),
        ).json()["id"],
        "webhook_id": hook["id"],
        "label": "vip",
        "label_id": label["id"],
        "job_id": dead_job(database, workspace_id=acme.workspace.id),
        "invitation_id": client.post(
            "/api/v1/members", json={"email": "new@acme.test"}, headers=auth(world.alice)
        ).json()["id"],
    }


def _suggestion(client: TestClient, world: World) -> str:
    """A pending duplicate suggestion between two of Acme's customers."""
    other = client.post(
        "/api/v1/customers", json={"name": "Twin"}, headers=auth(world.alice)
    ).json()
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.session() as db:
        pair = sorted([world.acme.opened.customer.id, other["id"]])
        row = MergeSuggestion(
            workspace_id=world.acme.workspace.id,
            left_id=pair[0],
            right_id=pair[1],
            probability=0.95,
            reason="same name",
        )
        db.add(row)
        db.flush()
        return str(row.id)


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every documented endpoint that takes an id in its path."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return [
        (method.upper(), path)
        for path, ops in sorted(paths.items())
        # Provider webhooks and the chat widget carry no member credentials: signatures
        # and visitor tokens are their checks (tests/channels/).
        if "{" in path and not path.startswith(("/webhooks/", "/widget/"))
        for method in sorted(ops)
    ]


def test_every_route_with_an_id_is_covered(client: TestClient) -> None:
    params = {p for _, path in _routes(client) for p in re.findall(r"{(\w+)}", path)}
    assert params <= {
        "inbox_id",
        "customer_id",
        "conversation_id",
        "message_id",
        "identity_id",
        "note_id",
        "team_id",
        "user_id",
        "token_id",
        "label",
        "label_id",
        "policy_id",
        "canned_id",
        "rule_id",
        "macro_id",
        "saved_view_id",
        "webhook_id",
        "attachment_id",
        "merge_id",
        "suggestion_id",
        "definition_id",
        "collection_id",
        "article_id",
        "intent_id",
        "integration_id",
        "job_id",
        "invitation_id",
    }


# The query a route needs before it looks anything up.
PARAMS = {("GET", "/api/v1/customers/{customer_id}/merge-preview"): {"merged_id": "x" * 32}}

# What no API token may do, whoever's it is (403 for every id): tried from mallory's own
# signed-in browser, which may.
BROWSER_ONLY = {("POST", "/api/v1/members/{user_id}/totp/reset")}


def test_member_of_another_workspace_gets_404_for_every_id_on_every_endpoint(
    client: TestClient, world: World, relay: Outbox
) -> None:
    ids = _acme_ids(client, world)
    browser, csrf = in_a_browser(client, world.mallory)
    checked = 0
    for method, path in _routes(client):
        url = path.format(**ids)
        body = BODIES.get((method, path))
        if (method, path) in FILES:
            r = client.request(method, url, files=FILES[method, path], headers=auth(world.mallory))
        elif (method, path) in BROWSER_ONLY:
            r = browser.request(method, url, json=body, headers=csrf)
        else:
            r = client.request(
                method,
                url,
                json=body,
                params=PARAMS.get((method, path)),
                headers=auth(world.mallory),
            )
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        checked += 1
    assert checked >= 20
    # And nothing of Acme changed or leaked through the attempts.
    conv = client.get(
        f"/api/v1/conversations/{ids['conversation_id']}", headers=auth(world.alice)
    ).json()
    assert conv["status"] == "open" and conv["labels"] == []
    assert [m["text"] for m in conv["messages"]] == ["Hello Acme", "first note"]
    notes = client.get(f"/api/v1/customers/{ids['customer_id']}/notes", headers=auth(world.alice))
    assert [n["text"] for n in notes.json()] == ["VIP"]
    views = client.get("/api/v1/saved-views", headers=auth(world.alice)).json()
    assert [(v["id"], v["name"]) for v in views] == [(ids["saved_view_id"], "Open")]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/conversations",
        "/api/v1/customers",
        "/api/v1/inboxes",
        "/api/v1/members",
        "/api/v1/teams",
    ],
)
def test_lists_show_only_the_callers_workspace(client: TestClient, world: World, path: str) -> None:
    mine = client.get(path, headers=auth(world.mallory)).json()
    items = mine["items"] if isinstance(mine, dict) else mine
    theirs = client.get(path, headers=auth(world.alice)).json()
    their_items = theirs["items"] if isinstance(theirs, dict) else theirs
    key = "user_id" if path.endswith("members") else "id"
    assert not {i[key] for i in items} & {i[key] for i in their_items}


def test_customer_search_by_handle_stays_in_the_workspace(client: TestClient, world: World) -> None:
    r = client.get(
        "/api/v1/customers", params={"q": "customer@acme.example"}, headers=auth(world.mallory)
    )
    assert r.json()["items"] == []
    r = client.get(
        "/api/v1/customers", params={"q": "customer@acme.example"}, headers=auth(world.alice)
    )
    assert len(r.json()["items"]) == 1


def test_stream_replay_never_carries_another_workspaces_events(
    client: TestClient, world: World
) -> None:
    with client.websocket_connect(
        "/api/v1/stream?last_event_id=0", headers=auth(world.mallory)
    ) as ws:
        client.post(
            f"/api/v1/conversations/{world.globex.opened.conversation.id}/notes",
            json={"text": "ping"},
            headers=auth(world.mallory),
        )
        seen = []
        while True:
            event = ws.receive_json()
            seen.append(event)
            if event["type"] == "message.created" and event["payload"]["text"] == "ping":
                break
    assert {e["workspace_id"] for e in seen} == {world.globex.workspace.id}


def test_another_workspaces_upload_cannot_be_sent_or_noted(
    client: TestClient, world: World
) -> None:
    acme, globex = world.acme.opened, world.globex.opened
    assert acme is not None and globex is not None
    up = client.post(
        f"/api/v1/conversations/{acme.conversation.id}/uploads",
        files={"file": ("secret.pdf", b"%PDF-1.4 acme only", "application/pdf")},
        headers=auth(world.alice),
    )
    assert up.status_code == 201, up.text
    for kind in ("messages", "notes"):
        r = client.post(
            f"/api/v1/conversations/{globex.conversation.id}/{kind}",
            json={"text": "look", "attachment_ids": [up.json()["id"]]},
            headers=auth(world.mallory),
        )
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
    # Nor is it Acme's to send in another of its own conversations: an upload belongs to one.
    other = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "x-2", "text": "hi", "from": {"email": "other@example.com"}},
        headers=auth(world.alice),
    ).json()
    r = client.post(
        f"/api/v1/conversations/{other['conversation_id']}/messages",
        json={"attachment_ids": [up.json()["id"]]},
        headers=auth(world.alice),
    )
    assert r.status_code == 404
