"""Conversations: threading, messages, replies, notes, assignment, status and labels."""

import enum
import functools
import hashlib
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypedDict, Unpack, cast

from sqlalchemy import (
    ScalarSelect,
    Select,
    and_,
    delete,
    exc,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, aliased

from rapport import pagination
from rapport.auth.models import Membership, Role, Team, User
from rapport.automation import service as automation
from rapport.bus import get_bus
from rapport.cache import TtlCache
from rapport.channels import base as channels
from rapport.channels.models import Inbox
from rapport.conversations import addresses as _addresses  # noqa: F401  (its flush hook)
from rapport.conversations import copies, files, labels, routing, sla
from rapport.conversations.models import (
    OPENS_WINDOW,
    STATUS_AT,
    Attachment,
    Conversation,
    ConversationGuest,
    ConversationLabel,
    ConversationSla,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
    MessagePart,
    Priority,
    ReadMarker,
    SlaState,
    Status,
    Upload,
)
from rapport.customers import identity, profile
from rapport.customers import service as customers
from rapport.customers.models import Consent, Customer, Identity, IdentityKind
from rapport.db import hold, lock_row, utcnow
from rapport.jobs.service import enqueue
from rapport.notifications import service as notifications
from rapport.problems import Invalid, NotFound, Problem, Unsendable
from rapport.realtime.service import emit
from rapport.sanitize import Images, clean_html
from rapport.scoped import get_scoped
from rapport.search import Hit, snippet
from rapport.workspaces.models import Workspace

log = logging.getLogger(__name__)


def get(db: Session, *, workspace_id: str, conversation_id: str) -> Conversation:
    """The conversation with this id in this workspace, or a 404 problem."""
    return get_scoped(
        db, Conversation, conversation_id, workspace_id=workspace_id, name="conversation"
    )


class MergedAway(Problem):
    """A write to a conversation merged into another: its messages went there, and so does
    every reply, note and change (the emptied one took them, shown nowhere)."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(
            409,
            "conversation-merged",
            f"this conversation was merged into {conversation.merged_into_id}: nothing was "
            "changed; write there",
            merged_into_id=conversation.merged_into_id,
        )


def get_writable(db: Session, *, workspace_id: str, conversation_id: str) -> Conversation:
    """The conversation, as ``get`` finds it, to write in or change: a 409 problem naming
    the one it was merged into (``merged_into_id``) when it was. Held until the transaction
    ends (a merge holds both of its conversations too): a reply that read it just before a
    merge committed was stored in the emptied conversation."""
    conversation = get(db, workspace_id=workspace_id, conversation_id=conversation_id)
    hold(db, Conversation, conversation.id)
    writable(conversation)
    return conversation


def writable(conversation: Conversation) -> None:
    """Refuse a write to a conversation merged into another (``MergedAway``)."""
    if conversation.merged_into_id is not None:
        raise MergedAway(conversation)


def labels_of(db: Session, ids: list[str]) -> dict[str, list[str]]:
    """Labels of many conversations in one query."""
    out: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        rows = db.execute(
            select(ConversationLabel.conversation_id, ConversationLabel.label)
            .where(ConversationLabel.conversation_id.in_(ids))
            .order_by(ConversationLabel.label)
        )
        for cid, label in rows:
            out[cid].append(label)
    return out


@dataclass(frozen=True)
class Preview:
    """The last thing said in a conversation, for its line in the inbox list."""

    text: str
    direction: Direction
    kind: MessageKind
    # Of a message a search found: the text around what matched, each matching word
    # marked (search.snippet), in place of the line's start.
    marked: tuple[tuple[str, bool], ...] = ()


PREVIEW_CHARS: Final = 140


def previews_of(db: Session, *, workspace_id: str, ids: list[str]) -> dict[str, Preview]:
    """The last message (or bot answer) of many conversations in one query: each found
    through the conversation's own index of messages, newest first."""
    if not ids:
        return {}
    last = (
        select(Message.id)
        .where(
            Message.conversation_id == Conversation.id,
            Message.kind.in_((MessageKind.message, MessageKind.bot)),
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )
    which = select(last).where(Conversation.workspace_id == workspace_id, Conversation.id.in_(ids))
    return _previews(db, workspace_id=workspace_id, message_ids=which)


def counts_of_customers(db: Session, *, workspace_id: str, ids: list[str]) -> dict[str, int]:
    """How many conversations each of these customers has (none: not in the answer)."""
    rows = db.execute(
        select(Conversation.customer_id, func.count())
        .where(Conversation.workspace_id == workspace_id, Conversation.customer_id.in_(ids))
        .group_by(Conversation.customer_id)
    )
    return {row[0]: row[1] for row in rows}


def previews_of_hits(hits: Mapping[str, Hit], found_by: str) -> dict[str, Preview]:
    """The messages a search for ``found_by`` matched (by conversation) as the lines of
    their conversations: the text around what matched, each matching word marked."""
    out = {}
    for conversation_id, hit in hits.items():
        marked = tuple(snippet(hit.text, found_by, PREVIEW_CHARS))
        line = "".join(piece for piece, _ in marked)
        # Read as text, not through the ORM: the columns hold the members' names.
        out[conversation_id] = Preview(
            line, Direction[hit.direction], MessageKind[hit.kind], marked
        )
    return out


def _previews(db: Session, *, workspace_id: str, message_ids: Any) -> dict[str, Preview]:
    rows = db.execute(
        select(Message.conversation_id, Message.text, Message.direction, Message.kind).where(
            Message.workspace_id == workspace_id, Message.id.in_(message_ids)
        )
    )
    out = {}
    for conversation_id, text, direction, kind in rows:
        line = " ".join(text.split())
        if len(line) > PREVIEW_CHARS:
            line = line[: PREVIEW_CHARS - 1].rstrip() + "…"
        out[conversation_id] = Preview(line, direction, kind)
    return out


class Sort(enum.StrEnum):
    """Orders of the inbox list; each walks an index, so a page costs the same at any depth."""

    newest = "newest"
    # The customer's first unanswered message, oldest first: only conversations waiting.
    waiting = "waiting"
    # The earliest open SLA target first: only conversations with a due time.
    sla_due = "sla_due"


class Filters(TypedDict, total=False):
    """What the inbox list can be narrowed and ordered by (``search``, ``counts``)."""

    status: Status | None
    assignee_id: str | None
    unassigned: bool
    team_id: str | None
    inbox_id: str | None
    label: str | None
    customer_id: str | None
    channel: str | None
    priority: Priority | None
    sla_state: SlaState | None
    active_from: datetime | None
    active_until: datetime | None
    sort: Sort


def search(
    db: Session,
    *,
    workspace_id: str,
    cursor: str | None = None,
    limit: int = 25,
    **filters: Unpack[Filters],
) -> tuple[list[Conversation], str | None]:
    """Conversations matching the filters, in the chosen order (newest activity first)."""
    limit = pagination.clamp(limit)
    sort = filters.get("sort", Sort.newest)
    stmt = _matching(db, workspace_id=workspace_id, **filters)
    after = pagination.decode(cursor)
    key: Any
    if sort == Sort.waiting:
        if after:
            stmt = stmt.where(tuple_(Conversation.waiting_since, Conversation.id) > after)
        stmt = stmt.order_by(Conversation.waiting_since, Conversation.id)
        key = lambda c: (c.waiting_since, c.id)  # noqa: E731
    elif sort == Sort.sla_due:
        if after:
            stmt = stmt.where(
                tuple_(ConversationSla.next_due_at, ConversationSla.conversation_id) > after
            )
        stmt = stmt.order_by(ConversationSla.next_due_at, ConversationSla.conversation_id)
        with_due = stmt.add_columns(ConversationSla.next_due_at)
        rows = [(c, due) for c, due in db.execute(with_due.limit(limit + 1))]
        page, nxt = pagination.page_of(rows, limit, lambda r: (r[1], r[0].id))
        return [c for c, _ in page], nxt
    else:
        if after:
            stmt = stmt.where(tuple_(Conversation.last_activity_at, Conversation.id) < after)
        stmt = stmt.order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
        key = lambda c: (c.last_activity_at, c.id)  # noqa: E731
    rows = list(db.scalars(stmt.limit(limit + 1)))
    return pagination.page_of(rows, limit, key)


# Saved views' counts stop here, as the unread counts do: the sidebar shows "99+" beyond it.
COUNT_LIMIT: Final = 100
# What one view's count may cost SQLite, in steps of its virtual machine. In no order,
# SQLite reads the index of the filter it deems narrowest until COUNT_LIMIT rows meet the
# others too: the rows read depend on how rare those are, not on the workspace's size. 900
# steps for most views (an index, 100 entries); 1,500 for "SLA breached" (where its list,
# sorted by activity, reads 18,200); 9,500 for an agent's waiting ones; 26,000-76,000 where
# rare filters combine (urgent on WhatsApp; urgent among the open by due time: 34 ms at
# 200,000 conversations); every row of the workspace for a view listing fewer than
# COUNT_LIMIT of many. At a million conversations, pages not all in memory, 30,000 steps
# cost 15 ms (p50, a loaded machine). Past the budget, a view shows no number rather than
# cost that.
COUNT_BUDGET: Final = 10_000
COUNT_STEPS: Final = 1_000  # how often SQLite asks whether the budget is spent
# What one view's count may take PostgreSQL, which has no step budget: a statement timeout.
# A count of up to COUNT_LIMIT rows read from an index is a millisecond or so (SQLite's
# budget stops one at a few ms; PostgreSQL's not measured at scale). Time, unlike steps,
# grows on a loaded machine or with pages read from disk: 50 ms leaves tens of times a
# normal count for that, stops only a view whose rows lie far apart, and keeps a
# refresh's worst case (every view timed out) bounded by the number of views.
COUNT_TIMEOUT_MS: Final = 50
# Counts are kept a few seconds, by the list they count (a workspace's shared views are
# one list for every member; Mine is each member's own): many sidebars open cost one count
# per list and interval, and a count a few seconds old is as good as exact beside a list.
_COUNTS: TtlCache[tuple[Any, ...], int | None] = TtlCache(
    ttl=5.0, name="saved_view_counts", max_items=10_000
)


def counts(
    db: Session, *, workspace_id: str, each: Mapping[str, Mapping[str, Any]]
) -> dict[str, int | None]:
    """How many conversations each of several lists holds (``each``: a name to the filters
    ``search`` takes, its sort included, which leaves some out), counted up to
    ``COUNT_LIMIT``: a count equal to it means that many or more; ``None`` where counting
    would cost more than ``COUNT_BUDGET`` (SQLite) or ``COUNT_TIMEOUT_MS`` (PostgreSQL).
    Each in a statement of its own, in no order: SQLite reads the narrowest filter's index.
    Kept 5 seconds."""
    return {
        name: _COUNTS.get(
            (workspace_id, *sorted(filters.items())),
            functools.partial(_count, db, workspace_id, filters),
        )
        for name, filters in each.items()
    }


def _count(db: Session, workspace_id: str, filters: Mapping[str, Any]) -> int | None:
    """One list's count, up to ``COUNT_LIMIT``, or None once SQLite has spent
    ``COUNT_BUDGET`` steps on it (the progress handler stops the statement) or PostgreSQL
    ``COUNT_TIMEOUT_MS`` (its statement timeout does)."""
    listed = _matching(db, workspace_id=workspace_id, **filters)
    stmt = select(func.count()).select_from(
        listed.with_only_columns(Conversation.id).limit(COUNT_LIMIT).subquery()
    )
    if db.get_bind().dialect.name == "postgresql":
        return _count_in_time(db, stmt)
    raw = cast(sqlite3.Connection, db.connection().connection.dbapi_connection)
    steps = iter(range(COUNT_BUDGET // COUNT_STEPS))
    raw.set_progress_handler(lambda: next(steps, None) is None, COUNT_STEPS)
    try:
        return int(db.scalar(stmt) or 0)
    except exc.OperationalError as e:
        if "interrupted" not in str(e.orig):
            raise
        return None
    finally:
        raw.set_progress_handler(None, 0)


def _count_in_time(db: Session, stmt: Select[int]) -> int | None:
    """``stmt``'s count on PostgreSQL, or None once it has run ``COUNT_TIMEOUT_MS``.

    In a savepoint of the connection (the session's would first write what it holds),
    rolled back whatever happened: a cancelled statement leaves the transaction usable
    from there, for the other views and the rest of the request, and the timeout, set for
    the transaction alone, goes back to what it was with the savepoint (the count wrote
    nothing to keep)."""
    conn = db.connection()
    nested = conn.begin_nested()
    try:
        conn.execute(select(func.set_config("statement_timeout", f"{COUNT_TIMEOUT_MS}ms", True)))
        return int(conn.scalar(stmt) or 0)
    except exc.DBAPIError as e:
        if getattr(e.orig, "sqlstate", None) != "57014":  # query_canceled
            raise
        return None
    finally:
        nested.rollback()


def _matching(db: Session, *, workspace_id: str, **filters: Unpack[Filters]) -> Select[Any]:
    """The conversations ``search`` lists with these filters, in no order: those the sort
    leaves out (not waiting, no due time) left out here too, so a count is of the list."""
    status, assignee_id = filters.get("status"), filters.get("assignee_id")
    team_id, inbox_id, label = filters.get("team_id"), filters.get("inbox_id"), filters.get("label")
    channel, priority = filters.get("channel"), filters.get("priority")
    customer_id, sla_state = filters.get("customer_id"), filters.get("sla_state")
    active_from, active_until = filters.get("active_from"), filters.get("active_until")
    sort = filters.get("sort", Sort.newest)
    stmt = select(Conversation).where(Conversation.workspace_id == workspace_id)
    if status is not None:
        stmt = stmt.where(Conversation.status == status)
    if filters.get("unassigned"):
        stmt = stmt.where(Conversation.assignee_id.is_(None))
    elif assignee_id is not None:
        stmt = stmt.where(Conversation.assignee_id == assignee_id)
    if team_id is not None:
        stmt = stmt.where(Conversation.team_id == team_id)
    if inbox_id is not None:
        stmt = stmt.where(Conversation.inbox_id == inbox_id)
    if channel is not None:
        # A handful of inboxes per channel: an IN list the inbox index serves directly.
        ids = list(
            db.scalars(
                select(Inbox.id).where(Inbox.workspace_id == workspace_id, Inbox.channel == channel)
            )
        )
        stmt = stmt.where(Conversation.inbox_id.in_(ids or [""]))
    if priority is not None:
        stmt = stmt.where(Conversation.priority == priority)
    if customer_id is not None:
        stmt = stmt.where(Conversation.customer_id == customer_id)
    if active_from is not None:
        stmt = stmt.where(Conversation.last_activity_at >= active_from)
    if active_until is not None:
        stmt = stmt.where(Conversation.last_activity_at < active_until)
    if label is not None:
        stmt = stmt.where(
            Conversation.id.in_(
                select(ConversationLabel.conversation_id).where(
                    ConversationLabel.workspace_id == workspace_id,
                    ConversationLabel.label == labels.clean(label),  # as conversations keep it
                )
            )
        )
    if sla_state == SlaState.none:
        # No SLA: no policy ever applied (no record) or its policy was deleted (state
        # none). Not a join: the chosen order still walks its own index, one key lookup
        # per conversation.
        running = aliased(ConversationSla)  # the sla_due sort may join the table too
        stmt = stmt.where(
            ~select(running.conversation_id)
            .where(
                running.conversation_id == Conversation.id,
                running.state != SlaState.none,
            )
            .correlate(Conversation)
            .exists()
        )
    if (sla_state is not None and sla_state != SlaState.none) or sort == Sort.sla_due:
        stmt = stmt.join(ConversationSla, ConversationSla.conversation_id == Conversation.id)
        stmt = stmt.where(ConversationSla.workspace_id == workspace_id)
        if sla_state is not None and sla_state != SlaState.none:
            stmt = stmt.where(ConversationSla.state == sla_state)
    if sort == Sort.waiting:
        stmt = stmt.where(Conversation.waiting_since.is_not(None))
    elif sort == Sort.sla_due:
        stmt = stmt.where(ConversationSla.next_due_at.is_not(None))
    return stmt


def messages(db: Session, *, conversation: Conversation, limit: int = 500) -> list[Message]:
    """The conversation's messages, oldest first (the newest ``limit`` of them)."""
    rows = list(
        db.scalars(
            select(Message)
            .where(Message.conversation_id == conversation.id)
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(limit)
        )
    )
    rows.reverse()
    return rows


def guest_names(
    db: Session, *, conversation: Conversation, messages: list[Message]
) -> dict[str, str]:
    """The name of each customer other than the conversation's who wrote one of these
    messages (its guests: ``ConversationGuest``), by the id the message keeps
    (``customers.others_named``)."""
    return customers.others_named(
        db,
        workspace_id=conversation.workspace_id,
        besides=conversation.customer_id,
        sender_ids={m.sender_id for m in messages if m.sender_type == "customer" and m.sender_id},
    )


def thread(
    db: Session,
    *,
    workspace_id: str,
    customer_id: str,
    inbox_id: str,
    now: datetime,
    reopen_window: timedelta,
    conversation_id: str | None = None,
    subject: str = "",
) -> tuple[Conversation, str]:
    """The conversation an inbound message belongs to: ``continued``, ``reopened`` or ``new``.

    A channel's thread hint (``conversation_id``) wins when it names a conversation of the
    same customer; otherwise the customer's latest conversation in the inbox is continued
    while it is not resolved, reopened when it was resolved within the window, and a new
    one is opened after that.
    """
    conv: Conversation | None = None
    if conversation_id:
        conv = db.scalar(
            select(Conversation).where(
                Conversation.id == conversation_id,
                Conversation.workspace_id == workspace_id,
                Conversation.customer_id == customer_id,
            )
        )
    if conv is None:
        conv = db.scalar(
            select(Conversation)
            .where(Conversation.customer_id == customer_id, Conversation.inbox_id == inbox_id)
            .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
            .limit(1)
        )
        if conv is not None and conv.status == Status.resolved:
            resolved_at = conv.resolved_at or conv.last_activity_at
            if now - resolved_at > reopen_window:
                conv = None
    if conv is None:
        conv = Conversation(
            workspace_id=workspace_id,
            customer_id=customer_id,
            inbox_id=inbox_id,
            subject=subject[:500],
            last_activity_at=now,
            created_at=now,
        )
        db.add(conv)
        return conv, "new"
    if conv.status in (Status.resolved, Status.snoozed, Status.pending):
        outcome = "reopened" if conv.status == Status.resolved else "continued"
        conv.status = Status.open
        conv.snoozed_until = None
        conv.resolved_at = None
        return conv, outcome
    return conv, "continued"


def message_payload(
    m: Message,
    attachments: list[dict[str, object]] | None = None,
    *,
    sender_name: str | None = None,
) -> dict[str, Any]:
    """A message as realtime events carry it; ``attachments`` when the sender knows them
    (a client that gets none keeps what it showed); ``sender_name`` of a conversation's
    guest (``ConversationGuest``), whom a page showing it does not know yet."""
    out: dict[str, Any] = {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "inbox_id": m.inbox_id,
        "direction": m.direction.value,
        "kind": m.kind.value,
        "sender_type": m.sender_type,
        "sender_id": m.sender_id,
        "text": m.text,
        "status": m.status.value,
        "created_at": m.created_at.isoformat(),
    }
    if attachments is not None:
        out["attachments"] = attachments
    if sender_name is not None:
        out["sender_name"] = sender_name
    if m.error:  # why it failed, for the agents' thread (a visitor's widget never gets it)
        out["error"] = m.error
    if m.html:  # a flag, never the markup: the agents' page asks for it as the server draws it
        out["html"] = True
        # Which markup: a page redraws a body it shows only once this changes.
        out["html_version"] = html_version(m.html)
    if shown := _badges(m.meta or {}):
        out["meta"] = shown
    return out


def html_version(html: str) -> str:
    """A short digest of a message's stored markup, which the agents' page keeps on the body
    it drew (message_body.html) and each event carries: the body is drawn again once it
    changes (a delivery receipt leaves it, and the images the agent chose to see, alone)."""
    return hashlib.blake2b(html.encode(), digest_size=8).hexdigest()


def _badges(meta: dict[str, Any]) -> dict[str, Any]:
    """What agents see beside a message (triage, a failed sender check, an email's copies,
    the other inboxes it came to), so that a message arriving live shows what it shows after
    a reload. Visitors never get it."""
    out: dict[str, Any] = {}
    if meta.get("triage"):
        out["triage"] = meta["triage"]
    # (Every message stored passes here: most carry no email part to look through.)
    mail = meta.get("email")
    if mail and (
        shown := {
            k: mail[k]
            for k in ("sender_auth", "cc", "bcc", "bounced", "also_received_by")
            if mail.get(k)
        }
    ):
        out["email"] = shown
    if refused := (meta.get("delivery") or {}).get("refused_copies"):
        out["delivery"] = {"refused_copies": refused}
    return out


def conversation_payload(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "customer_id": c.customer_id,
        "inbox_id": c.inbox_id,
        "status": c.status.value,
        "priority": c.priority.value,
        "assignee_id": c.assignee_id,
        "team_id": c.team_id,
        "last_activity_at": c.last_activity_at.isoformat(),
    }


def add_message(
    db: Session,
    *,
    conversation: Conversation,
    direction: Direction,
    kind: MessageKind,
    sender_type: str,
    sender_id: str | None,
    text: str,
    html: str | None = None,
    external_id: str | None = None,
    status: DeliveryStatus = DeliveryStatus.received,
    meta: dict[str, Any] | None = None,
    at: datetime | None = None,
    inbox_id: str | None = None,
    uploads: list[Upload] | None = None,
) -> Message:
    """Store a message in a conversation (the uploads become its attachments) and emit
    ``message.created``."""
    now = at or utcnow()
    # A reply we send keeps its images as written, for the customer's mail client to show;
    # anything else holds its remote images until an agent asks (the page holds them all as
    # it draws them, ours too).
    images: Images = "shown" if status is DeliveryStatus.queued else "held"
    msg = Message(
        workspace_id=conversation.workspace_id,
        conversation_id=conversation.id,
        inbox_id=inbox_id or conversation.inbox_id,
        direction=direction,
        kind=kind,
        sender_type=sender_type,
        sender_id=sender_id,
        text=text,
        html=clean_html(html, images=images) if html else None,
        external_id=external_id,
        status=status,
        meta=meta or {},
        created_at=now,
    )
    db.add(msg)
    conversation.messages_count = (conversation.messages_count or 0) + 1
    if kind != MessageKind.note:
        conversation.last_activity_at = max(conversation.last_activity_at, now)
    if direction == Direction.inbound:
        conversation.last_inbound_at = now
        if kind == MessageKind.message and conversation.waiting_since is None:
            conversation.waiting_since = now
    elif kind == MessageKind.message and sender_type == "user":
        # A person answered: the customer is no longer waiting on us. A bot answer or an
        # automatic reply (a rule's canned message) is not a person answering.
        conversation.waiting_since = None
    attached = files.attach(db, message=msg, uploads=uploads) if uploads else []
    emit(
        db,
        workspace_id=conversation.workspace_id,
        type="message.created",
        payload=message_payload(msg, files.summary(attached) if uploads else None),
    )
    return msg


def messages_deleted(
    db: Session, *, workspace_id: str, conversation_id: str, message_ids: Iterable[str]
) -> None:
    """Emit ``message.deleted`` for each of these messages of the conversation, deleted in
    this transaction: an open thread drops them (it showed them until a reload), a list
    draws the conversation's latest message again. Ids alone: nothing the message said."""
    for message_id in message_ids:
        emit(
            db,
            workspace_id=workspace_id,
            type="message.deleted",
            payload={"id": message_id, "conversation_id": conversation_id},
        )


def _opens_window() -> Any:
    """Of an inbound message: it opens a provider's reply window (a message stored before
    the marker existed counts as one that does)."""
    return Message.meta[OPENS_WINDOW].as_string().is_(None)


def last_written(db: Session, *, conversation_id: str, inbox_id: str) -> dict[str, Any] | None:
    """The meta of the latest message written in a conversation through an inbox: not a
    line of the channel's own (a Telegram bot blocked, or removed from a group), which
    says nothing of where they write."""
    meta: dict[str, Any] | None = db.scalar(
        select(Message.meta)
        .where(
            Message.conversation_id == conversation_id,
            Message.inbox_id == inbox_id,
            Message.direction == Direction.inbound,
            Message.kind == MessageKind.message,
            _opens_window(),
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    return meta


@dataclass(frozen=True)
class LastInbound:
    """The customer's latest message in a conversation: the inbox it came through, when,
    and whether it opens that inbox's reply window."""

    inbox_id: str
    at: datetime
    opens_window: bool


def customers_latest(db: Session, conversation: Conversation, *columns: Any) -> Select[Any]:
    """``columns`` of the customer's latest message in a conversation (not its guests':
    one copied on its mail does not choose the channel a reply to the customer takes; a
    guest whose merges ended in the customer is the customer)."""
    guests = [
        g
        for g in db.scalars(
            select(ConversationGuest.customer_id).where(
                ConversationGuest.conversation_id == conversation.id
            )
        )
        if (found := db.get(Customer, g)) is not None
        and customers.root_of(db, found).id != conversation.customer_id
    ]
    stmt = select(*columns).where(
        Message.conversation_id == conversation.id,
        Message.direction == Direction.inbound,
        Message.kind == MessageKind.message,
    )
    if guests:
        stmt = stmt.where(Message.sender_id.not_in(guests))
    return stmt.order_by(Message.created_at.desc()).limit(1)


def of_customer(
    db: Session, *, customer: Customer, limit: int, besides: str | None = None
) -> list[Conversation]:
    """The customer's conversations, latest activity first (``besides`` one left out)."""
    stmt = select(Conversation).where(
        Conversation.workspace_id == customer.workspace_id,
        Conversation.customer_id == customer.id,
    )
    if besides is not None:
        stmt = stmt.where(Conversation.id != besides)
    return list(db.scalars(stmt.order_by(Conversation.last_activity_at.desc()).limit(limit)))


def guest_in(db: Session, *, customer: Customer, limit: int) -> list[Conversation]:
    """Others' conversations the customer (or a record merged into them) wrote in, copied
    on their mail (``ConversationGuest``), latest activity first."""
    there = customers.guest_conversations(customer.workspace_id, customers.person_ids(db, customer))
    return list(
        db.scalars(
            select(Conversation)
            .where(
                Conversation.workspace_id == customer.workspace_id,
                Conversation.id.in_(there),
                Conversation.customer_id != customer.id,
            )
            .order_by(Conversation.last_activity_at.desc())
            .limit(limit)
        )
    )


def _last_inbound(db: Session, *, conversation: Conversation) -> LastInbound | None:
    row = db.execute(
        customers_latest(db, conversation, Message.inbox_id, Message.created_at, _opens_window())
    ).first()
    return LastInbound(row[0], row[1], bool(row[2])) if row is not None else None


def reply_copies(db: Session, *, conversation: Conversation) -> list[str] | None:
    """Whom a reply copies unless told otherwise (``copies.reply_all``) when it goes by
    email (through ``last_channel``); None when it goes through another channel."""
    inbox = db.get(Inbox, last_channel(db, conversation=conversation))
    if inbox is None or inbox.channel != "email":
        return None
    return copies.reply_all(db, conversation=conversation)


def last_channel(db: Session, *, conversation: Conversation) -> str:
    """The inbox the customer last wrote through in this conversation (after a merge of
    conversations from two channels, the one they are on now)."""
    latest = _last_inbound(db, conversation=conversation)
    return latest.inbox_id if latest is not None else conversation.inbox_id


def last_wrote_through(db: Session, *, conversation: Conversation, inbox: Inbox) -> datetime | None:
    """When the conversation's customer last wrote through ``inbox``, in any of their
    conversations: what a provider's reply window (Meta's, WhatsApp's 24 hours) counts
    from, being the person's with that page or number. Only messages that open one count.

    Each of the customer's conversations is read newest first along its own index of
    messages, stopping at the first that counts."""
    ws = conversation.workspace_id
    latest = (
        select(Message.created_at)
        .where(
            Message.conversation_id == Conversation.id,
            Message.workspace_id == ws,
            Message.inbox_id == inbox.id,
            Message.direction == Direction.inbound,
            Message.kind == MessageKind.message,
            _opens_window(),
        )
        .order_by(Message.created_at.desc())
        .limit(1)
        .correlate(Conversation)
        .scalar_subquery()
    )
    return db.scalar(
        select(func.max(latest)).where(
            Conversation.workspace_id == ws,
            Conversation.customer_id == conversation.customer_id,
        )
    )


def consent_refusal(
    db: Session, *, conversation: Conversation, inbox: Inbox | None = None
) -> Consent | None:
    """The customer's withdrawal that forbids a reply through ``inbox`` (by default the
    one a reply goes through), such as an SMS STOP; None when a reply may go."""
    inbox = inbox or db.get(Inbox, last_channel(db, conversation=conversation))
    channel = channels.consent_channel(inbox.channel) if inbox is not None else None
    if channel is None:
        return None
    return profile.withdrawn(db, customer_id=conversation.customer_id, channel=channel)


class NotThisPage(Unsendable):
    """A reply through a Messenger page or Instagram account the customer never wrote to:
    their ids there are each page's own, and Meta refuses a send to another page's."""

    def __init__(self, *, inbox: Inbox, kind: IdentityKind, wrote_to: list[Inbox]) -> None:
        page = identity.page_noun(kind)
        self.why = f"the customer never wrote to the {page} of “{inbox.name}”"
        if wrote_to:
            names = ", ".join(f"“{i.name}”" for i in wrote_to)
            how = f"reply through the inbox they wrote to: {names}"
        else:
            how = f"they wrote to no {kind.value} {page} of yours: reply through another channel"
        super().__init__(
            409,
            "not-this-page",
            f"Not sent: this customer never wrote to the {page} of “{inbox.name}”, and "
            f"{kind.value} ids belong to the {page} that issued them (Meta refuses a send "
            f"to another's). {how[0].upper()}{how[1:]}.",
            inbox_id=inbox.id,
            wrote_to=[i.id for i in wrote_to],
        )


def page_refusal(db: Session, *, conversation: Conversation, inbox: Inbox) -> NotThisPage | None:
    """Why a reply through ``inbox`` cannot reach the customer, for an inbox whose page
    issues ids of its own (Messenger, Instagram): none of theirs is that page's (by
    ``identity.recipient``, the rule the send follows); None when one is."""
    kind = identity.page_kind(inbox.channel)
    if kind is None:
        return None
    theirs = list(
        db.scalars(
            select(Identity).where(
                Identity.workspace_id == conversation.workspace_id,
                Identity.customer_id == conversation.customer_id,
                Identity.kind == kind,
            )
        )
    )
    if identity.recipient(theirs, kind, inbox_id=inbox.id) is not None:
        return None
    pages = {i.inbox_id for i in theirs if i.inbox_id}
    wrote_to = (
        db.scalars(
            select(Inbox)
            .where(Inbox.workspace_id == conversation.workspace_id, Inbox.id.in_(pages))
            .order_by(Inbox.name, Inbox.id)
        ).all()
        if pages
        else []
    )
    return NotThisPage(inbox=inbox, kind=kind, wrote_to=list(wrote_to))


# Automatic replies (a rule's, the bot's) one customer is sent within an hour, on every
# channel together, unless the workspace's ``automatic_replies_per_hour`` says otherwise:
# an autoresponder that does not say it is one (a mail without Auto-Submitted; an SMS,
# WhatsApp, Telegram or Messenger away message, which nothing marks) answers each, and a
# rule answering every message answered it back, without end (Zammad and Zendesk cap
# automatic mail alike). Counted per customer, not per conversation: an autoresponder's
# mail that threads nowhere (sent afresh to the inbox's address) starts a conversation of
# its own each time, and a customer looping on two channels is still one loop.
AUTOMATIC_REPLIES_PER_HOUR = 10
# Who sends an automatic reply: a rule (the system) or the bot. A person's is "user" (with
# no sender_id when written outside Rapport: a page's echo, a colleague's own mailbox).
_AUTOMATIC_SENDERS = ("system", "bot")


class TooManyAutomatic(Unsendable):
    """An automatic reply past the workspace's cap for one customer in an hour."""

    def __init__(self, *, limit: int) -> None:
        replies = "reply" if limit == 1 else "replies"
        self.why = (
            f"the customer had {limit} automatic {replies} within the hour, as many as the "
            "workspace allows (an autoresponder answering each?); a person's reply still goes"
        )
        super().__init__(409, "automatic-replies-capped", f"Not sent: {self.why}.", limit=limit)


def automatic_refusal(
    db: Session, *, conversation: Conversation, hold: bool = True
) -> TooManyAutomatic | None:
    """Why an automatic reply (a rule's, the bot's; never a person's) does not go: the
    customer had the workspace's ``automatic_replies_per_hour`` of them in the last hour,
    on any channel. None when it may go. The customer's row is held until the transaction
    ends: two automatic replies at once are counted one after the other, never both as the
    last one allowed. ``hold=False``: a count only, holding nothing, for a look ahead of
    a reply that is checked again, held, where it is written."""
    ws = conversation.workspace_id
    if hold:
        # PostgreSQL: the second waits here, then counts the first's reply once committed.
        # SQLite's writer holds the database anyway.
        lock_row(db, Customer, conversation.customer_id)
    workspace = db.get(Workspace, ws)
    limit = int(
        ((workspace.settings if workspace else None) or {}).get(
            "automatic_replies_per_hour", AUTOMATIC_REPLIES_PER_HOUR
        )
    )
    sent = db.scalar(
        select(func.count())
        .select_from(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.workspace_id == ws,
            Conversation.customer_id == conversation.customer_id,
            Message.direction == Direction.outbound,
            Message.kind.in_((MessageKind.message, MessageKind.bot)),
            Message.sender_type.in_(_AUTOMATIC_SENDERS),
            Message.created_at >= utcnow() - timedelta(hours=1),
        )
    )
    return TooManyAutomatic(limit=limit) if (sent or 0) >= limit else None


def reply_refusal(
    db: Session,
    *,
    conversation: Conversation,
    inbox: Inbox | None = None,
    automatic: bool = False,
    hold: bool = True,
) -> Unsendable | None:
    """Why a reply through ``inbox`` (by default the one a reply goes through) cannot go:
    the customer opted out of its channel (an SMS STOP), or its channel cannot reach the
    chat (a Telegram bot blocked, or removed from the group), or never wrote to its
    Messenger page or Instagram account, or, ``automatic`` (a rule's, the bot's), had as many
    automatic replies within the hour as the workspace allows (``automatic_refusal``, which
    holds the customer's row unless ``hold`` is False); None when it may go."""
    inbox = inbox or db.get(Inbox, last_channel(db, conversation=conversation))
    if inbox is None:
        return None
    if withdrawal := consent_refusal(db, conversation=conversation, inbox=inbox):
        return profile.NoConsent(withdrawal)
    if automatic and (capped := automatic_refusal(db, conversation=conversation, hold=hold)):
        return capped
    # A chat the channel knows it cannot send to now (Telegram: the bot blocked, or
    # removed from the group the customer wrote in).
    blocked = getattr(channels.get(inbox.channel), "reply_blocked", None)
    if blocked is not None and (why := blocked(db, conversation=conversation, inbox=inbox)):
        return Unreachable(inbox=inbox, why=why)
    return page_refusal(db, conversation=conversation, inbox=inbox)


def reply(
    db: Session,
    *,
    conversation: Conversation,
    author_id: str | None,
    text: str,
    html: str | None = None,
    kind: MessageKind = MessageKind.message,
    via_inbox_id: str | None = None,
    attachment_ids: list[str] | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
) -> Message:
    """Queue an outbound reply: the message row and its ``deliver`` job commit together.

    It goes out through the channel the customer last wrote on in this conversation,
    unless the agent picks another inbox of the workspace (``via_inbox_id``). Uploads
    named by ``attachment_ids`` go with it as files. A customer who opted out of the
    inbox's channel (an SMS STOP) gets nothing: ``NoConsent``, and nothing is stored; nor
    does one who never wrote to the inbox's Messenger page or Instagram account
    (``NotThisPage``). A provider's reply window (Meta's, WhatsApp's 24 hours) counts
    from the customer's last message through the inbox, in any of their conversations.
    ``cc`` and ``bcc``: whom an email copies (``copies``); given, even empty, they are the
    thread's copies from then on (a bot's or a rule's message leaves them as they were).
    """
    now = utcnow()
    latest = None if via_inbox_id else _last_inbound(db, conversation=conversation)
    inbox = db.get(
        Inbox, via_inbox_id or (latest.inbox_id if latest is not None else conversation.inbox_id)
    )
    if inbox is None or inbox.workspace_id != conversation.workspace_id:
        raise NotFound("inbox")
    meta = (
        copies.for_message(
            db, cc or [], bcc or [], customer_id=conversation.customer_id, inbox=inbox, kind=kind
        )
        if cc is not None or bcc is not None
        else {}
    )
    if kind != MessageKind.note:
        if not inbox.enabled:  # switched off by an admin: it neither takes in nor sends
            raise Invalid(
                f"the inbox “{inbox.name}” is disabled: an admin can switch it on in "
                "Settings, or reply through another inbox"
            )
        # Refused here, where the agent can still choose another channel: queued, it would
        # only fail at the provider (Twilio's 21610; Meta's refusal of another page's id),
        # or worse, reach a customer who opted out.
        if refused := reply_refusal(
            db, conversation=conversation, inbox=inbox, automatic=author_id is None
        ):
            raise refused
    uploads = files.take(db, conversation=conversation, upload_ids=attachment_ids or [])
    if not text.strip() and not uploads:
        raise Invalid("a message needs text or a file")
    channel = channels.get(inbox.channel) if inbox else None
    if uploads and not getattr(channel, "sends_files", False):
        raise Invalid(f"files cannot be sent through a {inbox.channel} inbox")
    limits = getattr(channel, "check_files", None)
    if uploads and limits is not None and kind != MessageKind.note:
        # Refused now, while the agent can still choose, not by the provider after sending.
        if reason := limits([(u.filename, u.content_type, u.size) for u in uploads]):
            raise Invalid(reason)
    if kind != MessageKind.note:
        # When the conversation's last message came through this inbox, and opens the
        # window, it is enough to let the reply go (no query for the customer's others).
        known = (
            latest.at if latest and latest.inbox_id == inbox.id and latest.opens_window else None
        )
        if reason := window_refusal(
            db,
            conversation=conversation,
            inbox=inbox,
            now=now,
            known=known,
            automatic=author_id is None,
        ):
            raise Invalid(reason)
    sender_type = "bot" if kind == MessageKind.bot else ("user" if author_id else "system")
    msg = add_message(
        db,
        conversation=conversation,
        direction=Direction.outbound,
        kind=kind,
        sender_type=sender_type,
        sender_id=author_id,
        text=text,
        html=html,
        status=DeliveryStatus.queued,
        meta=meta,
        at=now,
        inbox_id=inbox.id,
        uploads=uploads,
    )
    if kind == MessageKind.message and author_id is not None:
        # Only a person's reply is a first response and stops the SLA response clocks: a
        # bot answer stops them only when the customer says it helped (bot.rate), and
        # resolving the conversation stops every clock.
        if conversation.first_response_at is None:
            conversation.first_response_at = now
        sla.on_agent_reply(db, conversation=conversation)
    db.flush()
    enqueue(
        db,
        name="deliver",
        args={"message_id": msg.id},
        workspace_id=conversation.workspace_id,
    )
    _updated(db, conversation)
    return msg


def from_colleagues_mailbox(
    db: Session,
    *,
    conversation: Conversation,
    author_id: str,
    text: str,
    html: str | None,
    inbox_id: str,
    external_id: str,
    meta: dict[str, Any],
    stored: list[tuple[str, str, int, str, str]],
    not_a_reply: str | None,
    said_by: str,
    written_at: datetime,
) -> Message:
    """A colleague's own mail in the thread (copied on it, answering all from their own
    mailbox): the customer had it from them, so nothing is sent. A reply of theirs, sent,
    unless ``not_a_reply`` says why it is none (unproved: anyone could have written it in
    their name; to us alone; a viewer's; an out-of-office): then a private note saying so,
    changing nothing. A reply is a first response, and ends the customer's wait and the
    response clocks only if written (``written_at``) after what they last wrote: one
    held up on its way, which they answered meanwhile, leaves their newer question
    waiting. ``stored``: its files (filename, type, size, sha256, storage key), already in
    storage."""
    uploads = [
        Upload(
            workspace_id=conversation.workspace_id,
            conversation_id=conversation.id,
            user_id=author_id,
            filename=name,
            content_type=ctype,
            size=size,
            sha256=digest,
            storage_key=key,
        )
        for name, ctype, size, digest, key in stored
    ]
    db.add_all(uploads)
    reply = not_a_reply is None
    if not reply:
        text = (
            f"{said_by} wrote this by email from their own mailbox, not through Rapport; "
            f"it is kept as a note, as {not_a_reply}:\n\n" + text
        )
    now = utcnow()
    waited = conversation.waiting_since
    answered = conversation.last_inbound_at is None or written_at >= conversation.last_inbound_at
    msg = add_message(
        db,
        conversation=conversation,
        direction=Direction.outbound,
        kind=MessageKind.message if reply else MessageKind.note,
        sender_type="user" if reply else "system",
        sender_id=author_id if reply else None,
        text=text,
        html=html if reply else None,
        external_id=external_id,
        status=DeliveryStatus.sent,
        meta={**meta, "sent_elsewhere": True},
        at=now,
        inbox_id=inbox_id,
        uploads=uploads,
    )
    if reply:
        _colleague_answered(db, conversation, at=now, answered=answered, waited=waited)
    db.flush()
    _updated(db, conversation)
    return msg


def colleagues_note_proved(
    db: Session,
    *,
    conversation: Conversation,
    note: Message,
    author_id: str,
    text: str,
    html: str | None,
    meta: dict[str, Any],
    written_at: datetime,
) -> Message:
    """A colleague's mail kept as a note, unproved (``from_colleagues_mailbox``), come
    again proved (its first copy through a forwarder that broke its signature): their
    reply after all, as if it had come so the first time (``meta``: the proved copy's)."""
    waited = conversation.waiting_since
    answered = conversation.last_inbound_at is None or written_at >= conversation.last_inbound_at
    note.kind, note.sender_type, note.sender_id = MessageKind.message, "user", author_id
    note.text, note.html = text, clean_html(html) if html else None
    note.meta = {**meta, "sent_elsewhere": True}
    if answered:
        conversation.waiting_since = None
    _colleague_answered(db, conversation, at=note.created_at, answered=answered, waited=waited)
    db.flush()
    emit(
        db,
        workspace_id=conversation.workspace_id,
        type="message.updated",
        payload=message_payload(note),
    )
    _updated(db, conversation)
    return note


def also_received(db: Session, *, message: Message, inbox_id: str) -> None:
    """One mail kept once (``message``, where its first copy came) came to another of the
    workspace's inboxes too: that inbox is added to its ``meta.email.also_received_by``,
    and agents' open pages hear of it (``message.updated``), the copy often coming after
    the page drew the message (each mailbox polled on its own)."""
    # Held, and read as it is now (PostgreSQL): an erasure committed since it was read took
    # an address out of its lists, which writing the copy read back would put back.
    hold(db, Message, message.id)
    kept = (message.meta or {}).get("email") or {}
    reached = list(kept.get("also_received_by") or [])
    if inbox_id in reached:
        return  # the same copy delivered again
    message.meta = {**message.meta, "email": {**kept, "also_received_by": [*reached, inbox_id]}}
    emit(
        db,
        workspace_id=message.workspace_id,
        type="message.updated",
        payload=message_payload(message),
    )


def _colleague_answered(
    db: Session,
    conversation: Conversation,
    *,
    at: datetime,
    answered: bool,
    waited: datetime | None,
) -> None:
    """A colleague's reply from their own mailbox: a first response; it ends the wait and
    the response clocks only if it ``answered`` what the customer last wrote."""
    if conversation.first_response_at is None:
        conversation.first_response_at = at
    if answered:
        sla.on_agent_reply(db, conversation=conversation)
    else:
        conversation.waiting_since = waited


def window_refusal(
    db: Session,
    *,
    conversation: Conversation,
    inbox: Inbox,
    now: datetime,
    known: datetime | None = None,
    automatic: bool = False,
) -> str | None:
    """Why a free-text reply through ``inbox`` is outside its provider's reply window now
    (WhatsApp's 24 hours; Meta's 24 hours, 7 days for a person's reply, not an
    ``automatic`` one); None when it may go. The window is the customer's with this
    inbox's page or number, not the conversation's: after a merge, or through another
    inbox than theirs here, the conversation's last message may have come another way, so
    the customer's messages through this inbox say, unless ``known`` (their last message
    through it) already lets the reply go."""
    check = getattr(channels.get(inbox.channel), "check_reply", None)
    if check is None:
        return None
    reason: str | None = check(last_inbound_at=known, now=now, template=False, automatic=automatic)
    if reason:
        opened = last_wrote_through(db, conversation=conversation, inbox=inbox)
        reason = check(last_inbound_at=opened, now=now, template=False, automatic=automatic)
    return reason


class Unreachable(Unsendable):
    """A conversation that cannot be started through an inbox: its channel has no way to
    the customer (no address of theirs it sends to, by the rule its send follows)."""

    def __init__(self, *, inbox: Inbox, why: str) -> None:
        self.why = why
        super().__init__(
            422,
            "unreachable",
            f"Not sent: “{inbox.name}” cannot reach this customer ({why}); choose another inbox.",
            inbox_id=inbox.id,
            channel=inbox.channel,
        )


# What a conversation an agent starts may be left as, once its first message is queued.
START_STATUSES: Final = (Status.open, Status.pending, Status.resolved)


def start_refusal(
    db: Session,
    *,
    customer: Customer,
    inbox: Inbox,
    identities: list[Identity] | None = None,
    now: datetime | None = None,
) -> Problem | None:
    """Why a conversation with ``customer`` cannot be started through ``inbox`` now, the
    one answer of the API (which refuses it) and of the customer's page (which does not
    offer the inbox): a customer merged away, a disabled inbox, no address of theirs the
    inbox's channel sends to (``Unreachable``), then what a reply meets (an opt-out, a page
    they never wrote to, the provider's window). None when it can be started."""
    if customer.merged_into_id is not None:
        return Invalid(
            "this customer was merged into another: start the conversation with that one",
            merged_into_id=customer.merged_into_id,
        )
    if inbox.workspace_id != customer.workspace_id:
        return NotFound("inbox")
    if not inbox.enabled:
        return Invalid(f"the inbox “{inbox.name}” is disabled")
    if identities is None:
        identities = customers.identities(db, customer=customer)
    to = channels.Addressee(inbox=inbox, customer=customer, identities=identities)
    if why := channels.unreachable(db, to):
        return Unreachable(inbox=inbox, why=why)
    # Never added to the session: the customer and inbox, as a reply's checks read them.
    probe = Conversation(
        workspace_id=customer.workspace_id, customer_id=customer.id, inbox_id=inbox.id
    )
    if refused := reply_refusal(db, conversation=probe, inbox=inbox):
        return refused
    if reason := window_refusal(db, conversation=probe, inbox=inbox, now=now or utcnow()):
        return Invalid(reason)
    return None


def start(
    db: Session,
    *,
    customer: Customer,
    inbox: Inbox,
    author_id: str,
    text: str,
    html: str | None = None,
    subject: str = "",
    assignee_id: str | None,
    team_id: str | None = None,
    status: Status = Status.open,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    attachment_ids: list[str] | None = None,
) -> tuple[Conversation, Message]:
    """Write to a customer first: a conversation through ``inbox`` in team ``team_id``
    (the caller passes the inbox's when none is chosen; None: no team), given to
    ``assignee_id`` (None: nobody, and auto-assignment offers it), and its first
    message, queued as a reply is (``reply``: the message and its ``deliver`` job), all in
    the caller's transaction. Refused, with nothing stored, for ``start_refusal``'s
    reasons. ``status``: pending (the customer has the next move) or resolved (a one-off
    notice) once the message is queued. ``attachment_ids``: uploads made for this customer
    (``files.upload`` with no conversation yet), sent with the message."""
    if status not in START_STATUSES:
        raise Invalid(f"a conversation is started {', '.join(START_STATUSES)}, not {status}")
    if refused := start_refusal(db, customer=customer, inbox=inbox):
        raise refused
    if inbox.channel == "email" and not subject.strip():
        # It would reach them as "Your conversation with us [#...]", said by nobody.
        raise Invalid("subject: an email needs a subject")
    copies.for_message(
        db, cc or [], bcc or [], customer_id=customer.id, inbox=inbox, kind=MessageKind.message
    )
    uploads = files.take(db, customer=customer, upload_ids=attachment_ids or [])
    if team_id is not None and team_id != inbox.team_id:
        ws = customer.workspace_id
        if db.scalar(select(Team.id).where(Team.workspace_id == ws, Team.id == team_id)) is None:
            raise NotFound("team")
    now = utcnow()
    conv = Conversation(
        workspace_id=customer.workspace_id,
        customer_id=customer.id,
        inbox_id=inbox.id,
        subject=subject.strip()[:500],
        status=Status.open,
        priority=Priority.none,
        team_id=team_id,
        messages_count=0,
        last_activity_at=now,
        created_at=now,
    )
    db.add(conv)
    db.flush()
    for up in uploads:  # the conversation's now, as if uploaded there
        up.conversation_id, up.customer_id = conv.id, None
    emit(
        db,
        workspace_id=conv.workspace_id,
        type="conversation.created",
        payload=conversation_payload(conv),
    )
    # Integrations hear of it as of any new conversation; the workspace's rules for
    # conversation.created do not run: a greeting rule would answer the agent's own message.
    automation.publish_to_webhooks(
        db,
        workspace_id=conv.workspace_id,
        event="conversation.created",
        conversation_id=conv.id,
        customer_id=customer.id,
    )
    if assignee_id is not None:
        assign(
            db, conversation=conv, assignee_id=assignee_id, team_id=conv.team_id, actor_id=author_id
        )
    msg = reply(
        db,
        conversation=conv,
        author_id=author_id,
        text=text,
        html=html,
        via_inbox_id=inbox.id,
        cc=cc,
        bcc=bcc,
        attachment_ids=[u.id for u in uploads],
    )
    if status != Status.open:
        set_status(db, conversation=conv, status=status, actor_id=author_id)
    elif conv.assignee_id is None and inbox.auto_assign:
        routing.wake(db, workspace_id=conv.workspace_id)
    return conv, msg


def send_again(db: Session, *, conversation: Conversation, message_id: str) -> Message:
    """A reply that failed, queued again through the inbox it was to go through, after the
    same checks as a new reply (the customer's consent, the provider's window). Parts the
    provider had accepted are not sent twice; but a message the provider accepted and then
    reported failed (a WhatsApp number that cannot receive, say) is sent whole, anew."""
    msg = get_message(db, conversation=conversation, message_id=message_id)
    if (
        msg.direction != Direction.outbound
        or msg.kind not in (MessageKind.message, MessageKind.bot)
        or msg.status != DeliveryStatus.failed
    ):
        raise Invalid("only a reply that failed can be sent again")
    if refused := resend_refusal(db, conversation=conversation, message=msg):
        raise refused
    if not queue_again(db, msg):
        raise Invalid("only a reply that failed can be sent again")
    enqueue(db, name="deliver", args={"message_id": msg.id}, workspace_id=msg.workspace_id)
    return msg


def resend_refusal(db: Session, *, conversation: Conversation, message: Message) -> Problem | None:
    """Why a failed reply cannot go again now, the one answer of "send again" and of its
    dead deliver job retried by an admin (which skipped the provider's window, and the
    provider refused it instead): its inbox gone or disabled, the customer's consent or
    page, the provider's reply window. None when it may go."""
    inbox = db.get(Inbox, message.inbox_id)
    if inbox is None or not inbox.enabled:
        return Invalid("the inbox this reply was to go through is gone or disabled")
    if refused := reply_refusal(db, conversation=conversation, inbox=inbox):
        return refused
    if reason := window_refusal(
        db,
        conversation=conversation,
        inbox=inbox,
        now=utcnow(),
        automatic=message.sender_id is None,
    ):
        return Invalid(reason)
    return None


def queue_again(db: Session, msg: Message) -> bool:
    """A failed reply queued again for its deliver job (``send_again``'s, or its dead
    job's, retried): False if it is no longer failed.

    Claimed, not only checked: of two clicks at once (two agents, a double click), one
    queues it; the other would queue a second send of the same message."""
    claimed = db.execute(
        update(Message)
        .where(Message.id == msg.id, Message.status == DeliveryStatus.failed)
        .values(status=DeliveryStatus.queued, error=None)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    db.refresh(msg)
    # The parts the provider took and then reported failed go again (and leave the parts
    # that settle the message's status: kept, they would fail it again at once); a message
    # it took whole and failed goes whole. Parts it took and did not fail are not resent.
    failed = set(
        db.scalars(
            select(MessagePart.external_id).where(
                MessagePart.message_id == msg.id, MessagePart.status == DeliveryStatus.failed
            )
        )
    )
    if msg.external_id and not failed:
        failed = set(
            db.scalars(select(MessagePart.external_id).where(MessagePart.message_id == msg.id))
        ) | {msg.external_id}
    if failed:
        db.execute(
            delete(MessagePart).where(
                MessagePart.message_id == msg.id, MessagePart.external_id.in_(failed)
            )
        )
    sent = {k: v for k, v in (msg.meta.get("parts_sent") or {}).items() if v not in failed}
    if msg.external_id in failed or (msg.external_id and not sent):
        msg.external_id = None
    # When the last try's reports came (its failure's) is no time of this try: kept, the
    # message queued anew still said when it had failed.
    gone = ("parts_sent", "delivery", STATUS_AT)
    msg.meta = {k: v for k, v in msg.meta.items() if k not in gone} | (
        {"parts_sent": sent} if sent else {}
    )
    emit(
        db,
        workspace_id=msg.workspace_id,
        type="message.updated",
        payload=message_payload(msg, files.summary(files.of_messages(db, [msg.id])[msg.id])),
    )
    return True


@dataclass(frozen=True)
class Noted:
    """A note added, the members its @mentions notified, and each handle that fits several
    members (none of whom was notified)."""

    message: Message
    notified: list[str]
    ambiguous: dict[str, list[notifications.Member]]
    unknown: list[str]


def note(
    db: Session,
    *,
    conversation: Conversation,
    author_id: str | None,
    text: str,
    attachment_ids: list[str] | None = None,
    mentioning: str | None = None,
) -> Noted:
    """Add a private note (with files, if uploaded): visible to agents, never sent to the
    customer. The members it mentions are notified; a handle that fits several members
    notifies none of them and is returned, for the author to be told. ``mentioning``: what
    of it is the author's own, whose @handles alone notify, when the rest is a customer's
    (a rule's template filled in with their name, the bot quoting what they wrote): a
    customer calling themselves "@bob" must not ping Bob with every message."""
    uploads = files.take(db, conversation=conversation, upload_ids=attachment_ids or [])
    if not text.strip() and not uploads:
        raise Invalid("a note needs text or a file")
    msg = add_message(
        db,
        conversation=conversation,
        direction=Direction.outbound,
        kind=MessageKind.note,
        sender_type="user" if author_id else "system",
        sender_id=author_id,
        text=text,
        uploads=uploads,
    )
    db.flush()
    mentions = notifications.mentioned(
        db,
        workspace_id=conversation.workspace_id,
        text=text if mentioning is None else mentioning,
    )
    notified = [user_id for user_id in mentions.user_ids if user_id != author_id]
    for user_id in notified:
        notifications.notify(
            db,
            workspace_id=conversation.workspace_id,
            user_id=user_id,
            kind="mention",
            text=text,
            conversation_id=conversation.id,
            message_id=msg.id,
        )
    return Noted(
        message=msg, notified=notified, ambiguous=mentions.ambiguous, unknown=mentions.unknown
    )


def not_sent(db: Session, *, conversation: Conversation, by: str, refused: Unsendable) -> None:
    """Say in the conversation, for its agents, that ``by`` (a rule, a macro) sent the customer
    nothing, and why (they opted out, or never wrote to the page); and log it, by ids only."""
    _activity(
        db,
        conversation=conversation,
        text=f"{by} was not sent: {refused.why}",
        data={"not_sent": {"type": refused.slug, **refused.extra}},
    )
    log.info(
        "a message that could not go to the customer was not sent",
        extra={
            "event": "conversation.not_sent",
            "reason": refused.slug,
            "workspace_id": conversation.workspace_id,
            "conversation_id": conversation.id,
        },
    )


def _activity(
    db: Session,
    *,
    conversation: Conversation,
    text: str,
    data: dict[str, Any],
    sender_type: str = "system",
) -> None:
    add_message(
        db,
        conversation=conversation,
        direction=Direction.outbound,
        kind=MessageKind.activity,
        sender_type=sender_type,
        sender_id=None,
        text=text,
        meta=data,
    )


def _updated(db: Session, conversation: Conversation) -> None:
    emit(
        db,
        workspace_id=conversation.workspace_id,
        type="conversation.updated",
        payload=conversation_payload(conversation),
    )


def assign(
    db: Session,
    *,
    conversation: Conversation,
    assignee_id: str | None,
    team_id: str | None,
    actor_id: str | None,
    via: str | None = None,
) -> Conversation:
    """Give the conversation to an agent and/or a team of the same workspace (None clears).

    ``via``: what did it when no member did (auto-assignment, a rule, the bot), or what the
    member did it through (a macro), as its activity line says."""
    ws = conversation.workspace_id
    member = None
    # Only a new assignee is checked: the one kept may have left or become a viewer since
    # (a resolved conversation keeps who handled it), and its team can still change.
    if assignee_id is not None and assignee_id != conversation.assignee_id:
        member = db.scalar(
            select(Membership).where(
                Membership.workspace_id == ws, Membership.user_id == assignee_id
            )
        )
        if member is None:
            raise NotFound("agent")
        if member.role == Role.viewer:
            raise Invalid("a viewer cannot be assigned conversations")
    if team_id is not None:
        team = db.scalar(select(Team).where(Team.workspace_id == ws, Team.id == team_id))
        if team is None:
            raise NotFound("team")
    before = (conversation.assignee_id, conversation.team_id)
    changed = before != (assignee_id, team_id)
    freed = conversation.assignee_id is not None and conversation.assignee_id != assignee_id
    if assignee_id is not None and assignee_id != conversation.assignee_id:
        conversation.assigned_at = utcnow()
        assert member is not None  # found above
        member.last_assigned_at = conversation.assigned_at  # to the back of routing's line
        if assignee_id != actor_id:
            notifications.notify(
                db,
                workspace_id=ws,
                user_id=assignee_id,
                kind="assigned",
                text=conversation.subject or "A conversation was assigned to you",
                conversation_id=conversation.id,
            )
    conversation.assignee_id = assignee_id
    conversation.team_id = team_id
    # An agent freed, or a waiting conversation moved to a team (one with room, maybe).
    if freed or (
        assignee_id is None and team_id != before[1] and conversation.status == Status.open
    ):
        routing.wake(db, workspace_id=ws)
    if changed:
        record_assignment(db, conversation=conversation, before=before, actor_id=actor_id, via=via)
    return conversation


def _named(db: Session, user_id: str) -> str:
    """A member as an activity line names them: by name, else by address."""
    user = db.get(User, user_id)
    return (user.name or user.email) if user is not None else "a former member"


def _by(db: Session, actor_id: str | None, via: str | None = None) -> str:
    """Who made a change, as its activity line ends: " by Ann", " by the rule “X”" (what
    did it when no member did), " by Ann through the macro “X”" (a member, by way of it)."""
    if actor_id:
        return f" by {_named(db, actor_id)}" + (f" through {via}" if via else "")
    return f" by {via}" if via else ""


def _assignment_said(
    db: Session,
    *,
    conversation: Conversation,
    before: tuple[str | None, str | None],
    actor_id: str | None,
    via: str | None,
) -> str:
    """The activity line of a change of assignee or team, saying what changed: "Assigned to
    Ann by Bob", "Ann took the conversation", "Unassigned from Ann by Bob", "Moved to team
    Billing by Bob", "Removed from team Billing by Bob"; both at once, "Assigned to Ann in
    team Billing by Bob" (a line said the result whatever was done: removing a team read
    "Assigned to Ann by Bob")."""
    (was, was_team), (now, now_team) = before, (conversation.assignee_id, conversation.team_id)

    def team_name(team_id: str) -> str:
        team = db.get(Team, team_id)
        return f"team {team.name}" if team is not None else "a team since deleted"

    if now != was and now_team != was_team and now is not None and now_team is not None:
        return f"Assigned to {_named(db, now)} in {team_name(now_team)}" + _by(db, actor_id, via)
    parts = []
    if now != was:
        if now is None:
            parts.append(f"unassigned from {_named(db, was)}" if was else "unassigned")
        elif now == actor_id and now_team == was_team:
            return f"{_named(db, now)} took the conversation" + (f" through {via}" if via else "")
        else:
            parts.append(f"assigned to {_named(db, now)}")
    if now_team != was_team:
        parts.append(
            f"moved to {team_name(now_team)}"
            if now_team is not None
            else f"removed from {team_name(was_team)}"
            if was_team
            else "removed from its team"
        )
    said = " and ".join(parts) or "assignment unchanged"
    return said[0].upper() + said[1:] + _by(db, actor_id, via)


def record_assignment(
    db: Session,
    *,
    conversation: Conversation,
    before: tuple[str | None, str | None],
    actor_id: str | None,
    via: str | None = None,
) -> None:
    """A change of the conversation's assignee or team, already made (``before``: its
    assignee and team until then), as every such change is recorded: the rules and webhooks
    told, an activity line saying what changed, the update published."""
    automation.trigger(
        db,
        workspace_id=conversation.workspace_id,
        event="conversation.assigned",
        conversation_id=conversation.id,
    )
    _activity(
        db,
        conversation=conversation,
        text=_assignment_said(
            db, conversation=conversation, before=before, actor_id=actor_id, via=via
        ),
        data={
            "assignee_id": conversation.assignee_id,
            "team_id": conversation.team_id,
            "by": actor_id,
        },
    )
    _updated(db, conversation)


def set_status(
    db: Session,
    *,
    conversation: Conversation,
    status: Status,
    snoozed_until: datetime | None = None,
    actor_id: str | None = None,
    by_bot: bool = False,
    since: datetime | None = None,
    via: str | None = None,
) -> Conversation:
    """Open, mark pending, snooze until a time, or resolve a conversation.

    ``by_bot``: the bot made the change (its activity line says so, as its messages do).
    ``since``: the moment the change took effect for the SLA clocks, when that is before
    now (a snooze ended at its time, noticed later by the periodic job). ``via``: what made
    the change when no member did (a rule), as its activity line says."""
    if status == Status.snoozed:
        if snoozed_until is None or snoozed_until.tzinfo is None:
            raise Invalid("snoozing needs snoozed_until, a timezone-aware time")
        if snoozed_until <= utcnow():
            raise Invalid("snoozed_until must be in the future")
    if status == conversation.status and status != Status.snoozed:
        return conversation
    was = conversation.status
    conversation.status = status
    conversation.snoozed_until = snoozed_until if status == Status.snoozed else None
    conversation.resolved_at = utcnow() if status == Status.resolved else None
    # Resolved stops the SLA clocks; pending and snoozed pause the resolution clock.
    sla.on_status(db, conversation=conversation, at=since)
    if status == Status.resolved:
        conversation.waiting_since = None  # nobody waits on a resolved conversation
        from rapport.bot import service as bot  # the bot builds on this module

        bot.on_resolved(db, conversation=conversation)
        if conversation.assignee_id is not None:
            routing.wake(db, workspace_id=conversation.workspace_id)
    elif status == Status.snoozed and was != Status.snoozed and conversation.assignee_id:
        # A snoozed conversation takes no room (routing counts open and pending ones).
        routing.wake(db, workspace_id=conversation.workspace_id)
    elif status == Status.open and conversation.assignee_id is None:
        # Back in the queue (a snooze ended, a pending one reopened): offered to whoever
        # has room, not left until something else wakes routing.
        routing.wake(db, workspace_id=conversation.workspace_id)
    if status != was:  # a snooze moved to another time says so, but changes no status
        automation.trigger(
            db,
            workspace_id=conversation.workspace_id,
            event="conversation.status_changed",
            conversation_id=conversation.id,
        )
    _activity(
        db,
        conversation=conversation,
        text=_status_said(db, conversation=conversation, was=was, actor_id=actor_id, via=via),
        data={"status": status.value, "by": actor_id},
        sender_type="bot" if by_bot else "system",
    )
    _updated(db, conversation)
    return conversation


def _status_said(
    db: Session, *, conversation: Conversation, was: Status, actor_id: str | None, via: str | None
) -> str:
    """The activity line of a change of status: "Resolved by Ann", "Reopened", "Snoozed
    until 2026-12-07 09:00 UTC by Ann" (the bot's lines are the bot's, as its messages)."""
    status = conversation.status
    if status == Status.snoozed and conversation.snoozed_until is not None:
        said = f"Snoozed until {conversation.snoozed_until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    elif status == Status.open:
        said = opened_said(was)
    else:
        said = {Status.resolved: "Resolved", Status.pending: "Marked pending"}[status]
    return said + _by(db, actor_id, via)


def opened_said(was: Status) -> str:
    """The activity line of a conversation opened from ``was``, by an agent or by the
    customer's message (ingest): "Reopened", "Back from snooze", "Marked open"."""
    return {Status.resolved: "Reopened", Status.snoozed: "Back from snooze"}.get(was, "Marked open")


def get_many(db: Session, *, workspace_id: str, ids: list[str]) -> list[Conversation]:
    """These conversations of this workspace, in the order given; a 404 problem if any is
    missing, so that a bulk change is all or nothing and says nothing about other tenants."""
    wanted = list(dict.fromkeys(ids))
    rows = {
        c.id: c
        for c in db.scalars(
            select(Conversation).where(
                Conversation.workspace_id == workspace_id, Conversation.id.in_(wanted)
            )
        )
    }
    if len(rows) != len(wanted):
        raise NotFound("conversation")
    return [rows[i] for i in wanted]


def set_priority(
    db: Session,
    *,
    conversation: Conversation,
    priority: Priority,
    actor_id: str | None = None,
    via: str | None = None,
) -> Conversation:
    """Change the conversation's priority, with an activity line saying who (a member, or
    ``via``: a rule), as assignment and status changes have (a priority changed left none)."""
    if conversation.priority != priority:
        conversation.priority = priority
        sla.on_changed(db, conversation=conversation)
        said = (
            "Priority cleared" if priority == Priority.none else f"Priority set to {priority.value}"
        )
        _activity(
            db,
            conversation=conversation,
            text=said + _by(db, actor_id, via),
            data={"priority": priority.value, "by": actor_id},
        )
        _updated(db, conversation)
    return conversation


def add_labels(db: Session, *, conversation: Conversation, labels: list[str]) -> list[str]:
    """Add labels (trimmed, lower-cased); labels it already has are left as they are."""
    clean = sorted({lbl.strip().lower()[:100] for lbl in labels if lbl.strip()})
    if not clean:
        raise Invalid("labels must not be empty")
    lock_row(db, Conversation, conversation.id)  # two adds at once: one after the other
    have = set(labels_of(db, [conversation.id])[conversation.id])
    for lbl in clean:
        if lbl not in have:
            db.add(
                ConversationLabel(
                    conversation_id=conversation.id,
                    label=lbl,
                    workspace_id=conversation.workspace_id,
                )
            )
    db.flush()
    sla.on_changed(db, conversation=conversation)
    _updated(db, conversation)
    return labels_of(db, [conversation.id])[conversation.id]


def remove_label(db: Session, *, conversation: Conversation, label: str) -> list[str]:
    db.execute(
        delete(ConversationLabel).where(
            ConversationLabel.conversation_id == conversation.id,
            ConversationLabel.label == label.strip().lower(),
        )
    )
    sla.on_changed(db, conversation=conversation)
    _updated(db, conversation)
    return labels_of(db, [conversation.id])[conversation.id]


def unsnooze_due(db: Session, *, now: datetime | None = None) -> int:
    """Reopen snoozed conversations whose time has come (run by the periodic job)."""
    now = now or utcnow()
    # Held, and as they are now: read unheld, a conversation whose snooze an agent was
    # moving (or that a job run again alongside was waking) was written over once that
    # committed, waking it at once or twice. One another transaction holds waits for the
    # next round (on SQLite, write transactions run one at a time anyway).
    rows = list(
        db.scalars(
            select(Conversation)
            .where(Conversation.status == Status.snoozed, Conversation.snoozed_until <= now)
            .limit(1000)
            .with_for_update(skip_locked=True)
        )
    )
    for conv in rows:
        # Due back at snoozed_until: the resolution clock runs again from then, not from
        # whenever this job came round (the time in between was the team's, not a pause).
        set_status(db, conversation=conv, status=Status.open, since=conv.snoozed_until)
    return len(rows)


def get_message(db: Session, *, conversation: Conversation, message_id: str) -> Message:
    row = db.scalar(
        select(Message).where(Message.id == message_id, Message.conversation_id == conversation.id)
    )
    if row is None:
        raise NotFound("message")
    return row


def mark_read(db: Session, *, conversation: Conversation, user_id: str) -> None:
    """The agent has seen the conversation up to now."""
    marker = db.get(ReadMarker, (user_id, conversation.id))
    if marker is None:
        db.add(ReadMarker(user_id=user_id, conversation_id=conversation.id, read_at=utcnow()))
    else:
        marker.read_at = utcnow()


# Unread counts stop here: a badge shows "99+" beyond it, and counting a large
# workspace's open conversations one by one on every inbox refresh would cost far more than
# the number tells an agent (150 ms at a million conversations).
UNREAD_LIMIT: Final = 100


def unread_counts(db: Session, *, workspace_id: str, user_id: str) -> dict[str, int]:
    """Open conversations with a customer message the agent has not seen: mine, unassigned
    and all, each counted up to ``UNREAD_LIMIT`` (also returned, as ``limit``): a count
    equal to it means that many or more."""
    marker = aliased(ReadMarker)
    unread = (
        select(Conversation.id)
        .outerjoin(
            marker,
            and_(marker.conversation_id == Conversation.id, marker.user_id == user_id),
        )
        .where(
            Conversation.workspace_id == workspace_id,
            Conversation.status == Status.open,
            Conversation.last_inbound_at.is_not(None),
            or_(marker.read_at.is_(None), Conversation.last_inbound_at > marker.read_at),
        )
    )

    def upto(stmt: Select[Any]) -> ScalarSelect[int]:
        return (
            select(func.count()).select_from(stmt.limit(UNREAD_LIMIT).subquery()).scalar_subquery()
        )

    mine, unassigned, everyone = db.execute(
        select(
            upto(unread.where(Conversation.assignee_id == user_id)),
            upto(unread.where(Conversation.assignee_id.is_(None))),
            upto(unread),
        )
    ).one()
    return {
        "mine": int(mine),
        "unassigned": int(unassigned),
        "all": int(everyone),
        "limit": UNREAD_LIMIT,
    }


_ORDER = {
    DeliveryStatus.queued: 0,
    DeliveryStatus.sent: 1,
    DeliveryStatus.delivered: 2,
    DeliveryStatus.read: 3,
}


# When a provider says a status came about (``at``): taken while it is no later than this
# past our clock, and no earlier than this before the message was written; otherwise (a
# wrong clock, a number that is no time of this message) the report's receipt stands.
STATUS_TIME_SKEW = timedelta(minutes=5)
# A provider's time that names no zone (``_wall_clock``) may be in any UTC offset in use:
# -12:00 to +14:00, each a whole number of quarter hours.
_OFFSETS = tuple(timedelta(minutes=15 * q) for q in range(-48, 57))
# It is given to the minute, by another's clock: this much either side of the message's
# life is allowed it.
_WALL_CLOCK_SLACK = timedelta(minutes=2)


def _wall_clock(at: datetime, *, since: datetime, until: datetime) -> datetime | None:
    """A provider's time with no zone (Twilio's ``RawDlrDoneDate``, the carrier's clock,
    whose zone varies from carrier to carrier) as UTC: of the times it is in each offset,
    the one within the message's life (``since`` it was written, ``until`` now). None when
    none is, or several are: a message that waited long enough for two offsets to fit
    cannot be told when it was delivered (read as UTC, a carrier on New York's clock put
    the delivery five hours early)."""
    wall = at.replace(tzinfo=UTC)
    low, high = since - _WALL_CLOCK_SLACK, until + _WALL_CLOCK_SLACK
    fits = [wall - offset for offset in _OFFSETS if low <= wall - offset <= high]
    return fits[0] if len(fits) == 1 else None


def update_delivery(
    db: Session,
    *,
    inbox_id: str,
    external_id: str,
    status: DeliveryStatus,
    error: str | None,
    at: datetime | None = None,
) -> Message | None:
    """A provider's status callback: move our message forward (never back), or fail it
    while it is not yet delivered (``_moves``); when it moved is kept in its meta
    (``status_at``): the provider's time of the status (``at``), else now. An ``at`` with
    no zone is a provider's wall clock in a zone it does not say (``_wall_clock``).

    For a message sent as several provider messages (``MessagePart``), the report is on one
    part: the message then stands where its least advanced part stands, and a part that
    fails before it is delivered fails it, named. While its parts are still being sent (the
    message still queued) a report only moves its part: the sending job settles the message
    when it is done."""
    part = db.get(MessagePart, (inbox_id, external_id))
    if part is not None:
        # Locked (PostgreSQL): two parts reporting at once must not both read the other as
        # not yet delivered.
        msg = db.get(Message, part.message_id, with_for_update=True)
        if msg is None or not _moves(part.status, status):
            return msg
        part.status = status
        failed = status == DeliveryStatus.failed
        part.error = (error or "the provider reported a failure") if failed else None
        parts = list(db.scalars(select(MessagePart).where(MessagePart.message_id == msg.id)))
        if status == DeliveryStatus.read:  # a chat read at one part was read up to it
            for earlier in parts:
                if earlier.position < part.position and earlier.status != DeliveryStatus.failed:
                    earlier.status = DeliveryStatus.read
        if msg.status == DeliveryStatus.queued:
            return msg
        status, error = _overall(parts)
    else:
        msg = db.scalar(
            select(Message).where(Message.inbox_id == inbox_id, Message.external_id == external_id)
        )
        if msg is not None:
            # Held, and read as it is now (PostgreSQL), before its meta is written back: an
            # erasure committed since this read took an address out of a mail's lists, and
            # the receipt would put it back.
            hold(db, Message, msg.id)
    if msg is None or msg.direction != Direction.outbound:
        return None
    _settle(db, msg, status, error, at)
    return msg


def delivery_known(db: Session, *, inbox_id: str, external_id: str) -> bool:
    """Whether a message of the inbox (or a part of one) carries this provider id."""
    return (
        db.get(MessagePart, (inbox_id, external_id)) is not None
        or db.scalar(
            select(Message.id).where(
                Message.inbox_id == inbox_id, Message.external_id == external_id
            )
        )
        is not None
    )


def settle_parts(db: Session, *, message: Message) -> None:
    """The sending job is done with a message sent in parts: what its parts reported while
    it was sending (delivered, read, failed) now applies to it."""
    parts = list(db.scalars(select(MessagePart).where(MessagePart.message_id == message.id)))
    if parts:
        _settle(db, message, *_overall(parts))


def _settle(
    db: Session,
    msg: Message,
    status: DeliveryStatus,
    error: str | None,
    at: datetime | None = None,
) -> None:
    if not _moves(msg.status, status) or (
        status == DeliveryStatus.failed and msg.status == status and msg.error == error
    ):
        return
    msg.status = status
    if status == DeliveryStatus.failed:
        msg.error = error or "the provider reported a failure"
    now = utcnow()
    if at is not None and at.tzinfo is None:
        at = _wall_clock(at, since=msg.created_at, until=now)
    if at is None or not msg.created_at - STATUS_TIME_SKEW <= at <= now + STATUS_TIME_SKEW:
        at = now
    times = {**(msg.meta or {}).get(STATUS_AT, {}), status.value: min(at, now).isoformat()}
    msg.meta = {**(msg.meta or {}), STATUS_AT: times}
    emit(db, workspace_id=msg.workspace_id, type="message.updated", payload=message_payload(msg))


def _moves(current: DeliveryStatus, reported: DeliveryStatus) -> bool:
    """A report moves a delivery forward, or fails one not yet delivered; it never moves one
    back, and nothing but another failure moves a failed one."""
    if reported == DeliveryStatus.failed:
        # Providers' callbacks arrive out of order, and a carrier may report a failure after
        # its own delivery receipt: what the customer had (or read) is not failed by it.
        return current not in (DeliveryStatus.delivered, DeliveryStatus.read)
    return current != DeliveryStatus.failed and _ORDER.get(reported, 0) > _ORDER.get(current, -1)


def _overall(parts: list[MessagePart]) -> tuple[DeliveryStatus, str | None]:
    """Where a message sent in parts stands: failed if any part failed (named when there
    are several), else where its least advanced part is."""
    ordered = sorted(parts, key=lambda p: p.position)
    for n, part in enumerate(ordered, start=1):
        if part.status == DeliveryStatus.failed:
            named = f"part {n} of {len(ordered)}: " if len(ordered) > 1 else ""
            return part.status, f"{named}{part.error}"
    return min((p.status for p in ordered), key=lambda s: _ORDER.get(s, 0)), None


def typing(*, conversation: Conversation, user_id: str) -> None:
    """Tell the widget and other agents that someone is typing (ephemeral, not stored)."""
    get_bus().publish(
        {
            "id": 0,
            "workspace_id": conversation.workspace_id,
            "type": "agent.typing",
            "payload": {
                "conversation_id": conversation.id,
                "inbox_id": conversation.inbox_id,
                "customer_id": conversation.customer_id,
                "user_id": user_id,
            },
            "created_at": utcnow().isoformat(),
        }
    )


def attachments(db: Session, *, message: Message) -> list[Attachment]:
    return list(
        db.scalars(
            select(Attachment)
            .where(Attachment.message_id == message.id)
            .order_by(Attachment.created_at)
        )
    )


def get_attachment(db: Session, *, message: Message, attachment_id: str) -> Attachment:
    row = db.scalar(
        select(Attachment).where(
            Attachment.id == attachment_id, Attachment.message_id == message.id
        )
    )
    if row is None:
        raise NotFound("attachment")
    return row
