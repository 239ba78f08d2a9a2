"""The index of which mails list which address follows the lists as they are written:
by ingest's own insert, by any flush that stores a message or changes its lists, and
never for a message that lists no address."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session

from rapport.config import Settings
from rapport.conversations import addresses
from rapport.conversations import service as conversations
from rapport.conversations.models import Direction, Message, MessageAddress, MessageKind
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from tests.factories import World


@contextmanager
def statements(database: Database) -> Iterator[list[str]]:
    """The SQL run meanwhile."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def keys_of(db: Session, message_id: str) -> set[int]:
    return set(
        db.scalars(
            select(MessageAddress.address_key).where(MessageAddress.message_id == message_id)
        )
    )


def keys(*written: str) -> set[int]:
    return {addresses.key(a) for a in written}


def test_a_mails_addresses_are_indexed_as_it_is_stored_and_as_its_lists_change(
    database: Database, settings: Settings, world: World
) -> None:
    assert world.acme.inbox is not None
    with database.session() as db:
        # Ingest's own insert: whom it came from, went to and copied, as identities write
        # them (the domain lower-cased, the name left out).
        mail = receive(
            db,
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="mail-1",
                handles=[handle(IdentityKind.email, "dana@example.org")],
                text="Our invoice is wrong.",
                meta={
                    "email": {
                        "from": "dana@example.org",
                        "to": ["support@acme.test"],
                        "cc": ["Walter@Example.ORG"],
                    }
                },
            ),
            settings=settings,
        )
        mailed = mail.message.id
        assert keys_of(db, mailed) == keys(
            "dana@example.org", "support@acme.test", "walter@example.org"
        )
        # A reply through the ORM that copies someone (Cc and Bcc).
        reply = conversations.add_message(
            db,
            conversation=mail.conversation,
            direction=Direction.outbound,
            kind=MessageKind.message,
            sender_type="user",
            sender_id=world.acme.users["bob"].id,
            text="Corrected.",
            meta={"email": {"cc": ["walter@example.org"], "bcc": ["kim@example.org"]}},
        )
        assert keys_of(db, reply.id) == keys("walter@example.org", "kim@example.org")

    with database.session() as db, statements(database) as seen:
        reply = db.get_one(Message, reply.id)
        # A change of anything but its lists writes nothing to the index.
        reply.meta = {**reply.meta, "triage": {"category": "billing"}}
        db.flush()
        assert not [s for s in seen if "message_addresses" in s]
        # A copy refused (``delivery.refused_copies``) and one bounced are listed too.
        reply.meta = {
            **reply.meta,
            "email": {**reply.meta["email"], "bounced": ["ana@example.org"]},
            "delivery": {"refused_copies": ["zed@example.org"]},
        }
        db.flush()
        assert keys_of(db, reply.id) == keys(
            "walter@example.org", "kim@example.org", "ana@example.org", "zed@example.org"
        )
        # Taken out of the lists, out of the index.
        reply.meta = addresses.without(reply.meta, {"walter@example.org", "zed@example.org"})
        db.flush()
        assert keys_of(db, reply.id) == keys("kim@example.org", "ana@example.org")

    with database.session() as db:
        db.execute(delete(Message).where(Message.id.in_([mailed, reply.id])))
        assert db.scalars(select(MessageAddress)).all() == []  # gone with their mails


def test_a_message_that_lists_no_address_costs_the_index_nothing(
    database: Database, settings: Settings, world: World
) -> None:
    assert world.acme.inbox is not None
    with database.session() as db, statements(database) as seen:
        said = receive(
            db,
            InboundMessage(
                inbox_id=world.acme.inbox.id,
                external_id="chat-1",
                handles=[handle(IdentityKind.phone, "+14155550100")],
                text="Where is my order?",
            ),
            settings=settings,
        )
        conversations.add_message(
            db,
            conversation=said.conversation,
            direction=Direction.outbound,
            kind=MessageKind.message,
            sender_type="user",
            sender_id=world.acme.users["bob"].id,
            text="On its way.",
        )
    assert seen
    assert not [s for s in seen if "message_addresses" in s]
    with database.session(write=False) as db:
        assert db.scalars(select(MessageAddress)).all() == []
