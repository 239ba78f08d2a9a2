"""The one path every inbound message takes, and the writer that group-commits it.

``receive()`` does the work of one message inside the caller's transaction:
idempotency, identity, threading, storage, follow-up jobs, events. ``IngestWriter`` runs it
for many concurrent requests on one thread, committing whatever arrived together in one
transaction; each caller is answered only after the commit that holds its message.
"""

import asyncio
import concurrent.futures
import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rapport.channels.models import Inbox
from rapport.config import Settings
from rapport.conversations import jobs as conversation_jobs
from rapport.conversations import service as conversations
from rapport.conversations.models import (
    Attachment,
    Conversation,
    Direction,
    Message,
    MessageKind,
)
from rapport.customers import service as customers
from rapport.customers.identity import Handle
from rapport.customers.models import Customer
from rapport.db import Database, savepoint, utcnow
from rapport.metrics import INGEST_BATCH, INGESTED
from rapport.problems import Invalid, NotFound
from rapport.realtime.service import emit
from rapport.storage import LocalStorage
from rapport.workspaces.models import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundAttachment:
    filename: str
    content_type: str
    data: bytes


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
    sent_at: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Set by callers acting for a workspace (the API): an inbox of another one is not found.
    expect_workspace_id: str | None = None
    expect_channel: str | None = None


@dataclass
class IngestResult:
    message: Message
    conversation: Conversation
    customer: Customer
    duplicate: bool
    # new / continued / reopened / duplicate
    threading: str
    channel: str


def receive(
    db: Session, msg: InboundMessage, *, settings: Settings, storage: LocalStorage | None = None
) -> IngestResult:
    """Store one inbound message in the caller's transaction (see the module docstring)."""
    inbox = db.get(Inbox, msg.inbox_id)
    if inbox is None or not inbox.enabled:
        raise NotFound("inbox")
    if msg.expect_workspace_id is not None and inbox.workspace_id != msg.expect_workspace_id:
        raise NotFound("inbox")
    if msg.expect_channel is not None and inbox.channel != msg.expect_channel:
        raise Invalid(f"inbox {inbox.id} is a {inbox.channel} inbox, not {msg.expect_channel}")

    # 1. Idempotency: a provider's retry or a client's re-post returns what is stored.
    if msg.external_id:
        existing = db.scalar(
            select(Message).where(
                Message.inbox_id == inbox.id, Message.external_id == msg.external_id
            )
        )
        if existing is not None:
            conv = db.get(Conversation, existing.conversation_id)
            assert conv is not None
            cust = db.get(Customer, conv.customer_id)
            assert cust is not None
            return IngestResult(
                existing, conv, cust, duplicate=True, threading="duplicate", channel=inbox.channel
            )

    now = utcnow()
    # 2. Identity: the handles name one customer, whichever inbox they arrived through.
    customer, _ = customers.resolve(
        db,
        workspace_id=inbox.workspace_id,
        handles=msg.handles,
        name=msg.sender_name,
        seen_at=now,
    )

    # 3. Threading.
    workspace = db.get(Workspace, inbox.workspace_id)
    assert workspace is not None
    window_hours = int(workspace.settings.get("reopen_window_hours", settings.reopen_window_hours))
    conv, outcome = conversations.thread(
        db,
        workspace_id=inbox.workspace_id,
        customer_id=customer.id,
        inbox_id=inbox.id,
        now=now,
        reopen_window=timedelta(hours=window_hours),
        conversation_id=msg.conversation_hint,
        subject=msg.subject,
    )

    # 4. Store the message and its attachments.
    meta = dict(msg.meta)
    if msg.sent_at:
        meta["sent_at"] = msg.sent_at.isoformat()
    message = conversations.add_message(
        db,
        conversation=conv,
        direction=Direction.inbound,
        kind=MessageKind.message,
        sender_type="customer",
        sender_id=customer.id,
        text=msg.text,
        html=msg.html,
        external_id=msg.external_id,
        meta=meta,
        at=now,
    )
    if msg.attachments:
        db.flush()  # the message row must exist before rows that point at it
        store = storage or LocalStorage(settings.attachments_dir)
        for att in msg.attachments:
            key, digest = store.put(att.data)
            db.add(
                Attachment(
                    workspace_id=inbox.workspace_id,
                    message_id=message.id,
                    filename=att.filename[:500],
                    content_type=att.content_type[:200],
                    size=len(att.data),
                    sha256=digest,
                    storage_key=key,
                )
            )

    # 5. Follow-up work, in the same transaction: it runs only if this commits.
    conversation_jobs.after_inbound(db, inbox=inbox, conversation=conv, message_id=message.id)
    if outcome != "continued":
        emit(
            db,
            workspace_id=inbox.workspace_id,
            type="conversation.created" if outcome == "new" else "conversation.updated",
            payload=conversations.conversation_payload(conv),
        )
    db.flush()
    return IngestResult(
        message, conv, customer, duplicate=False, threading=outcome, channel=inbox.channel
    )


_STOP = object()


class IngestWriter:
    """One writer thread that group-commits inbound messages.

    A transaction per message costs far more than the message itself (an fsync, a lock
    hand-over); committing what arrived in the same few milliseconds together keeps every
    guarantee (each sender is answered after its commit) at a fraction of the cost.
    """

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.storage = LocalStorage(settings.attachments_dir)
        self.max_batch = settings.ingest_batch_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
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

    def submit_nowait(self, msg: InboundMessage) -> "concurrent.futures.Future[IngestResult]":
        self.start()
        fut: concurrent.futures.Future[IngestResult] = concurrent.futures.Future()
        self._queue.put((msg, fut))
        return fut

    async def submit(self, msg: InboundMessage) -> IngestResult:
        """Ingest a message; returns once the transaction holding it has committed."""
        return await asyncio.wrap_future(self.submit_nowait(msg))

    def submit_sync(self, msg: InboundMessage, timeout: float = 60) -> IngestResult:
        return self.submit_nowait(msg).result(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
            try:
                self._commit_batch(batch)
            except Exception:  # never let the writer die: answer each message alone
                log.exception("group commit failed", extra={"event": "ingest.batch_failed"})
                for one in batch:
                    if not one[1].done():
                        self._commit_batch([one])

    def _commit_batch(
        self, batch: list[tuple[InboundMessage, "concurrent.futures.Future[IngestResult]"]]
    ) -> None:
        INGEST_BATCH.observe(len(batch))
        outcomes: list[
            tuple[
                concurrent.futures.Future[IngestResult], IngestResult | None, BaseException | None
            ]
        ] = []
        try:
            with self.database.session() as db:
                for msg, fut in batch:
                    result, error = self._receive_one(db, msg)
                    outcomes.append((fut, result, error))
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            raise
        for fut, result, error in outcomes:
            if error is not None:
                fut.set_exception(error)
            else:
                assert result is not None
                INGESTED.labels(channel=result.channel, outcome=result.threading).inc()
                fut.set_result(result)

    def _receive_one(
        self, db: Session, msg: InboundMessage
    ) -> tuple[IngestResult | None, BaseException | None]:
        for attempt in (1, 2):
            try:
                with savepoint(db):
                    return receive(db, msg, settings=self.settings, storage=self.storage), None
            except IntegrityError as exc:
                # Another process stored the same identity or message between our read and
                # our write; on the second try we read what it committed.
                if attempt == 2:
                    return None, exc
            except Exception as exc:
                return None, exc
        raise AssertionError("unreachable")
