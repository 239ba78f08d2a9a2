"""The one path every inbound message takes, and the writer that group-commits it.

``receive()`` does the work of one message inside the caller's transaction:
idempotency, identity, threading, storage, follow-up jobs, events. ``IngestWriter`` runs it
for many concurrent requests on one thread, committing whatever arrived together in one
transaction; each caller is answered only after the commit that holds its message.
"""

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, func, insert, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from rapport import cache
from rapport.assistant import one_compute_thread, triage
from rapport.bus import LocalBus, get_bus, set_bus
from rapport.channels import media
from rapport.channels.models import Inbox
from rapport.channels.webchat.models import Visitor
from rapport.config import Settings
from rapport.conversations import addresses
from rapport.conversations import jobs as conversation_jobs
from rapport.conversations import service as conversations
from rapport.conversations.merging import MERGE_HOPS
from rapport.conversations.models import (
    CAME_BY,
    GAINED,
    OPENS_WINDOW,
    REOPENED,
    REOPENED_BY,
    Attachment,
    Conversation,
    ConversationGuest,
    DeliveryStatus,
    Direction,
    Message,
    MessageAddress,
    MessageKind,
    Priority,
    Status,
)
from rapport.crypto import SecretBox, box_for
from rapport.customers import duplicates, profile
from rapport.customers import service as customers
from rapport.customers.identity import Handle, issuer
from rapport.customers.models import ConsentChannel, Customer, Identity, IdentityKind
from rapport.db import (
    Database,
    WalCheckpointer,
    lock_in_order,
    new_id,
    on_commit,
    sqlite_path,
    transient,
    utcnow,
)
from rapport.jobs import service as job_service
from rapport.metrics import INGEST_BATCH, INGESTED
from rapport.problems import Invalid, NotFound
from rapport.realtime import service as realtime
from rapport.realtime.models import StreamEvent
from rapport.sanitize import clean_html
from rapport.storage import LocalStorage
from rapport.workspaces.models import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundAttachment:
    filename: str
    content_type: str
    data: bytes
    # (storage key, sha256) once its bytes are in storage, before the transaction.
    stored: tuple[str, str] | None = None


@dataclass
class InboundMessage:
    """One inbound message, normalized by its channel package. Nothing past here knows
    what the provider's payload looked like."""

    inbox_id: str
    # The provider's id for this message: retries of the same delivery carry the same one.
    external_id: str | None
    handles: list[Handle]
    text: str = ""
    html: str | None = None
    sender_name: str = ""
    subject: str = ""
    attachments: list[InboundAttachment] = field(default_factory=list)
    # A conversation the channel knows this message belongs to (reply token, thread id).
    conversation_hint: str | None = None
    # The channel's word that the sender, though not that conversation's customer, was
    # addressed in it (copied on the mail they answer): they write there, as its guest.
    copied_in_thread: bool = False
    sent_at: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Set by callers acting for a workspace (the API): an inbox of another one is not found.
    expect_workspace_id: str | None = None
    expect_channel: str | None = None
    # An auto-reply, out-of-office or bounce (or what another app answers: Meta's standby):
    # recorded, never answered, never reopening.
    auto_reply: bool = False
    # Of an auto-reply: the customer's own word all the same, which nothing here answers
    # (what they wrote while another app held the thread: Meta's standby; a reaction). A
    # provider's reply window counts from it (``last_inbound_at``); nothing else changes.
    customer_wrote: bool = False
    # Set once the workspace's own triage models have run (before the writer, off its
    # thread): the writer then only stores.
    workspace_triaged: bool = False
    # The stored message's id, when chosen before the writer (the writer process's): a
    # message without an external id sent again after the process died is known by it.
    message_id: str | None = None
    # Files its channel fetches after it (a provider's media ids): the job is queued in the
    # message's own transaction, so no crash or retry can leave them unfetched.
    fetch_media: bool = False
    # An opt-out or opt-in keyword the provider acted on for the whole channel (Twilio's
    # STOP, START): (channel, keyword, granted), recorded as the customer's consent in the
    # message's own transaction, so the profile can never miss it.
    consent_keyword: tuple[ConsentChannel, str, bool] | None = None
    # Handles the sender moved to (WhatsApp's notice of a new number): made the customer's
    # in the message's own transaction, the old ones kept; one another customer holds is
    # left to duplicate review. A redelivered notice is a duplicate: applied once.
    moved_to: list[Handle] = field(default_factory=list)
    # The web chat visitor who wrote it: stored only if that visitor is still there in the
    # message's own transaction. Read before, an erasure committing in between left the
    # message to make a new customer out of the erased visitor's handle, name and email.
    visitor_id: str | None = None


@dataclass
class IngestResult:
    message: Message
    conversation: Conversation
    customer: Customer
    duplicate: bool
    # new / continued / reopened / duplicate
    threading: str
    channel: str


@dataclass
class Stored:
    """One inbound message as the batch path stored it (plain values, no ORM objects)."""

    message: SimpleNamespace  # the messages row: id, conversation_id, text, status, ...
    conversation_id: str
    customer_id: str
    duplicate: bool
    threading: str  # new / continued / reopened / duplicate
    channel: str


def with_stored_files(msg: InboundMessage, storage: LocalStorage) -> InboundMessage:
    """The message with its files written to storage, before the transaction that records
    them: hashing and writing megabytes must not hold the database's write lock (SQLite's
    one writer). The store is content-addressed, and a copy nothing names is swept."""
    if any(a.stored is None for a in msg.attachments):
        msg.attachments = [
            a if a.stored else replace(a, stored=storage.put(a.data)) for a in msg.attachments
        ]
    return msg


def with_triage(msg: InboundMessage) -> InboundMessage:
    """The message with its triage (language, sentiment, spam, priority) in ``meta``.

    Auto-replies and bounces are machines talking: not triaged."""
    if msg.auto_reply or "triage" in msg.meta or not msg.text.strip():
        return msg
    msg.meta = {**msg.meta, "triage": triage.triage(msg.text)}
    return msg


def with_workspace_models(
    database: Database, box: SecretBox, workspaces: dict[str, str], msg: InboundMessage
) -> InboundMessage:
    """The message with its workspace's own trained classifiers applied to its triage.

    ``workspaces`` remembers inbox id -> workspace id (an inbox never moves)."""
    found = msg.meta.get("triage")
    if found is None or msg.workspace_triaged:
        return msg
    workspace_id = msg.expect_workspace_id or workspaces.get(msg.inbox_id)
    if workspace_id is None:
        with database.session(write=False) as db:
            workspace_id = db.scalar(select(Inbox.workspace_id).where(Inbox.id == msg.inbox_id))
        if workspace_id is None:
            return msg  # no such inbox: the writer answers so
        workspaces[msg.inbox_id] = workspace_id
    models = triage.workspace_models(workspace_id, lambda: database.session(write=False), box)
    msg.meta = {**msg.meta, "triage": triage.apply_models(models, msg.text, found)}
    msg.workspace_triaged = True
    return msg


