"""Erasing a customer: everything Rapport holds about one person, gone for good.

One transaction removes the customer and every record merged into it (kept until now so
that a merge could be undone: the same person), with what hangs off them through the
database's cascades: identities, attributes, tags, consents, timeline events and orders,
duplicate suggestions, merge history, conversations with their messages, notes,
attachments, uploads, labels, SLA clocks and bot rounds, and the messages they wrote in
others' conversations (copied on a customer's mail), and their addresses in the address
lists others' mails keep (whom a mail went to or copied: a reply's Cc is offered from
them; those mails found by the index of the addresses mails list, ``_unlist``); the
search indexes follow (their triggers on SQLite, expression indexes on PostgreSQL). Web
chat visitors that spoke for them go too, first (their open sockets closed, in every
process; a message of theirs on its way is refused, not made into a new customer with
their handle), and so do the phrasings an agent taught the bot from their messages; the
classifiers that learnt from their words
(the bot's intents, the workspace's triage) are trained again without them, by jobs
queued in the same transaction; the reply suggestions' pool of past questions and answers
is forgotten in every process once it commits. The provider calls we could not read that
hold one of their handles or their full name are deleted
(``channels.service.forget_unparsed``; only the last 30 days' are kept). Jobs about them
are deleted, queued or dead
(see ``_settle_jobs``), and so are those delivering an outgoing webhook's call that names
them: the call is cancelled, never sent, and its logged payload blanked. Then a job removes
the copies kept elsewhere: the rows of the jobs about them that were running, once ended;
the realtime events a reconnecting agent could still fetch (those stored since the oldest
of their records was made, older ones than a client can replay pruned first), blanked and
kept as ``erased`` events without a payload, so that event ids stay in order and are never
used again; the payloads of the webhook calls made about them (the delivery log keeps
that a call was made, and how it went); and the stored files no other message shares.

The audit log keeps that an erasure happened, by whom, and how much it removed; ids only.
Its entries about them keep what was done, by whom and when, but not the words an agent
typed (a merge's reason: "same woman, she moved to Leeds", the tags given them), blanked
(``_blank_audit``).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, case, delete, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from rapport.assistant import suggest
from rapport.assistant.models import TriageModel
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.bot.models import IntentExample
from rapport.channels import service as channels
from rapport.channels.webchat.models import Visitor
from rapport.conversations import addresses, files
from rapport.conversations.models import (
    Attachment,
    Conversation,
    Message,
    MessageAddress,
    MessagePart,
    Upload,
)
from rapport.customers import merge
from rapport.customers.models import Customer, CustomerMerge, Identity, IdentityKind
from rapport.db import on_commit, unindexed, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.privacy.access import guest_messages
from rapport.privacy.models import AuditLog
from rapport.realtime import service as realtime
from rapport.realtime.models import StreamEvent
from rapport.storage import REUSE_GRACE_SECONDS, LocalStorage

_PAGE = 2000  # rows (realtime events, webhook deliveries) read per query looking for copies


@dataclass(frozen=True)
class Erasure:
    customer_ids: list[str]
    conversations: int
    messages: int
    files: int


def erase_customer(db: Session, *, customer: Customer) -> Erasure:
    """Erase this customer (and whoever was merged into them) in the caller's transaction;
    the copies go in a job queued in the same transaction."""
    ws = customer.workspace_id
    _, ids = merge.person(db, customer=customer)
    person = set(ids)
    # The visitors first: a web chat message stores only while its visitor is there (on
    # PostgreSQL it holds the row), so once they are gone nothing new can come from them,
    # and what came just before is committed and read below with the rest.
    visitors = _erase_visitors(db, workspace_id=ws, person=person)
    conversations = list(
        db.scalars(
            select(Conversation.id).where(
                unindexed(Conversation.workspace_id) == ws, Conversation.customer_id.in_(person)
            )
        )
    )
    # What they wrote in others' conversations (someone a customer's mail copied): those
    # messages alone go, the conversations stay their customers'.
    elsewhere = list(
        db.scalars(
            select(Message.id).where(
                Message.id.in_(guest_messages(ws, person)),
                Message.conversation_id.not_in(conversations),
            )
        )
    )
    in_them = or_(Message.conversation_id.in_(conversations), Message.id.in_(elsewhere))
    # Their messages' ids and the providers' ids of them, read once: counted, and named.
    theirs = db.execute(select(Message.id, Message.external_id).where(in_them)).all()
    messages = len(theirs)
    keys = set(
        db.scalars(
            select(Attachment.storage_key)
            .join(Message, Message.id == Attachment.message_id)
            .where(in_them)
        )
    )
    keys.update(
        db.scalars(
            select(Upload.storage_key).where(
                or_(
                    Upload.conversation_id.in_(conversations),
                    # Files an agent uploaded for a first message to them, not sent yet.
                    Upload.customer_id.in_(person),
                )
            )
        )
    )

    # Bot phrasings taken from their messages keep no foreign key to them: gone by hand.
    taught = db.scalars(
        delete(IntentExample)
        .where(
            IntentExample.workspace_id == ws,
            IntentExample.message_id.in_(select(Message.id).where(in_them)),
        )
        .returning(IntentExample.id)
    ).all()
    if taught:
        _train_again(db, "bot_train", ws)
    if db.scalar(select(TriageModel.kind).where(TriageModel.workspace_id == ws).limit(1)):
        # A trained model keeps the words (and the letters of names and addresses) of what
        # it learnt from: trained again from what is left.
        _train_again(db, "train_triage", ws)
    # The suggestions' pool of past questions and answers, read before the erasure commits.
    on_commit(db, lambda: suggest.forget_pool(ws))
    # Their widgets' sockets would stay open, waiting for replies to nobody: closed.
    realtime.close_visitors(db, workspace_id=ws, visitor_ids=visitors)
    since = _oldest(db, person=person, conversations=conversations)
    named = person | set(conversations) | _messages_and_provider_ids(db, in_them, theirs)
    live = _live_jobs(db, workspace_id=ws)
    # A webhook's call names them in its delivery, not in its job: the delivery's id does.
    named |= _settle_deliveries(db, workspace_id=ws, jobs=live, named=named)
    running = _settle_jobs(db, jobs=live, named=named)
    # Provider calls we could not read may quote their number or address: found by those.
    channels.forget_unparsed(
        db,
        workspace_id=ws,
        handles=_handles(db, ws, person),
        names=db.scalars(select(Customer.name).where(Customer.id.in_(person))),
    )
    if elsewhere:
        _delete_written_elsewhere(db, elsewhere)
    _blank_audit(db, workspace_id=ws, person=person)
    erased = _addresses(db, ws, person)
    db.execute(delete(Customer).where(Customer.workspace_id == ws, Customer.id.in_(person)))
    db.expire_all()  # what the cascades removed must not linger in this session
    # Read once the cascades took their own conversations: only others' mails are left.
    _unlist(db, workspace_id=ws, erased=erased)
    # Agents' open pages take them away (they showed them until a reload): ids alone, and
    # this event too is blanked by the job below, as every event naming them is.
    realtime.emit(
        db,
        workspace_id=ws,
        type="customer.erased",
        payload={
            "customer_ids": ids,
            "conversation_ids": conversations,
            "message_ids": elsewhere,
        },
    )
    enqueue(
        db,
        name="erase_copies",
        args={
            # (Their messages in others' conversations by id: a call about one names only
            # its conversation, which is not theirs.)
            "ids": sorted(person | set(conversations) | set(elsewhere)),
            "keys": sorted(keys),
            "jobs": running,
            "since": since.isoformat(),
        },
        workspace_id=ws,
    )
    return Erasure(ids, len(conversations), messages, len(keys))


# The keys of an audit entry's data an agent typed freely, by action: blanked when the
# person the entry is about is erased (a merge's reason; the tags given them, words such
# as "divorce case" that went with them).
_TYPED: dict[str, tuple[str, ...]] = {"customer.merge": ("reason",), "customer.tags": ("tags",)}


def _blank_audit(db: Session, *, workspace_id: str, person: set[str]) -> None:
    """Blank the free text (``_TYPED``) of the audit entries about these records: the
    entry (action, ids, who, when) stays. A merge's entry names its survivor as target and
    the merged record in its data; one of theirs into another record's, undone since, is
    found through the merge's row, read before the cascade takes it."""
    survivors = select(CustomerMerge.survivor_id).where(
        CustomerMerge.workspace_id == workspace_id, CustomerMerge.merged_id.in_(person)
    )
    rows = db.scalars(
        select(AuditLog).where(
            unindexed(AuditLog.workspace_id) == workspace_id,  # by the target's index
            AuditLog.action.in_(_TYPED),
            AuditLog.target_type == "customer",
            or_(AuditLog.target_id.in_(person), AuditLog.target_id.in_(survivors)),
        )
    )
    for row in rows:
        if row.target_id not in person and row.data.get("merged_id") not in person:
            continue  # a merge of two others into the survivor of one of theirs
        typed = [k for k in _TYPED[row.action] if row.data.get(k)]
        if typed:
            # A new dict: the JSON column sees assignments only.
            blank = {k: type(row.data[k])() for k in typed}  # "" or [], as it was
            row.data = {**row.data, **blank, "erased": typed}
    db.flush()  # before the erasure's ``expire_all``, which would drop unflushed changes


