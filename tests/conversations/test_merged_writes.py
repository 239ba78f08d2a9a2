"""A conversation merged into another takes no more writes: its messages went to the one it
was merged into, and a reply sent to it through the API (answered 201) was stored in the
emptied conversation, shown nowhere. Each write is refused with a 409 naming where to go."""

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.conversations.models import Message
from rapport.db import Database
from tests.conftest import auth, postgresql_only
from tests.conversations.test_simultaneous import second_inbox, write
from tests.factories import World


@pytest.fixture
def merged(
    client: TestClient, world: World, database: Database, settings: Settings
) -> dict[str, str]:
    """Two conversations of one customer, the second merged into the first."""
    survivor = write(database, settings, world.acme.inbox.id, "a1", "my order is late")  # type: ignore[union-attr]
    gone = write(database, settings, second_inbox(client, world), "b1", "hello? my order")
    r = client.post(
        f"/api/v1/conversations/{survivor}/merge", json={"merged_id": gone}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    with database.session() as db:
        moved = db.query(Message.id).filter(Message.conversation_id == survivor).first()
    assert moved is not None
    return {"survivor": survivor, "merged": gone, "message": moved[0]}


def _macro(client: TestClient, world: World) -> str:
    r = client.post(
        "/api/v1/macros",
        json={
            "name": "Refund",
            "actions": [{"type": "add_label", "value": "refund"}],
            "visibility": "personal",
        },
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("post", "messages", {"json": {"text": "Where did it go?"}}),
    ("post", "notes", {"json": {"text": "@alice see this"}}),
    ("post", "status", {"json": {"status": "open"}}),
    ("post", "assign", {"json": {"assignee_id": None}}),
    ("post", "priority", {"json": {"priority": "high"}}),
    ("post", "labels", {"json": {"labels": ["vip"]}}),
    ("delete", "labels/vip", {}),
    ("post", "uploads", {"files": {"file": ("a.txt", b"hello", "text/plain")}}),
    ("post", "messages/{message}/retry", {}),
    ("post", "macros/{macro}", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[w[1] for w in WRITES])
def test_a_write_to_a_merged_conversation_is_refused_naming_the_one_it_went_into(
    client: TestClient,
    world: World,
    merged: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    where = path.format(message=merged["message"], macro=_macro(client, world))
    before = client.get(f"/api/v1/conversations/{merged['merged']}", headers=auth(world.bob))
    r = client.request(
        method,
        f"/api/v1/conversations/{merged['merged']}/{where}",
        headers=auth(world.bob),
        **body,
    )
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/problems/conversation-merged")
    assert problem["merged_into_id"] == merged["survivor"]
    assert merged["survivor"] in problem["detail"]
    after = client.get(f"/api/v1/conversations/{merged['merged']}", headers=auth(world.bob))
    assert after.json() == before.json()  # nothing stored (its messages), nothing changed


@pytest.mark.parametrize("action", ["assign", "label", "resolve", "macro"])
def test_a_bulk_change_including_a_merged_conversation_changes_none(
    client: TestClient, world: World, merged: dict[str, str], action: str
) -> None:
    body: dict[str, Any] = {"ids": [merged["survivor"], merged["merged"]], "action": action}
    if action == "assign":
        body["assignee_id"] = world.acme.users["alice"].id
    elif action == "label":
        body["labels"] = ["vip"]
    elif action == "macro":
        body["macro_id"] = _macro(client, world)
    before = client.get(f"/api/v1/conversations/{merged['survivor']}", headers=auth(world.bob))
    r = client.post("/api/v1/conversations/bulk", json=body, headers=auth(world.bob))
    assert r.status_code == 409, r.text
    assert r.json()["merged_into_id"] == merged["survivor"]
    after = client.get(f"/api/v1/conversations/{merged['survivor']}", headers=auth(world.bob))
    assert after.json() == before.json()


def test_the_conversation_merged_into_takes_the_same_writes(
    client: TestClient, world: World, merged: dict[str, str]
) -> None:
    r = client.post(
        f"/api/v1/conversations/{merged['survivor']}/messages",
        json={"text": "Here it is"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/conversations/{merged['survivor']}/notes",
        json={"text": "done"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text


@postgresql_only
def test_a_note_that_read_the_conversation_before_a_merge_committed_is_moved_with_the_rest(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The reply's transaction found the conversation not merged; the merge then moved its
    # messages and committed; the reply was stored after it, in the emptied conversation.
    # Both now hold the row: the merge waits for the reply, and moves it too.
    from rapport.conversations import merging, service
    from rapport.conversations.models import Direction, MessageKind
    from rapport.privacy.service import Actor

    survivor = write(database, settings, world.acme.inbox.id, "a1", "my order is late")  # type: ignore[union-attr]
    gone = write(database, settings, second_inbox(client, world), "b1", "hello? my order")
    ws, bob = world.acme.workspace.id, world.acme.users["bob"].id
    read, noted = threading.Event(), []

    def note() -> None:
        with database.session() as db:
            conv = service.get_writable(db, workspace_id=ws, conversation_id=gone)
            read.set()
            time.sleep(0.5)  # the merge starts meanwhile
            noted.append(
                service.add_message(
                    db,
                    conversation=conv,
                    direction=Direction.outbound,
                    kind=MessageKind.note,
                    sender_type="user",
                    sender_id=bob,
                    text="checking the courier",
                ).id
            )

    writer = threading.Thread(target=note)
    writer.start()
    assert read.wait(10)
    with database.session() as db:
        merging.merge(
            db,
            workspace_id=ws,
            survivor_id=survivor,
            merged_id=gone,
            actor=Actor(kind="user", user_id=bob),
        )
    writer.join(10)
    with database.session(write=False) as db:
        assert db.get(Message, noted[0]).conversation_id == survivor  # type: ignore[union-attr]


@postgresql_only
def test_a_rule_run_while_its_conversation_is_being_merged_leaves_it_alone(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The rules' job read the conversation unheld, as not merged, while a merge of it was
    # committing: its note (or reply) waited for the merge, then went into the emptied
    # conversation, shown nowhere. The job now holds the conversation first, as a write
    # does, and finds it merged.
    from rapport.automation import service as automation
    from rapport.conversations import merging
    from rapport.crypto import box_for
    from rapport.privacy.service import Actor

    survivor = write(database, settings, world.acme.inbox.id, "a1", "my order is late")  # type: ignore[union-attr]
    gone = write(database, settings, second_inbox(client, world), "b1", "hello? my order")
    ws, bob = world.acme.workspace.id, world.acme.users["bob"].id
    with database.session() as db:
        automation.create_rule(
            db,
            workspace_id=ws,
            data={
                "name": "Note",
                "event": "conversation.status_changed",
                "actions": [{"type": "add_note", "value": "looked at by the rule"}],
            },
        )
    ran: list[list[str]] = []

    def rules() -> None:
        with database.session() as db:
            ran.append(
                automation.run(
                    db,
                    workspace_id=ws,
                    event="conversation.status_changed",
                    conversation_id=gone,
                    message_id=None,
                    customer_id=None,
                    caused_by=[],
                    box=box_for(settings.secret_key.get_secret_value()),
                )
            )

    with database.session() as db:
        merging.merge(
            db,
            workspace_id=ws,
            survivor_id=survivor,
            merged_id=gone,
            actor=Actor(kind="user", user_id=bob),
        )
        db.flush()
        job = threading.Thread(target=rules)
        job.start()
        job.join(1.0)  # the job runs while the merge commits
    job.join(30)
    assert ran == [[]]
    with database.session(write=False) as db:
        noted = db.query(Message).filter(Message.text == "looked at by the rule").count()
    assert noted == 0