def receive(
    db: Session, msg: InboundMessage, *, settings: Settings, storage: LocalStorage | None = None
) -> IngestResult:
    """Store one inbound message in the caller's transaction; returns ORM objects."""
    (outcome,) = receive_batch(db, [with_triage(msg)], settings=settings, storage=storage)
    if isinstance(outcome, BaseException):
        raise outcome
    message = db.get(Message, outcome.message.id, populate_existing=True)
    conv = db.get(Conversation, outcome.conversation_id, populate_existing=True)
    customer = db.get(Customer, outcome.customer_id, populate_existing=True)
    assert message is not None and conv is not None and customer is not None
    return IngestResult(
        message,
        conv,
        customer,
        duplicate=outcome.duplicate,
        threading=outcome.threading,
        channel=outcome.channel,
    )


_MESSAGE_COLUMNS = list(Message.__table__.c)
_customers = cast(Table, Customer.__table__)
_identities = cast(Table, Identity.__table__)
_conversations = cast(Table, Conversation.__table__)


def _each(name: str) -> Any:
    return bindparam(name, expanding=True)


# The batch path's statements, built once: building a statement costs more in Python than
# SQLite takes to run it.
_INBOXES = select(
    Inbox.id,
    Inbox.workspace_id,
    Inbox.channel,
    Inbox.enabled,
    Inbox.auto_assign,
    Inbox.team_id,
    Inbox.settings,
).where(Inbox.id.in_(_each("ids")))
_WORKSPACES = select(Workspace.id, Workspace.settings).where(Workspace.id.in_(_each("ids")))
# FOR SHARE on PostgreSQL: an erasure deleting the visitor waits for this transaction (and
# then finds what it stored), or this one waits for the erasure and finds the visitor gone.
# SQLite has one writer at a time: the read is enough.
_VISITORS = select(Visitor.id).where(Visitor.id.in_(_each("ids"))).with_for_update(read=True)
# A stored message with its customer, found by (inbox, external id) or by its own id.
_STORED_ROWS = select(*_MESSAGE_COLUMNS, Conversation.customer_id.label("customer_id")).join(
    Conversation, Conversation.id == Message.conversation_id
)
_MESSAGE_KEY = ("inbox_id", "external_id")
_STORED = _STORED_ROWS.where(
    # Two IN lists, not a row-value IN: SQLite scans the table for the latter.
    Message.inbox_id.in_(_each("inbox_ids")),
    Message.external_id.in_(_each("external_ids")),
)
_STORED_BY_ID = _STORED_ROWS.where(Message.id.in_(_each("ids")))
_IDENTITY_COLUMNS = (
    Identity.id,
    Identity.workspace_id,
    Identity.kind,
    Identity.value,
    Identity.customer_id,
    Identity.verified,
    Identity.inbox_id,
)
_IDENTITY_KEY = ("workspace_id", "kind", "value")
_IDENTITIES = select(*_IDENTITY_COLUMNS).where(  # one IN list per column, for the same reason
    Identity.workspace_id.in_(_each("workspace_ids")),
    Identity.kind.in_(_each("kinds")),
    Identity.value.in_(_each("values")),
)


def _probed(columns: Any, table: Table, key: tuple[str, ...], name: str) -> Any:
    """``columns`` of ``table``'s row for each key, as a FROM clause: the keys come as one
    array parameter per column (``unnest``, parameters named ``<column>s``), and each is
    looked up by a LATERAL subquery on the key's columns."""
    arrays = [bindparam(f"{column}s", type_=ARRAY(String)) for column in key]
    keys = func.unnest(*arrays).table_valued(*key).render_derived(name="k")
    one = select(*columns).where(*(table.c[c] == keys.c[c] for c in key)).lateral(name)
    return keys.join(one, true()), one


# PostgreSQL: the same two lookups as one index probe per key. Given the IN lists, its
# planner seeks the inbox (or workspace) and filters the rest whenever it believes there
# are few such rows: on a table not analyzed yet, or for an inbox newer than the last
# ANALYZE, every batch then read the inbox's messages (5.7 ms against 0.26 ms for 16 keys
# on a fresh 6,000-message table). An equality on every column of a unique index in a
# LATERAL subquery is planned as a probe whatever the statistics say.
_stored_keys, _stored_one = _probed(
    _MESSAGE_COLUMNS, cast(Table, Message.__table__), _MESSAGE_KEY, "m"
)
_STORED_BY_KEY = select(*_stored_one.c, Conversation.customer_id.label("customer_id")).select_from(
    _stored_keys.join(Conversation, Conversation.id == _stored_one.c.conversation_id)
)
_identity_keys, _identity_one = _probed(_IDENTITY_COLUMNS, _identities, _IDENTITY_KEY, "i")
_IDENTITIES_BY_KEY = select(_identity_one).select_from(_identity_keys)


def _matching(
    conn: Any, keys: set[tuple[Any, ...]], names: tuple[str, ...], *, probes: Any, lists: Any
) -> Any:
    """Rows whose key is among ``keys``: on PostgreSQL a probe per key; elsewhere one IN list
    per column, which may also bring rows of other combinations (the caller checks)."""
    if conn.dialect.name == "postgresql":
        paired = {f"{n}s": [str(k[j]) for k in keys] for j, n in enumerate(names)}
        return conn.execute(probes, paired)
    return conn.execute(lists, {f"{n}s": list({k[j] for k in keys}) for j, n in enumerate(names)})


_CONV_COLUMNS = (
    Conversation.id,
    Conversation.workspace_id,
    Conversation.customer_id,
    Conversation.inbox_id,
    Conversation.status,
    Conversation.priority,
    Conversation.assignee_id,
    Conversation.team_id,
    Conversation.snoozed_until,
    Conversation.resolved_at,
    Conversation.last_activity_at,
    Conversation.messages_count,
    Conversation.merged_into_id,
)
_ranked = (
    select(
        *_CONV_COLUMNS,
        func.row_number()
        .over(
            partition_by=(Conversation.customer_id, Conversation.inbox_id),
            order_by=(Conversation.last_activity_at.desc(), Conversation.id.desc()),
        )
        .label("rank"),
    )
    .where(Conversation.customer_id.in_(_each("customers")))
    .subquery()
)
# Each customer's latest conversation in each inbox.
_LATEST = select(_ranked).where(_ranked.c.rank == 1)
_CONVERSATIONS = select(*_CONV_COLUMNS).where(Conversation.id.in_(_each("ids")))
_CLAIM = (
    update(_identities)
    .where(_identities.c.id == bindparam("iid"))
    .values(customer_id=bindparam("cid"), verified=True)
)
# A Messenger or Instagram id that came through another inbox than the one recorded as
# its page's (its page unknown, or two inboxes of one page): the inbox it came through last
# is one a send to it surely reaches.
# Who holds each identity now (a batch's handles read again, see ``HandleMoved``).
_HOLDERS = select(Identity.id, Identity.customer_id).where(Identity.id.in_(_each("ids")))
_ISSUED = (
    update(_identities)
    .where(_identities.c.id == bindparam("iid"))
    .values(inbox_id=bindparam("inbox"))
)
_SEEN = (
    update(_customers)
    .where(_customers.c.id == bindparam("cid"))
    .values(last_seen_at=bindparam("now"))
)
# A customer first seen without a name takes the one a later message brings (a statement
# of its own, so that the name is written, and the search index touched, only then).
_NAMED = (
    update(_customers)
    .where(_customers.c.id == bindparam("cid"), _customers.c.name == "")
    .values(name=bindparam("name"))
)
_t = _conversations.c
_CONTINUED = (
    update(_conversations)
    .where(_t.id == bindparam("cid"))
    .values(
        status=bindparam("status"),
        snoozed_until=bindparam("snoozed"),
        resolved_at=bindparam("resolved"),
        last_activity_at=bindparam("now"),
        # The customer wrote (``inbound``; NULL if only machines did), and waits on us
        # (``waits``; NULL too if nothing here answers what they wrote).
        last_inbound_at=func.coalesce(
            bindparam("inbound", type_=_t.last_inbound_at.type), _t.last_inbound_at
        ),
        waiting_since=func.coalesce(
            _t.waiting_since, bindparam("waits", type_=_t.waiting_since.type)
        ),
        messages_count=_t.messages_count + bindparam("added"),
    )
)
_LAST_EVENT = select(func.max(StreamEvent.id))
# The events one transaction of a workspace stored (they share its timestamp), among the
# latest ones: an earlier try of the same batch committed them moments ago.
_EVENTS_OF_COMMIT = (
    select(StreamEvent.id, StreamEvent.type, StreamEvent.payload)
    .where(
        StreamEvent.workspace_id == bindparam("ws"),
        StreamEvent.id > bindparam("floor"),
        StreamEvent.created_at == bindparam("at"),
    )
    .order_by(StreamEvent.id)
)
_RECENT_EVENTS = 100_000


