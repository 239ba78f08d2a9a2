"""Deterministic linking at ingest: strangers stay strangers, typed handles never join."""

from sqlalchemy.orm import Session

from rapport.config import Settings
from rapport.customers.identity import Handle, handle
from rapport.customers.models import IdentityKind
from rapport.db import Database
from rapport.ingest import InboundMessage, IngestResult, receive
from tests.factories import World


def arrive(
    db: Session, settings: Settings, inbox_id: str, text: str, *handles: Handle
) -> IngestResult:
    """A message from these handles, stored in ``db``'s transaction (its text its id)."""
    msg = InboundMessage(inbox_id=inbox_id, external_id=text, text=text, handles=[*handles])
    return receive(db, msg, settings=settings)


def test_a_newcomer_whose_handles_match_nothing_is_a_new_customer(
    world: World, database: Database, settings: Settings
) -> None:
    inbox = world.acme.inbox
    assert inbox is not None
    with database.session() as db:
        known = arrive(
            db, settings, inbox.id, "hello", handle(IdentityKind.email, "known@example.com")
        )
        newcomer = arrive(
            db, settings, inbox.id, "first time", handle(IdentityKind.email, "new@example.com")
        )
        assert newcomer.customer.id != known.customer.id
        assert newcomer.customer.email == "new@example.com"


def test_an_unverified_chat_visitor_typing_a_known_email_is_not_silently_merged(
    world: World, database: Database, settings: Settings
) -> None:
    inbox = world.acme.inbox
    assert inbox is not None
    with database.session() as db:
        known = arrive(
            db, settings, inbox.id, "by email", handle(IdentityKind.email, "zoe@example.com")
        )
        visitor = arrive(
            db,
            settings,
            inbox.id,
            "I am Zoe, honest",
            handle(IdentityKind.webchat, "visitor-42"),
            handle(IdentityKind.email, "zoe@example.com", verified=False),
        )
        assert visitor.customer.id != known.customer.id
        assert visitor.conversation.customer_id != known.customer.id


def test_a_typed_email_claimed_by_its_proven_owner_moves_with_its_display_copy(
    world: World, database: Database, settings: Settings
) -> None:
    # The handle moved to the customer who proved it, but the copy shown and searched did
    # not: the visitor kept showing an address no longer theirs, its owner showed none.
    inbox = world.acme.inbox
    assert inbox is not None
    with database.session() as db:
        visitor = arrive(
            db,
            settings,
            inbox.id,
            "I am Ann",
            handle(IdentityKind.webchat, "visitor-43"),
            handle(IdentityKind.email, "ann@example.com", verified=False),
        )
        assert visitor.customer.email == "ann@example.com"
        owner = arrive(
            db, settings, inbox.id, "Ann, by email", handle(IdentityKind.email, "ann@example.com")
        )
        assert owner.customer.id != visitor.customer.id
        db.refresh(visitor.customer)
        assert owner.customer.email == "ann@example.com"
        assert visitor.customer.email is None