def _delete_written_elsewhere(db: Session, ids: list[str]) -> None:
    """Their messages in others' conversations deleted (attachments and parts by cascade),
    and those conversations' counts kept true."""
    hosts = db.execute(
        select(Message.conversation_id, func.count())
        .where(Message.id.in_(ids))
        .group_by(Message.conversation_id)
    ).all()
    db.execute(delete(Message).where(Message.id.in_(ids)))
    for conv, gone in hosts:
        db.execute(
            update(Conversation)
            .where(Conversation.id == conv)
            .values(
                messages_count=case(
                    (Conversation.messages_count > gone, Conversation.messages_count - gone),
                    else_=0,
                )
            )
        )


def _oldest(db: Session, *, person: set[str], conversations: list[str]) -> datetime:
    """When the oldest of these records was made: no copy of them can be older."""
    made = (
        db.scalar(select(func.min(Customer.created_at)).where(Customer.id.in_(person))),
        db.scalar(
            select(func.min(Conversation.created_at)).where(Conversation.id.in_(conversations))
        ),
    )
    return min(t for t in made if t is not None)


def _handles(db: Session, workspace_id: str, person: set[str]) -> set[str]:
    """Every handle of theirs (phone, email, WhatsApp number, PSID...), and the display
    copies of email and phone on the customer rows."""
    found = set(
        db.scalars(
            select(Identity.value).where(
                unindexed(Identity.workspace_id) == workspace_id,
                Identity.customer_id.in_(person),
            )
        )
    )
    for email, phone in db.execute(
        select(Customer.email, Customer.phone).where(Customer.id.in_(person))
    ):
        found.update(v for v in (email, phone) if v)
    return found