class HandleMoved(Exception):
    """A handle the batch found its sender by went to another customer after it was read:
    a merge or its undo, which holds its customers' rows, committed while the batch waited
    for one of them. Tried again (by ``IngestWriter``; a mail by its sending server, told
    to, or by the mailbox's next poll), the batch reads where it went."""


def _check_holders(conn: Any, came_by: dict[str | None, str], known: set[str]) -> None:
    """Raise ``HandleMoved`` unless each known customer still holds the handle their
    message came by. Run once the batch holds those customers' rows (PostgreSQL: on
    SQLite nothing commits in between): an undo moving the restored person's handles
    back had them read as the survivor's, and their message stayed in her thread."""
    wanted = {i: c for i, c in came_by.items() if i is not None and c in known}
    if wanted and any(
        holder != wanted[iid] for iid, holder in conn.execute(_HOLDERS, {"ids": list(wanted)})
    ):
        raise HandleMoved("a handle of this batch was moved by a merge or its undo")


def _row(mapping: Any) -> SimpleNamespace:
    return SimpleNamespace(**dict(mapping))


def receive_batch(
    db: Session,
    msgs: list[InboundMessage],
    *,
    settings: Settings,
    storage: LocalStorage | None = None,
) -> list[Stored | BaseException]:
    """Store many inbound messages in the caller's transaction, in order.

    The same steps as ARCHITECTURE draws for one message, done for the whole batch with a
    handful of set-based statements instead of a dozen per message: one lookup each for
    inboxes, stored external ids, identities, customers and latest conversations, then one
    multi-row write per table. A message that cannot be stored (unknown inbox, wrong
    channel) gets its exception in its slot; the others are stored.
    """
    db.flush()  # rows the caller added through the ORM must be visible to Core
    conn = db.connection()
    now = utcnow()
    out: list[Stored | BaseException | None] = [None] * len(msgs)

    # 0. Inboxes and workspaces of the batch.
    inboxes = {r.id: r for r in conn.execute(_INBOXES, {"ids": list({m.inbox_id for m in msgs})})}
    todo: list[int] = []
    for i, m in enumerate(msgs):
        ib = inboxes.get(m.inbox_id)
        if (
            ib is None
            or not ib.enabled
            or (m.expect_workspace_id is not None and ib.workspace_id != m.expect_workspace_id)
        ):
            out[i] = NotFound("inbox")
        elif m.expect_channel is not None and ib.channel != m.expect_channel:
            out[i] = Invalid(f"inbox {ib.id} is a {ib.channel} inbox, not {m.expect_channel}")
        else:
            todo.append(i)
    visitors = {v for i in todo if (v := msgs[i].visitor_id)}
    if visitors:
        present = set(conn.execute(_VISITORS, {"ids": sorted(visitors)}).scalars())
        for i in [i for i in todo if msgs[i].visitor_id and msgs[i].visitor_id not in present]:
            out[i] = NotFound("visitor")  # erased since the view read it: nothing is stored
            todo.remove(i)
    windows = {
        ws_id: timedelta(
            hours=int((ws_settings or {}).get("reopen_window_hours", settings.reopen_window_hours))
        )
        for ws_id, ws_settings in conn.execute(
            _WORKSPACES, {"ids": list({inboxes[msgs[i].inbox_id].workspace_id for i in todo})}
        )
    }

    # 1. Idempotency: what a provider retries, or a client re-posts, is already stored.
    pairs = {(msgs[i].inbox_id, msgs[i].external_id) for i in todo if msgs[i].external_id}
    stored: dict[tuple[str, str], SimpleNamespace] = {}
    if pairs:
        for r in _matching(conn, pairs, _MESSAGE_KEY, probes=_STORED_BY_KEY, lists=_STORED):
            if (r.inbox_id, r.external_id) in pairs:
                stored[(r.inbox_id, r.external_id)] = _row(r._mapping)
    # Those without an external id are known by an id chosen before the first try, if any
    # (sent again after the writer process died, it may have committed them already).
    chosen = [msgs[i].message_id for i in todo if msgs[i].message_id and not msgs[i].external_id]
    stored_as: dict[str, SimpleNamespace] = {}
    if chosen:
        for r in conn.execute(_STORED_BY_ID, {"ids": chosen}):
            stored_as[r.id] = _row(r._mapping)
    first_of: dict[tuple[str, str], int] = {}
    fresh: list[int] = []
    recovered: dict[int, SimpleNamespace] = {}
    for i in todo:
        m = msgs[i]
        key = (m.inbox_id, m.external_id or "")
        old = stored.get(key) if m.external_id else stored_as.get(m.message_id or "")
        if old is not None and old.id == m.message_id:
            recovered[i] = old  # stored by an earlier try of this very send: see below
        elif old is not None:
            out[i] = Stored(
                _strip(old),
                old.conversation_id,
                old.customer_id,
                True,
                "duplicate",
                inboxes[m.inbox_id].channel,
            )
        elif m.external_id and key in first_of:
            continue  # a retry inside this very batch: answered from the first copy below
        else:
            if m.external_id:
                first_of[key] = i
            fresh.append(i)

    # An earlier try of this send committed, but its answer was lost (the connection dropped
    # during COMMIT, the writer process died before replying). Nobody was told: the sender
    # is answered as if this try stored it, and the realtime events that commit stored,
    # never published, are published with this one's.
    republished = _events_of_commits(
        conn,
        {(inboxes[msgs[i].inbox_id].workspace_id, old.created_at) for i, old in recovered.items()},
    )
    for i, old in recovered.items():
        out[i] = Stored(
            _strip(old),
            old.conversation_id,
            old.customer_id,
            False,
            _threading_of(old, republished),
            inboxes[msgs[i].inbox_id].channel,
        )

    # 2. Identity: verified handles find their customer, whichever inbox they came through.
    wanted = {
        (inboxes[msgs[i].inbox_id].workspace_id, h.kind, h.value)
        for i in fresh
        for h in [*msgs[i].handles, *msgs[i].moved_to]
    }
    identities: dict[tuple[str, IdentityKind, str], dict[str, Any]] = {}
    if wanted:
        for ident_row in _matching(
            conn, wanted, _IDENTITY_KEY, probes=_IDENTITIES_BY_KEY, lists=_IDENTITIES
        ):
            triple = (ident_row.workspace_id, ident_row.kind, ident_row.value)
            if triple in wanted:
                identities[triple] = dict(ident_row._mapping)
    customer_of: dict[int, str] = {}
    came_by: dict[int, str | None] = {}
    gave: dict[int, list[str]] = {}  # the identities each message made its sender's
    new_customers: dict[str, dict[str, Any]] = {}
    new_identities: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    issued: dict[str, str] = {}  # identity id -> the inbox that issued it, where that changed
    claimed_from: set[str] = set()  # customers a claimed handle left
    gained: set[str] = set()  # known customers given a new email or phone
    one_sender: set[tuple[str, str, str]] = set()  # (workspace, customer, another's handle)
    for i in fresh:
        m = msgs[i]
        ws, channel = inboxes[m.inbox_id].workspace_id, inboxes[m.inbox_id].channel
        handles = customers.dedupe_handles(m.handles)
        # The identities of the customers the sender's verified handles prove, in the
        # channel's order: the first is theirs.
        proven = [
            row
            for h in handles
            if h.verified
            and (row := identities.get((ws, h.kind, h.value))) is not None
            and row["verified"]
        ]
        customer_id = proven[0]["customer_id"] if proven else None
        if customer_id is None:
            customer_id = new_id()
            new_customers[customer_id] = {
                "id": customer_id,
                "workspace_id": ws,
                "name": m.sender_name,
                "email": None,
                "phone": None,
                "attributes": {},
                "first_seen_at": now,
                "last_seen_at": now,
                "created_at": now,
                "updated_at": now,
            }
        customer_of[i] = customer_id
        # One sender who proved a handle of another customer too (an email of one, a phone
        # of the other): the message goes to the first, the handle stays the other's, and
        # the two are put to duplicate review (step 6).
        one_sender.update(
            (ws, customer_id, row["customer_id"])
            for row in proven
            if row["customer_id"] != customer_id
        )
        # The handles the sender moved to (WhatsApp's notice of a new number) are theirs
        # from here on in the batch: a message from the new number after the notice, in
        # this same batch, finds them, not a stranger. One another customer proved stays
        # theirs; step 6 records the change and puts that pair to duplicate review.
        moved = [
            h
            for h in customers.dedupe_handles(m.moved_to)
            if (row := identities.get((ws, h.kind, h.value))) is None
            or not row["verified"]
            or row["customer_id"] == customer_id
        ]
        gave[i] = []
        for h in [*handles, *moved]:
            row = identities.get((ws, h.kind, h.value))
            # A Messenger or Instagram id is its page's: the inbox it came through issued it.
            page = issuer(h, channel=channel, inbox_id=m.inbox_id)
            if row is None:
                row = {
                    "id": new_id(),
                    "workspace_id": ws,
                    "customer_id": customer_id,
                    "kind": h.kind,
                    "value": h.value,
                    "verified": h.verified,
                    "inbox_id": page,
                    "created_at": now,
                }
                identities[(ws, h.kind, h.value)] = row
                new_identities.append(row)
                gave[i].append(row["id"])
                if customer_id in new_customers:
                    fill = new_customers[customer_id]
                    if h.kind == IdentityKind.email and not fill["email"]:
                        fill["email"] = h.value
                    if h.kind == IdentityKind.phone and not fill["phone"]:
                        fill["phone"] = h.value
                elif h.kind in (IdentityKind.email, IdentityKind.phone):
                    gained.add(customer_id)  # shown, searched and written to once settled
            elif h.verified and not row["verified"]:
                # A handle someone only typed is claimed by the customer who proved it.
                claimed_from.add(row["customer_id"])
                row["customer_id"], row["verified"] = customer_id, True
                claims.append({"iid": row["id"], "cid": customer_id})
                gave[i].append(row["id"])
            elif h in moved:
                gave[i].append(row["id"])  # proved theirs by the number change (step 6)
            if page is not None and row["inbox_id"] != page:
                row["inbox_id"] = issued[row["id"]] = page
        # The identity they came by: the one that proved them, else the first now theirs.
        came_by[i] = (
            proven[0]["id"]
            if proven
            else next(
                (
                    row["id"]
                    for h in handles
                    if (row := identities[(ws, h.kind, h.value)])["customer_id"] == customer_id
                ),
                None,
            )
        )

    # 3. Threading: continue, reopen within the window, or start a conversation.
    known = {customer_of[i] for i in fresh} - set(new_customers)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    if known:
        for conv_row in conn.execute(_LATEST, {"customers": list(known)}):
            latest[(conv_row.customer_id, conv_row.inbox_id)] = dict(conv_row._mapping) | {
                "added": 0
            }
        _follow_merges(conn, latest)
    hints = {msgs[i].conversation_hint for i in fresh if msgs[i].conversation_hint}
    hinted: dict[str, dict[str, Any]] = {}
    if hints:
        for hint_row in conn.execute(_CONVERSATIONS, {"ids": list(hints)}):
            hinted[hint_row.id] = dict(hint_row._mapping) | {"added": 0}
        _follow_merges(conn, hinted)
    touched: dict[str, dict[str, Any]] = {}
    guests: set[tuple[str, str, str]] = set()  # (conversation, customer, workspace)
    new_convs: dict[str, dict[str, Any]] = {}
    new_messages: list[dict[str, Any]] = []
    new_attachments: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    stored_of: dict[int, Stored] = {}
    # The messages that opened their conversation again (it was resolved, pending or
    # snoozed): a change of status, which rules and webhooks hear of as an agent's.
    opened: set[int] = set()
    for i in fresh:
        m = msgs[i]
        ib = inboxes[m.inbox_id]
        ws, customer_id = ib.workspace_id, customer_of[i]
        conv = None
        hint = hinted.get(m.conversation_hint or "")
        guest = False
        reopened: datetime | None = None  # when the conversation it reopened was resolved
        if hint is not None and hint["workspace_id"] == ws:
            if hint["customer_id"] == customer_id:
                conv = touched.get(hint["id"], hint)
            elif m.copied_in_thread and not m.auto_reply:
                # Someone the thread copied answering all: the customer's conversation.
                conv, guest = touched.get(hint["id"], hint), True
                guests.add((conv["id"], customer_id, ws))
        if conv is None:
            conv = latest.get((customer_id, ib.id))
            if conv is not None:
                conv = touched.get(conv["id"], conv)
                if conv["status"] == Status.resolved and not conv.get("new"):
                    resolved_at = conv["resolved_at"] or conv["last_activity_at"]
                    if now - resolved_at > windows[ws]:
                        conv = None
        if conv is None:
            conv = {
                "id": new_id(),
                "workspace_id": ws,
                "customer_id": customer_id,
                "inbox_id": ib.id,
                "subject": m.subject[:500],
                "status": Status.open,
                "priority": Priority.none,
                "assignee_id": None,
                "team_id": None,
                "snoozed_until": None,
                "first_response_at": None,
                "resolved_at": None,
                "last_activity_at": now,
                "last_inbound_at": now,
                # Started by an auto-reply, it is resolved at once: nobody waits on it.
                "waiting_since": None if m.auto_reply else now,
                "messages_count": 0,
                "created_at": now,
                "assigned_at": None,
                "new": True,
                "added": 0,
            }
            new_convs[conv["id"]] = conv
            latest[(customer_id, ib.id)] = conv
            outcome = "new"
        elif conv.get("new"):
            outcome = "continued"
        else:
            outcome = "reopened" if conv["status"] == Status.resolved else "continued"
            if outcome == "reopened":
                reopened = conv["resolved_at"] or conv["last_activity_at"]
            touched[conv["id"]] = conv
            if outcome == "reopened" and conv["assignee_id"] and not m.auto_reply:
                conv["reclaim"] = conv["assignee_id"]  # if they have left since (step 6)
        was = conv["status"]  # what the line of a change of status says it came back from
        if m.auto_reply:
            if outcome == "new":  # recorded where agents can find it, not queued for them
                conv["status"], conv["resolved_at"] = Status.resolved, now
            elif outcome == "reopened":
                outcome = "recorded"
            conv["wrote"] = conv.get("wrote") or m.customer_wrote
        else:
            if was != Status.open and not conv.get("new"):
                opened.add(i)
            conv["status"], conv["resolved_at"], conv["snoozed_until"] = Status.open, None, None
            conv["awaits"] = True  # a person wrote: an auto-reply alone leaves no one waiting
            if conv.get("new") and conv["waiting_since"] is None:
                conv["waiting_since"] = now  # started by an auto-reply earlier in the batch
        reopened_or_new = outcome in ("new", "reopened")
        conv["last_activity_at"] = now
        conv["added"] += 1
        message_id = m.message_id or new_id()
        if i in opened:
            said = _opened_line(conv, was=was, by=message_id, before=now)
            new_messages.append(said)
            events.append(
                {
                    "workspace_id": ws,
                    "type": "message.created",
                    "created_at": now,
                    "payload": conversations.message_payload(SimpleNamespace(**said)),  # type: ignore[arg-type]
                }
            )
            conv["added"] += 1

        # 4. The message (and its attachments).
        meta = dict(m.meta)
        if meta.get("triage") is not None and not m.workspace_triaged:
            meta["triage"] = triage.with_workspace_models(
                db, ws, m.text, meta["triage"], box_for(settings.secret_key.get_secret_value())
            )
        if m.sent_at:
            meta["sent_at"] = m.sent_at.isoformat()
        if m.auto_reply and not m.customer_wrote:
            # Told apart once stored: a provider's reply window does not count from it.
            meta[OPENS_WINDOW] = False
        if came_by[i] is not None:
            # Undoing a merge gives the restored record what came by its handles meanwhile.
            meta[CAME_BY] = came_by[i]
        if gave[i]:
            meta[GAINED] = gave[i]  # and the handles it brought: theirs, the undo gives them
        if outcome == "reopened" and reopened is not None:
            meta[REOPENED] = reopened.isoformat()  # resolved again if only it reopened
        row = {
            "id": message_id,
            "workspace_id": ws,
            "conversation_id": conv["id"],
            "inbox_id": ib.id,
            "direction": Direction.inbound,
            "kind": MessageKind.message,
            "sender_type": "customer",
            "sender_id": customer_id,
            "text": m.text,
            "html": clean_html(m.html) if m.html else None,
            "external_id": m.external_id or None,  # "" is no id, as step 1 read it
            "status": DeliveryStatus.received,
            "error": None,
            "meta": meta,
            "created_at": now,
        }
        new_messages.append(row)
        first_attachment = len(new_attachments)
        for att in m.attachments:
            store = storage or LocalStorage(settings.attachments_dir)
            storage_key, digest = att.stored or store.put(att.data)
            new_attachments.append(
                {
                    "id": new_id(),
                    "workspace_id": ws,
                    "message_id": row["id"],
                    "filename": att.filename[:500],
                    "content_type": att.content_type[:200],
                    "size": len(att.data),
                    "sha256": digest,
                    "storage_key": storage_key,
                    "created_at": now,
                }
            )
        events.append(
            {
                "workspace_id": ws,
                "type": "message.created",
                "created_at": now,
                "payload": conversations.message_payload(
                    SimpleNamespace(**row),  # type: ignore[arg-type]
                    [
                        {k: a[k] for k in ("id", "filename", "content_type", "size")}
                        for a in new_attachments[first_attachment:]
                    ]
                    if m.attachments
                    else None,
                    sender_name=(m.sender_name or _address_of(m.handles)) if guest else None,
                ),
            }
        )
        # Agents' lists and open pages follow a status their message changed (a pending or
        # snoozed one opened again, as well as a reopening): they kept the old until a reload.
        if reopened_or_new or i in opened:
            events.append(
                {
                    "workspace_id": ws,
                    "created_at": now,
                    "type": "conversation.created" if outcome == "new" else "conversation.updated",
                    "payload": conversations.conversation_payload(SimpleNamespace(**conv)),  # type: ignore[arg-type]
                }
            )
        stored_of[i] = Stored(
            SimpleNamespace(**row), conv["id"], customer_id, False, outcome, ib.channel
        )

    # 5. Write it all: one multi-row statement per table.
    if new_customers:
        conn.execute(insert(Customer), list(new_customers.values()))
    if new_identities:
        conn.execute(insert(Identity), new_identities)
    if claims:
        conn.execute(_CLAIM, claims)
    if claims or gained:
        settled = claimed_from | gained | {c["cid"] for c in claims}
        # Held with those the last-seen update below reaches, ids ascending, in one pass:
        # each in order alone, the two took a customer it sees (sorting first) after one
        # a claim left (sorting last), and could wait in a circle with a merge.
        lock_in_order(conn, Customer, settled | known)
        customers.settle_handles(conn, settled)
    if issued:
        conn.execute(_ISSUED, [{"iid": k, "inbox": v} for k, v in issued.items()])
    if known:
        # One row at a time, ids ascending (customers are held in that order: a merge, its
        # undo); in set order this batch could hold one while waiting for another a merge
        # holds, the merge waiting for it, and PostgreSQL failed one of the two.
        conn.execute(_SEEN, [{"cid": c, "now": now} for c in sorted(known)])
        if conn.dialect.name == "postgresql":
            _check_holders(conn, {came_by[i]: customer_of[i] for i in fresh}, known)
        names = {customer_of[i]: msgs[i].sender_name for i in fresh if msgs[i].sender_name}
        if named := [{"cid": c, "name": names[c]} for c in known if c in names]:
            conn.execute(_NAMED, named)
    if new_convs:
        conn.execute(
            insert(Conversation),
            [
                {k: v for k, v in c.items() if k not in ("new", "added", "awaits", "wrote")}
                | {"messages_count": c["added"]}
                for c in new_convs.values()
            ],
        )
    if touched:
        conn.execute(
            _CONTINUED,
            [
                {
                    "cid": c["id"],
                    "now": now,
                    "inbound": now if c.get("awaits") or c.get("wrote") else None,
                    "waits": now if c.get("awaits") else None,
                    "added": c["added"],
                    "status": c["status"],
                    "snoozed": c["snoozed_until"],
                    "resolved": c["resolved_at"],
                }
                for c in touched.values()
            ],
        )
    if new_messages:
        conn.execute(insert(Message), new_messages)
        # Which addresses the mails among them list: erasure finds others' mails by them.
        if listed := [
            row
            for m in new_messages
            for row in addresses.rows(
                message_id=m["id"], workspace_id=m["workspace_id"], meta=m["meta"]
            )
        ]:
            conn.execute(insert(MessageAddress), listed)
    if guests:
        _record_guests(conn, guests, now=now)
    if new_attachments:
        conn.execute(insert(Attachment), new_attachments)
    # 6. Follow-up work in the same transaction: SLA clocks, automation, routing.
    for ws, a, b in sorted(one_sender):
        duplicates.suggest(
            db,
            workspace_id=ws,
            a=a,
            b=b,
            probability=duplicates.ONE_SENDER_PROBABILITY,
            reason="one message came from a handle of each",
        )
    for i in fresh:
        s = stored_of[i]
        conv = (
            new_convs.get(s.conversation_id)
            or touched.get(s.conversation_id)
            or hinted.get(s.conversation_id)
            or {}
        )
        ib = inboxes[msgs[i].inbox_id]
        out[i] = s
        if msgs[i].fetch_media:
            media.request_fetch(db, message_id=s.message.id, workspace_id=ib.workspace_id)
        if keyword := msgs[i].consent_keyword:
            profile.record_keyword(
                db,
                workspace_id=ib.workspace_id,
                customer_id=s.customer_id,
                channel=keyword[0],
                keyword=keyword[1],
                granted=keyword[2],
            )
        if msgs[i].moved_to:
            _moved(db, msgs[i], s.customer_id, workspace_id=ib.workspace_id, source=ib.channel)
        if msgs[i].auto_reply:
            continue  # nothing to answer, route or time
        conversation_jobs.after_inbound_ids(
            db,
            workspace_id=ib.workspace_id,
            conversation_id=s.conversation_id,
            message_id=s.message.id,
            new=s.threading == "new",
            opened=i in opened,
            route=bool(ib.auto_assign) and conv.get("assignee_id") is None,
            reclaim=conv.get("reclaim") if s.threading == "reopened" else None,
            at=now,
            bot=bool(((ib.settings or {}).get("bot") or {}).get("enabled")),
        )
        out[i] = s
    # The events last: their ids are taken as late as the transaction allows (one that
    # waited on a lock after taking them let later ids commit first: stragglers).
    bus_events = republished
    if events:
        ids = realtime.store(db, events)
        bus_events = bus_events + [
            {**e, "id": event_id, "created_at": now.isoformat()}
            for e, event_id in zip(events, ids, strict=True)
        ]
    if bus_events:

        def publish() -> None:
            get_bus().publish_many(bus_events)

        on_commit(db, publish)
    for i in todo:
        if out[i] is None:  # a copy of a message earlier in this batch
            m = msgs[i]
            first = stored_of[first_of[(m.inbox_id, m.external_id or "")]]
            out[i] = Stored(
                first.message,
                first.conversation_id,
                first.customer_id,
                True,
                "duplicate",
                first.channel,
            )
    return [o if o is not None else RuntimeError("not processed") for o in out]


