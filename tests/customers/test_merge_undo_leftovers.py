"""A customers' merge undone: the handles the restored person brought while merged go back
with them (their next message finds them, not her), and the survivor's times and her
thread are as her own activity left them, not as his."""

from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.config import Settings
from rapport.conversations.models import Conversation, Message, MessageKind, Status
from rapport.customers.identity import Handle, handle
from rapport.customers.models import (
    Customer,
    Event,
    Identity,
    IdentityKind,
    MergeSuggestion,
    SuggestionStatus,
)
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from tests.conftest import auth, heard_until_note
from tests.customers.test_merge_written_while_merged import (
    ANN,
    BEN,
    ann_and_ben,
    customer_of,
    merge,
    post,
    undo,
    where,
)
from tests.factories import World

BEN_WA = BEN.lstrip("+")
BEN_NEW = "+447700900333"


def whatsapp(number: str) -> list[Handle]:
    return [
        handle(IdentityKind.whatsapp, number.lstrip("+")),
        handle(IdentityKind.phone, number),
    ]


def ben_writes(
    database: Database,
    world: World,
    settings: Settings,
    ext: str,
    text: str,
    *,
    number: str = BEN,
    moved_to: list[Handle] | None = None,
) -> None:
    assert world.acme.inbox is not None
    with database.session() as db:
        receive(
            db,
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id=ext,
                handles=whatsapp(number),
                text=text,
                moved_to=moved_to or [],
            ),
            settings=settings,
        )


