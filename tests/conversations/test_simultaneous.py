"""One customer on two channels at once: the conversations are shown together and merge."""

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rapport.config import Settings
from rapport.conversations.models import Conversation
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from tests.conftest import auth, sqlite_only
from tests.factories import World


def second_inbox(client: TestClient, world: World, name: str = "Chat") -> str:
    r = client.post(
        "/api/v1/inboxes", json={"name": name, "channel": "api"}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def write(
    database: Database,
    settings: Settings,
    inbox_id: str,
    ext: str,
    text: str,
    hint: str | None = None,
) -> str:
    with database.session() as db:
        stored = receive(
            db,
            InboundMessage(
                inbox_id=inbox_id,
                external_id=ext,
                text=text,
                handles=[handle(IdentityKind.email, "twochannels@example.com")],
                conversation_hint=hint,
            ),
            settings=settings,
        )
        return stored.conversation.id


def test_two_channels_at_once_are_related_and_merge_into_one_in_order(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    email_like = world.acme.inbox.id  # type: ignore[union-attr]
    chat = second_inbox(client, world)
    first = write(database, settings, email_like, "a1", "my order is late")
    second = write(database, settings, chat, "b1", "hello? anyone? about my order")
    write(database, settings, email_like, "a2", "order 1234")
    assert first != second
    related = client.get(f"/api/v1/conversations/{first}/related", headers=auth(world.bob))
    assert [c["id"] for c in related.json()] == [second]
    assert [
        c["id"]
        for c in client.get(
            f"/api/v1/conversations/{second}/related", headers=auth(world.bob)
        ).json()
    ] == [first]

    r = client.post(
        f"/api/v1/conversations/{first}/merge", json={"merged_id": second}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    merged = client.get(f"/api/v1/conversations/{first}", headers=auth(world.bob)).json()
    texts = [m["text"] for m in merged["messages"] if m["kind"] == "message"]
    assert texts == ["my order is late", "hello? anyone? about my order", "order 1234"]
    assert any("Merged with" in m["text"] for m in merged["messages"] if m["kind"] == "activity")
    gone = client.get(f"/api/v1/conversations/{second}", headers=auth(world.bob)).json()
    assert gone["status"] == "resolved" and gone["merged_into_id"] == first
    assert (
        client.get(f"/api/v1/conversations/{first}/related", headers=auth(world.bob)).json() == []
    )

    # The customer's next chat message continues the merged conversation, and the answer
    # goes back on chat, where they are now.
    assert write(database, settings, chat, "b2", "still there?") == first
    answer = client.post(
        f"/api/v1/conversations/{first}/messages", json={"text": "Yes!"}, headers=auth(world.bob)
    ).json()
    assert answer["inbox_id"] == chat
    again = client.post(
        f"/api/v1/conversations/{first}/merge", json={"merged_id": second}, headers=auth(world.bob)
    )
    assert again.status_code == 409


def test_a_message_follows_a_chain_of_merges_to_its_end(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    email_like = world.acme.inbox.id  # type: ignore[union-attr]
    chat, sms = second_inbox(client, world), second_inbox(client, world, "SMS")
    first = write(database, settings, email_like, "a1", "my order is late")
    second = write(database, settings, chat, "b1", "hello? about my order")
    third = write(database, settings, sms, "c1", "order 1234?")
    for survivor, merged in ((first, second), (third, first)):  # second -> first -> third
        r = client.post(
            f"/api/v1/conversations/{survivor}/merge",
            json={"merged_id": merged},
            headers=auth(world.bob),
        )
        assert r.status_code == 200, r.text

    # The customer's latest conversation on chat was merged into one that was merged in
    # turn: the message continues where both ended, and reopens neither.
    assert write(database, settings, chat, "b2", "still there?") == third
    # A reply naming a merged conversation (a reply token in an old email, the widget's
    # conversation) too, from an inbox where the customer never wrote before.
    web = second_inbox(client, world, "Web")
    assert write(database, settings, web, "d1", "any news?", hint=second) == third
    for gone in (first, second):
        conv = client.get(f"/api/v1/conversations/{gone}", headers=auth(world.bob)).json()
        assert conv["status"] == "resolved", conv
    survivor = client.get(f"/api/v1/conversations/{third}", headers=auth(world.bob)).json()
    texts = [m["text"] for m in survivor["messages"] if m["kind"] == "message"]
    assert texts[-2:] == ["still there?", "any news?"]


def test_conversations_far_apart_are_not_related_and_strangers_do_not_merge(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    chat = second_inbox(client, world)
    first = write(database, settings, world.acme.inbox.id, "a1", "hi")  # type: ignore[union-attr]
    second = write(database, settings, chat, "b1", "hi again")
    with database.session() as db:
        conv = db.get(Conversation, second)
        assert conv is not None
        conv.created_at = conv.created_at + timedelta(hours=3)
    assert (
        client.get(f"/api/v1/conversations/{first}/related", headers=auth(world.bob)).json() == []
    )
    stranger = world.acme.opened.conversation.id
    r = client.post(
        f"/api/v1/conversations/{first}/merge",
        json={"merged_id": stranger},
        headers=auth(world.bob),
    )
    assert r.status_code == 422
    assert "merge the customers first" in r.json()["detail"]
    r = client.post(
        f"/api/v1/conversations/{first}/merge",
        json={"merged_id": second},
        headers=auth(world.victor),
    )
    assert r.status_code == 403


@sqlite_only
def test_presence_heartbeats_never_wait_for_the_writer(
    client: TestClient, world: World, database: Database
) -> None:
    # "typing" and "viewing" are POSTs every few seconds from every open conversation, and
    # only look: they never take SQLite's one write lock, so a long write elsewhere (an
    # import, an erasure) does not make them wait and fail.
    conv = world.acme.opened.conversation
    path = database.engine.url.database
    assert path
    writer = sqlite3.connect(path, timeout=1)
    writer.execute("BEGIN IMMEDIATE")  # someone else holds the write lock meanwhile
    try:
        with ThreadPoolExecutor(2) as pool:
            typing = pool.submit(
                client.post, f"/api/v1/conversations/{conv.id}/typing", headers=auth(world.bob)
            )
            viewing = pool.submit(
                client.post, f"/api/v1/conversations/{conv.id}/viewing", headers=auth(world.bob)
            )
            assert typing.result(timeout=30).status_code == 204
            assert viewing.result(timeout=30).status_code == 204
    finally:
        writer.rollback()
        writer.close()


def test_a_merged_conversation_stops_waiting_and_its_wait_goes_to_the_survivor(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The merged conversation was set resolved by hand: it stayed "waiting" with its SLA
    # clocks running (a breach to come on a resolved conversation), and the survivor, which
    # now holds the customer's unanswered message, was not waiting at all.
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Std", "first_response_minutes": 60, "next_response_minutes": 60},
        headers=auth(world.alice),
    ).raise_for_status()
    chat = second_inbox(client, world)
    first = write(database, settings, world.acme.inbox.id, "a1", "my order is late")  # type: ignore[union-attr]
    client.post(
        f"/api/v1/conversations/{first}/messages", json={"text": "On it"}, headers=auth(world.bob)
    ).raise_for_status()
    second = write(database, settings, chat, "b1", "hello? still waiting")
    r = client.post(
        f"/api/v1/conversations/{first}/merge", json={"merged_id": second}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text

    def listed(sort: str) -> list[str]:
        page = client.get("/api/v1/conversations", params={"sort": sort}, headers=auth(world.bob))
        return [c["id"] for c in page.json()["items"]]

    def sla_of(cid: str) -> dict[str, Any]:
        r = client.get(f"/api/v1/conversations/{cid}/sla", headers=auth(world.bob))
        return dict(r.json())

    assert second not in listed("waiting") and second not in listed("sla_due")
    assert sla_of(second)["next_due_at"] is None
    assert first in listed("waiting") and first in listed("sla_due")
    with database.session(write=False) as db:
        survivor, merged = db.get(Conversation, first), db.get(Conversation, second)
        assert survivor is not None and merged is not None
        assert merged.waiting_since is None
        waited = survivor.waiting_since
    assert waited is not None
    due = datetime.fromisoformat(sla_of(first)["next_response_due_at"])
    assert due == waited + timedelta(minutes=60)


@pytest.mark.parametrize(
    ("survivor_status", "merged_status", "expected"),
    [("resolved", "snoozed", "snoozed"), ("snoozed", "open", "open")],
)
def test_a_merge_keeps_the_livelier_state_and_the_snooze_it_takes(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    survivor_status: str,
    merged_status: str,
    expected: str,
) -> None:
    # A snoozed conversation merged into a resolved one came out resolved (its follow-up
    # lost), and an open one merged into a snoozed one came out open but still "snoozed
    # until" a time.
    chat = second_inbox(client, world)
    first = write(database, settings, world.acme.inbox.id, "s1", "first")  # type: ignore[union-attr]
    second = write(database, settings, chat, "s2", "second")
    wake = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    for conv, status in ((first, survivor_status), (second, merged_status)):
        body: dict[str, Any] = {"status": status}
        if status == "snoozed":
            body["snoozed_until"] = wake.isoformat()
        r = client.post(f"/api/v1/conversations/{conv}/status", json=body, headers=auth(world.bob))
        assert r.status_code == 200, r.text
    r = client.post(
        f"/api/v1/conversations/{first}/merge", json={"merged_id": second}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    survivor = client.get(f"/api/v1/conversations/{first}", headers=auth(world.bob)).json()
    assert survivor["status"] == expected
    if expected == "snoozed":
        assert datetime.fromisoformat(survivor["snoozed_until"]) == wake
    else:
        assert survivor["snoozed_until"] is None
