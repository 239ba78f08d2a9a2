"""What a rule names is checked when it is saved, against its own workspace; what has gone
since (an agent removed, a team deleted) is skipped when it runs, and the rule says so."""

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.auth.models import Team
from rapport.automation.models import Rule, WebhookDelivery
from rapport.config import Settings
from rapport.db import Database
from tests.automation.test_rules import drain, listed_rule
from tests.conftest import auth
from tests.factories import World

RULES = "/api/v1/automation-rules"


def save(
    client: TestClient, token: str, *, event: str = "conversation.created", **body: Any
) -> Any:
    return client.post(RULES, json={"name": "r", "event": event, **body}, headers=auth(token))


def refused(r: Any) -> str:
    """The detail of a 422 problem document."""
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "https://rapport.dev/problems/invalid"
    return str(r.json()["detail"])


def made(client: TestClient, token: str, path: str, body: dict[str, Any]) -> str:
    r = client.post(path, json=body, headers=auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def arrives(client: TestClient, world: World, ext: str) -> str:
    """A customer's message in Acme's inbox (sent by alice: bob may be gone); its
    conversation's id."""
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": "hello", "from": {"email": f"{ext}@example.com"}},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def seen(client: TestClient, world: World, conv: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.alice))
    return r.json()  # type: ignore[no-any-return]


def test_an_agent_named_instead_of_their_id_is_refused_on_create_and_edit(
    client: TestClient, world: World
) -> None:
    # Saved without complaint, the rule then assigned nobody and recorded no error.
    wanted = 'actions[0].value: no member of this workspace has the id "Bob Agent"'
    by_name = [{"type": "assign_agent", "value": "Bob Agent"}]
    assert refused(save(client, world.alice, actions=by_name)) == wanted
    good = save(client, world.alice, actions=[{"type": "add_label", "value": "new"}]).json()
    r = client.put(
        f"{RULES}/{good['id']}",
        json={"name": "r", "event": "conversation.created", "actions": by_name},
        headers=auth(world.alice),
    )
    assert refused(r) == wanted
    assert listed_rule(client, world, good["id"])["actions"] == [
        {"type": "add_label", "value": "new"}
    ]
    bob = world.acme.users["bob"].id
    ok = save(client, world.alice, actions=[{"type": "assign_agent", "value": bob}])
    assert ok.status_code == 201, ok.text


def test_a_viewer_is_no_agent_a_rule_can_assign(client: TestClient, world: World) -> None:
    victor, alice = world.acme.users["victor"].id, world.acme.users["alice"].id
    r = save(client, world.alice, actions=[{"type": "assign_agent", "value": victor}])
    assert refused(r) == (
        f'actions[0].value: the member "{victor}" is a viewer, who cannot be assigned conversations'
    )
    r = save(client, world.alice, actions=[{"type": "assign_agent", "value": alice}])
    assert r.status_code == 201, r.text  # an owner takes conversations too


def test_another_workspaces_ids_read_exactly_as_ids_that_never_existed(
    client: TestClient, world: World
) -> None:
    theirs = {
        "member": world.globex.users["mallory"].id,
        "team": made(client, world.mallory, "/api/v1/teams", {"name": "Globex team"}),
        "canned response": made(
            client, world.mallory, "/api/v1/canned-responses", {"shortcut": "hi", "text": "Hi"}
        ),
        "webhook": made(client, world.mallory, "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h"}),
        "inbox": world.globex.inbox.id,  # type: ignore[union-attr]
    }
    named_by = {
        "member": [("assign_agent", None), (None, "assignee_id")],
        "team": [("assign_team", None), ("email_team", None), ("assign_round_robin", None)],
        "canned response": [("send_canned", None)],
        "webhook": [("send_webhook", None)],
        "inbox": [(None, "inbox_id")],
    }
    for what, uses in named_by.items():
        for action, field in uses:
            details = []
            for value in (theirs[what], "0123456789abcdef0123456789abcdef"):
                if action is not None:
                    body: dict[str, Any] = {"actions": [{"type": action, "value": value}]}
                    part = "actions[0].value"
                else:
                    body = {
                        "conditions": [{"field": field, "op": "equals", "value": value}],
                        "actions": [{"type": "add_label", "value": "x"}],
                    }
                    part = "conditions[0].value"
                detail = refused(save(client, world.alice, **body))
                assert detail == f'{part}: no {what} of this workspace has the id "{value}"'
                details.append(detail.replace(value, "<id>"))
            assert details[0] == details[1], (what, action, field)