def _addresses(db: Session, workspace_id: str, person: set[str]) -> set[str]:
    """Their email addresses (their handles and the ones on their records), normalized."""
    found = set(
        db.scalars(
            select(Identity.value).where(
                unindexed(Identity.workspace_id) == workspace_id,
                Identity.customer_id.in_(person),
                Identity.kind == IdentityKind.email,
            )
        )
    )
    found.update(
        addresses.written(email)
        for email in db.scalars(select(Customer.email).where(Customer.id.in_(person)))
        if email
    )
    return found


def _unlist(db: Session, *, workspace_id: str, erased: set[str]) -> None:
    """Take their addresses out of the address lists (``addresses.listed``) of the mails
    left in the workspace, others' mails that went to or copied them: the Cc a reply is
    offered is read from those (``copies.reply_all``), and would offer an erased person's
    address to be mailed again. The mails stay their customers', their words as written.

    Found through the index of which mails list which address (``MessageAddress``, by the
    address's digest), never by reading the workspace's mail: this runs in the erasure's
    transaction, which on SQLite holds the one write lock every workspace's ingest waits
    for, and reading the text of every mail (a million) held it for seconds. Not left to a
    job either: until it ran, the reply form, the copies the API shows and a reply queued
    meanwhile would still offer, show or mail the address. The flush takes the rows of the
    addresses gone from each mail with them (``addresses``); any left of theirs (a row
    whose mail no longer listed them) go after.

    A mail with no rows is not found: one that code older than the index stored while
    migration 0040 ran (an upgrade with that code still taking mail, which the README rules
    out). No cheaper search reaches it: the mails of the conversations they wrote in could
    be read, but a mail that only copied them is linked to them by nothing but the address."""
    if not erased:
        return
    keys = {addresses.key(a) for a in erased}
    theirs = (MessageAddress.workspace_id == workspace_id, MessageAddress.address_key.in_(keys))
    listing = select(MessageAddress.message_id).where(*theirs)
    # Held (PostgreSQL), in id order as every writer of a mail's lists holds them: a bounce
    # or a receipt holding one writes it first, and it is read here as that left it (read
    # before, the scrubbed copy written over it lost what that one wrote).
    for msg in db.scalars(
        select(Message)
        .where(Message.id.in_(listing), Message.workspace_id == workspace_id)
        .order_by(Message.id)
        .with_for_update(key_share=True)
    ):
        meta = addresses.without(msg.meta, erased)
        if meta != msg.meta:
            msg.meta = meta  # a new dict: the JSON column sees assignments only
    db.flush()
    db.execute(delete(MessageAddress).where(*theirs))


