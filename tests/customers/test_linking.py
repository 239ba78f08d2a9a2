"""Deterministic linking at ingest: strangers stay strangers, typed handles never join."""

from rapport.config import Settings
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database
from rapport.ingest import InboundMessage, receive
from tests.factories import World


def test_a_newcomer_whose_handles_match_nothing_is_a_new_customer(
    world: World, database: Database, settings: Settings
) -> None:
    inbox = world.acme.inbox
    assert inbox is not None
    with database.session() as db:
        known = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="k1",
                text="hello",
                handles=[handle(IdentityKind.email, "known@example.com")],
            ),
            settings=settings,
        )
        newcomer = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="n1",
                text="first time",
                handles=[handle(IdentityKind.email, "new@example.com")],
            ),
            settings=settings,
        )
        assert newcomer.customer.id != known.customer.id
        assert newcomer.customer.email == "new@example.com"


def test_an_unverified_chat_visitor_typing_a_known_email_is_not_silently_merged(
    world: World, database: Database, settings: Settings
) -> None:
    inbox = world.acme.inbox
    assert inbox is not None
    with database.session() as db:
        known = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="e1",
                text="by email",
                handles=[handle(IdentityKind.email, "zoe@example.com")],
            ),
            settings=settings,
        )
        visitor = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="c1",
                text="I am Zoe, honest",
                handles=[
                    handle(IdentityKind.webchat, "visitor-42"),
                    handle(IdentityKind.email, "zoe@example.com", verified=False),
                ],
            ),
            settings=settings,
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
        visitor = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="c2",
                text="I am Ann",
                handles=[
                    handle(IdentityKind.webchat, "visitor-43"),
                    handle(IdentityKind.email, "ann@example.com", verified=False),
                ],
            ),
            settings=settings,
        )
        assert visitor.customer.email == "ann@example.com"
        owner = receive(
            db,
            InboundMessage(
                inbox_id=inbox.id,
                external_id="e2",
                text="Ann, by email",
                handles=[handle(IdentityKind.email, "ann@example.com")],
            ),
            settings=settings,
        )
        assert owner.customer.id != visitor.customer.id
        db.refresh(visitor.customer)
        assert owner.customer.email == "ann@example.com"
        assert visitor.customer.email is None