@pytest.mark.parametrize(
    ("action", "wanted"),
    [
        ({"type": "add_label"}, "a label is a text that is not blank, not null"),
        ({"type": "add_label", "value": ""}, 'a label is a text that is not blank, not ""'),
        ({"type": "add_label", "value": "   "}, 'a label is a text that is not blank, not "   "'),
        ({"type": "add_label", "value": "x" * 101}, "a label is at most 100 characters"),
        ({"type": "remove_label", "value": 5}, "a label is a text that is not blank, not 5"),
        (
            {"type": "set_priority", "value": "critical"},
            'a priority is one of none, low, medium, high or urgent; not "critical"',
        ),
        (
            {"type": "set_status", "value": "snoozed"},
            'a status is one of open, pending or resolved; not "snoozed"',
        ),
        (
            {"type": "set_status", "value": "closed"},
            'a status is one of open, pending or resolved; not "closed"',
        ),
        ({"type": "assign_team"}, "no team of this workspace has the id null"),
        ({"type": "email_team", "value": "Legal"}, 'no team of this workspace has the id "Legal"'),
        (
            {"type": "assign_round_robin", "value": "Support"},
            'no team of this workspace has the id "Support"',
        ),
        (
            {"type": "send_canned", "value": "/ack"},
            'no canned response of this workspace has the id "/ack"',
        ),
        ({"type": "send_webhook"}, "no webhook of this workspace has the id null"),
        ({"type": "add_note", "value": " "}, 'add_note needs the note\'s text, not " "'),
    ],
)
def test_an_actions_value_that_cannot_work_is_refused_saying_why(
    client: TestClient, world: World, action: dict[str, Any], wanted: str
) -> None:
    r = save(client, world.alice, actions=[{"type": "add_label", "value": "ok"}, action])
    assert refused(r) == f"actions[1].value: {wanted}"


def test_a_note_that_is_no_template_is_refused_naming_the_action(
    client: TestClient, world: World
) -> None:
    detail = refused(save(client, world.alice, actions=[{"type": "add_note", "value": "{{ x"}]))
    assert detail.startswith("actions[0].value: template error")


@pytest.mark.parametrize(
    ("condition", "wanted"),
    [
        (
            {"field": "nonsense_field", "op": "equals", "value": "x"},
            'conditions[0].field: unknown field "nonsense_field"; one of: ',
        ),
        ({"op": "equals", "value": "x"}, "conditions[0].field: unknown field null; one of: "),
        (
            {"field": "customer.attributes.", "op": "exists", "value": True},
            'conditions[0].field: unknown field "customer.attributes."',
        ),
        (
            {"field": "status", "op": "like", "value": "open"},
            'conditions[0].op: unknown op "like"; one of: contains, equals, exists, gt, in, is, ',
        ),
        (
            {"field": "labels", "op": "equals", "value": "vip"},
            "conditions[0].op: labels is compared with contains, exists, in or not_contains; "
            "not equals",
        ),
        (
            {"field": "status", "op": "gt", "value": 3},
            "conditions[0].op: status is compared with equals, exists, in or not_equals; not gt",
        ),
        (
            {"field": "business_hours", "op": "equals", "value": True},
            "conditions[0].op: business_hours is compared with exists or is; not equals",
        ),
        (
            {"field": "status", "op": "equals", "value": "closed"},
            "conditions[0].value: status is one of open, pending, snoozed or resolved; "
            'not "closed"',
        ),
        (
            {"field": "priority", "op": "in", "value": ["high", "critical"]},
            "conditions[0].value: priority is one of none, low, medium, high or urgent; "
            'not "critical"',
        ),
        (
            {"field": "channel", "op": "equals", "value": "carrier pigeon"},
            "conditions[0].value: channel is one of api, ",
        ),
        (
            {"field": "assignee_id", "op": "in", "value": ["Bob Agent"]},
            'conditions[0].value: no member of this workspace has the id "Bob Agent"',
        ),
        (
            {"field": "team_id", "op": "not_equals", "value": "Escalations"},
            'conditions[0].value: no team of this workspace has the id "Escalations"',
        ),
        (
            {"field": "labels", "op": "contains", "value": " "},
            'conditions[0].value: a label is a text that is not blank, not " "',
        ),
        (
            {"field": "status", "op": "in", "value": []},
            "conditions[0].value: op 'in' needs at least one value to compare with",
        ),
        (
            {"field": "message.text", "op": "contains", "value": "refund"},
            "conditions[0].field: message.text is a message's, "
            "and conversation.created comes with none",
        ),
    ],
)
def test_a_condition_that_cannot_hold_is_refused_saying_why(
    client: TestClient, world: World, condition: dict[str, Any], wanted: str
) -> None:
    r = save(
        client,
        world.alice,
        conditions=[condition],
        actions=[{"type": "add_label", "value": "x"}],
    )
    assert refused(r).startswith(wanted)