def _erase_visitors(db: Session, *, workspace_id: str, person: set[str]) -> list[str]:
    """Delete the web chat visitors who spoke for this person; their ids. A visitor is found
    by its customer, or by its handle: its first message makes the customer before the
    widget's call links the two, and a visitor left behind in that moment would bring its
    handle, name and email back as a new customer with its next message."""
    handles = select(Identity.value).where(
        unindexed(Identity.workspace_id) == workspace_id,
        Identity.customer_id.in_(person),
        Identity.kind == IdentityKind.webchat,
    )
    gone = db.scalars(
        delete(Visitor)
        .where(
            Visitor.workspace_id == workspace_id,
            or_(Visitor.customer_id.in_(person), Visitor.id.in_(handles)),
        )
        .returning(Visitor.id)
    )
    return list(gone)


def _messages_and_provider_ids(db: Session, in_them: Any, rows: Sequence[Any]) -> set[str]:
    """The ids of these messages (``rows``: id, external id), and the providers' ids of them
    and of their parts (a provider's report on one names it by those)."""
    found = {row.id for row in rows} | {row.external_id for row in rows if row.external_id}
    mine = select(Message.id).where(in_them)
    found.update(
        db.scalars(select(MessagePart.external_id).where(MessagePart.message_id.in_(mine)))
    )
    return found


# Jobs that may still act, or hold an error a provider wrote (a refused address, quoted):
# found through the claim index's state. Done jobs keep neither (``finish``) but ids.
_SETTLED = (JobState.queued, JobState.running, JobState.dead)


def _live_jobs(db: Session, *, workspace_id: str) -> list[Row[Any]]:
    """The workspace's jobs that may still act or hold a provider's error (``_SETTLED``)."""
    return list(
        db.execute(
            select(Job.id, Job.name, Job.args).where(
                Job.state.in_(_SETTLED),
                # By the claim index's state: the workspace's own index holds its done jobs
                # too, days of them (every message queues some).
                unindexed(Job.workspace_id) == workspace_id,
                Job.name != "erase_copies",
            )
        )
    )


