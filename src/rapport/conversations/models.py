"""Conversations, their messages, attachments and labels."""

import enum
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Status(enum.StrEnum):
    open = "open"
    pending = "pending"
    snoozed = "snoozed"
    resolved = "resolved"


class Priority(enum.StrEnum):
    none = "none"
    low = "low"
    medium = "medium"
    high = "high"
    urgent = "urgent"


class Direction(enum.StrEnum):
    inbound = "in"
    outbound = "out"


class MessageKind(enum.StrEnum):
    message = "message"
    note = "note"
    activity = "activity"
    bot = "bot"


class DeliveryStatus(enum.StrEnum):
    received = "received"
    queued = "queued"
    sent = "sent"
    delivered = "delivered"
    read = "read"
    failed = "failed"


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_ws_activity", "workspace_id", "last_activity_at", "id"),
        # ``id`` last: the list orders by (last_activity_at, id), so the index alone serves it.
        Index("ix_conversations_ws_status", "workspace_id", "status", "last_activity_at", "id"),
        Index("ix_conversations_ws_assignee", "workspace_id", "assignee_id", "last_activity_at"),
        # Routing: an agent's open and pending conversations, counted in the index alone.
        Index("ix_conversations_ws_assignee_status", "workspace_id", "assignee_id", "status"),
        # And the queue, nobody's open conversations, read in order: the customer who has
        # waited longest first, then those nobody waits on (NULL). Partial: only the
        # conversations in the queue are written to it as messages come in. ``status`` is
        # 'open' throughout, yet a key: matched by the query's equality, it makes this the
        # index SQLite's planner (no statistics) takes, where ix_conversations_ws_waiting,
        # the same keys otherwise, won or lost by the order the two were created in.
        Index(
            "ix_conversations_queue",
            "workspace_id",
            "status",
            "waiting_since",
            "id",
            sqlite_where=text("assignee_id IS NULL AND status = 'open'"),
            postgresql_where=text("assignee_id IS NULL AND status = 'open'"),
        ),
        Index("ix_conversations_customer_inbox", "customer_id", "inbox_id", "last_activity_at"),
        # The inbox's filters and sorts at a million conversations: per inbox (and channel),
        # per priority, and "oldest waiting" each walk their own index in order.
        Index("ix_conversations_ws_inbox", "workspace_id", "inbox_id", "last_activity_at", "id"),
        Index("ix_conversations_ws_priority", "workspace_id", "priority", "last_activity_at", "id"),
        Index("ix_conversations_ws_waiting", "workspace_id", "waiting_since", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[Status] = mapped_column(
        Enum(Status, native_enum=False, length=16), default=Status.open
    )
    priority: Mapped[Priority] = mapped_column(
        Enum(Priority, native_enum=False, length=16), default=Priority.none
    )
    assignee_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), default=None
    )
    # When the current assignee got it: round-robin sends the next one to whoever waited longest.
    assigned_at: Mapped[datetime | None] = mapped_column(default=None)
    snoozed_until: Mapped[datetime | None] = mapped_column(default=None)
    first_response_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_inbound_at: Mapped[datetime | None] = mapped_column(default=None)
    # The customer's first message no person has answered yet: what "oldest waiting" sorts
    # by. Cleared by an agent's reply, a bot answer the customer rated helpful, or resolving;
    # a bot answer or a rule's automatic reply leaves it.
    waiting_since: Mapped[datetime | None] = mapped_column(default=None)
    messages_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when an agent merged this conversation into another: its messages moved there,
    # and the customer's next message on this channel continues there. (No foreign key:
    # both belong to one customer and go together, and SQLite cannot add one to a table
    # without copying it.)
    merged_into_id: Mapped[str | None] = mapped_column(String(32), default=None)


class ConversationLabel(Base):
    __tablename__ = "conversation_labels"
    __table_args__ = (Index("ix_conversation_labels_ws_label", "workspace_id", "label"),)

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(100), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))