def test_a_customers_event_refuses_what_acts_on_a_conversation(
    client: TestClient, world: World
) -> None:
    event = "customer.attribute_changed"
    r = save(client, world.alice, event=event, actions=[{"type": "add_label", "value": "x"}])
    assert refused(r) == (
        "actions[0].type: add_label acts on a conversation, "
        "and customer.attribute_changed comes with none"
    )
    r = save(
        client,
        world.alice,
        event=event,
        conditions=[{"field": "status", "op": "equals", "value": "open"}],
        actions=[{"type": "send_webhook", "value": "x"}],
    )
    assert refused(r) == (
        "conditions[0].field: status is a conversation's, "
        "and customer.attribute_changed comes with none"
    )


def test_every_action_and_field_takes_what_it_can_work_with(
    client: TestClient, world: World
) -> None:
    bob = world.acme.users["bob"].id
    team = made(client, world.alice, "/api/v1/teams", {"name": "Escalations"})
    reply = made(client, world.alice, "/api/v1/canned-responses", {"shortcut": "a", "text": "A"})
    hook = made(client, world.alice, "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h"})
    r = save(
        client,
        world.alice,
        event="message.received",
        conditions=[
            {"field": "channel", "op": "in", "value": ["API", "email"]},
            {"field": "inbox_id", "op": "equals", "value": world.acme.inbox.id},  # type: ignore[union-attr]
            {"field": "priority", "op": "not_equals", "value": "urgent"},
            {"field": "status", "op": "equals", "value": "Open"},
            {"field": "assignee_id", "op": "exists", "value": False},
            {"field": "team_id", "op": "in", "value": [team]},
            {"field": "labels", "op": "not_contains", "value": "spam"},
            {"field": "business_hours", "op": "is", "value": True},
            {"field": "message.text", "op": "regex", "value": r"\brefund"},
            {"field": "message.direction", "op": "equals", "value": "in"},
            {"field": "message.sentiment", "op": "equals", "value": "negative"},
            {"field": "message.sentiment_score", "op": "lt", "value": "-0.5"},
            {"field": "message.spam", "op": "is", "value": False},
            {"field": "message.language", "op": "equals", "value": "en"},
            {"field": "customer.email", "op": "contains", "value": "@example.com"},
            {"field": "customer.attributes.plan", "op": "equals", "value": "gold"},
        ],
        actions=[
            {"type": "assign_agent", "value": bob},
            {"type": "assign_team", "value": team},
            {"type": "assign_round_robin"},
            {"type": "assign_round_robin", "value": team},
            {"type": "add_label", "value": "Refund"},
            {"type": "remove_label", "value": "new"},
            {"type": "set_priority", "value": "high"},
            {"type": "set_status", "value": "pending"},
            {"type": "send_canned", "value": reply},
            {"type": "add_note", "value": "For {{ customer.email }}"},
            {"type": "send_webhook", "value": hook},
            {"type": "email_team", "value": team},
        ],
    )
    assert r.status_code == 201, r.text


