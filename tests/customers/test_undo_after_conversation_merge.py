"""A customers' merge undone after their conversations were merged: each person's messages
back in their own conversation, exported and erased with them; no other merge's record
keeps an erased person's values."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.conversations.models import Message, MessageKind
from rapport.conversations.service import message_payload
from rapport.customers.models import CustomerMerge
from rapport.db import Database
from tests.conftest import auth, heard_until_note
from tests.factories import World


def post(client: TestClient, world: World, ext: str, email: str, text: str) -> dict[str, Any]:
    assert world.acme.inbox is not None
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",
        json={"external_id": ext, "text": text, "from": {"email": email}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def customer_of(client: TestClient, world: World, email: str) -> dict[str, Any]:
    hits = client.get("/api/v1/customers", params={"q": email}, headers=auth(world.bob)).json()[
        "items"
    ]
    assert len(hits) == 1, hits
    return hits[0]  # type: ignore[no-any-return]


def conversation_of(client: TestClient, world: World, customer_id: str) -> str:
    convs = client.get(
        "/api/v1/conversations",
        params={"customer_id": customer_id, "limit": 100},
        headers=auth(world.bob),
    ).json()["items"]
    assert len(convs) == 1, convs
    return str(convs[0]["id"])


def merge(client: TestClient, world: World, survivor: str, merged: str, **kw: Any) -> str:
    r = client.post(
        f"/api/v1/customers/{survivor}/merge",
        json={"merged_id": merged, **kw},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def undo(client: TestClient, world: World, merge_id: str) -> Any:
    return client.post(f"/api/v1/customer-merges/{merge_id}/undo", headers=auth(world.bob))


def export_text(client: TestClient, world: World, customer_id: str) -> str:
    r = client.get(f"/api/v1/customers/{customer_id}/export", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    return r.text


def _pair_with_merged_conversations(client: TestClient, world: World) -> tuple[str, str, str]:
    post(client, world, "ann-1", "ann@example.com", "Ann writes")
    post(client, world, "ben-1", "ben@example.com", "Ben's secret: my IBAN is GB00BEN")
    ann = customer_of(client, world, "ann@example.com")["id"]
    ben = customer_of(client, world, "ben@example.com")["id"]
    ann_conv = conversation_of(client, world, ann)
    ben_conv = conversation_of(client, world, ben)
    merge_id = merge(client, world, ann, ben)
    r = client.post(
        f"/api/v1/conversations/{ann_conv}/merge",
        json={"merged_id": ben_conv},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    assert undo(client, world, merge_id).status_code == 200
    return ann, ben, ann_conv


def test_export_of_the_second_person_after_conversation_merge_and_undo_has_their_messages(
    client: TestClient, world: World
) -> None:
    ann, ben, _ = _pair_with_merged_conversations(client, world)
    assert "GB00BEN" in export_text(client, world, ben)


def test_export_of_the_first_person_after_undo_does_not_hold_the_second_persons_messages(
    client: TestClient, world: World
) -> None:
    ann, ben, _ = _pair_with_merged_conversations(client, world)
    assert "GB00BEN" not in export_text(client, world, ann)


def test_erasing_the_second_person_after_conversation_merge_and_undo_deletes_their_messages(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben, ann_conv = _pair_with_merged_conversations(client, world)
    r = client.delete(f"/api/v1/customers/{ben}", headers=auth(world.alice))
    assert r.status_code == 204
    with database.session(write=False) as db:
        left = list(db.scalars(select(Message.text).where(Message.text.contains("GB00BEN"))))
    assert left == []


def test_merge_record_keeps_no_personal_data_of_an_erased_person(
    client: TestClient, world: World, database: Database
) -> None:
    # A has no email; B's fills it; C (other email) is merged in after: C's merge records
    # B's address as "the survivor's". B's merge is undone and B erased: B's address stays
    # in A's merge history, shown by GET /customers/{A}/merges.
    def make(name: str, email: str | None) -> str:
        body: dict[str, Any] = {"name": name}
        if email:
            body["email"] = email
        r = client.post("/api/v1/customers", json=body, headers=auth(world.bob))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    a = make("Ann", None)
    b = make("Ben", "ben.private@example.com")
    c = make("Cat", "cat@example.com")
    first = merge(client, world, a, b)
    merge(client, world, a, c)
    assert undo(client, world, first).status_code == 200
    assert client.delete(f"/api/v1/customers/{b}", headers=auth(world.alice)).status_code == 204
    history = client.get(f"/api/v1/customers/{a}/merges", headers=auth(world.bob))
    assert history.status_code == 200
    assert "ben.private@example.com" not in history.text
    with database.session(write=False) as db:
        rows = [str(m.moved) for m in db.scalars(select(CustomerMerge))]
    assert not any("ben.private@example.com" in r for r in rows)


def message_id(database: Database, text: str) -> str:
    with database.session(write=False) as db:
        return db.scalars(select(Message.id).where(Message.text == text)).one()


def said_lines(database: Database, *conversation_ids: str) -> list[dict[str, Any]]:
    """The activity lines a merge and its undo wrote in these conversations (the system's),
    as a ``message.created`` event carries each."""
    with database.session(write=False) as db:
        return [
            message_payload(m)
            for m in db.scalars(
                select(Message)
                .where(
                    Message.conversation_id.in_(conversation_ids),
                    Message.kind == MessageKind.activity,
                    Message.sender_type == "system",
                )
                .order_by(Message.created_at, Message.id)
            )
        ]


def heard_through_merges(
    client: TestClient, world: World
) -> tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Ann's and Ben's records merged, then their conversations, Ben writing while merged,
    then the records' merge undone: (her conversation, his, what an agent's socket heard
    meanwhile, what a socket away meanwhile is replayed)."""
    post(client, world, "ann-1", "ann@example.com", "Ann writes")
    post(client, world, "ben-1", "ben@example.com", "Ben writes first")
    ann = customer_of(client, world, "ann@example.com")["id"]
    ben = customer_of(client, world, "ben@example.com")["id"]
    ann_conv = conversation_of(client, world, ann)
    ben_conv = conversation_of(client, world, ben)
    merge_id = merge(client, world, ann, ben)
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        last = ws.receive_json()["last_event_id"]
        r = client.post(
            f"/api/v1/conversations/{ann_conv}/merge",
            json={"merged_id": ben_conv},
            headers=auth(world.bob),
        )
        assert r.status_code == 200, r.text
        # Written while merged: it continues her thread, and the undo takes it to his.
        post(client, world, "ben-2", "ben@example.com", "Ben writes while merged")
        assert undo(client, world, merge_id).status_code == 200
        heard = heard_until_note(ws, client, world)
    # Stored as the stream's other events: a page away meanwhile is replayed them.
    with client.websocket_connect(
        f"/api/v1/stream?last_event_id={last}", headers=auth(world.bob)
    ) as ws:
        replayed = heard_until_note(ws, client, world)
    return ann_conv, ben_conv, heard, replayed


def test_an_undo_names_the_messages_it_takes_out_of_a_thread(
    client: TestClient, world: World, database: Database
) -> None:
    # The undo said which conversations messages went between, never which messages: an
    # open thread of the one they left showed them until a reload.
    ann_conv, ben_conv, heard, replayed = heard_through_merges(client, world)
    first = message_id(database, "Ben writes first")
    later = message_id(database, "Ben writes while merged")
    for events in (heard, replayed):
        assert [e["payload"] for e in events if e["type"] == "conversation.parted"] == [
            {"id": ben_conv, "from_id": ann_conv, "message_ids": [first]},
            {"id": ben_conv, "from_id": ann_conv, "message_ids": [later]},
        ]


def test_the_lines_a_merge_and_its_undo_write_are_told_as_any_message(
    client: TestClient, world: World, database: Database
) -> None:
    # The activity lines of the conversations' merge and of the undo ("Merged with...",
    # "Parted from...") were stored without an event: open threads showed none of them
    # until a reload.
    ann_conv, ben_conv, heard, replayed = heard_through_merges(client, world)
    lines = said_lines(database, ann_conv, ben_conv)
    assert [line["text"] for line in lines if line["conversation_id"] == ann_conv] == [
        "Merged with the conversation from Acme API",
        "The merged-in conversation's messages went back to it: the merge was undone",
        "Messages went to their writer's own conversation: their merge was undone",
    ]
    # (His is resolved by the merge and opened again by the undo, each with its line.)
    assert [line["text"] for line in lines if line["conversation_id"] == ben_conv] == [
        "Resolved by Bob",
        "Merged into the conversation from Acme API",
        "Parted from the other conversation: their customers' merge was undone",
        "Reopened by Bob",
        "Parted from another customer's conversation: their customers' merge was undone",
    ]
    for events in (heard, replayed):
        created = [e["payload"] for e in events if e["type"] == "message.created"]
        assert [line for line in lines if line not in created] == []
