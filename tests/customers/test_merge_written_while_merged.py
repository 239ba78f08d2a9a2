"""A customers' merge undone: what each person wrote while merged goes with the record whose
handle it came by (their conversation, export, erasure); a message stored before messages
said their handle stays with the survivor, as then."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.config import Settings
from rapport.conversations.models import CAME_BY, GAINED, REOPENED, Conversation, Message
from rapport.customers.identity import handle
from rapport.customers.models import Identity, IdentityKind
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from rapport.realtime.models import StreamEvent
from tests.conftest import auth
from tests.factories import World

ANN = "ann@example.com"
BEN = "+447700900222"


def post(
    client: TestClient,
    world: World,
    ext: str,
    text: str,
    *,
    inbox: str | None = None,
    **sender: str,
) -> dict[str, Any]:
    assert world.acme.inbox is not None
    r = client.post(
        f"/api/v1/inboxes/{inbox or world.acme.inbox.id}/messages",
        json={"external_id": ext, "text": text, "from": sender},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def customer_of(client: TestClient, world: World, q: str) -> str:
    hits = client.get("/api/v1/customers", params={"q": q}, headers=auth(world.bob)).json()["items"]
    assert len(hits) == 1, hits
    return str(hits[0]["id"])


def merge(client: TestClient, world: World, survivor: str, merged: str) -> str:
    r = client.post(
        f"/api/v1/customers/{survivor}/merge",
        json={"merged_id": merged},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def undo(client: TestClient, world: World, merge_id: str) -> None:
    r = client.post(f"/api/v1/customer-merges/{merge_id}/undo", headers=auth(world.bob))
    assert r.status_code == 200, r.text


def export_text(client: TestClient, world: World, customer_id: str) -> str:
    r = client.get(f"/api/v1/customers/{customer_id}/export", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    return r.text


def where(database: Database, text: str) -> tuple[str, str, str | None]:
    """(conversation's customer, conversation, sender) of the message with this text."""
    with database.session(write=False) as db:
        m = db.scalars(select(Message).where(Message.text == text)).one()
        conv = db.get(Conversation, m.conversation_id)
        assert conv is not None
        return conv.customer_id, conv.id, m.sender_id


def count(database: Database, conversation_id: str) -> int:
    with database.session(write=False) as db:
        conv = db.get(Conversation, conversation_id)
        assert conv is not None
        return conv.messages_count


def ann_and_ben(client: TestClient, world: World, *, ben_last: bool) -> tuple[str, str]:
    """Ann by email and Ben by phone, each with a conversation on the API inbox; the one
    who wrote last holds the inbox's latest conversation."""
    first, second = (("a1", "Ann's first", ANN), ("b1", "Ben's first", BEN))[
        :: 1 if ben_last else -1
    ]
    for ext, text, who in (first, second):
        post(client, world, ext, text, **({"email": who} if "@" in who else {"phone": who}))
    return customer_of(client, world, ANN), customer_of(client, world, BEN)


def test_ingest_records_the_identity_a_message_came_by(
    client: TestClient, world: World, database: Database
) -> None:
    post(client, world, "b1", "Ben writes", phone=BEN, email="ben@example.com")
    with database.session(write=False) as db:
        m = db.scalars(select(Message).where(Message.text == "Ben writes")).one()
        first = db.scalars(select(Identity).where(Identity.id == m.meta[CAME_BY])).one()
    assert (first.kind, first.value, first.customer_id) == ("email", "ben@example.com", m.sender_id)
    # Known since: the handle that proved him (his phone), not the new address beside it.
    post(client, world, "b2", "Ben again", phone=BEN, email="ben.new@example.com")
    with database.session(write=False) as db:
        m = db.scalars(select(Message).where(Message.text == "Ben again")).one()
        proved = db.scalars(select(Identity).where(Identity.id == m.meta[CAME_BY])).one()
    assert (proved.kind, proved.value) == ("phone", BEN)


def test_what_the_merged_person_wrote_in_the_survivors_thread_goes_back_to_them(
    client: TestClient, world: World, database: Database
) -> None:
    policy = {"name": "Standard", "first_response_minutes": 60, "resolution_minutes": 480}
    client.post("/api/v1/sla-policies", json=policy, headers=auth(world.alice))
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    # Ben writes by his number: stored as Ann's, in her (the inbox's latest) conversation.
    post(client, world, "b2", "Ben while merged: IBAN GB11BEN", phone=BEN)
    post(client, world, "a2", "Ann while merged", email=ANN)
    ann_conv = where(database, "Ann's first")[1]
    assert where(database, "Ben while merged: IBAN GB11BEN")[:2] == (ann, ann_conv)
    before = count(database, ann_conv)
    undo(client, world, merge_id)

    owner, conv, sender = where(database, "Ben while merged: IBAN GB11BEN")
    assert (owner, sender) == (ben, ben)
    assert conv not in (ann_conv, where(database, "Ben's first")[1])
    assert where(database, "Ann while merged") == (ann, ann_conv, ann)
    assert where(database, "Ann's first") == (ann, ann_conv, ann)
    assert (count(database, ann_conv), count(database, conv)) == (before - 1, 1)
    assert "GB11BEN" in export_text(client, world, ben)
    ann_export = export_text(client, world, ann)
    assert "GB11BEN" not in ann_export and "Ann while merged" in ann_export
    timeline = client.get(f"/api/v1/customers/{ben}/timeline", headers=auth(world.bob)).json()
    entry = next(e for e in timeline["items"] if "GB11BEN" in e["summary"])
    assert "by" not in entry["data"]  # his own, not another's in his conversation
    with database.session(write=False) as db:
        parted = [
            e.payload
            for e in db.scalars(
                select(StreamEvent).where(StreamEvent.type == "conversation.parted")
            )
        ]
        theirs = db.get(Conversation, conv)
        assert theirs is not None and theirs.waiting_since is not None  # nobody answered it
        ours = db.get(Conversation, ann_conv)
        assert ours is not None and ours.waiting_since is not None  # Ann's own still waits
        his = db.scalars(
            select(Message.id).where(Message.text == "Ben while merged: IBAN GB11BEN")
        ).one()
    assert {"id": conv, "from_id": ann_conv, "message_ids": [his]} in parted
    # Nobody answered him: his conversation's response clock runs.
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state["first_response_due_at"], state

    # His erasure removes it; Ann's messages stay.
    assert client.delete(f"/api/v1/customers/{ben}", headers=auth(world.alice)).status_code == 204
    with database.session(write=False) as db:
        texts = set(db.scalars(select(Message.text)))
    assert not any("GB11BEN" in t for t in texts)
    assert {"Ann's first", "Ann while merged"} <= texts


def test_a_conversation_the_merged_person_started_while_merged_goes_back_whole(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=True)
    other = client.post(
        "/api/v1/inboxes", json={"name": "Shop app", "channel": "api"}, headers=auth(world.alice)
    )
    assert other.status_code == 201, other.text
    merge_id = merge(client, world, ann, ben)
    post(client, world, "b2", "Ben in the app", inbox=other.json()["id"], phone=BEN)
    started = where(database, "Ben in the app")[1]
    r = client.post(
        f"/api/v1/conversations/{started}/messages",
        json={"text": "Agent answers in the app"},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    before = count(database, started)
    undo(client, world, merge_id)

    assert where(database, "Ben in the app") == (ben, started, ben)
    assert where(database, "Agent answers in the app")[:2] == (ben, started)
    assert count(database, started) == before
    assert "Ben in the app" in export_text(client, world, ben)
    assert "Ben in the app" not in export_text(client, world, ann)


def test_what_the_survivor_wrote_in_the_merged_persons_thread_stays_hers(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=True)
    merge_id = merge(client, world, ann, ben)
    # Ann writes: the inbox's latest conversation of hers is Ben's (given her by the merge).
    post(client, world, "a2", "Ann in Ben's thread: my PIN 4455", email=ANN)
    ben_conv = where(database, "Ben's first")[1]
    assert where(database, "Ann in Ben's thread: my PIN 4455")[:2] == (ann, ben_conv)
    before = count(database, ben_conv)
    undo(client, world, merge_id)

    owner, conv, sender = where(database, "Ann in Ben's thread: my PIN 4455")
    assert (owner, sender) == (ann, ann) and conv != ben_conv
    assert where(database, "Ben's first") == (ben, ben_conv, ben)
    assert (count(database, ben_conv), count(database, conv)) == (before - 1, 1)
    assert "4455" not in export_text(client, world, ben)
    assert "4455" in export_text(client, world, ann)


def test_a_message_stored_before_messages_said_their_handle_stays_with_the_survivor(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    post(client, world, "b2", "Ben while merged, stored long ago", phone=BEN)
    with database.session() as db:
        m = db.scalars(
            select(Message).where(Message.text == "Ben while merged, stored long ago")
        ).one()
        db.execute(
            update(Message)
            .where(Message.id == m.id)
            .values(meta={k: v for k, v in m.meta.items() if k != CAME_BY})
        )
    ann_conv = where(database, "Ann's first")[1]
    before = count(database, ann_conv)
    undo(client, world, merge_id)
    # Which handle it came by is not known: where it was, as before this was recorded.
    assert where(database, "Ben while merged, stored long ago") == (ann, ann_conv, ann)
    assert count(database, ann_conv) == before


def test_after_their_conversations_were_merged_what_he_wrote_since_goes_to_his_own_again(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    ann_conv, ben_conv = where(database, "Ann's first")[1], where(database, "Ben's first")[1]
    r = client.post(
        f"/api/v1/conversations/{ann_conv}/merge",
        json={"merged_id": ben_conv},
        headers=auth(world.bob),
    )
    assert r.status_code == 200, r.text
    post(client, world, "b2", "Ben after the threads were merged", phone=BEN)
    assert where(database, "Ben after the threads were merged")[:2] == (ann, ann_conv)
    undo(client, world, merge_id)
    # The conversation the undo parted from hers takes it too: no second one of his.
    assert where(database, "Ben after the threads were merged") == (ben, ben_conv, ben)
    assert where(database, "Ben's first")[:2] == (ben, ben_conv)
    convs = client.get(
        "/api/v1/conversations", params={"customer_id": ben}, headers=auth(world.bob)
    ).json()["items"]
    assert [c["id"] for c in convs] == [ben_conv]
    with database.session(write=False) as db:
        theirs = db.get(Conversation, ben_conv)
        assert theirs is not None and theirs.waiting_since is not None
    assert "Ben after the threads were merged" not in export_text(client, world, ann)


def test_what_he_wrote_in_a_third_persons_conversation_while_merged_is_his_after_undo(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    post(client, world, "c1", "Cat's question", email="cat@example.com")
    cat_conv = where(database, "Cat's question")[1]
    merge_id = merge(client, world, ann, ben)
    assert world.acme.inbox is not None
    with database.session() as db:
        # Cat's mail copied him, and he answers all: her conversation, as its guest.
        receive(
            db,
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="b-guest",
                handles=[handle(IdentityKind.phone, BEN)],
                text="Ben as Cat's guest: my PIN 8811",
                conversation_hint=cat_conv,
                copied_in_thread=True,
            ),
            settings=settings,
        )
    assert where(database, "Ben as Cat's guest: my PIN 8811")[1:] == (cat_conv, ann)
    undo(client, world, merge_id)

    assert where(database, "Ben as Cat's guest: my PIN 8811")[1:] == (cat_conv, ben)
    assert "8811" in export_text(client, world, ben)
    assert "8811" not in export_text(client, world, ann)
    assert client.delete(f"/api/v1/customers/{ben}", headers=auth(world.alice)).status_code == 204
    with database.session(write=False) as db:
        texts = set(db.scalars(select(Message.text)))
    assert "Cat's question" in texts and not any("8811" in t for t in texts)


def test_the_handle_a_message_came_by_is_kept_from_api_clients_and_the_undo_still_reads_it(
    client: TestClient, world: World, database: Database
) -> None:
    ann, ben = ann_and_ben(client, world, ben_last=False)
    merge_id = merge(client, world, ann, ben)
    stored = post(client, world, "b2", "Ben while merged", phone=BEN, email="ben@example.com")
    internal = {CAME_BY, GAINED, REOPENED}
    conv = where(database, "Ben while merged")[1]
    shown = [
        stored["meta"],
        client.get(
            f"/api/v1/conversations/{conv}/messages/{stored['id']}", headers=auth(world.bob)
        ).json()["meta"],
        *(
            m["meta"]
            for m in client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()[
                "messages"
            ]
        ),
    ]
    assert not [m for m in shown if internal & set(m)], shown
    assert '"identity_id"' not in export_text(client, world, ann)
    with database.session(write=False) as db:
        realtime = [
            e.payload
            for e in db.scalars(select(StreamEvent).where(StreamEvent.type == "message.created"))
        ]
        kept = db.get(Message, stored["id"])
        assert kept is not None and kept.meta[CAME_BY] and kept.meta[GAINED]
    assert not [p for p in realtime if internal & set(p.get("meta", {}))], realtime
    undo(client, world, merge_id)
    assert where(database, "Ben while merged")[0] == ben
