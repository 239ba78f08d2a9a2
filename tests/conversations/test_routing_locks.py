"""A rule's round-robin beside a routing pass, on PostgreSQL: the two hold the workspace and
a conversation, and never wait on each other in opposite orders (a deadlock)."""

import threading
import time

from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.db import Database, lock_row
from rapport.workspaces.models import Workspace
from tests.conftest import auth, postgresql_only
from tests.conversations.test_routing import setup_team, write
from tests.factories import World


@postgresql_only
def test_a_rule_that_changes_then_round_robins_never_deadlocks_with_a_routing_pass(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A rule "set priority high, then round-robin" changes the conversation (row held),
    # then pick_agent now holds the workspace row. A routing pass holds the workspace row
    # first, then (new) lock_row(Conversation): opposite orders.
    from rapport.automation import service as automation
    from rapport.conversations import routing
    from rapport.crypto import box_for

    ids = setup_team(client, world, database)
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "urgent rr",
            "event": "conversation.created",
            "conditions": [],
            "actions": [
                {"type": "set_priority", "value": "high"},
                {"type": "assign_round_robin"},
            ],
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": False}, headers=auth(world.alice)
    )
    conv = write(client, world, ids["inbox"], 1)
    client.patch(
        f"/api/v1/inboxes/{ids['inbox']}", json={"auto_assign": True}, headers=auth(world.alice)
    )
    ws = world.acme.workspace.id
    box = box_for(settings.secret_key.get_secret_value())
    errors: list[BaseException] = []

    def rule() -> None:
        try:
            with database.session() as db:
                automation.run(
                    db,
                    workspace_id=ws,
                    event="conversation.created",
                    conversation_id=conv,
                    message_id=None,
                    customer_id=None,
                    caused_by=[],
                    box=box,
                )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def routing_pass() -> None:
        try:
            with database.session() as db:
                lock_row(db, Workspace, ws)  # assign_waiting's first statement
                started.set()
                time.sleep(1.0)  # the rule meanwhile holds the conversation, waits on us
                routing.assign_waiting(db, workspace_id=ws)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    started = threading.Event()
    p = threading.Thread(target=routing_pass)
    p.start()
    started.wait(5)
    t = threading.Thread(target=rule)
    t.start()
    for th in (p, t):
        th.join(30)
    assert not errors, [repr(e)[:160] for e in errors]
