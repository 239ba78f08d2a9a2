"""Conversation and message API shapes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rapport.automation.schemas import SkippedAction
from rapport.conversations.copies import MAX_COPIES
from rapport.conversations.models import (
    INTERNAL_META,
    DeliveryStatus,
    Direction,
    MessageKind,
    Priority,
    Status,
)
from rapport.db import Name, Omittable, SomeText, UtcInstant


class AttachmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str
    content_type: str
    size: int


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    conversation_id: str
    inbox_id: str
    direction: Direction
    kind: MessageKind
    sender_type: str
    sender_id: str | None
    text: str
    html: str | None
    external_id: str | None
    status: DeliveryStatus
    error: str | None
    meta: dict[str, Any]
    created_at: datetime
    attachments: list[AttachmentRead] = Field(default_factory=list)

    @field_validator("meta")
    @classmethod
    def _shown(cls, meta: dict[str, Any]) -> dict[str, Any]:
        # Identity ids and the merge undo's bookkeeping are no API client's business: the
        # undo reads them from the database.
        return {k: v for k, v in meta.items() if k not in INTERNAL_META}


class MentionedMember(BaseModel):
    id: str
    name: str
    email: str


class AmbiguousMention(BaseModel):
    """A handle in a note that fits several members: none of them was notified."""

    handle: str
    members: list[MentionedMember]


class NoteRead(MessageRead):
    """A note added: ``mentioned`` are the ids of the members it notified;
    ``ambiguous_mentions`` the handles that fit several members and notified nobody (write
    the full name, as ``@bob.smith``, or the email, as ``@bob@example.com``);
    ``unknown_mentions`` the handles that fit no member who can be mentioned (a typo, a
    viewer, someone who left), which notified nobody either."""

    mentioned: list[str] = Field(default_factory=list)
    ambiguous_mentions: list[AmbiguousMention] = Field(default_factory=list)
    unknown_mentions: list[str] = Field(default_factory=list)


class UploadRead(BaseModel):
    """A file uploaded for a reply or note, or for the first message of a conversation
    not started yet (``customer_id``; no ``conversation_id``): name its ``id`` in
    ``attachment_ids``."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    conversation_id: str | None
    customer_id: str | None = None
    filename: str
    content_type: str
    size: int
    created_at: datetime


class ConversationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    customer_id: str
    inbox_id: str
    subject: str
    status: Status
    priority: Priority
    assignee_id: str | None
    team_id: str | None
    snoozed_until: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    last_activity_at: datetime
    messages_count: int
    created_at: datetime
    merged_into_id: str | None = None
    labels: list[str] = Field(default_factory=list)


class ConversationDetail(ConversationRead):
    messages: list[MessageRead]
    reply_cc: list[str] = Field(
        default_factory=list,
        description="whom a reply by email copies unless told otherwise: those the thread's "
        "latest mail went to or copied, but the customer and the workspace's own addresses "
        "(empty when a reply goes through another channel)",
    )
    guests: dict[str, str] = Field(
        default_factory=dict,
        description="the names of those other than the conversation's customer who wrote "
        "in it (copied on a mail of its thread, answering all), by the ``sender_id`` their "
        "messages keep; each is a customer of their own",
    )


class ReplyInbox(BaseModel):
    """An inbox as ``inbox.updated`` events carry it."""

    id: str
    name: str
    channel: str
    enabled: bool


class ReplyCopies(BaseModel):
    """How a reply would go now, for a composer kept open while the customer writes."""

    by_email: bool = Field(
        description="whether a reply goes by email (through the inbox the customer last "
        "wrote through), and so takes copies"
    )
    cc: list[str] = Field(description="whom it copies unless told otherwise (``reply_cc``)")
    inbox: ReplyInbox = Field(
        description="the inbox a reply goes through now (as ``inbox.updated`` events carry "
        "it): while it is disabled, a reply is refused"
    )


def _copies(what: str) -> Any:
    return Field(
        default=None,
        max_length=MAX_COPIES,
        description=f"{what}, by email only (a message through another channel refuses "
        "them); absent: none, and the thread's copies stay as they were",
    )