def _opened_line(conv: dict[str, Any], *, was: Status, by: str, before: datetime) -> dict[str, Any]:
    """The activity line of the customer's message ``by`` opening ``conv`` again from
    ``was`` (resolved, pending or snoozed), as an agent's change writes it ("Reopened",
    "Marked open", "Back from snooze"). Stamped a microsecond ``before`` their message: the
    thread lists by time, then id, and the message's id is older than the line's (chosen
    before the writer); and undoing a customers' merge, which resolves the conversation
    again if nothing came after the message that reopened it (conversations/merging.py),
    does not count the line as something that came after. Only a reopening records its
    message (``REOPENED_BY``): the undo takes back no other change of status."""
    meta: dict[str, Any] = {"status": Status.open.value, "by": None}
    if was == Status.resolved:
        meta[REOPENED_BY] = by
    return {
        "id": new_id(),
        "workspace_id": conv["workspace_id"],
        "conversation_id": conv["id"],
        "inbox_id": conv["inbox_id"],
        "direction": Direction.outbound,
        "kind": MessageKind.activity,
        "sender_type": "system",
        "sender_id": None,
        "text": conversations.opened_said(was),
        "html": None,
        "external_id": None,
        "status": DeliveryStatus.received,
        "error": None,
        "meta": meta,
        "created_at": before - timedelta(microseconds=1),
    }