class Label(Base):
    """A label the workspace has defined, with its colour (conversations hold its name)."""

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    colour: Mapped[str] = mapped_column(String(7), default="#e3e6ec")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Keys of an inbound message's ``meta`` that ingest writes for undoing a customers' merge
# (customers/merge.py, conversations/merging.py), and for the reply window. Bookkeeping
# read from the database only: never shown by the API or realtime events (``INTERNAL_META``).
#
# The id of the identity it came by (the handle ingest found its sender by; ids stay the
# same through merges). Undoing a merge gives the restored record what came by its own
# handles while it was merged; a message stored before the key existed stays with the
# survivor, as then.
CAME_BY: Final = "identity_id"
# The ids of the identities the message made its sender's (the handles it brought, new or
# proved: an email beside the known phone, the number WhatsApp says they moved to). What
# the restored record's messages brought while merged is theirs again.
GAINED: Final = "identities_gained"
# That it reopened its resolved conversation, and when that had been resolved: handed over
# to its writer's own conversation (their customers' merge undone), the one it left is
# resolved again if nothing else happened.
REOPENED: Final = "reopened"
# Of the activity line ingest writes for that reopening ("Reopened"): the id of the message
# that reopened it. Resolved again, the conversation loses the line with the reopening.
REOPENED_BY: Final = "reopened_by"
# Marked ``False`` at ingest: an inbound message that opens no provider's reply window,
# being an auto-reply but not the customer's word (an out-of-office, a WhatsApp reaction, a
# Meta reaction taken back). What the customer wrote that nothing here answers (Meta's
# standby, a Meta reaction) is left unmarked: it opens Meta's window. Read by the reply
# window's check (conversations/service.py) only: internal too.
OPENS_WINDOW: Final = "opens_window"
INTERNAL_META: Final = frozenset({CAME_BY, GAINED, REOPENED, REOPENED_BY, OPENS_WINDOW})
# Of an outbound message's ``meta``, shown: when each status a provider's report moved it to
# came about ({"delivered": ISO time, "read": ...}), in the provider's time when it says.
STATUS_AT: Final = "status_at"


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Provider retries and API clients re-posting are deduplicated here.
        UniqueConstraint("inbox_id", "external_id"),
        Index("ix_messages_conversation", "conversation_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    direction: Mapped[Direction] = mapped_column(Enum(Direction, native_enum=False, length=8))
    kind: Mapped[MessageKind] = mapped_column(
        Enum(MessageKind, native_enum=False, length=16), default=MessageKind.message
    )
    # customer / user / bot / system; sender_id is a customer or user id.
    sender_type: Mapped[str] = mapped_column(String(16))
    sender_id: Mapped[str | None] = mapped_column(String(32), default=None)
    text: Mapped[str] = mapped_column(Text, default="")
    # Sanitized with nh3 before it is stored.
    html: Mapped[str | None] = mapped_column(Text, default=None)
    external_id: Mapped[str | None] = mapped_column(String(300), default=None)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, native_enum=False, length=16), default=DeliveryStatus.received
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageAddress(Base):
    """An address one of a mail's address lists holds (``addresses.listed``: whom it came
    from, went to, copied, and the copies that bounced or were refused), by a digest of it
    as identities write it (``addresses.key``). Erasure finds the mails left in the
    workspace that list an erased person's address through these rows (by the index on
    workspace and key), instead of reading every mail the workspace keeps; kept as the lists
    are written (ingest's insert, a flush that stores or changes a message's lists), and
    gone with the message (its foreign key). Written for mails alone: a message that lists
    no address has none. Normalizing addresses otherwise means writing these keys again."""

    __tablename__ = "message_addresses"
    __table_args__ = (Index("ix_message_addresses_key", "workspace_id", "address_key"),)

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    address_key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))


class ConversationGuest(Base):
    """Someone other than the conversation's customer who wrote in it: one the customer's
    mail copied, answering all (their own customer record; their messages say them as
    sender). Found by them: what they wrote in others' conversations is theirs to export
    and erase, and follows them into a merge. No uniqueness: a merge may bring the same
    person here twice, which changes nothing."""

    __tablename__ = "conversation_guests"
    __table_args__ = (
        Index("ix_conversation_guests_customer", "customer_id"),
        Index("ix_conversation_guests_conversation", "conversation_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessagePart(Base):
    """One provider message of a message sent as several (a long SMS, the text and then each
    file): the provider reports on each, and the message's delivery follows them all."""

    __tablename__ = "message_parts"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    external_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, native_enum=False, length=16), default=DeliveryStatus.sent
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)


