"""Automation rules: conditions, actions, ordering, and no loops."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from rapport.automation import service
from rapport.automation.models import Rule
from rapport.config import Settings
from rapport.conversations.models import Conversation, Message
from rapport.customers.models import Identity
from rapport.db import Database, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from rapport.realtime.models import StreamEvent
from tests.channels.test_providers import (  # noqa: F401
    Provider,
    only_conversation,
    page_inbox,
    provider,
    text_in,
    twilio_inbox,
    wrote,
)
from tests.conftest import auth, postgresql_only, published_events
from tests.factories import World
from tests.standin import serving


def rule(client: TestClient, world: World, **body: object) -> dict:  # type: ignore[type-arg]
    r = client.post(
        "/api/v1/automation-rules", json={"name": "r", **body}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def inbound(
    client: TestClient, world: World, ext: str, text: str, email: str = "auto@example.com"
) -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": text, "from": {"email": email}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def drain(database: Database, settings: Settings) -> int:
    return Worker(database, settings).run_until_idle(max_jobs=200)


def listed_rule(client: TestClient, world: World, rule_id: str) -> dict:  # type: ignore[type-arg]
    """The rule as the admins' list shows it (with its last error)."""
    listed = client.get("/api/v1/automation-rules", headers=auth(world.alice)).json()
    return next(r for r in listed if r["id"] == rule_id)  # type: ignore[no-any-return]


def conversation(client: TestClient, world: World, conv: str) -> dict:  # type: ignore[type-arg]
    return client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()  # type: ignore[no-any-return]