def _address_of(handles: list[Handle]) -> str:
    return next((h.value for h in handles if h.kind == IdentityKind.email), "")


def _record_guests(conn: Any, guests: set[tuple[str, str, str]], *, now: datetime) -> None:
    """Each guest of a conversation recorded once (``ConversationGuest``)."""
    there = {
        (row.conversation_id, row.customer_id)
        for row in conn.execute(
            select(ConversationGuest.conversation_id, ConversationGuest.customer_id).where(
                ConversationGuest.conversation_id.in_({c for c, _, _ in guests})
            )
        )
    }
    if fresh := sorted(g for g in guests if g[:2] not in there):
        conn.execute(
            insert(ConversationGuest),
            [
                {
                    "id": new_id(),
                    "workspace_id": ws,
                    "conversation_id": conv,
                    "customer_id": customer,
                    "created_at": now,
                }
                for conv, customer, ws in fresh
            ],
        )


def _moved(
    db: Session, msg: InboundMessage, customer_id: str, *, workspace_id: str, source: str
) -> None:
    """The customer moved to ``msg.moved_to``: theirs now, or, held by another customer,
    the two put to duplicate review (an agent links them, or not)."""
    held = customers.change_number(
        db,
        workspace_id=workspace_id,
        customer_id=customer_id,
        old=msg.handles,
        new=msg.moved_to,
        source=source,
        at=msg.sent_at or utcnow(),
    )
    for other in held:
        duplicates.suggest(
            db,
            workspace_id=workspace_id,
            a=customer_id,
            b=other,
            probability=duplicates.NUMBER_CHANGE_PROBABILITY,
            reason=f"{source}: one changed number to a number the other has",
        )