class LastMessage(BaseModel):
    """The last message or bot answer, for a conversation's line in a list (whitespace
    folded, at most 140 characters)."""

    model_config = ConfigDict(from_attributes=True)

    text: str
    direction: Direction
    kind: MessageKind


class ConversationListItem(ConversationRead):
    last_message: LastMessage | None = None


class ConversationPage(BaseModel):
    items: list[ConversationListItem]
    next_cursor: str | None


class ReplyIn(BaseModel):
    # May be empty when files are sent.
    text: str = Field(default="", max_length=100_000)
    html: str | None = Field(default=None, max_length=500_000)
    # Another inbox (channel) of the workspace to answer through; when absent, the inbox
    # the customer last wrote through in this conversation (``last_channel``).
    inbox_id: str | None = None
    attachment_ids: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="ids of uploads (`POST /api/v1/conversations/{id}/uploads`) sent with "
        "the reply, in this order",
    )
    cc: list[str] | None = _copies("addresses the mail copies, in its Cc header")
    bcc: list[str] | None = _copies("addresses the mail also goes to, named in no header")


class ConversationStart(BaseModel):
    """A conversation an agent starts with a customer: its first message goes to them
    through the inbox."""

    customer_id: str
    inbox_id: str
    text: SomeText = Field(max_length=100_000)
    html: str | None = Field(default=None, max_length=500_000)
    subject: str = Field(
        default="", max_length=500, description="the email's subject (any channel keeps it)"
    )
    assignee_id: str | None = Field(
        default=None,
        description="a member to give it to; absent: the caller; null: nobody (auto-assignment "
        "offers it, in an inbox that assigns automatically)",
    )
    team_id: str | None = Field(
        default=None,
        description="a team of the workspace; absent: the inbox's team; null: no team",
    )
    status: Literal["open", "pending", "resolved"] = Field(
        default="open",
        description="once the message is queued: open, pending (the customer has the next "
        "move) or resolved (a one-off notice; their answer reopens it)",
    )
    cc: list[str] | None = _copies("addresses the mail copies, in its Cc header")
    bcc: list[str] | None = _copies("addresses the mail also goes to, named in no header")
    attachment_ids: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="ids of uploads made for this customer (`POST "
        "/api/v1/customers/{id}/uploads`), sent with the first message, in this order",
    )


class NoteIn(BaseModel):
    text: str = Field(default="", max_length=100_000)
    attachment_ids: list[str] = Field(
        default_factory=list, max_length=10, description="ids of uploads kept with the note"
    )


class AssignIn(BaseModel):
    """The agent and/or the team: a field left out keeps its value, null clears it."""

    assignee_id: str | None = None
    team_id: str | None = None


class StatusIn(BaseModel):
    status: Status
    snoozed_until: UtcInstant | None = None


class BulkIn(BaseModel):
    """One change applied to many conversations; absent assignee/team fields are kept."""

    ids: list[str] = Field(min_length=1, max_length=100)
    action: Literal["assign", "label", "resolve", "macro"]
    assignee_id: str | None = None
    team_id: str | None = None
    labels: list[str] = Field(default_factory=list, max_length=50)
    macro_id: str | None = Field(
        default=None, description="the macro to run on each (required when action is macro)"
    )


class BulkOut(BaseModel):
    items: list[ConversationRead]
    skipped: dict[str, list[SkippedAction]] = Field(
        default_factory=dict,
        description="action macro: by conversation id, the macro's actions left out there "
        "(what they name has gone); a conversation where all ran is not in it",
    )


class MacroRunOut(BaseModel):
    conversation: ConversationDetail = Field(
        description="the conversation after the run, as GET /api/v1/conversations/{id}"
    )
    skipped: list[SkippedAction] = Field(
        description="the macro's actions left out (what they name has gone since it was "
        "saved); the others ran"
    )


class PriorityIn(BaseModel):
    priority: Priority


class LabelsIn(BaseModel):
    labels: list[str] = Field(min_length=1, max_length=50)


_YEAR_OF_MINUTES = 366 * 24 * 60


_WARN = (
    "business minutes before a due time that its warning comes; 0 is no warning (the breach "
    "at the due time is the one announcement)"
)