def test_an_address_he_brought_while_merged_is_his_again_and_finds_him(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    post(client, world, "b2", "Ben, with his new address", phone=BEN, email="ben@example.com")
    undo(client, world, merge_id)

    assert customer_of(client, world, "ben@example.com") == ben
    post(client, world, "b3", "Ben from his new address", email="ben@example.com")
    assert where(database, "Ben from his new address")[0] == ben
    with database.session(write=False) as db:
        them = db.get(Customer, ben)
        her = db.get(Customer, ann)
        assert them is not None and her is not None
        assert (them.email, her.email) == ("ben@example.com", ANN)


def test_the_number_whatsapp_says_he_moved_to_while_merged_is_his_again(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    post(client, world, "a1", "Ann's first", email=ANN)
    ben_writes(database, world, settings, "b1", "Ben's first")
    ann, ben = customer_of(client, world, ANN), where(database, "Ben's first")[0]
    merge_id = merge(client, world, ann, ben)
    ben_writes(
        database,
        world,
        settings,
        "b2",
        "[system] Ben changed his number",
        moved_to=whatsapp(BEN_NEW),
    )
    with database.session(write=False) as db:
        change = db.scalars(select(Event).where(Event.type == "number_changed")).one()
        assert change.customer_id == ann  # made on the survivor while merged
    undo(client, world, merge_id)

    ben_writes(database, world, settings, "b3", "Ben from his new number", number=BEN_NEW)
    assert where(database, "Ben from his new number")[0] == ben
    with database.session(write=False) as db:
        held = set(db.scalars(select(Identity.customer_id).where(Identity.value.contains("333"))))
        change = db.scalars(select(Event).where(Event.type == "number_changed")).one()
        them, her = db.get(Customer, ben), db.get(Customer, ann)
        assert them is not None and her is not None
        assert held == {ben} and change.customer_id == ben
        assert (them.phone, her.phone) == (BEN_NEW, None)
    timeline = client.get(f"/api/v1/customers/{ben}/timeline", headers=auth(world.bob)).json()
    assert any(e.get("type") == "number_changed" for e in timeline["items"]), timeline


def test_a_handle_he_brought_that_she_proved_since_stays_hers_and_they_go_to_review(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    assert world.acme.inbox is not None
    shared = "family@example.com"
    with database.session() as db:
        # He only types it (a form); she then writes from that mailbox, beside her own.
        for ext, text, handles in (
            (
                "b2",
                "Ben types the family address",
                [
                    handle(IdentityKind.phone, BEN),
                    handle(IdentityKind.email, shared, verified=False),
                ],
            ),
            (
                "a2",
                "Ann writes from it",
                [handle(IdentityKind.email, ANN), handle(IdentityKind.email, shared)],
            ),
        ):
            receive(
                db,
                InboundMessage(
                    inbox_id=world.acme.inbox.id, external_id=ext, handles=handles, text=text
                ),
                settings=settings,
            )
    undo(client, world, merge_id)

    with database.session(write=False) as db:
        holder = db.scalars(select(Identity.customer_id).where(Identity.value == shared)).one()
        review = db.scalars(select(MergeSuggestion)).all()
    assert holder == ann
    assert [(sorted((r.left_id, r.right_id)), r.status) for r in review] == [
        (sorted((ann, ben)), SuggestionStatus.pending)
    ]


@pytest.mark.parametrize("typist", ["restored", "survivor"])
def test_an_address_one_had_only_typed_that_the_other_proved_while_merged_is_the_provers(
    client: TestClient, world: World, database: Database, settings: Settings, typist: str
) -> None:
    # Left with the typist, proven, the prover's next mail from it alone went to them.
    ann, ben = ann_and_ben(client, world, ben_last=False)
    shared = "family@example.com"
    own = {ann: handle(IdentityKind.email, ANN), ben: handle(IdentityKind.phone, BEN)}
    typed, prover = (ben, ann) if typist == "restored" else (ann, ben)

    def writes(ext: str, text: str, handles: list[Handle]) -> None:
        assert world.acme.inbox is not None
        with database.session() as db:
            receive(
                db,
                InboundMessage(
                    inbox_id=world.acme.inbox.id, external_id=ext, handles=handles, text=text
                ),
                settings=settings,
            )

    writes(
        "t0",
        "Types the family address",
        [own[typed], handle(IdentityKind.email, shared, verified=False)],
    )
    merge_id = merge(client, world, ann, ben)
    writes("p1", "Writes from it", [own[prover], handle(IdentityKind.email, shared)])
    undo(client, world, merge_id)

    with database.session(write=False) as db:
        held = db.scalars(select(Identity).where(Identity.value == shared)).one()
        review = db.scalars(select(MergeSuggestion)).all()
        them = db.get(Customer, typed)
        assert them is not None
    assert (held.customer_id, held.verified, them.email) == (
        prover,
        True,
        ANN if typed == ann else None,
    )
    assert [(sorted((r.left_id, r.right_id)), r.status) for r in review] == [
        (sorted((ann, ben)), SuggestionStatus.pending)
    ]
    writes("p2", "From the family address alone", [handle(IdentityKind.email, shared)])
    assert where(database, "From the family address alone")[0] == prover
    assert where(database, "Types the family address")[0] == typed
    assert where(database, "Writes from it")[0] == prover


def resolve(client: TestClient, world: World, conversation_id: str) -> None:
    r = client.post(
        f"/api/v1/conversations/{conversation_id}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text


def state(database: Database, conversation_id: str) -> Conversation:
    with database.session(write=False) as db:
        conv = db.get(Conversation, conversation_id)
        assert conv is not None
        db.expunge(conv)
        return conv


def lines(database: Database, conversation_id: str) -> list[str]:
    """The conversation's activity lines, in the thread's order."""
    with database.session(write=False) as db:
        return list(
            db.scalars(
                select(Message.text)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.kind == MessageKind.activity,
                )
                .order_by(Message.created_at, Message.id)
            )
        )


def line_id(database: Database, conversation_id: str, text: str) -> str:
    with database.session(write=False) as db:
        return db.scalars(
            select(Message.id).where(
                Message.conversation_id == conversation_id,
                Message.kind == MessageKind.activity,
                Message.text == text,
            )
        ).one()


def seen(database: Database, customer_id: str) -> datetime:
    with database.session(write=False) as db:
        row = db.get(Customer, customer_id)
        assert row is not None
        return row.last_seen_at


def test_her_thread_he_reopened_is_resolved_again_and_her_times_are_her_own(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    ann_conv = where(database, "Ann's first")[1]
    resolve(client, world, ann_conv)
    before, ann_seen = state(database, ann_conv), seen(database, ann)
    merge_id = merge(client, world, ann, ben)
    post(client, world, "b2", "Ben reopens her thread", phone=BEN)
    assert where(database, "Ben reopens her thread")[1] == ann_conv
    assert state(database, ann_conv).status == Status.open
    assert lines(database, ann_conv)[-1] == "Reopened"
    reopened = line_id(database, ann_conv, "Reopened")
    with client.websocket_connect("/api/v1/stream", headers=auth(world.bob)) as ws:
        last = ws.receive_json()["last_event_id"]
        undo(client, world, merge_id)
        heard = heard_until_note(ws, client, world)
    # Stored as the stream's other events: a page away meanwhile is replayed it.
    with client.websocket_connect(
        f"/api/v1/stream?last_event_id={last}", headers=auth(world.bob)
    ) as ws:
        replayed = heard_until_note(ws, client, world)

    # The line of the reopening goes with it: her thread reads resolved, as it is.
    assert lines(database, ann_conv)[-2:] == [
        "Resolved by Bob",
        "Messages went to their writer's own conversation: their merge was undone",
    ]
    # An open page of her thread drops it too (it said "Reopened" until a reload).
    for events in (heard, replayed):
        assert [e["payload"] for e in events if e["type"] == "message.deleted"] == [
            {"id": reopened, "conversation_id": ann_conv}
        ]
    after = state(database, ann_conv)
    assert (after.status, after.resolved_at, after.waiting_since) == (
        Status.resolved,
        before.resolved_at,
        None,
    )
    assert after.last_activity_at == before.last_activity_at
    assert seen(database, ann) == ann_seen
    assert seen(database, ben) > ann_seen  # he was seen when he wrote


def test_her_thread_he_reopened_that_an_agent_answered_stays_open(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    ann_conv = where(database, "Ann's first")[1]
    resolve(client, world, ann_conv)
    merge_id = merge(client, world, ann, ben)
    post(client, world, "b2", "Ben reopens her thread", phone=BEN)
    r = client.post(
        f"/api/v1/conversations/{ann_conv}/messages",
        json={"text": "An agent answers"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    undo(client, world, merge_id)
    assert state(database, ann_conv).status == Status.open
    assert "Reopened" in lines(database, ann_conv)  # it was, and it stays so


def test_his_number_change_to_a_number_another_keeps_is_his_and_puts_him_to_review(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    post(client, world, "a1", "Ann's first", email=ANN)
    ben_writes(database, world, settings, "b1", "Ben's first")
    ben_writes(database, world, settings, "c1", "Carl's first", number=BEN_NEW)
    ann, ben = customer_of(client, world, ANN), where(database, "Ben's first")[0]
    carl = where(database, "Carl's first")[0]
    merge_id = merge(client, world, ann, ben)
    ben_writes(database, world, settings, "b2", "[system] Ben moved", moved_to=whatsapp(BEN_NEW))
    undo(client, world, merge_id)

    with database.session(write=False) as db:
        change = db.scalars(select(Event).where(Event.type == "number_changed")).one()
        pairs = {
            tuple(sorted((r.left_id, r.right_id)))
            for r in db.scalars(
                select(MergeSuggestion).where(MergeSuggestion.status == SuggestionStatus.pending)
            )
        }
        held = set(db.scalars(select(Identity.customer_id).where(Identity.value.contains("333"))))
    assert change.customer_id == ben and change.properties["held_by"] == [carl]
    assert tuple(sorted((ben, carl))) in pairs
    assert held == {carl}