def _follow_merges(conn: Any, convs: dict[Any, dict[str, Any]]) -> None:
    """Replace each conversation an agent merged into another by the one its merges ended
    in: a message for it (its customer's latest, or a reply to its thread) continues there.
    Never into another customer's: a merge of customers undone after their conversations
    were merged leaves the pointer to the other person's thread, and the message starts a
    conversation of its own instead (it went into the other's, and the reply to her)."""
    for _ in range(MERGE_HOPS):
        targets = {c["merged_into_id"] for c in convs.values() if c["merged_into_id"]}
        if not targets:
            return
        found = {
            r.id: dict(r._mapping) | {"added": 0}
            for r in conn.execute(_CONVERSATIONS, {"ids": list(targets)})
        }
        if not found:
            return
        for key, conv in list(convs.items()):
            target = found.get(conv["merged_into_id"] or "")
            if target is None:
                continue
            if target["customer_id"] == conv["customer_id"]:
                convs[key] = target
            else:
                del convs[key]


def _events_of_commits(conn: Any, commits: set[tuple[str, datetime]]) -> list[dict[str, Any]]:
    """The realtime events stored by these (workspace, time) transactions, as published."""
    if not commits:
        return []
    floor = (conn.execute(_LAST_EVENT).scalar() or 0) - _RECENT_EVENTS
    return [
        {
            "id": e.id,
            "workspace_id": ws,
            "type": e.type,
            "created_at": at.isoformat(),
            "payload": e.payload,
        }
        for ws, at in sorted(commits)
        for e in conn.execute(_EVENTS_OF_COMMIT, {"ws": ws, "at": at, "floor": floor})
    ]


