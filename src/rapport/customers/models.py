"""Customers, their identities (handles) and their timeline events."""

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class IdentityKind(enum.StrEnum):
    email = "email"
    phone = "phone"
    whatsapp = "whatsapp"
    messenger = "messenger"
    instagram = "instagram"
    telegram = "telegram"
    webchat = "webchat"
    external = "external"


# Ids a Messenger page or an Instagram account issues for itself alone (Meta's page-scoped
# ids): the same person has another at each page, and Meta refuses a send through one page
# to another's. Each such identity records the inbox that issued it (``Identity.inbox_id``).
# Meta's ids are unique across pages, so one id is one identity all the same.
PAGE_SCOPED = frozenset({IdentityKind.messenger, IdentityKind.instagram})


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_ws_last_seen", "workspace_id", "last_seen_at"),
        # The records merged into one (``service.person_ids``, and the database's own SET
        # NULL when one is deleted): few customers were ever merged.
        Index(
            "ix_customers_merged_into",
            "merged_into_id",
            sqlite_where=text("merged_into_id IS NOT NULL"),
            postgresql_where=text("merged_into_id IS NOT NULL"),
        ),
        # PostgreSQL: the attribute filter's JSONB containment (``service.attribute_is``),
        # where a rare value walked every customer. Not on SQLite, whose filter reads each
        # row's JSON and cannot use an index of it.
        Index(
            "ix_customers_attributes",
            "attributes",
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(300), default="")
    # Display copies of the primary handles; the identities table is the truth.
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    phone: Mapped[str | None] = mapped_column(String(32), default=None)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Set when this customer was merged into another: kept (so a merge can be undone),
    # hidden from lists and searches.
    merged_into_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), default=None
    )
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("workspace_id", "kind", "value"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[IdentityKind] = mapped_column(Enum(IdentityKind, native_enum=False, length=16))
    # Normalized: see customers/identity.py.
    value: Mapped[str] = mapped_column(String(320))
    # Proven by the channel (the customer wrote from it), not merely typed into a form.
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # For a page-scoped kind (``PAGE_SCOPED``): the inbox (the page or account) that issued
    # it, the only one a send to it can go through; None where unknown (typed in, imported,
    # stored before this was recorded) and for every other kind.
    # Indexed: deleting an inbox sets it NULL, which would otherwise read every identity.
    inbox_id: Mapped[str | None] = mapped_column(
        ForeignKey("inboxes.id", ondelete="SET NULL"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """One entry of a customer's timeline that is not a message: a page view, an order..."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_customer_time", "customer_id", "occurred_at"),
        # A tracking library's retry carries the same messageId: stored once per source.
        UniqueConstraint("source_id", "message_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(200))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(64), default="api")
    source_id: Mapped[str | None] = mapped_column(String(32), default=None)
    message_id: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerMerge(Base):
    """One merge, with everything it moved, so that it can be undone exactly."""

    __tablename__ = "customer_merges"
    __table_args__ = (
        Index("ix_customer_merges_survivor", "survivor_id", "created_at"),
        Index("ix_customer_merges_merged", "merged_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    survivor_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    merged_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    # ids of identities, conversations and events moved; the survivor's fields before.
    moved: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(String(500), default="")
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(default=None)


class SuggestionStatus(enum.StrEnum):
    pending = "pending"
    merged = "merged"
    dismissed = "dismissed"


class MergeSuggestion(Base):
    """Two customers that duplicate detection believes are one person, until someone decides.

    The pair is stored in a fixed order (``left_id < right_id``), so a later scan finds the
    same row: a dismissed pair stays dismissed.
    """

    __tablename__ = "merge_suggestions"
    __table_args__ = (
        UniqueConstraint("workspace_id", "left_id", "right_id"),
        Index("ix_merge_suggestions_ws_status", "workspace_id", "status", "probability"),
        Index("ix_merge_suggestions_right", "right_id"),
        # The unique key's left_id comes after the workspace: a customer deleted found its
        # suggestions by reading them all.
        Index("ix_merge_suggestions_left", "left_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    left_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    right_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    probability: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[SuggestionStatus] = mapped_column(
        Enum(SuggestionStatus, native_enum=False, length=16), default=SuggestionStatus.pending
    )
    merge_id: Mapped[str | None] = mapped_column(String(32), default=None)
    decided_by_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AttributeType(enum.StrEnum):
    text = "text"
    number = "number"
    date = "date"
    boolean = "boolean"
    list = "list"


class AttributeDefinition(Base):
    """A custom attribute the workspace defines, so its values have one type everywhere."""

    __tablename__ = "attribute_definitions"
    __table_args__ = (UniqueConstraint("workspace_id", "key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200), default="")
    type: Mapped[AttributeType] = mapped_column(Enum(AttributeType, native_enum=False, length=16))
    # For ``list``: the values allowed (empty: any).
    options: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerTag(Base):
    __tablename__ = "customer_tags"
    __table_args__ = (Index("ix_customer_tags_ws_tag", "workspace_id", "tag"),)

    customer_id: Mapped[str] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentChannel(enum.StrEnum):
    email = "email"
    sms = "sms"
    whatsapp = "whatsapp"
    phone = "phone"
    push = "push"


class Consent(Base):
    """One recorded consent decision; the newest per channel and purpose is in force.

    Never updated or deleted in place: the history is the proof of when and how a customer
    agreed or withdrew.
    """

    __tablename__ = "consents"
    __table_args__ = (
        Index("ix_consents_customer", "customer_id", "channel", "purpose", "recorded_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    channel: Mapped[ConsentChannel] = mapped_column(
        Enum(ConsentChannel, native_enum=False, length=16)
    )
    purpose: Mapped[str] = mapped_column(String(64))  # marketing, transactional, surveys...
    granted: Mapped[bool] = mapped_column(Boolean)
    # Where it was given: "web form /pricing", "widget", "import", "agent", "api"...
    source: Mapped[str] = mapped_column(String(200), default="")
    recorded_by_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerNote(Base):
    """What an agent wrote down about a customer, for colleagues (never sent to them): "VIP:
    call before shipping", "prefers French". Plain text; it follows the customer into a
    merge, goes with them when they are erased, and is in their export."""

    __tablename__ = "customer_notes"
    __table_args__ = (Index("ix_customer_notes_customer", "customer_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    # Kept when its author leaves the workspace (the note is the workspace's).
    author_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