def test_an_action_whose_agent_left_is_skipped_and_the_rule_says_why(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Saved while bob was a member; once he left, the rule assigned nobody and said nothing.
    bob = world.acme.users["bob"].id
    made_rule = save(
        client,
        world.alice,
        actions=[{"type": "assign_agent", "value": bob}, {"type": "add_label", "value": "seen"}],
    ).json()
    r = client.delete(f"/api/v1/members/{bob}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    conv = arrives(client, world, "left-1")
    with caplog.at_level(logging.WARNING, logger="rapport.automation.service"):
        drain(database, settings)
    found = seen(client, world, conv)
    assert found["assignee_id"] is None
    assert found["labels"] == ["seen"]  # its other actions ran, as they always did
    shown = listed_rule(client, world, made_rule["id"])
    assert shown["last_error"] == (
        f'actions[0] (assign_agent) was skipped: no member of this workspace has the id "{bob}"'
    )
    assert shown["last_error_at"] is not None
    (said,) = [
        r for r in caplog.records if getattr(r, "event", None) == "automation.action_skipped"
    ]
    assert (said.rule_id, said.actions) == (made_rule["id"], [0])  # type: ignore[attr-defined]


def test_an_action_whose_team_was_deleted_is_skipped_until_the_rule_is_mended(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    team = made(client, world.alice, "/api/v1/teams", {"name": "Escalations"})
    body = {
        "name": "escalate",
        "event": "conversation.created",
        "actions": [{"type": "assign_team", "value": team}, {"type": "add_label", "value": "x"}],
    }
    rule_id = made(client, world.alice, RULES, body)
    # Deleted under the rule as Rapport allowed before it refused that (409 now, see
    # test_rules): the action is skipped, and says why.
    with database.session() as db:
        db.delete(db.get(Team, team))
        db.commit()
    arrives(client, world, "gone-1")
    drain(database, settings)
    assert listed_rule(client, world, rule_id)["last_error"] == (
        f'actions[0] (assign_team) was skipped: no team of this workspace has the id "{team}"'
    )
    # Switched off as it stands (from the list's checkbox), though it cannot run...
    r = client.put(f"{RULES}/{rule_id}", json={**body, "enabled": False}, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    # ... but not switched on again, nor edited, until it names a team that exists.
    on = client.put(f"{RULES}/{rule_id}", json={**body, "enabled": True}, headers=auth(world.alice))
    assert refused(on) == f'actions[0].value: no team of this workspace has the id "{team}"'
    renamed = {**body, "name": "other", "enabled": False, "stop_processing": True}
    renamed["actions"] = [*body["actions"], {"type": "set_status", "value": "snoozed"}]  # type: ignore[list-item]
    assert refused(client.put(f"{RULES}/{rule_id}", json=renamed, headers=auth(world.alice)))
    mended = {**body, "actions": [{"type": "add_label", "value": "x"}]}
    r = client.put(f"{RULES}/{rule_id}", json=mended, headers=auth(world.alice))
    assert r.status_code == 200, r.text
    arrives(client, world, "gone-2")
    drain(database, settings)
    assert listed_rule(client, world, rule_id)["last_error"] is None


def test_a_rule_stored_before_values_were_checked_still_runs_and_says_what_it_skipped(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    made_rule = save(client, world.alice, actions=[{"type": "add_label", "value": "kept"}]).json()
    with database.session() as db:  # as the reviewer's rule was saved
        stored = db.get(Rule, made_rule["id"])
        assert stored is not None
        stored.actions = [
            {"type": "assign_agent", "value": "Bob Agent"},
            {"type": "add_label", "value": "kept"},
            {"type": "set_priority", "value": "critical"},
        ]
    conv = arrives(client, world, "old-1")
    drain(database, settings)
    found = seen(client, world, conv)
    assert (found["assignee_id"], found["labels"], found["priority"]) == (None, ["kept"], "none")
    assert listed_rule(client, world, made_rule["id"])["last_error"] == (
        "actions[0] (assign_agent) was skipped: "
        'no member of this workspace has the id "Bob Agent"; '
        "actions[2] (set_priority) was skipped: "
        'a priority is one of none, low, medium, high or urgent; not "critical"'
    )


def test_a_rules_webhook_is_called_for_a_customers_event(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The webhook was looked up in the conversation's workspace: a customer's event has no
    # conversation, so the call the rule was saved for never went out.
    hook = made(client, world.alice, "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h"})
    rule_id = made(
        client,
        world.alice,
        RULES,
        {
            "name": "plan changes",
            "event": "customer.attribute_changed",
            "conditions": [{"field": "customer.attributes.plan", "op": "equals", "value": "gold"}],
            "actions": [{"type": "send_webhook", "value": hook}],
        },
    )
    customer = world.acme.opened.customer.id
    r = client.patch(
        f"/api/v1/customers/{customer}",
        json={"attributes": {"plan": "gold"}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    drain(database, settings)
    with database.session(write=False) as db:
        calls = list(db.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook)))
        assert [(c.event, c.payload["customer_id"]) for c in calls] == [
            ("customer.attribute_changed", customer)
        ]
    assert listed_rule(client, world, rule_id)["last_error"] is None