def _threading_of(message: SimpleNamespace, events: list[dict[str, Any]]) -> str:
    """What a stored message did to its conversation, told by the events stored with it:
    a conversation's event right after the message's own, if it started or reopened it."""
    for e, after in zip(events, [*events[1:], None], strict=True):
        if e["type"] == "message.created" and e["payload"].get("id") == message.id:
            if after is not None and after["payload"].get("id") == message.conversation_id:
                if after["type"] == "conversation.created":
                    return "new"
                if after["type"] == "conversation.updated":
                    return "reopened"
            break
    return "continued"


def _strip(row: SimpleNamespace) -> SimpleNamespace:
    values = dict(vars(row))
    values.pop("customer_id", None)
    return SimpleNamespace(**values)


_STOP = object()


class _Store:
    """The writer's own work, group-committing one batch; it runs on the writer thread, or
    alone in the writer process."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.storage = LocalStorage(settings.attachments_dir)
        path = sqlite_path(database.engine)
        self.checkpointer = WalCheckpointer(path) if path else None

    def start(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.start()

    def stop(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()

    def batch(self, msgs: list[InboundMessage]) -> list[Stored | BaseException]:
        """One outcome per message, in order; never raises."""
        for m in msgs:
            # Chosen before the first try, so that a message without an external id whose
            # commit went through although its answer was lost is found, not stored again.
            m.message_id = m.message_id or new_id()
            with_stored_files(m, self.storage)
        try:
            return self._commit(msgs)
        except Exception as exc:
            if len(msgs) == 1 or transient(exc):
                # Busy (the write lock not had in time): alone, each would wait as long
                # again while every sender behind them waits too. All are told to retry.
                return [exc] * len(msgs)
            # Never let one message take its batch down: each alone, in its own transaction.
            log.exception("group commit failed", extra={"event": "ingest.batch_failed"})
            return [self.batch([m])[0] for m in msgs]

    def _commit(self, msgs: list[InboundMessage]) -> list[Stored | BaseException]:
        try:
            return self._transaction(msgs)
        except (IntegrityError, HandleMoved):
            # Another process stored the same identity or message, or moved a handle (a
            # merge, its undo), between our read and our write; on the second try we read
            # what it committed.
            return self._transaction(msgs)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The server closed the connection (a restart, a failover, an idle timeout): the
            # pool has let it go and the second try opens another. The writer process pings
            # no connection before each batch, a round trip that cost it ~10 % on PostgreSQL.
            return self._transaction(msgs)

    def _transaction(self, msgs: list[InboundMessage]) -> list[Stored | BaseException]:
        checkpointer = self.checkpointer
        # The checkpointer rewinds the WAL between two of these transactions, never inside.
        with (
            checkpointer.lock if checkpointer else contextlib.nullcontext(),
            self.database.session() as db,
        ):
            conn = db.connection()
            if checkpointer is not None and not conn.info.get("checkpointed_elsewhere"):
                # It copies the WAL back; this connection's commits don't (set once each).
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                conn.info["checkpointed_elsewhere"] = True
            return receive_batch(db, msgs, settings=self.settings, storage=self.storage)


# What a batch leaves behind for the serving process: its outcomes, the events committed
# with it (for the bus), and whether it enqueued jobs (to wake the worker).
Reply = tuple[list[Stored | BaseException], list[dict[str, Any]], bool]
# One sender's message and the future it waits on.
Pending = tuple[InboundMessage, "Future[Stored]"]


class IngestWriter:
    """One writer that group-commits inbound messages, on a thread or in a process.

    A transaction per message costs far more than the message itself (an fsync, a lock
    hand-over); committing what arrived in the same few milliseconds together keeps every
    guarantee (each sender is answered after its commit) at a fraction of the cost.

    With ``ingest_process`` (the default for a file database or PostgreSQL) triage and
    storing run in a process of its own, so that it and the web server each have an
    interpreter (and a core) to themselves: on one interpreter the two threads spend more
    time handing the GIL to each other than working. The batch goes there and its outcomes
    come back over a pipe, with the events to publish; if that process dies, it is started
    again and the batch re-sent (messages with an external id are stored once whatever
    happens). With a thread, triage runs in the callers' threads before the writer.
    """

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.max_batch = settings.ingest_batch_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        # inbox id -> workspace id (an inbox never moves)
        self._workspaces: dict[str, str] = {}
        self._box = box_for(settings.secret_key.get_secret_value())
        in_memory = database.engine.dialect.name == "sqlite" and not sqlite_path(database.engine)
        self._backend: _Store | WriterProcess = (
            WriterProcess(settings)
            if settings.ingest_process and not in_memory
            else _Store(database, settings)
        )

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stopping = False
                self._backend.start()
                self._thread = threading.Thread(
                    target=self._run, name="rapport-ingest", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
            self._backend.stop()

    def submit_nowait(self, msg: InboundMessage) -> "Future[Stored]":
        if isinstance(self._backend, _Store):
            # Triage in the caller's thread: the single writer only stores.
            msg = _triaged(self.database, self._box, self._workspaces, msg)
        return self._enqueue(msg)

    async def submit(self, msg: InboundMessage) -> Stored:
        """Ingest a message; returns once the transaction holding it has committed."""
        if isinstance(self._backend, WriterProcess):  # triaged there, off this interpreter
            return await asyncio.wrap_future(self._enqueue(msg))
        msg = with_triage(msg)
        workspace_id = msg.expect_workspace_id or self._workspaces.get(msg.inbox_id)
        if "triage" in msg.meta and (
            workspace_id is None or triage.cached_models(workspace_id) != {}
        ):
            # A workspace's trained models (or reading them) take milliseconds: not on the
            # event loop, and never in the single writer.
            msg = await asyncio.to_thread(
                with_workspace_models, self.database, self._box, self._workspaces, msg
            )
        else:
            msg.workspace_triaged = True
        return await asyncio.wrap_future(self._enqueue(msg))

    def _enqueue(self, msg: InboundMessage) -> "Future[Stored]":
        self.start()
        fut: Future[Stored] = Future()
        self._queue.put((msg, fut))
        return fut

    def submit_sync(self, msg: InboundMessage, timeout: float = 60) -> Stored:
        return self.submit_nowait(msg).result(timeout)

    def _run(self) -> None:
        sent: list[Pending] = []  # a batch already in the writer process, not yet answered
        while True:
            already = bool(sent)
            batch = sent or self._take(block=True)
            if batch is None:
                return
            INGEST_BATCH.observe(len(batch))
            msgs = [m for m, _ in batch]
            if isinstance(self._backend, _Store):
                # On this thread the commit publishes its events and wakes the worker.
                self._finish(batch, (self._backend.batch(msgs), [], False))
                continue
            reply = self._reply(self._backend, msgs, sent=already)
            # The next batch goes to the writer process before this one's senders are
            # answered: it stores while this thread answers.
            sent = self._take(block=False) or []
            if sent:
                self._backend.send([m for m, _ in sent])
            self._finish(batch, reply)

    def _take(self, *, block: bool) -> list[Pending] | None:
        """Up to ``max_batch`` waiting messages (waiting for one if ``block``), an empty
        list if none waits; ``None`` once the writer is stopping and all before it is taken."""
        batch: list[Pending] = []
        while not self._stopping and len(batch) < self.max_batch:
            try:
                item = self._queue.get(block=block and not batch)
            except queue.Empty:
                break
            if item is _STOP:
                self._stopping = True
            else:
                batch.append(item)
        return None if self._stopping and not batch else batch

    @staticmethod
    def _reply(
        backend: "WriterProcess", msgs: list[InboundMessage], *, sent: bool
    ) -> Reply | BaseException:
        """The writer process's reply to a batch (``sent`` already, or sent now); if the
        batch killed it twice, each message alone, so that one message that brings it down
        (a huge attachment, say) fails on its own."""
        try:
            if not sent:
                backend.send(msgs)
            return backend.receive()
        except Exception as exc:
            log.exception("ingest writer failed", extra={"event": "ingest.writer_failed"})
            if len(msgs) == 1:
                return exc
        outcomes: list[Stored | BaseException] = []
        events: list[dict[str, Any]] = []
        woke = False
        for msg in msgs:
            one = IngestWriter._reply(backend, [msg], sent=False)
            if isinstance(one, BaseException):
                outcomes.append(one)
            else:
                outcomes += one[0]
                events += one[1]
                woke = woke or one[2]
        return outcomes, events, woke

    def _finish(self, batch: list[Pending], reply: Reply | BaseException) -> None:
        """Answer each sender of a batch, once it is committed (or could not be)."""
        if isinstance(reply, BaseException):
            outcomes: list[Stored | BaseException] = [reply] * len(batch)
        else:
            outcomes, events, woke = reply
            get_bus().publish_many(events)
            if woke:
                job_service.wakeup.set()
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                INGESTED.labels(channel=outcome.channel, outcome=outcome.threading).inc()
                fut.set_result(outcome)


class WriterProcess:
    """The storing half of the writer, in a child process, called one batch at a time.

    If the child dies, it is started again and the batch sent again; if it dies again
    before answering, the batch's senders get the error.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._sent: list[InboundMessage] = []

    def start(self) -> None:
        if self._conn is None:
            cache.RELAY.listening = True  # what this process forgets, the writer must too
            ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited locks
            ours, theirs = ctx.Pipe()
            self._process = ctx.Process(
                target=_writer_process,
                args=(theirs, self.settings),
                name="rapport-ingest-writer",
                daemon=True,
            )
            self._process.start()
            theirs.close()
            self._conn = ours

    def send(self, msgs: list[InboundMessage]) -> None:
        """Hand a batch to the writer process (one at a time: then ``receive``)."""
        for m in msgs:
            # Chosen here, so that a message sent again is known if it was committed.
            m.message_id = m.message_id or new_id()
        self._sent = msgs
        self.start()
        assert self._conn is not None
        with contextlib.suppress(OSError):  # gone: receive() starts it again
            self._conn.send((cache.RELAY.pending(), msgs))

    def receive(self) -> Reply:
        """The reply to the batch sent; if the process died, it is started again and the
        batch sent again, once."""
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    self.send(self._sent)
                assert self._conn is not None
                reply: Reply = self._conn.recv()
                return reply
            except (EOFError, OSError):
                log.error(
                    "the ingest writer process died; starting it again",
                    extra={"event": "ingest.writer_restarted"},
                )
                self.stop(wait=False)
        raise RuntimeError("the ingest writer process died twice on this")

    def stop(self, *, wait: bool = True) -> None:
        """Let the child finish and exit (or, with ``wait=False``, end it now)."""
        if self._conn is not None and wait:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            if self._process is not None:
                self._process.join(10)
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn, self._process = None, None

    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


