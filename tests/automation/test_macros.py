"""Macros: named lists of automation's actions that an agent runs by hand, on one
conversation or many, each change theirs "through the macro"."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from rapport.auth.models import Team
from rapport.automation.models import Macro
from rapport.db import Database
from rapport.jobs.models import Job
from rapport.notifications.models import Notification
from rapport.privacy.models import AuditLog
from tests.channels.test_providers import make_inbox
from tests.conftest import auth, published_events
from tests.factories import World, ada_the_admin

MACROS = "/api/v1/macros"


def make(client: TestClient, token: str, **body: Any) -> Any:
    return client.post(MACROS, json={"name": "m", **body}, headers=auth(token))


def made(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    r = make(client, token, **body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def team_gone(database: Database, team_id: str) -> None:
    """A team a macro names, gone as before its deletion was refused for that (a macro
    saved then names it still): removed from the database, not through the API."""
    with database.session() as db:
        db.execute(delete(Team).where(Team.id == team_id))


def run(client: TestClient, token: str, conv: str, macro: str) -> Any:
    return client.post(f"/api/v1/conversations/{conv}/macros/{macro}", headers=auth(token))


def inbound(client: TestClient, world: World, ext: str, name: str = "Dana Scully") -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={
            "external_id": ext,
            "text": "My order",
            "from": {"email": f"{ext}@x.test", "name": name},
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def thread(client: TestClient, world: World, conv: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def team(client: TestClient, world: World, name: str) -> str:
    r = client.post("/api/v1/teams", json={"name": name}, headers=auth(world.alice))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def stored(database: Database) -> list[tuple[str, str, list[dict[str, Any]]]]:
    with database.session(write=False) as db:
        return [
            (m.name, m.visibility, m.actions) for m in db.scalars(select(Macro).order_by(Macro.id))
        ]


def audited(database: Database, action: str) -> list[AuditLog]:
    with database.session(write=False) as db:
        return list(
            db.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id))
        )


def test_agents_make_personal_macros_and_only_admins_and_owners_workspace_ones(
    client: TestClient, world: World, database: Database
) -> None:
    label = [{"type": "add_label", "value": "refund"}]
    r = make(client, world.bob, name="Bob's", actions=label, visibility="personal")
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == world.acme.users["bob"].id
    for token, visibility in ((world.bob, "workspace"), (world.victor, "personal")):
        r = make(client, token, name="Not made", actions=label, visibility=visibility)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
    ada = ada_the_admin(database, world)[1]
    assert make(client, ada, name="Ada's", actions=label).status_code == 201
    assert make(client, world.alice, name="Alice's", actions=label).status_code == 201
    assert sorted(stored(database)) == [
        ("Ada's", "workspace", label),
        ("Alice's", "workspace", label),
        ("Bob's", "personal", label),
    ]
    assert [a.data["name"] for a in audited(database, "macro.create")] == [
        "Bob's",
        "Ada's",
        "Alice's",
    ]


def test_each_member_lists_the_workspaces_macros_and_their_own_by_name(
    client: TestClient, world: World
) -> None:
    label = [{"type": "add_label", "value": "x"}]
    made(client, world.alice, name="zebra", actions=label)
    made(client, world.alice, name="Alpha", actions=label)
    made(client, world.bob, name="mine", actions=label, visibility="personal")
    made(client, world.alice, name="Alice only", actions=label, visibility="personal")
    made(client, world.mallory, name="Globex's", actions=label)

    def names(token: str) -> list[str]:
        r = client.get(MACROS, headers=auth(token))
        assert r.status_code == 200, r.text
        return [m["name"] for m in r.json()]

    assert names(world.bob) == ["Alpha", "mine", "zebra"]
    assert names(world.alice) == ["Alice only", "Alpha", "zebra"]
    assert names(world.victor) == ["Alpha", "zebra"]  # a viewer lists them, runs none
    assert names(world.mallory) == ["Globex's"]


def test_another_members_personal_macro_is_not_found_anywhere(
    client: TestClient, world: World, database: Database
) -> None:
    mine = made(
        client,
        world.bob,
        name="Bob's",
        actions=[{"type": "set_priority", "value": "urgent"}],
        visibility="personal",
    )
    conv = world.acme.opened.conversation.id
    url = f"{MACROS}/{mine['id']}"
    for r in (
        client.get(url, headers=auth(world.alice)),
        client.patch(url, json={"name": "taken"}, headers=auth(world.alice)),
        client.delete(url, headers=auth(world.alice)),
        run(client, world.alice, conv, mine["id"]),
        client.post(
            "/api/v1/conversations/bulk",
            json={"ids": [conv], "action": "macro", "macro_id": mine["id"]},
            headers=auth(world.alice),
        ),
    ):
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert stored(database) == [("Bob's", "personal", mine["actions"])]
    assert thread(client, world, conv)["priority"] == "none"
    assert client.get(url, headers=auth(world.bob)).status_code == 200


def test_who_may_change_and_delete_a_macro(
    client: TestClient, world: World, database: Database
) -> None:
    label = [{"type": "add_label", "value": "x"}]
    shared = made(client, world.alice, name="Shared", actions=label)
    own = made(client, world.bob, name="Own", actions=label, visibility="personal")
    # An agent changes their own personal macro, not the workspace's, nor makes theirs one.
    r = client.patch(f"{MACROS}/{own['id']}", json={"name": " Renamed "}, headers=auth(world.bob))
    assert r.status_code == 200 and r.json()["name"] == "Renamed"
    assert r.json()["actions"] == label  # left out: kept
    for body in ({"name": "x"}, {"visibility": "personal"}):
        r = client.patch(f"{MACROS}/{shared['id']}", json=body, headers=auth(world.bob))
        assert r.status_code == 403, r.text
    r = client.patch(
        f"{MACROS}/{own['id']}", json={"visibility": "workspace"}, headers=auth(world.bob)
    )
    assert r.status_code == 403, r.text
    assert client.delete(f"{MACROS}/{shared['id']}", headers=auth(world.bob)).status_code == 403
    assert (
        client.patch(
            f"{MACROS}/{own['id']}", json={"name": "v"}, headers=auth(world.victor)
        ).status_code
        == 403
    )
    assert sorted(stored(database)) == [
        ("Renamed", "personal", label),
        ("Shared", "workspace", label),
    ]
    # An owner changes the workspace's; made personal, it is hers.
    new_actions = [{"type": "set_priority", "value": "high"}]
    r = client.patch(
        f"{MACROS}/{shared['id']}",
        json={"actions": new_actions, "visibility": "personal"},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["visibility"], r.json()["created_by"]) == (
        "personal",
        world.acme.users["alice"].id,
    )
    assert [m["name"] for m in client.get(MACROS, headers=auth(world.bob)).json()] == ["Renamed"]
    assert client.delete(f"{MACROS}/{own['id']}", headers=auth(world.bob)).status_code == 204
    assert client.delete(f"{MACROS}/{shared['id']}", headers=auth(world.alice)).status_code == 204
    assert stored(database) == []
    changes = [a.data for a in audited(database, "macro.change")]
    assert changes == [
        {"name": "Renamed"},
        {
            "visibility": "personal",
            "created_by": world.acme.users["alice"].id,
            "actions": new_actions,
        },
    ]
    assert [a.data["name"] for a in audited(database, "macro.delete")] == ["Renamed", "Shared"]


def test_a_name_is_unique_among_the_workspaces_macros_and_among_each_members_own(
    client: TestClient, world: World, database: Database
) -> None:
    label = [{"type": "add_label", "value": "x"}]
    made(client, world.alice, name="Refund", actions=label)
    r = make(client, world.alice, name=" REFUND ", actions=label)
    assert r.status_code == 409 and "“REFUND”" in r.json()["detail"]
    made(client, world.bob, name="Refund", actions=label, visibility="personal")
    r = make(client, world.bob, name="refund", actions=label, visibility="personal")
    assert r.status_code == 409, r.text
    made(client, world.alice, name="refund", actions=label, visibility="personal")
    made(client, world.mallory, name="Refund", actions=label)  # another workspace's
    # Case folded beyond ASCII too (SQLite's lower() folds ASCII letters only).
    made(client, world.alice, name="Ärger", actions=label)
    r = make(client, world.alice, name="ÄRGER", actions=label)
    assert r.status_code == 409, r.text
    other = made(client, world.alice, name="Other", actions=label)
    r = client.patch(f"{MACROS}/{other['id']}", json={"name": "refund"}, headers=auth(world.alice))
    assert r.status_code == 409, r.text
    assert len(stored(database)) == 6


def test_invalid_macros_are_refused_naming_the_field(client: TestClient, world: World) -> None:
    gone = "0" * 32
    victor = world.acme.users["victor"].id
    for actions, where, why in (
        ([{"type": "send_webhook", "value": gone}], "actions[0].type", "unknown action"),
        ([{"type": "assign_round_robin"}], "actions[0].type", "unknown action"),
        (
            [{"type": "add_label", "value": "x"}, {"type": "assign_team", "value": gone}],
            "actions[1].value",
            "no team of this workspace",
        ),
        ([{"type": "assign_agent", "value": gone}], "actions[0].value", "no member"),
        ([{"type": "assign_agent", "value": victor}], "actions[0].value", "a viewer"),
        ([{"type": "send_canned", "value": gone}], "actions[0].value", "no canned response"),
        ([{"type": "set_priority", "value": "asap"}], "actions[0].value", "a priority is one of"),
        ([{"type": "set_status", "value": "snoozed"}], "actions[0].value", "a status is one of"),
        ([{"type": "send_message", "value": "  "}], "actions[0].value", "the message's text"),
        ([{"type": "add_note"}], "actions[0].value", "the note's text"),
        ([{"type": "send_message", "value": "Hi {{ customer.name"}], "actions[0].value", ""),
        ([{"type": "add_note", "value": "{% if %}x"}], "actions[0].value", ""),
        ([{"type": "add_label", "value": "x", "colour": "red"}], "actions[0]", "'colour'"),
        ([{"type": ["add_label"], "value": "x"}], "actions[0].type", "unknown action"),
        ([{"type": {"a": 1}, "value": "x"}], "actions[0].type", "unknown action"),
        ([{"type": 7, "value": "x"}], "actions[0].type", "unknown action"),
    ):
        r = make(client, world.alice, name="bad", actions=actions)
        assert r.status_code == 422, (actions, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"].startswith(f"{where}: "), r.json()["detail"]
        assert why in r.json()["detail"]
    one = [{"type": "add_label", "value": "x"}]
    for body, field in (
        ({"name": "  ", "actions": one}, "name"),
        ({"name": "x" * 121, "actions": one}, "name"),
        ({"name": "x", "actions": []}, "actions"),
        ({"name": "x", "actions": one * 21}, "actions"),
        ({"name": "x", "actions": one, "visibility": "team"}, "visibility"),
        ({"name": "x", "actions": one, "shared": True}, "shared"),
    ):
        r = client.post(MACROS, json=body, headers=auth(world.alice))
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert [e["loc"][:2] for e in r.json()["errors"]] == [["body", field]], r.json()
    assert client.get(MACROS, headers=auth(world.alice)).json() == []


def test_a_macro_applies_every_action_in_order_as_the_agent_who_runs_it(
    client: TestClient, world: World, database: Database
) -> None:
    billing = team(client, world, "Billing")
    alice, bob = world.acme.users["alice"].id, world.acme.users["bob"].id
    conv = inbound(client, world, "order-1")
    r = client.post(
        f"/api/v1/conversations/{conv}/labels", json={"labels": ["new"]}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    macro = made(
        client,
        world.alice,
        name="Refund",
        actions=[
            {"type": "assign_agent", "value": alice},
            {"type": "assign_team", "value": billing},
            {"type": "add_label", "value": "Refund"},
            {"type": "remove_label", "value": "new"},
            {"type": "set_priority", "value": "high"},
            {
                "type": "send_message",
                "value": "Hi {{ customer.first_name }}, your refund is on its way.",
            },
            {"type": "add_note", "value": "Refunded {{ customer.name }} ({{ agent.name }})"},
            {"type": "set_status", "value": "pending"},
        ],
    )
    before = len(thread(client, world, conv)["messages"])
    with published_events() as published:
        r = run(client, world.bob, conv, macro["id"])
    assert r.status_code == 200, r.text
    assert r.json()["skipped"] == []
    answered = r.json()["conversation"]
    assert answered == thread(client, world, conv)  # the shape GET answers, as stored
    assert (answered["assignee_id"], answered["team_id"]) == (alice, billing)
    assert answered["labels"] == ["refund"]
    assert (answered["priority"], answered["status"]) == ("high", "pending")
    said = [(m["kind"], m["sender_id"], m["text"]) for m in answered["messages"][before:]]
    through = "by Bob through the macro “Refund”"
    assert said == [
        ("activity", None, f"Assigned to Alice {through}"),
        ("activity", None, f"Moved to team Billing {through}"),
        ("activity", None, f"Priority set to high {through}"),
        ("message", bob, "Hi Dana, your refund is on its way."),
        ("note", bob, "Refunded Dana Scully (Bob)"),
        ("activity", None, f"Marked pending {through}"),
    ]
    reply = answered["messages"][before + 3]
    assert (reply["direction"], reply["sender_type"], reply["status"]) == (
        "out",
        "user",
        "queued",
    )
    assert answered["first_response_at"] is not None  # a person answered
    with database.session(write=False) as db:
        deliver = db.scalars(select(Job).where(Job.name == "deliver")).all()
        assert [j.args["message_id"] for j in deliver] == [reply["id"]]
        # Alice was assigned by Bob: she is told, as when he assigns her by hand.
        told = db.scalar(
            select(func.count()).select_from(Notification).where(Notification.user_id == alice)
        )
        assert told == 1
    (entry,) = audited(database, "macro.run")
    assert (entry.actor_user_id, entry.target_id) == (bob, conv)
    assert entry.data == {"macro_id": macro["id"], "name": "Refund", "skipped": []}
    # Live: each change went out once committed, as its endpoint's would.
    kinds = [e["type"] for e in published]
    assert kinds.count("conversation.updated") >= 6
    created = [e["payload"]["text"] for e in published if e["type"] == "message.created"]
    assert created == [text for _, _, text in said]


def test_a_macros_changes_trigger_the_rules_for_them(
    client: TestClient, world: World, database: Database
) -> None:
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "on status",
            "event": "conversation.status_changed",
            "actions": [{"type": "add_label", "value": "closed"}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    conv = inbound(client, world, "trig-1")
    macro = made(
        client, world.alice, name="Close", actions=[{"type": "set_status", "value": "resolved"}]
    )
    assert run(client, world.bob, conv, macro["id"]).status_code == 200
    with database.session(write=False) as db:
        jobs = db.scalars(select(Job).where(Job.name == "automation")).all()
    assert [(j.args["event"], j.args["conversation_id"]) for j in jobs] == [
        ("conversation.status_changed", conv)
    ]


def test_me_assigns_whoever_runs_the_macro(
    client: TestClient, world: World, database: Database
) -> None:
    macro = made(
        client, world.alice, name="Take", actions=[{"type": "assign_agent", "value": "me"}]
    )
    assert macro["actions"] == [{"type": "assign_agent", "value": "me"}]  # kept as written
    conv = inbound(client, world, "take-1")
    r = run(client, world.bob, conv, macro["id"])
    assert r.status_code == 200, r.text
    bob = world.acme.users["bob"].id
    assert r.json()["conversation"]["assignee_id"] == bob
    assert r.json()["conversation"]["messages"][-1]["text"] == (
        "Bob took the conversation through the macro “Take”"
    )
    with database.session(write=False) as db:  # nobody is told of their own doing
        assert (
            db.scalar(
                select(func.count()).select_from(Notification).where(Notification.user_id == bob)
            )
            == 0
        )
    # "me" is a macro's word: a rule has no one who runs it.
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "r",
            "event": "message.received",
            "actions": [{"type": "assign_agent", "value": "me"}],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("actions[0].value: no member")


def test_an_action_whose_team_was_deleted_is_skipped_and_the_others_apply(
    client: TestClient, world: World, database: Database
) -> None:
    gone = team(client, world, "Escalations")
    macro = made(
        client,
        world.alice,
        name="Escalate",
        actions=[
            {"type": "assign_team", "value": gone},
            {"type": "add_label", "value": "escalated"},
            {"type": "set_priority", "value": "urgent"},
        ],
    )
    team_gone(database, gone)
    conv = inbound(client, world, "esc-1")
    r = run(client, world.bob, conv, macro["id"])
    assert r.status_code == 200, r.text
    skipped = [
        {
            "index": 0,
            "type": "assign_team",
            "reason": f'no team of this workspace has the id "{gone}"',
        }
    ]
    assert r.json()["skipped"] == skipped
    now = thread(client, world, conv)
    assert (now["team_id"], now["labels"], now["priority"]) == (None, ["escalated"], "urgent")
    (entry,) = audited(database, "macro.run")
    assert entry.data["skipped"] == skipped


def test_a_canned_reply_is_rendered_for_the_customer_and_the_agent(
    client: TestClient, world: World, database: Database
) -> None:
    ack = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "ack", "text": "Hello {{ customer.first_name }}, {{ agent.name }} here."},
        headers=auth(world.alice),
    ).json()
    macro = made(
        client,
        world.bob,
        name="Ack",
        actions=[{"type": "send_canned", "value": ack["id"]}],
        visibility="personal",
    )
    conv = inbound(client, world, "ack-1", name="Kim Lee")
    r = run(client, world.bob, conv, macro["id"])
    assert r.status_code == 200, r.text
    last = r.json()["conversation"]["messages"][-1]
    assert (last["kind"], last["sender_id"], last["text"]) == (
        "message",
        world.acme.users["bob"].id,
        "Hello Kim, Bob here.",
    )


def test_a_template_that_fails_when_run_changes_nothing(
    client: TestClient, world: World, database: Database
) -> None:
    macro = made(
        client,
        world.alice,
        name="Broken",
        actions=[
            {"type": "add_label", "value": "first"},
            {"type": "add_note", "value": "{{ 1 / 0 }}"},
        ],
    )
    conv = inbound(client, world, "broken-1")
    before = thread(client, world, conv)
    r = run(client, world.bob, conv, macro["id"])
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith("actions[1] (add_note) could not run")
    assert thread(client, world, conv) == before
    assert audited(database, "macro.run") == []


def test_a_customer_who_opted_out_is_not_sent_the_reply_and_the_rest_applies(
    client: TestClient, world: World, database: Database
) -> None:
    mail = make_inbox(client, world, "email", {"address": "support@acme.test"})
    kim = client.post(
        "/api/v1/customers",
        json={"name": "Kim", "email": "kim@example.com"},
        headers=auth(world.bob),
    ).json()["id"]
    r = client.post(
        "/api/v1/conversations",
        json={"customer_id": kim, "inbox_id": mail, "subject": "Your order", "text": "Shipped."},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    conv = r.json()["id"]
    r = client.post(
        f"/api/v1/customers/{kim}/consents",
        json={"channel": "email", "purpose": "all", "granted": False, "source": "phone call"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    macro = made(
        client,
        world.alice,
        name="Follow up",
        actions=[
            {"type": "send_message", "value": "Any news, {{ customer.name }}?"},
            {"type": "add_label", "value": "followed-up"},
        ],
    )
    with database.session(write=False) as db:
        jobs = db.scalar(select(func.count()).select_from(Job).where(Job.name == "deliver"))
    r = run(client, world.bob, conv, macro["id"])
    assert r.status_code == 200, r.text
    assert r.json()["skipped"] == []
    now = r.json()["conversation"]
    assert now["labels"] == ["followed-up"]
    assert [m["text"] for m in now["messages"] if m["kind"] == "message"] == ["Shipped."]
    said = now["messages"][-1]
    assert said["kind"] == "activity"
    assert said["text"].startswith(
        "Macro “Follow up” run by Bob: its reply was not sent: the customer opted out of email"
    )
    assert said["meta"]["not_sent"]["type"] == "no-consent"
    with database.session(write=False) as db:
        assert db.scalar(select(func.count()).select_from(Job).where(Job.name == "deliver")) == jobs


def test_a_viewer_cannot_run_a_macro(client: TestClient, world: World) -> None:
    macro = made(
        client, world.alice, name="Close", actions=[{"type": "set_status", "value": "resolved"}]
    )
    conv = inbound(client, world, "view-1")
    r = run(client, world.victor, conv, macro["id"])
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    r = client.post(
        "/api/v1/conversations/bulk",
        json={"ids": [conv], "action": "macro", "macro_id": macro["id"]},
        headers=auth(world.victor),
    )
    assert r.status_code == 403
    assert thread(client, world, conv)["status"] == "open"


def test_another_workspaces_macro_and_conversation_are_not_found(
    client: TestClient, world: World, database: Database
) -> None:
    acme_macro = made(
        client, world.alice, name="Acme's", actions=[{"type": "add_label", "value": "acme"}]
    )
    globex_macro = made(
        client, world.mallory, name="Globex's", actions=[{"type": "add_label", "value": "globex"}]
    )
    acme_conv = world.acme.opened.conversation.id
    globex_conv = world.globex.opened.conversation.id
    url = f"{MACROS}/{acme_macro['id']}"
    for r in (
        client.get(url, headers=auth(world.mallory)),
        client.patch(url, json={"name": "mine now"}, headers=auth(world.mallory)),
        client.delete(url, headers=auth(world.mallory)),
        run(client, world.mallory, globex_conv, acme_macro["id"]),  # Acme's macro
        run(client, world.mallory, acme_conv, globex_macro["id"]),  # Acme's conversation
        run(client, world.alice, globex_conv, acme_macro["id"]),
        client.post(
            "/api/v1/conversations/bulk",
            json={"ids": [globex_conv], "action": "macro", "macro_id": acme_macro["id"]},
            headers=auth(world.mallory),
        ),
        client.post(
            "/api/v1/conversations/bulk",
            json={"ids": [acme_conv], "action": "macro", "macro_id": acme_macro["id"]},
            headers=auth(world.mallory),
        ),
    ):
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert sorted(n for n, _, _ in stored(database)) == ["Acme's", "Globex's"]
    assert thread(client, world, acme_conv)["labels"] == []
    r = client.get(f"/api/v1/conversations/{globex_conv}", headers=auth(world.mallory))
    assert r.json()["labels"] == []
    assert audited(database, "macro.run") == []


def test_a_macro_runs_on_many_conversations_in_one_request(
    client: TestClient, world: World, database: Database
) -> None:
    gone = team(client, world, "Gone")
    macro = made(
        client,
        world.alice,
        name="Triage",
        actions=[
            {"type": "assign_agent", "value": "me"},
            {"type": "assign_team", "value": gone},
            {"type": "add_label", "value": "triaged"},
            {"type": "add_note", "value": "Triaged for {{ customer.name }}"},
        ],
    )
    team_gone(database, gone)
    ids = [inbound(client, world, f"bulk-{i}", name=f"Customer {i}") for i in range(3)]
    r = client.post(
        "/api/v1/conversations/bulk",
        json={"ids": ids, "action": "macro", "macro_id": macro["id"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    bob = world.acme.users["bob"].id
    assert [(c["id"], c["assignee_id"], c["labels"]) for c in r.json()["items"]] == [
        (i, bob, ["triaged"]) for i in ids
    ]
    reason = f'no team of this workspace has the id "{gone}"'
    assert r.json()["skipped"] == {
        i: [{"index": 1, "type": "assign_team", "reason": reason}] for i in ids
    }
    for n, i in enumerate(ids):
        notes = [m for m in thread(client, world, i)["messages"] if m["kind"] == "note"]
        assert [(m["sender_id"], m["text"]) for m in notes] == [(bob, f"Triaged for Customer {n}")]
    assert sorted(a.target_id for a in audited(database, "macro.run")) == sorted(ids)
    # Other bulk actions answer no skipped actions.
    r = client.post(
        "/api/v1/conversations/bulk",
        json={"ids": ids, "action": "resolve"},
        headers=auth(world.bob),
    )
    assert r.status_code == 200 and r.json()["skipped"] == {}


def test_a_bulk_macro_is_all_or_nothing(
    client: TestClient, world: World, database: Database
) -> None:
    ids = [inbound(client, world, f"all-{i}") for i in range(2)]
    fails = made(
        client,
        world.alice,
        name="Fails",
        actions=[
            {"type": "add_label", "value": "first"},
            {"type": "add_note", "value": "{{ 1 / 0 }}"},
        ],
    )
    r = client.post(
        "/api/v1/conversations/bulk",
        json={"ids": ids, "action": "macro", "macro_id": fails["id"]},
        headers=auth(world.bob),
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"conversation {ids[0]}: actions[1] (add_note)")
    assert [thread(client, world, i)["labels"] for i in ids] == [[], []]
    assert audited(database, "macro.run") == []
    r = client.post(
        "/api/v1/conversations/bulk", json={"ids": ids, "action": "macro"}, headers=auth(world.bob)
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith("macro_id: ")


def test_renaming_a_label_renames_it_in_macros(
    client: TestClient, world: World, database: Database
) -> None:
    label = client.post("/api/v1/labels", json={"name": "refund"}, headers=auth(world.alice)).json()
    made(
        client,
        world.bob,
        name="Mine",
        actions=[
            {"type": "add_label", "value": "refund"},
            {"type": "set_priority", "value": "high"},
        ],
        visibility="personal",
    )
    r = client.patch(
        f"/api/v1/labels/{label['id']}", json={"name": "refunds"}, headers=auth(world.alice)
    )
    assert r.status_code == 200, r.text
    assert stored(database) == [
        (
            "Mine",
            "personal",
            [{"type": "add_label", "value": "refunds"}, {"type": "set_priority", "value": "high"}],
        )
    ]


def test_a_label_a_macro_adds_is_not_deleted_from_under_it(
    client: TestClient, world: World, database: Database
) -> None:
    # Deleted, the label left the list while the macro kept adding it to conversations.
    label = client.post("/api/v1/labels", json={"name": "refund"}, headers=auth(world.alice)).json()
    made(client, world.alice, name="Refund", actions=[{"type": "add_label", "value": "refund"}])
    made(
        client,
        world.bob,
        name="Mine",
        actions=[{"type": "remove_label", "value": "Refund"}],
        visibility="personal",
    )
    r = client.delete(f"/api/v1/labels/{label['id']}", headers=auth(world.alice))
    assert r.status_code == 409, r.text
    assert "macro 'Refund'" in r.json()["detail"]
    assert "Bob's own macro 'Mine'" in r.json()["detail"]  # only Bob can change that one
    listed = client.get("/api/v1/labels", headers=auth(world.alice)).json()
    assert [row["name"] for row in listed] == ["refund"]


def test_a_team_or_canned_response_a_macro_names_is_not_deleted_from_under_it(
    client: TestClient, world: World
) -> None:
    # Deleted, the macro went on naming it and left the action out at every run.
    team = client.post("/api/v1/teams", json={"name": "Billing"}, headers=auth(world.alice)).json()
    ack = client.post(
        "/api/v1/canned-responses",
        json={"shortcut": "ack", "text": "We are on it."},
        headers=auth(world.bob),
    ).json()
    escalate = made(
        client, world.alice, name="Escalate", actions=[{"type": "assign_team", "value": team["id"]}]
    )
    sends = [{"type": "send_canned", "value": ack["id"]}]
    mine = made(client, world.bob, name="Ack", actions=sends, visibility="personal")
    hers = made(client, world.alice, name="Quiet ack", actions=sends, visibility="personal")
    r = client.delete(f"/api/v1/teams/{team['id']}", headers=auth(world.alice))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "this team is used by macro 'Escalate': change or delete it first"
    # An admin is told whose they are, and that only their owners change them.
    r = client.delete(f"/api/v1/canned-responses/{ack['id']}", headers=auth(world.alice))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (
        "this canned response is used by Bob's own macro 'Ack' and Alice's own macro 'Quiet "
        "ack': change or delete them first (a member’s own macro only they can change)"
    )
    # An agent is told of her own, and of a colleague's only that there is one (she cannot
    # see it).
    r = client.delete(f"/api/v1/canned-responses/{ack['id']}", headers=auth(world.bob))
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (
        "this canned response is used by your own macro 'Ack' and a colleague's own macro: "
        "change them first (a member’s own macro only they can change)"
    )
    for macro, token in ((escalate, world.alice), (mine, world.bob), (hers, world.alice)):
        r = client.delete(f"{MACROS}/{macro['id']}", headers=auth(token))
        assert r.status_code == 204, r.text
    assert (
        client.delete(f"/api/v1/teams/{team['id']}", headers=auth(world.alice)).status_code == 204
    )
    r = client.delete(f"/api/v1/canned-responses/{ack['id']}", headers=auth(world.bob))
    assert r.status_code == 204, r.text