def test_a_rule_labels_and_prioritizes_messages_that_match(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    rule(
        client,
        world,
        event="message.received",
        conditions=[
            {"field": "message.text", "op": "regex", "value": r"\brefund"},
            {"field": "channel", "op": "equals", "value": "api"},
        ],
        actions=[
            {"type": "add_label", "value": "billing"},
            {"type": "set_priority", "value": "high"},
        ],
    )
    hit = inbound(client, world, "a1", "I want a REFUND now", "a1@example.com")
    miss = inbound(client, world, "a2", "just saying hi", "a2@example.com")
    drain(database, settings)
    assert conversation(client, world, hit)["labels"] == ["billing"]
    assert conversation(client, world, hit)["priority"] == "high"
    assert conversation(client, world, miss)["labels"] == []


def test_rules_run_in_order_and_can_stop_later_rules(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    rule(
        client,
        world,
        event="conversation.created",
        position=1,
        stop_processing=True,
        actions=[{"type": "add_label", "value": "first"}],
    )
    rule(
        client,
        world,
        event="conversation.created",
        position=2,
        actions=[{"type": "add_label", "value": "second"}],
    )
    conv = inbound(client, world, "o1", "hello", "o1@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["first"]


def test_a_rule_cannot_trigger_itself_or_ping_pong_with_another(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A: any status change -> pending; B: any status change -> open. Unchecked, forever.
    rule(
        client,
        world,
        event="conversation.status_changed",
        actions=[{"type": "set_status", "value": "pending"}],
    )
    rule(
        client,
        world,
        event="conversation.status_changed",
        actions=[{"type": "set_status", "value": "open"}],
    )
    conv = inbound(client, world, "l1", "hello", "l1@example.com")
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    )
    ran = drain(database, settings)
    assert ran < 20
    with database.session(write=False) as db:
        waiting = db.scalar(
            select(func.count()).select_from(Job).where(Job.state == JobState.queued)
        )
    assert waiting == 0


def test_a_rule_can_route_negative_messages_to_a_team(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    team = client.post(
        "/api/v1/teams", json={"name": "Escalations"}, headers=auth(world.alice)
    ).json()
    rule(
        client,
        world,
        event="message.received",
        conditions=[{"field": "message.text", "op": "contains", "value": "terrible"}],
        actions=[
            {"type": "assign_team", "value": team["id"]},
            {"type": "add_note", "value": "Escalated for {{ customer.email }}"},
        ],
    )
    conv = inbound(client, world, "n1", "This is terrible service", "angry@example.com")
    drain(database, settings)
    detail = conversation(client, world, conv)
    assert detail["team_id"] == team["id"]
    assert detail["messages"][-1]["text"] == "Escalated for angry@example.com"


def test_invalid_rules_are_refused_with_the_reason(client: TestClient, world: World) -> None:
    for body, why in (
        ({"event": "never", "actions": [{"type": "add_label", "value": "x"}]}, "event"),
        ({"event": "message.received", "actions": [{"type": "launch_rockets"}]}, "action"),
        (
            {
                "event": "message.received",
                "conditions": [{"field": "message.text", "op": "regex", "value": "("}],
                "actions": [{"type": "add_label", "value": "x"}],
            },
            "regex",
        ),
    ):
        r = client.post(
            "/api/v1/automation-rules", json={"name": "bad", **body}, headers=auth(world.alice)
        )
        assert r.status_code == 422 and why in r.json()["detail"]
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "x",
            "event": "message.received",
            "actions": [{"type": "add_label", "value": "x"}],
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 403


def test_a_condition_whose_value_does_not_fit_its_op_is_refused(
    client: TestClient, world: World
) -> None:
    # Nothing checked a condition's value: "in" 5 raised TypeError on every event it was
    # evaluated for, and "in" "open" matched the letters of the word.
    for op, value in (
        ("in", 5),
        ("in", "open"),
        ("in", [["open"]]),
        ("gt", "soon"),
        ("lt", True),
        ("regex", 5),
        ("contains", ["a"]),
        ("equals", {"a": 1}),
        ("is", "no"),
        ("exists", 1),
    ):
        r = client.post(
            "/api/v1/automation-rules",
            json={
                "name": "bad",
                "event": "message.received",
                "conditions": [{"field": "status", "op": op, "value": value}],
                "actions": [{"type": "add_label", "value": "x"}],
            },
            headers=auth(world.alice),
        )
        assert r.status_code == 422, (op, value, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert f"op {op!r} compares with" in r.json()["detail"]
    for op, value in (
        ("in", ["open", 2]),
        ("gt", "3"),  # as the settings form sends it
        ("lt", 2.5),
        ("exists", True),
        ("is", False),
        ("equals", None),
        ("contains", 5),
    ):
        # A customer's attribute holds whatever was set: any op fits it (a status is only
        # ever compared with statuses, tests/automation/test_rule_values.py).
        conditions = [{"field": "customer.attributes.plan", "op": op, "value": value}]
        rule(
            client,
            world,
            event="message.received",
            conditions=conditions,
            actions=[{"type": "add_label", "value": "x"}],
        )


def test_a_rule_whose_condition_breaks_fails_alone_and_says_why(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Only a template error or a slow pattern skipped a rule: a condition saved before its
    # value was checked raised TypeError, the job failed and was retried, the event's
    # other rules never ran, and the broken rule showed no error.
    broken = rule(
        client,
        world,
        event="message.received",
        position=1,
        conditions=[{"field": "status", "op": "in", "value": ["open"]}],
        actions=[{"type": "add_label", "value": "never"}],
    )
    rule(
        client,
        world,
        event="message.received",
        position=2,
        actions=[{"type": "add_label", "value": "good"}],
    )
    with database.session() as db:  # as saved before values were checked
        stored = db.get(Rule, broken["id"])
        assert stored is not None
        stored.conditions = [{"field": "status", "op": "in", "value": 5}]
    conv = inbound(client, world, "tc1", "hello", "tc1@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["good"]
    shown = listed_rule(client, world, broken["id"])
    assert shown["last_error"].startswith("TypeError: ")
    with database.session(write=False) as db:
        states = set(db.scalars(select(Job.state).where(Job.name == "automation")))
    assert states == {JobState.done}


def test_what_a_rule_did_before_an_action_broke_is_undone(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An action failing with anything but a template error failed the whole job: the
    # event's other rules never ran, and the rule showed no error.
    from rapport.conversations import routing

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("routing is down")

    monkeypatch.setattr(routing, "pick_agent", broken)
    failing = rule(
        client,
        world,
        event="conversation.created",
        position=1,
        actions=[{"type": "add_label", "value": "first"}, {"type": "assign_round_robin"}],
    )
    rule(
        client,
        world,
        event="conversation.created",
        position=2,
        actions=[{"type": "add_label", "value": "second"}],
    )
    conv = inbound(client, world, "ab1", "hello", "ab1@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["second"]  # "first" undone
    shown = listed_rule(client, world, failing["id"])
    assert shown["last_error"] == "RuntimeError: routing is down"


def test_a_rules_round_robin_assigns_in_an_inbox_that_does_not_auto_assign(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The rule is the admin's explicit choice, as assign_agent is: the inbox's auto_assign
    # governs Rapport's own routing, not a rule's actions.
    inbox = client.get(f"/api/v1/inboxes/{world.acme.inbox.id}", headers=auth(world.alice))  # type: ignore[union-attr]
    assert inbox.json()["auto_assign"] is False
    client.put("/api/v1/presence", json={"availability": "online"}, headers=auth(world.bob))
    rule(
        client,
        world,
        name="Share <the> load",
        event="conversation.created",
        actions=[{"type": "assign_round_robin"}, {"type": "set_status", "value": "pending"}],
    )
    conv = inbound(client, world, "rr1", "hello", "rr1@example.com")
    drain(database, settings)
    detail = conversation(client, world, conv)
    assert detail["assignee_id"] == world.acme.users["bob"].id
    # Its activity lines say the rule did it (they said "assigned", by nobody).
    said = [m["text"] for m in detail["messages"] if m["kind"] == "activity"]
    assert said == [
        "Assigned to Bob by the rule “Share <the> load”",
        "Marked pending by the rule “Share <the> load”",
    ]


class _Receiver(BaseHTTPRequestHandler):
    answers: list[int] = []
    seen: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((dict(self.headers), body))
        self.send_response(type(self).answers.pop(0) if type(self).answers else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"answers": [], "seen": []})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_port}/hook", handler


def test_webhooks_are_signed_retried_and_logged(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    handler.answers = [500]
    hook = client.post("/api/v1/webhooks", json={"url": url}, headers=auth(world.alice)).json()
    rule(
        client,
        world,
        event="conversation.created",
        actions=[{"type": "send_webhook", "value": hook["id"]}],
    )
    conv = inbound(client, world, "w1", "hello", "w1@example.com")
    drain(database, settings)  # the first delivery gets a 500
    with database.session() as db:  # make the retry due now rather than after its backoff
        from rapport.db import utcnow

        for job in db.scalars(select(Job).where(Job.name == "webhook_deliver")):
            job.run_at = utcnow()
    drain(database, settings)
    assert len(handler.seen) == 2
    headers, body = handler.seen[-1]
    ts = int(headers["X-Rapport-Timestamp"])
    assert headers["X-Rapport-Signature"] == service.sign(hook["secret"], ts, body)
    assert conv.encode() in body
    log = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=auth(world.alice)).json()
    assert log[0]["status"] == "delivered" and log[0]["attempts"] == 2


def test_a_rule_emails_a_team_over_smtp(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    relay,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    from email import message_from_bytes

    team = client.post(
        "/api/v1/teams",
        json={"name": "Legal", "member_ids": [world.acme.users["bob"].id]},
        headers=auth(world.alice),
    ).json()
    rule(
        client,
        world,
        event="message.received",
        conditions=[{"field": "message.text", "op": "contains", "value": "lawyer"}],
        actions=[{"type": "email_team", "value": team["id"]}],
    )
    conv = inbound(client, world, "law-1", "My lawyer will contact you about the contract.")
    inbound(client, world, "calm-1", "Thanks for the quick delivery!", email="calm@example.com")
    drain(database, settings)
    mails = [message_from_bytes(raw) for raw in relay.messages]
    assert [m["To"] for m in mails] == ["bob@acme.test"]
    body = mails[0].get_payload(decode=True).decode()
    assert "My lawyer will contact you" in body and f"/app/conversations/{conv}" in body
    assert mails[0]["Subject"].startswith("[Legal]")


def test_a_webhook_receives_the_events_it_subscribes_to_and_no_others(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    def hook(events: list[str], who: str = "alice") -> str:
        r = client.post(
            "/api/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "events": events},
            headers=auth(getattr(world, who)),
        )
        assert r.status_code == 201, r.text
        assert r.json()["events"] == sorted(events)
        return str(r.json()["id"])

    def received(hook_id: str, who: str = "alice") -> list[str]:
        r = client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=auth(getattr(world, who)))
        return sorted(d["event"] for d in r.json())

    created = hook(["conversation.created"])
    chatty = hook(["conversation.status_changed", "message.received"])
    by_rules = hook([])
    theirs = hook(["message.received", "conversation.created"], who="mallory")
    rule(
        client,
        world,
        event="message.received",
        actions=[
            {"type": "send_webhook", "value": by_rules},
            # Subscribed already: the rule adds no second copy of the same event.
            {"type": "send_webhook", "value": chatty},
        ],
    )
    conv = inbound(client, world, "sub-1", "hello")
    drain(database, settings)  # the rule runs; nothing listens on port 9, which is fine
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    assert received(created) == ["conversation.created"]
    assert received(chatty) == ["conversation.status_changed", "message.received"]
    assert received(by_rules) == ["message.received"]
    assert received(theirs, who="mallory") == []
    bad = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["message.recieved"]},
        headers=auth(world.alice),
    )
    assert bad.status_code == 422 and "message.recieved" in bad.json()["detail"]


def test_a_webhook_is_edited_switched_off_and_deleted(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    r = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["conversation.created"]},
        headers=auth(world.alice),
    )
    hook = r.json()["id"]

    def log() -> list[str]:
        r = client.get(f"/api/v1/webhooks/{hook}/deliveries", headers=auth(world.alice))
        return sorted(d["event"] for d in r.json())

    r = client.patch(
        f"/api/v1/webhooks/{hook}",
        json={"events": ["message.received"], "url": "https://hooks.example/rapport"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["message.received"]
    assert r.json()["url"] == "https://hooks.example/rapport" and r.json()["enabled"]
    inbound(client, world, "edit-1", "hello")
    assert log() == ["message.received"]  # the new subscription, at once

    off = client.patch(
        f"/api/v1/webhooks/{hook}", json={"enabled": False}, headers=auth(world.alice)
    )
    assert off.json()["enabled"] is False and off.json()["events"] == ["message.received"]
    inbound(client, world, "edit-2", "hello again")
    assert log() == ["message.received"]  # nothing more while switched off

    bad = client.patch(
        f"/api/v1/webhooks/{hook}", json={"url": "ftp://nope.example"}, headers=auth(world.alice)
    )
    assert bad.status_code == 422
    assert client.patch(
        f"/api/v1/webhooks/{hook}", json={"enabled": True}, headers=auth(world.bob)
    ).status_code in (403, 404)  # an agent does not manage webhooks

    # A rule still sending to it keeps it from being deleted, and says which rule.
    rule(client, world, event="message.received", actions=[{"type": "send_webhook", "value": hook}])
    busy = client.delete(f"/api/v1/webhooks/{hook}", headers=auth(world.alice))
    assert busy.status_code == 409
    assert busy.json()["detail"] == (
        "this webhook is used by rule 'r': change or delete it first, or switch the webhook off"
    )
    for r in client.get("/api/v1/automation-rules", headers=auth(world.alice)).json():
        client.delete(f"/api/v1/automation-rules/{r['id']}", headers=auth(world.alice))
    gone = client.delete(f"/api/v1/webhooks/{hook}", headers=auth(world.alice))
    assert gone.status_code == 204
    assert client.get("/api/v1/webhooks", headers=auth(world.alice)).json() == []
    assert (
        client.get(f"/api/v1/webhooks/{hook}/deliveries", headers=auth(world.alice)).status_code
        == 404
    )
    drain(database, settings)  # deliveries queued before the delete find nothing to send


def test_a_rule_that_cannot_run_is_skipped_and_says_why(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    """A template error is no reason to fail the event's other rules, nor to retry: the rule
    is skipped whole (its label too), the job done, and the admins see why until it runs."""
    broken = rule(
        client,
        world,
        event="conversation.created",
        position=1,
        actions=[
            {"type": "add_label", "value": "first"},
            {"type": "add_note", "value": "{{ 1 / 0 }}"},
        ],
    )
    rule(
        client,
        world,
        event="conversation.created",
        position=2,
        actions=[{"type": "add_label", "value": "second"}],
    )
    conv = inbound(client, world, "t1", "hello", "t1@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["second"]
    with database.session(write=False) as db:
        failed = db.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.name == "automation", Job.state != JobState.done)
        )
    assert failed == 0
    shown = listed_rule(client, world, broken["id"])
    assert shown["last_error"].startswith("template error: ")
    assert shown["last_error_at"] is not None

    fixed = {**broken, "actions": [{"type": "add_note", "value": "seen {{ 1 + 1 }}"}]}
    del fixed["id"], fixed["last_error"], fixed["last_error_at"]
    r = client.put(
        f"/api/v1/automation-rules/{broken['id']}", json=fixed, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    assert r.json()["last_error"] is None
    conv = inbound(client, world, "t2", "hello", "t2@example.com")
    drain(database, settings)
    detail = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()
    assert any(m["text"] == "seen 2" for m in detail["messages"])


def test_what_a_skipped_rule_did_is_never_published(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The rule's label went out as a live event although its savepoint rolled back: an
    # event id never committed, which on SQLite the next real event then took, and every
    # socket dropped that one as already seen (the agent's reply never showed).
    rule(
        client,
        world,
        event="conversation.created",
        actions=[
            {"type": "add_label", "value": "first"},
            {"type": "add_note", "value": "{{ 1 / 0 }}"},
        ],
    )
    with published_events() as published:
        conv = inbound(client, world, "skip1", "hello", "skip1@example.com")
        drain(database, settings)
        r = client.post(
            f"/api/v1/conversations/{conv}/messages", json={"text": "Hi!"}, headers=auth(world.bob)
        )
        assert r.status_code == 201, r.text
    with database.session(write=False) as db:
        stored = {r.id: r.type for r in db.execute(select(StreamEvent.id, StreamEvent.type))}
    durable = [e for e in published if e.get("id") is not None]
    assert durable and all(stored.get(e["id"]) == e["type"] for e in durable), durable
    assert not any(e["payload"].get("labels") == ["first"] for e in published)
    replies = [e for e in durable if e["type"] == "message.created"]
    assert [e["payload"]["text"] for e in replies][-1] == "Hi!"


def test_a_pattern_that_backtracks_without_end_is_stopped_and_the_rule_says_why(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # An admin's pattern runs on what a customer writes, inside the automation job's
    # transaction (SQLite's one writer). This one tries every way of splitting the text
    # before it can fail: its time grows exponentially with the text's length (Python's
    # `re` had no limit). It is stopped, the rule skipped with its reason, and the event's
    # other rules still run.
    slow = rule(
        client,
        world,
        event="message.received",
        position=1,
        conditions=[{"field": "message.text", "op": "regex", "value": r"^(a|aa)+$"}],
        actions=[{"type": "add_label", "value": "words"}],
    )
    rule(
        client,
        world,
        event="message.received",
        position=2,
        actions=[{"type": "add_label", "value": "seen"}],
    )
    conv = inbound(client, world, "bt1", "a" * 60 + "!", "bt1@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["seen"]
    shown = listed_rule(client, world, slow["id"])
    assert "took over" in shown["last_error"]
    # The same pattern on a text it settles quickly still matches.
    conv = inbound(client, world, "bt2", "aaaa", "bt2@example.com")
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == ["seen", "words"]


def test_a_labels_condition_with_in_matches_any_label_named(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # "labels in [vip, gold]" compared the whole list of labels with each name: never true.
    rule(
        client,
        world,
        event="conversation.status_changed",
        conditions=[{"field": "labels", "op": "in", "value": ["VIP", "gold"]}],
        actions=[{"type": "set_priority", "value": "urgent"}],
    )
    vip, plain = (inbound(client, world, x, "hello", f"{x}@example.com") for x in ("v1", "p1"))
    r = client.post(
        f"/api/v1/conversations/{vip}/labels", json={"labels": ["vip"]}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    for conv in (vip, plain):
        r = client.post(
            f"/api/v1/conversations/{conv}/status",
            json={"status": "pending"},
            headers=auth(world.bob),
        )
        assert r.status_code == 200, r.text
    drain(database, settings)
    assert conversation(client, world, vip)["priority"] == "urgent"
    assert conversation(client, world, plain)["priority"] == "none"


def test_rules_leave_a_conversation_merged_into_another_alone(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # Resolved by the merge, the merged conversation ran the workspace's "on status change"
    # rules: a survey on resolution would have reached the customer for a conversation
    # that lives on in its survivor.
    rule(
        client,
        world,
        event="conversation.status_changed",
        actions=[{"type": "add_label", "value": "surveyed"}],
    )
    chat = client.post(
        "/api/v1/inboxes", json={"name": "Second", "channel": "api"}, headers=auth(world.alice)
    ).json()["id"]
    first = inbound(client, world, "m1", "hello", "twice@example.com")
    r = client.post(
        f"/api/v1/inboxes/{chat}/messages",
        json={"external_id": "m2", "text": "again", "from": {"email": "twice@example.com"}},
        headers=auth(world.bob),
    )
    second = r.json()["conversation_id"]
    drain(database, settings)
    r = client.post(
        f"/api/v1/conversations/{first}/merge",
        json={"merged_id": second},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    drain(database, settings)
    assert conversation(client, world, second)["status"] == "resolved"
    assert "surveyed" not in conversation(client, world, second)["labels"]
    assert "surveyed" not in conversation(client, world, first)["labels"]


def test_a_rules_canned_reply_is_not_sent_to_a_customer_who_texted_stop(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
) -> None:
    # The rule queued its canned reply to the opted-out number: Twilio refused it (21610)
    # or, worse, the rule failed as a whole and its other actions were lost with it.
    inbox, path, handler = twilio_inbox(client, world, provider)
    ack = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "ack", "text": "Thanks, we are on it."},
        headers=auth(world.bob),
    ).json()
    made = rule(
        client,
        world,
        name="Acknowledge texts",
        event="message.received",
        actions=[
            {"type": "send_canned", "value": ack["id"]},
            {"type": "add_label", "value": "sms"},
        ],
    )
    text_in(client, settings, path, "SM_HI", "Where is my order?")
    drain(database, settings)
    assert len(handler.calls) == 1  # before the STOP, the reply goes
    text_in(client, settings, path, "SM_STOP", "STOP")
    text_in(client, settings, path, "SM_AGAIN", "Hello?")
    drain(database, settings)
    assert len(handler.calls) == 1
    conv = only_conversation(client, world, inbox)
    assert [m["text"] for m in conv["messages"] if m["kind"] == "message"] == [
        "Where is my order?",
        "Thanks, we are on it.",
        "STOP",
        "Hello?",
    ]
    (said,) = [m for m in conv["messages"] if m["text"].startswith("Rule ")]
    assert said["kind"] == "activity"
    assert said["text"].startswith(
        "Rule “Acknowledge texts”: canned reply /ack was not sent: "
        "the customer opted out of SMS on "
    )
    assert conv["labels"] == ["sms"]  # the rule's other actions ran
    assert listed_rule(client, world, made["id"])["last_error"] is None


def test_a_rules_canned_reply_through_a_page_not_the_customers_is_not_sent_and_says_why(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    provider: tuple[str, type[Provider]],  # noqa: F811
) -> None:
    # Refused as a page the customer never wrote to (their id is another page's now), the
    # canned reply's NotThisPage broke out of the rule: its job failed and was tried again
    # until dead, and the rule's other actions were lost with it, where a customer who
    # opted out gets a line saying why.
    url, handler = provider
    shop = page_inbox(client, world, "messenger", "Shop", "PAGE_A", url)
    desk = page_inbox(client, world, "messenger", "Help desk", "PAGE_B", url)
    ack = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "ack", "text": "Thanks, we are on it."},
        headers=auth(world.bob),
    ).json()
    made = rule(
        client,
        world,
        name="Acknowledge",
        event="message.received",
        actions=[
            {"type": "send_canned", "value": ack["id"]},
            {"type": "add_label", "value": "messenger"},
        ],
    )
    conv = wrote(client, database, "messenger", shop, page="PAGE_A", sender="111", mid="m_A")
    with database.session() as db:
        db.execute(update(Identity).where(Identity.value == "111").values(inbox_id=desk))
    drain(database, settings)
    assert handler.calls == []
    found = conversation(client, world, conv.id)
    (said,) = [m for m in found["messages"] if m["text"].startswith("Rule ")]
    assert (said["kind"], said["text"]) == (
        "activity",
        "Rule “Acknowledge”: canned reply /ack was not sent: "
        "the customer never wrote to the page of “Shop”",
    )
    assert said["meta"]["not_sent"]["type"] == "not-this-page"
    assert found["labels"] == ["messenger"]  # the rule's other actions ran
    assert listed_rule(client, world, made["id"])["last_error"] is None
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).where(Job.state == JobState.dead)) == 0


def test_an_erased_customers_webhook_calls_are_cancelled_and_their_payloads_forgotten(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    receiver: tuple[str, type[_Receiver]],
) -> None:
    # A delivery's payload names the customer, the conversation and the message, out of
    # an erasure's reach: one still queued was sent to the receiver after the erasure,
    # and the log kept every payload naming the erased ids.
    from rapport.automation.models import WebhookDelivery

    url, handler = receiver
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": url, "events": ["conversation.created", "message.received"]},
        headers=auth(world.alice),
    ).json()
    zoe = inbound(client, world, "z-1", "hello", "zoe@example.com")
    drain(database, settings)  # made: the receiver has heard of her
    made = len(handler.seen)
    assert made == 2
    inbound(client, world, "z-2", "one more thing", "zoe@example.com")
    otto = inbound(client, world, "o-1", "hello", "otto@example.com")
    with database.session(write=False) as db:
        zoe_id = db.scalar(select(Conversation.customer_id).where(Conversation.id == zoe))
        waiting = {
            d.id: d.payload for d in db.scalars(select(WebhookDelivery)) if d.status == "pending"
        }
    assert len(waiting) == 3  # her message; Otto's conversation and message

    r = client.delete(f"/api/v1/customers/{zoe_id}", headers=auth(world.alice))
    assert r.status_code == 204, r.text
    drain(database, settings)
    ottos = {i: p for i, p in waiting.items() if p["conversation_id"] == otto}
    assert len(handler.seen) == made + len(ottos) == 4  # hers was never sent
    assert not [b for _, b in handler.seen[made:] if zoe.encode() in b]
    log = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=auth(world.alice))
    statuses = sorted(d["status"] for d in log.json())
    assert statuses == ["cancelled", "delivered", "delivered", "delivered", "delivered"]
    with database.session(write=False) as db:
        payloads = {d.id: d.payload for d in db.scalars(select(WebhookDelivery))}
        jobs = list(db.scalars(select(Job.state).where(Job.name == "webhook_deliver")))
    assert jobs == [JobState.done] * 4  # hers went with the erasure
    erased = {zoe, zoe_id}
    assert not [p for p in payloads.values() if erased & set(p.values())]
    assert sum(p == {} for p in payloads.values()) == 3  # the two made, the one cancelled
    assert {i: payloads[i] for i in ottos} == ottos


def test_the_delivery_log_keeps_thirty_days_and_every_call_a_job_still_holds(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The log of outgoing webhook calls was never pruned: it grew without end, each
    # payload naming customers and conversations.
    from datetime import timedelta

    from rapport.automation.models import Webhook, WebhookDelivery
    from rapport.db import utcnow
    from rapport.jobs.service import enqueue

    for token in (world.alice, world.mallory):
        r = client.post(
            "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=auth(token)
        )
        assert r.status_code == 201, r.text

    def delivery(db: Session, hook: Webhook, *, days_ago: int, job: JobState | None) -> str:
        """A call made ``days_ago``, its job left in state ``job`` (None: pruned)."""
        row = service.queue_delivery(db, webhook=hook, event="conversation.created", payload={})
        row.created_at = utcnow() - timedelta(days=days_ago)
        held = db.scalars(select(Job).where(Job.args["delivery_id"].as_string() == row.id)).one()
        if job is None:
            db.delete(held)
        else:  # a queued call waits for its backoff; this run of the worker leaves it
            held.state, held.run_at = job, utcnow() + timedelta(days=1)
        return row.id

    with database.session() as db:
        acme, globex = (
            db.scalars(select(Webhook).where(Webhook.workspace_id == t.workspace.id)).one()
            for t in (world.acme, world.globex)
        )
        kept = {
            delivery(db, acme, days_ago=29, job=JobState.done),
            delivery(db, acme, days_ago=40, job=JobState.queued),  # retried after a backoff
            delivery(db, acme, days_ago=40, job=JobState.dead),  # an admin may retry it
            delivery(db, globex, days_ago=29, job=None),
        }
        gone = {
            delivery(db, acme, days_ago=31, job=JobState.done),
            delivery(db, acme, days_ago=31, job=None),  # its done job pruned after a week
            delivery(db, globex, days_ago=60, job=JobState.done),
        }
        enqueue(db, name="prune_webhook_deliveries")
    Worker(database, settings).run_until_idle(max_jobs=10)
    with database.session(write=False) as db:
        left = set(db.scalars(select(WebhookDelivery.id)))
    assert left == kept and not gone & left


def test_a_team_or_canned_response_a_rule_names_is_not_deleted_until_the_rule_lets_go(
    client: TestClient, world: World
) -> None:
    # Deleted from under a rule, they left it assigning to nobody and sending nothing, told
    # only in the rule's last error once conversations had gone past it.
    admin = auth(world.alice)
    team = client.post("/api/v1/teams", json={"name": "Escalations"}, headers=admin).json()
    other = client.post("/api/v1/teams", json={"name": "Billing"}, headers=admin).json()
    ack = client.post(
        "/api/v1/canned-responses", json={"shortcut": "ack", "text": "On it."}, headers=admin
    ).json()
    sends = rule(
        client,
        world,
        name="Acknowledge",
        event="message.received",
        actions=[{"type": "send_canned", "value": ack["id"]}],
    )
    tests = rule(
        client,
        world,
        name="Billing first",
        event="conversation.assigned",
        conditions=[{"field": "team_id", "op": "in", "value": [other["id"], team["id"]]}],
        actions=[{"type": "add_label", "value": "escalated"}],
    )
    assigns = rule(
        client,
        world,
        name="Escalate",
        event="message.received",
        actions=[{"type": "assign_round_robin", "value": team["id"]}],
    )

    busy = client.delete(f"/api/v1/teams/{team['id']}", headers=admin)
    assert busy.status_code == 409, busy.text
    assert busy.json()["detail"] == (
        "this team is used by rules 'Billing first', 'Escalate': change or delete them first"
    )
    # An agent may not read or change rules: told to ask an admin, not the rules' names.
    busy = client.delete(f"/api/v1/canned-responses/{ack['id']}", headers=auth(world.bob))
    assert busy.status_code == 409, busy.text
    assert busy.json()["detail"] == (
        "an automation rule uses this canned response: ask an admin to change it first"
    )
    busy = client.delete(f"/api/v1/canned-responses/{ack['id']}", headers=admin)
    assert busy.status_code == 409, busy.text
    assert busy.json()["detail"] == (
        "this canned response is used by rule 'Acknowledge': change or delete it first"
    )
    # Nothing was removed: the team and the response are listed as before.
    teams = client.get("/api/v1/teams", headers=admin).json()
    assert {t["id"] for t in teams} >= {team["id"], other["id"]}
    listed = client.get("/api/v1/canned-responses", headers=admin).json()
    assert [c["id"] for c in listed] == [ack["id"]]

    for made in (sends, tests, assigns):
        client.delete(f"/api/v1/automation-rules/{made['id']}", headers=admin)
    assert client.delete(f"/api/v1/teams/{team['id']}", headers=admin).status_code == 204
    ok = client.delete(f"/api/v1/canned-responses/{ack['id']}", headers=auth(world.bob))
    assert ok.status_code == 204


@postgresql_only
def test_a_rule_saved_while_its_team_is_deleted_waits_and_is_refused(
    client: TestClient, world: World, database: Database
) -> None:
    # Each transaction read the other's before (read committed): both committed, and the
    # rule named a team that was gone.
    team = client.post(
        "/api/v1/teams", json={"name": "Escalations"}, headers=auth(world.alice)
    ).json()
    ws = world.acme.workspace.id
    outcome: list[object] = []

    def save_rule() -> None:
        try:
            with database.session() as db:
                service.create_rule(
                    db,
                    workspace_id=ws,
                    data={
                        "name": "Escalate",
                        "event": "conversation.created",
                        "actions": [{"type": "assign_team", "value": team["id"]}],
                    },
                )
                db.commit()
            outcome.append("saved")
        except Exception as exc:
            outcome.append(exc)

    from rapport.auth.models import Team
    from rapport.workspaces import service as workspaces

    with database.session() as db:
        workspaces.delete_team(db, team=db.get(Team, team["id"]))  # holds the workspace
        saver = threading.Thread(target=save_rule)
        saver.start()
        saver.join(0.5)
        assert saver.is_alive()  # waiting for the deletion to end
        db.commit()
    saver.join(10)
    (result,) = outcome
    assert isinstance(result, Exception) and "no team of this workspace" in str(result)
    with database.session() as db:
        assert db.scalar(select(func.count()).select_from(Rule)) == 0


def test_a_rule_sends_a_message_written_in_it_with_the_customers_name(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A rule could answer only with a canned response: a message of its own needed one made
    # for it, kept among the agents' canned responses.
    rule(
        client,
        world,
        name="Greet",
        event="conversation.created",
        actions=[{"type": "send_message", "value": "Hi {{ customer.first_name }}, thanks!"}],
    )
    bad = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "Broken",
            "event": "conversation.created",
            "actions": [{"type": "send_message", "value": "Hi {{ customer.name "}],
        },
        headers=auth(world.alice),
    )
    assert bad.status_code == 422 and "actions[0].value" in bad.json()["detail"]
    r = client.post(
        f"/api/v1/inboxes/{world.acme.opened.conversation.inbox_id}/messages",
        json={
            "external_id": "greet-1",
            "text": "Hello",
            "from": {"name": "Ann Lee", "email": "ann@example.com"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    drain(database, settings)
    conv = client.get(
        f"/api/v1/conversations/{r.json()['conversation_id']}", headers=auth(world.bob)
    ).json()
    sent = [m for m in conv["messages"] if m["direction"] == "out" and m["kind"] == "message"]
    assert [m["text"] for m in sent] == ["Hi Ann, thanks!"]
    assert sent[0]["sender_id"] is None  # the rule's, no agent's


def test_an_action_type_that_is_not_a_string_is_refused_not_a_500(
    client: TestClient, world: World
) -> None:
    for kind in (["add_label"], {"a": 1}, 7, None):
        r = client.post(
            "/api/v1/automation-rules",
            json={
                "name": "odd",
                "event": "message.received",
                "actions": [{"type": kind, "value": "x"}],
            },
            headers=auth(world.alice),
        )
        assert r.status_code == 422, (kind, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/automation-rules", headers=auth(world.alice)).json() == []


def test_a_condition_typed_in_the_form_matches_a_number_or_yes_no_attribute(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The rule form sends what was typed, a text: "seats equals 5" compared "5" with the
    # number 5 a number attribute holds (and "vip equals true" with true), never equal.
    for key, kind in (("seats", "number"), ("vip", "boolean")):
        client.post(
            "/api/v1/attribute-definitions",
            json={"key": key, "type": kind},
            headers=auth(world.alice),
        ).raise_for_status()
    for label, condition in (
        ("five", {"field": "customer.attributes.seats", "op": "equals", "value": "5"}),
        ("few", {"field": "customer.attributes.seats", "op": "in", "value": ["2", "5.0"]}),
        ("vip", {"field": "customer.attributes.vip", "op": "equals", "value": "True"}),
        ("many", {"field": "customer.attributes.seats", "op": "not_equals", "value": " 5 "}),
    ):
        rule(
            client,
            world,
            event="message.received",
            conditions=[condition],
            actions=[{"type": "add_label", "value": label}],
        )
    conv = inbound(client, world, "typed-1", "hello", "typed@example.com")
    customer = conversation(client, world, conv)["customer_id"]
    r = client.patch(
        f"/api/v1/customers/{customer}",
        json={"attributes": {"seats": "5", "vip": "yes"}},  # kept as 5 and true
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    assert r.json()["attributes"] == {"seats": 5, "vip": True}
    inbound(client, world, "typed-2", "again", "typed@example.com")
    drain(database, settings)  # both messages' rules run now, on the attributes as set
    assert sorted(conversation(client, world, conv)["labels"]) == ["few", "five", "vip"]


def test_a_customer_writing_again_opens_the_conversation_and_its_status_rules_run(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A customer's message that opened a resolved (or pending, or snoozed) conversation
    # again changed its status without a word to the rules and webhooks: "when a
    # conversation is opened again, give it to the escalations team" never ran for the
    # commonest reopening there is.
    rule(
        client,
        world,
        event="conversation.status_changed",
        conditions=[{"field": "status", "op": "equals", "value": "open"}],
        actions=[{"type": "add_label", "value": "back"}],
    )
    resolved, pending, kept = (
        inbound(client, world, f"{x}-1", "hello", f"{x}@example.com")
        for x in ("resolved", "pending", "kept")
    )
    for conv, status in ((resolved, "resolved"), (pending, "pending")):
        r = client.post(
            f"/api/v1/conversations/{conv}/status", json={"status": status}, headers=auth(world.bob)
        )
        assert r.status_code == 200, r.text
    drain(database, settings)
    for x in ("resolved", "pending", "kept"):
        inbound(client, world, f"{x}-2", "me again", f"{x}@example.com")
    with database.session(write=False) as db:
        told = [
            job.args["conversation_id"]
            for job in db.scalars(select(Job).where(Job.name == "automation"))
            if job.state == JobState.queued and job.args["event"] == "conversation.status_changed"
        ]
    assert sorted(told) == sorted([resolved, pending])  # once each; none for the open one
    drain(database, settings)
    for conv in (resolved, pending):
        assert conversation(client, world, conv)["status"] == "open"
        assert conversation(client, world, conv)["labels"] == ["back"]
    assert conversation(client, world, kept)["labels"] == []


def test_exists_asks_whether_a_conversation_has_any_label_or_the_customer_a_name(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A conversation's labels are a list, empty when it has none, and an empty list is
    # not None: "labels exist" held for every conversation and "no labels" for none. A
    # blank name was a name, too.
    rule(
        client,
        world,
        event="message.received",
        position=1,
        conditions=[{"field": "labels", "op": "exists", "value": True}],
        actions=[{"type": "set_priority", "value": "high"}],
    )
    rule(
        client,
        world,
        event="message.received",
        position=2,
        conditions=[
            {"field": "labels", "op": "exists", "value": False},
            {"field": "customer.name", "op": "exists", "value": False},
        ],
        actions=[{"type": "add_label", "value": "untriaged"}],
    )
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "bare-1",
            "text": "hi",
            "from": {"email": "x@example.com", "name": " "},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    conv = r.json()["conversation_id"]
    drain(database, settings)
    after = conversation(client, world, conv)
    assert (after["priority"], after["labels"]) == ("none", ["untriaged"])
    inbound(client, world, "bare-2", "again", "x@example.com")  # labelled now
    drain(database, settings)
    assert conversation(client, world, conv)["priority"] == "high"


def test_business_hours_are_asked_of_when_the_message_came_not_of_when_the_job_ran(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The rules asked "in business hours?" of the moment their job ran: a message that
    # came at 16:59 and waited out a backlog (or a retry's backoff, up to an hour) got the
    # out-of-hours reply.
    from datetime import timedelta

    from rapport.db import utcnow

    closed = (utcnow() + timedelta(days=3)).strftime("%a").lower()
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    r = client.put(
        "/api/v1/business-hours",
        json={"timezone": "UTC", "hours": {d: [["00:00", "24:00"]] for d in days if d != closed}},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    rule(
        client,
        world,
        event="message.received",
        conditions=[{"field": "business_hours", "op": "is", "value": False}],
        actions=[{"type": "add_label", "value": "after-hours"}],
    )
    conv = inbound(client, world, "late-job", "hello", "late-job@example.com")
    later = utcnow() + timedelta(days=3)  # its job runs on a day the business is closed
    monkeypatch.setattr(service, "utcnow", lambda: later)
    drain(database, settings)
    assert conversation(client, world, conv)["labels"] == []


def test_a_rules_note_notifies_whom_the_rule_names_not_whom_the_customer_does(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The note's template, filled in with a customer who calls themselves "@bob", pinged
    # Bob with every message they sent; the rule's own "@alice" still notifies Alice.
    rule(
        client,
        world,
        event="message.received",
        actions=[{"type": "add_note", "value": "@alice: {{ customer.name }} wrote again"}],
    )
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": "at-1",
            "text": "hi",
            "from": {"email": "at@example.com", "name": "@bob"},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    drain(database, settings)

    def mentions(member: str) -> list[str]:
        listed = client.get("/api/v1/notifications", headers=auth(member)).json()["items"]
        return [n["text"] for n in listed if n["kind"] == "mention"]

    assert mentions(world.alice) == ["@alice: @bob wrote again"]
    assert mentions(world.bob) == []


def test_moving_a_snooze_to_another_time_is_no_change_of_status_for_the_rules(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A snoozed conversation snoozed again until another time ran the status rules (and
    # told the webhooks) each time, as if it had changed status: "when snoozed, tell the
    # customer we will be back" wrote to them again for every change of its time.
    from datetime import timedelta

    from rapport.db import utcnow

    rule(
        client,
        world,
        event="conversation.status_changed",
        conditions=[{"field": "status", "op": "equals", "value": "snoozed"}],
        actions=[{"type": "add_note", "value": "snoozed"}],
    )
    conv = inbound(client, world, "snooze-twice", "hello", "snooze-twice@example.com")
    for hours in (1, 2, 3):
        r = client.post(
            f"/api/v1/conversations/{conv}/status",
            json={
                "status": "snoozed",
                "snoozed_until": (utcnow() + timedelta(hours=hours)).isoformat(),
            },
            headers=auth(world.bob),
        )
        assert r.status_code == 200, r.text
    drain(database, settings)
    with database.session(write=False) as db:
        notes = db.query(Message).filter(Message.conversation_id == conv, Message.text == "snoozed")
        assert notes.count() == 1
        said = [m.text for m in db.query(Message).filter(Message.conversation_id == conv)]
    assert len([line for line in said if line.startswith("Snoozed until")]) == 3  # each said


def test_a_team_member_the_relay_refuses_for_now_is_tried_again_alone(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    relay,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    # The team's email went to each member in turn in one job: the relay refusing one for
    # now (451) failed the job, and its retry mailed again those who already had it.
    team = client.post(
        "/api/v1/teams",
        json={"name": "Legal", "member_ids": [u.id for u in world.acme.users.values()]},
        headers=auth(world.alice),
    ).json()
    rule(
        client,
        world,
        event="message.received",
        actions=[{"type": "email_team", "value": team["id"]}],
    )
    relay.refused, relay.refused_with = {"victor@acme.test"}, "451 4.3.0 try again later"
    inbound(client, world, "law-2", "My lawyer will call.")
    drain(database, settings)
    relay.refused = set()
    with database.session() as db:  # the retry's backoff is over
        db.execute(update(Job).where(Job.state == JobState.queued).values(run_at=utcnow()))
    drain(database, settings)
    sent = sorted(to for envelope in relay.recipients for to in envelope)
    assert sent == sorted(u.email for u in world.acme.users.values())