class _Recorder(LocalBus):
    """The writer process's bus: it keeps what is published for the serving process."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def _writer_process(conn: Connection, settings: Settings) -> None:
    """The writer process: store each batch that arrives, answer with its reply."""
    from rapport import logs

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops it, after its last batch
    logs.configure(settings.log_level, settings.log_json)
    recorder = _Recorder()
    set_bus(recorder)
    database = Database(settings.database_url, pool_size=1, pre_ping=False)  # see _commit
    store = _Store(database, settings)
    store.start()
    workspaces: dict[str, str] = {}
    box = box_for(settings.secret_key.get_secret_value())
    triage.warm_up()
    one_compute_thread()
    gc.collect()
    gc.freeze()  # as `rapport serve` does: collections stop walking what lives for good
    try:
        while True:
            try:
                received = conn.recv()
            except EOFError:
                return
            if received is None:
                return
            forgotten, msgs = received
            cache.forget_relayed(forgotten)
            # Triage here, before the transaction, so no other writer waits on it.
            msgs = [_triaged(database, box, workspaces, m) for m in msgs]
            outcomes = store.batch(msgs)
            woke = job_service.wakeup.is_set()
            job_service.wakeup.clear()
            conn.send(([_sendable(o) for o in outcomes], recorder.events, woke))
            recorder.events = []
    finally:
        store.stop()
        database.dispose()


def _triaged(
    database: Database, box: SecretBox, workspaces: dict[str, str], msg: InboundMessage
) -> InboundMessage:
    """The message with its triage. The workspace's own models need the database: if it
    cannot answer (a connection the server dropped while the writer was idle, say), they
    are applied inside the transaction instead, which is tried again on a new connection."""
    msg = with_triage(msg)
    try:
        return with_workspace_models(database, box, workspaces, msg)
    except Exception:
        log.warning(
            "workspace models not applied before the transaction",
            exc_info=True,
            extra={"event": "ingest.models_deferred"},
        )
        return msg


def _sendable(outcome: Stored | BaseException) -> Stored | BaseException:
    """An outcome that crosses the pipe: an error that cannot be pickled goes as its text."""
    if isinstance(outcome, BaseException):
        try:
            pickle.dumps(outcome)
        except Exception:
            return RuntimeError(f"{type(outcome).__name__}: {outcome}")
    return outcome