class SlaPolicyIn(BaseModel):
    name: Name = Field(max_length=200)
    position: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    # Bounded like every list of ids: PostgreSQL takes 65,535 parameters in a query at most.
    priorities: list[Priority] = Field(default_factory=list, max_length=1_000)
    inbox_ids: list[str] = Field(default_factory=list, max_length=1_000)
    labels: list[str] = Field(default_factory=list, max_length=1_000)
    first_response_minutes: int | None = Field(default=None, ge=1, le=_YEAR_OF_MINUTES)
    next_response_minutes: int | None = Field(default=None, ge=1, le=_YEAR_OF_MINUTES)
    resolution_minutes: int | None = Field(default=None, ge=1, le=_YEAR_OF_MINUTES)
    warn_before_minutes: int = Field(default=15, ge=0, le=_YEAR_OF_MINUTES, description=_WARN)


_NO_TARGET = "null clears it: no target of this kind"


class SlaPolicyPatch(BaseModel):
    """What to change of a policy: the fields given, the others kept (a target set to null
    is no target)."""

    name: Omittable[Name] = Field(default=None, max_length=200)
    position: Omittable[int] = Field(default=None, ge=-1_000_000, le=1_000_000)
    priorities: Omittable[list[Priority]] = Field(default=None, max_length=1_000)
    inbox_ids: Omittable[list[str]] = Field(default=None, max_length=1_000)
    labels: Omittable[list[str]] = Field(default=None, max_length=1_000)
    first_response_minutes: int | None = Field(
        default=None, ge=1, le=_YEAR_OF_MINUTES, description=_NO_TARGET
    )
    next_response_minutes: int | None = Field(
        default=None, ge=1, le=_YEAR_OF_MINUTES, description=_NO_TARGET
    )
    resolution_minutes: int | None = Field(
        default=None, ge=1, le=_YEAR_OF_MINUTES, description=_NO_TARGET
    )
    warn_before_minutes: Omittable[int] = Field(
        default=None, ge=0, le=_YEAR_OF_MINUTES, description=_WARN
    )


class SlaPolicyRead(SlaPolicyIn):
    model_config = ConfigDict(from_attributes=True)

    id: str
    # Shown as stored: rows saved before the input bounds existed may lie beyond them.
    position: int
    priorities: list[Priority]
    inbox_ids: list[str]
    labels: list[str]
    first_response_minutes: int | None
    next_response_minutes: int | None
    resolution_minutes: int | None
    warn_before_minutes: int


class BusinessHoursIn(BaseModel):
    timezone: str = Field(default="UTC", max_length=64)
    hours: dict[str, list[list[str]]] = Field(
        default_factory=dict, description='e.g. {"mon": [["09:00", "17:00"]]}'
    )
    holidays: list[str] = Field(default_factory=list, max_length=1000, description="ISO dates")


class ConversationSlaRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    # Null once the policy is deleted: its clocks stopped, its misses stay on record.
    policy_id: str | None
    state: str
    first_response_due_at: datetime | None
    next_response_due_at: datetime | None
    resolution_due_at: datetime | None
    next_due_at: datetime | None
    # Missed targets stay on record after the clocks stop: the first miss and the count.
    breached_at: datetime | None
    breaches: int
    # Pending or snoozed: the resolution clock waits, with no due time (unless missed
    # already), and this much open (business) time left for when it runs again.
    resolution_paused: bool = False
    resolution_left_seconds: int | None = None


class CannedIn(BaseModel):
    shortcut: Name = Field(max_length=64)
    text: SomeText = Field(max_length=20_000)


class CannedRead(CannedIn):
    model_config = ConfigDict(from_attributes=True)

    id: str


class RenderedOut(BaseModel):
    text: str


class LabelIn(BaseModel):
    name: Name = Field(max_length=100)
    colour: str = Field(default="#e3e6ec", max_length=7)


class LabelUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    name: Name | None = Field(default=None, max_length=100)
    colour: str | None = Field(default=None, max_length=7)


class LabelDeleted(BaseModel):
    saved_views: list[str] = Field(
        description="The saved views that filtered on the label and now filter on no label: "
        "\"view 'VIP'\", \"your own view 'Mine'\", \"Ann's own view 'Mine'\""
    )


class LabelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    colour: str