def _settle_jobs(db: Session, *, jobs: list[Row[Any]], named: set[str]) -> list[str]:
    """Delete the jobs whose arguments name the erased records: those queued (cancelled;
    a deliver of an erased message must never be claimed) and those dead (nothing left to
    retry; the error may quote them). Returns the ids of those running, for
    ``erase_copies`` to settle once they have ended."""
    theirs = [row.id for row in jobs if mentions(row.args, named)]
    # A claim that won meanwhile made one running: left for later, like the others.
    return _delete_unless_running(db, theirs) if theirs else []


def _delete_unless_running(db: Session, jobs: list[str]) -> list[str]:
    """Delete these jobs but those running; the ids of those, left for later."""
    db.execute(
        delete(Job).where(Job.id.in_(jobs), Job.state != JobState.running),
        execution_options={"synchronize_session": False},
    )
    return sorted(db.scalars(select(Job.id).where(Job.id.in_(jobs), Job.state == JobState.running)))


# A webhook call not made yet; cancelled, it is never made (``webhook_deliver``).
_PENDING, _CANCELLED = "pending", "cancelled"


def _settle_deliveries(
    db: Session, *, workspace_id: str, jobs: list[Row[Any]], named: set[str]
) -> set[str]:
    """Blank the webhook deliveries still in the hands of a job (queued, running or dead)
    whose payload names the erased records, cancelling those not made yet; returns their
    ids, which name their jobs. Found through the jobs: a call waiting to be made has one,
    and the delivery log, kept whole, is not read. Those already made are blanked by
    ``erase_copies``."""
    waiting = [row.args["delivery_id"] for row in jobs if row.name == "webhook_deliver"]
    if not waiting:
        return set()
    rows = db.execute(
        select(WebhookDelivery.id, WebhookDelivery.payload).where(
            WebhookDelivery.workspace_id == workspace_id, WebhookDelivery.id.in_(waiting)
        )
    ).all()
    theirs = {row.id for row in rows if mentions(row.payload, named)}
    _blank_deliveries(db, theirs)
    return theirs


def _blank_deliveries(db: Session, ids: set[str]) -> None:
    """Forget what these webhook deliveries say, and cancel those not made yet: their
    receiver must not hear of records erased. The log keeps that a call was due, and how
    it went."""
    if not ids:
        return
    db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == _PENDING)
        .values(status=_CANCELLED, error="not sent: what it named was erased"),
        execution_options={"synchronize_session": False},
    )
    db.execute(
        update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(payload={}),
        execution_options={"synchronize_session": False},
    )


def _train_again(db: Session, name: str, workspace_id: str) -> None:
    """Queue a training of the workspace, unless one is queued and not started yet: it reads
    what is left when it runs, so a burst of erasures costs one training, not one each."""
    waiting = select(Job.id).where(
        Job.name == name,
        unindexed(Job.workspace_id) == workspace_id,  # the queued jobs, by the claim index
        Job.state == JobState.queued,
    )
    if db.scalar(waiting.limit(1)) is None:
        enqueue(db, name=name, args={"workspace_id": workspace_id}, workspace_id=workspace_id)


def mentions(value: Any, ids: set[str]) -> bool:
    """Whether a stored payload names any of these ids, at any depth."""
    if isinstance(value, str):
        return value in ids
    if isinstance(value, dict):
        return any(mentions(v, ids) for v in value.values())
    if isinstance(value, list):
        return any(mentions(v, ids) for v in value)
    return False