class StoredFile:
    """The columns of a file kept in attachment storage (content-addressed by ``sha256``):
    an attachment of a message, and an upload not sent yet."""

    filename: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Indexed: a file is deleted only once no row refers to its key.
    storage_key: Mapped[str] = mapped_column(String(500), index=True)


class Attachment(StoredFile, Base):
    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Upload(StoredFile, Base):
    """A file an agent uploaded for a reply or note not sent yet, in a conversation, or for
    the first message of one they start with a customer (``customer_id``, no conversation
    yet). Sending it moves it to an ``Attachment`` of the message; uploads never used are
    pruned after a day."""

    __tablename__ = "uploads"
    __table_args__ = (Index("ix_uploads_ws_created", "workspace_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True, default=None
    )
    customer_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True, default=None
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SlaPolicy(Base):
    """Response and resolution targets, in business minutes, for matching conversations."""

    __tablename__ = "sla_policies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    # Lower positions are tried first; the first policy whose conditions match applies.
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Conditions: any of these priorities / inboxes / labels (empty = any).
    priorities: Mapped[list[str]] = mapped_column(default=list)
    inbox_ids: Mapped[list[str]] = mapped_column(default=list)
    labels: Mapped[list[str]] = mapped_column(default=list)
    first_response_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    next_response_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    resolution_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    # A warning is raised this many business minutes before a target is missed.
    warn_before_minutes: Mapped[int] = mapped_column(Integer, default=15)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SlaState(enum.StrEnum):
    none = "none"
    ok = "ok"
    warning = "warning"
    breached = "breached"


class ConversationSla(Base):
    """A conversation's due times under its policy, and what was announced about them."""

    __tablename__ = "conversation_slas"
    __table_args__ = (
        Index("ix_conversation_slas_due", "workspace_id", "next_due_at"),
        Index("ix_conversation_slas_state", "workspace_id", "state", "next_due_at"),
        # Deleting a policy finds its conversations' records (and the foreign key's
        # SET NULL does) without walking every record of every workspace.
        Index("ix_conversation_slas_policy", "policy_id"),
    )

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # Deleting its policy stops the clocks and leaves the record (``sla.delete_policy``).
    policy_id: Mapped[str | None] = mapped_column(
        ForeignKey("sla_policies.id", ondelete="SET NULL"), default=None
    )
    first_response_due_at: Mapped[datetime | None] = mapped_column(default=None)
    next_response_due_at: Mapped[datetime | None] = mapped_column(default=None)
    resolution_due_at: Mapped[datetime | None] = mapped_column(default=None)
    # The resolution clock runs only while the conversation is open: when its current run
    # started (null while paused or stopped), and the open seconds of the runs before.
    resolution_started_at: Mapped[datetime | None] = mapped_column(default=None)
    resolution_used_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # The earliest open target: what the inbox sorts by and the checker looks at.
    next_due_at: Mapped[datetime | None] = mapped_column(default=None)
    state: Mapped[SlaState] = mapped_column(
        Enum(SlaState, native_enum=False, length=16), default=SlaState.ok
    )
    # Targets already warned about or breached, so each event is emitted once.
    announced: Mapped[list[str]] = mapped_column(default=list)
    # History for reports, kept when the clocks stop or start again: when the first target
    # was missed, and how many were. ``state`` is live: it describes the running clocks.
    breached_at: Mapped[datetime | None] = mapped_column(default=None)
    breaches: Mapped[int] = mapped_column(Integer, default=0)
    # The version of the workspace's business calendar (``BusinessCalendar.version``) its
    # running clocks were last timed under as a whole: lower, they are timed anew.
    calendar_version: Mapped[int] = mapped_column(Integer, default=0)


class CannedResponse(Base):
    """A saved reply agents insert by typing ``/shortcut``; its text is a sandboxed template."""

    __tablename__ = "canned_responses"
    __table_args__ = (UniqueConstraint("workspace_id", "shortcut"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    shortcut: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReadMarker(Base):
    """When an agent last read a conversation: what makes it unread for them."""

    __tablename__ = "conversation_reads"
    # The key leads with the member: a conversation deleted found its markers by reading
    # every member's.
    __table_args__ = (Index("ix_conversation_reads_conversation", "conversation_id"),)

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    read_at: Mapped[datetime] = mapped_column(default=utcnow)