@job("erase_copies")
def erase_copies(
    ctx: JobContext,
    *,
    ids: list[str],
    keys: list[str],
    jobs: list[str] | None = None,
    since: str | None = None,
) -> None:
    """The copies an erasure leaves: the jobs about them that were running (settled once
    ended), realtime events and webhook deliveries naming the erased customers or their
    conversations (blanked; only those stored since the oldest of them was made are read),
    then the stored files nothing else refers to. Files stored or reused lately, and jobs
    still running, are tried again later."""
    assert ctx.workspace_id is not None
    if jobs:
        _settle_ended(ctx, jobs)
    gone = set(ids)
    if gone and since is not None:
        _blank_deliveries_since(ctx, gone, _margin(since))
    after = _read_after(ctx, since) if gone else None
    while gone and after is not None:
        with ctx.database.session(write=False) as db:
            page = db.execute(
                select(StreamEvent.id, StreamEvent.payload)
                .where(StreamEvent.workspace_id == ctx.workspace_id, StreamEvent.id > after)
                .order_by(StreamEvent.id)
                .limit(_PAGE)
            ).all()
        if not page:
            break
        after = page[-1].id
        doomed = [row.id for row in page if mentions(row.payload, gone)]
        if doomed:
            with ctx.database.session() as db:
                db.execute(
                    update(StreamEvent)
                    .where(StreamEvent.id.in_(doomed))
                    .values(type="erased", payload={})
                )
    kept = files.forget_unused(ctx.database, LocalStorage(ctx.settings.attachments_dir), keys)
    if kept:
        with ctx.database.session() as db:
            enqueue(
                db,
                name="erase_copies",
                args={"ids": [], "keys": kept},
                workspace_id=ctx.workspace_id,
                run_at=utcnow() + timedelta(seconds=REUSE_GRACE_SECONDS),
            )


def _read_after(ctx: JobContext, since: str | None) -> int | None:
    """The event id the search for copies starts after, or None when there is nothing to
    read. Events older than a client can replay go first, as the hourly prune would take
    them (one that lags must not leave them to be replayed); of the rest, those stored
    before the oldest erased record was made cannot name it (a margin for ids that do not
    quite follow time). Before, every event the workspace held was read, a week of them."""
    realtime.expire(ctx.database)
    if since is None:  # queued before erasures said since when
        return 0
    with ctx.database.session(write=False) as db:
        first = realtime.first_id_since(db, _margin(since))
    return None if first is None else first - 1


def _margin(since: str) -> datetime:
    """When the oldest erased record was made, less a minute: a row naming it, stamped by
    another process's clock, may say it was made a moment before."""
    return datetime.fromisoformat(since) - timedelta(seconds=realtime.STRAGGLER_SECONDS)


def _blank_deliveries_since(ctx: JobContext, gone: set[str], since: datetime) -> None:
    """Blank the webhook deliveries made since ``since`` that name these records, each
    webhook's in the order of its log's index (webhook, time): the deliveries before the
    oldest erased record was made cannot name it, and are not read."""
    with ctx.database.session(write=False) as db:
        hooks = list(db.scalars(select(Webhook.id).where(Webhook.workspace_id == ctx.workspace_id)))
    for hook in hooks:
        after: tuple[datetime, str] | None = None
        while True:
            query = (
                select(WebhookDelivery.id, WebhookDelivery.payload, WebhookDelivery.created_at)
                .where(WebhookDelivery.webhook_id == hook, WebhookDelivery.created_at >= since)
                .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
                .limit(_PAGE)
            )
            if after is not None:
                query = query.where(
                    tuple_(WebhookDelivery.created_at, WebhookDelivery.id) > tuple_(*after)
                )
            with ctx.database.session(write=False) as db:
                page = db.execute(query).all()
            theirs = {row.id for row in page if mentions(row.payload, gone)}
            if theirs:
                with ctx.database.session() as db:
                    _blank_deliveries(db, theirs)
            if len(page) < _PAGE:
                break
            after = (page[-1].created_at, page[-1].id)


def _settle_ended(ctx: JobContext, jobs: list[str]) -> None:
    """Delete the rows of these jobs (about erased records) that have ended: queued again to
    retry or dead, their error may quote what was erased; done, they hold ids of nothing.
    Those still running are looked at again once their lease would have run out."""
    with ctx.database.session() as db:
        running = _delete_unless_running(db, jobs)
        if running:
            enqueue(
                db,
                name="erase_copies",
                args={"ids": [], "keys": [], "jobs": running},
                workspace_id=ctx.workspace_id,
                run_at=utcnow() + timedelta(seconds=ctx.settings.job_lease_seconds),
            )
