"""The ``deliver`` job: hands a queued outbound message to its channel."""

import logging
import random
import unicodedata
from datetime import UTC, datetime, timedelta
from difflib import SequenceMatcher
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from rapport import outbound
from rapport.auth.ratelimit import RateLimiter
from rapport.channels import base, email, health, media
from rapport.channels.models import Inbox
from rapport.conversations import addresses, files, sla
from rapport.conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
    MessagePart,
)
from rapport.conversations.service import (
    add_message,
    consent_refusal,
    delivery_known,
    last_written,
    last_wrote_through,
    message_payload,
    messages_deleted,
    queue_again,
    resend_refusal,
    settle_parts,
    update_delivery,
)
from rapport.crypto import box_for
from rapport.customers import profile
from rapport.customers.models import Customer, Identity, IdentityKind
from rapport.db import lock_row, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.registry import JobContext, Later, PermanentError, RetryLater, job
from rapport.jobs.service import enqueue
from rapport.problems import Problem
from rapport.realtime.service import emit
from rapport.storage import LocalStorage

# Importing a channel package registers it.
from rapport.channels import api as _api  # noqa: F401  isort: skip
from rapport.channels import email as _email  # noqa: F401  isort: skip

log = logging.getLogger(__name__)


def _dead(db: Session, dead: Job, error: str) -> None:
    """The deliver job was dead-lettered however that came (its last attempt failed, its
    lease ran out on every one): a message still queued failed, and the agent sees why."""
    msg = db.get(Message, str(dead.args.get("message_id")))
    if msg is not None and msg.status == DeliveryStatus.queued:
        _set_status(db, msg, DeliveryStatus.failed, error)
        health.record_failure(
            db, inbox_id=msg.inbox_id, workspace_id=msg.workspace_id, error=error, at_send=True
        )


# Seconds a message over its inbox's sending rate waits before it tries again (up to twice
# as long, so the waiting ones do not all come back at once).
RATE_WAIT = 1.0


def _retried(db: Session, retried: Job) -> None:
    """An admin retries the dead deliver job: its reply, failed, is queued again (as sent
    again from its conversation, parts the provider took not resent) after the checks
    sending it again meets. A reply no longer failed (sent again meanwhile, its own job
    queued) is left to that job: this one is done, or the two would send it twice. One
    those checks refuse (outside the provider's window, the customer opted out) stays
    failed and its job dead, both saying why, as the agent's "send again" is told."""
    msg = db.get(Message, str(retried.args.get("message_id")))
    conv = db.get(Conversation, msg.conversation_id) if msg is not None else None
    if msg is not None and conv is not None and msg.status == DeliveryStatus.failed:
        if refused := resend_refusal(db, conversation=conv, message=msg):
            if _refused_again(db, msg, refused):
                retried.state = JobState.dead
                retried.finished_at = utcnow()
                retried.last_error = msg.error
                return
        elif queue_again(db, msg):
            return
    retried.state = JobState.done
    retried.finished_at = utcnow()


def _refused_again(db: Session, msg: Message, refused: Problem) -> bool:
    """The failed reply says why it was not sent again; False if it is no longer failed
    (sent again meanwhile). Claimed as ``queue_again`` claims it: written over a reply
    another agent has just queued, it would read failed while it goes out."""
    said = db.execute(
        update(Message)
        .where(Message.id == msg.id, Message.status == DeliveryStatus.failed)
        .values(error=f"not sent again: {refused.detail}")
        .execution_options(synchronize_session=False)
    )
    if said.rowcount != 1:  # type: ignore[attr-defined]
        return False
    db.refresh(msg)
    emit(db, workspace_id=msg.workspace_id, type="message.updated", payload=message_payload(msg))
    return True


@job("deliver", on_dead=_dead, on_retry=_retried)
def deliver(ctx: JobContext, *, message_id: str) -> None:
    """Send one outbound message; idempotent, since a job may run twice after a crash."""
    with ctx.database.session(write=False) as db:
        msg = db.get(Message, message_id)
        if msg is None or msg.status != DeliveryStatus.queued:
            return
        conv = db.get(Conversation, msg.conversation_id)
        inbox = db.get(Inbox, msg.inbox_id)
        assert conv is not None and inbox is not None
        customer = db.get(Customer, conv.customer_id)
        assert customer is not None
        identities = list(  # in a set order: a channel that sends to all sends them alike
            db.scalars(
                select(Identity)
                .where(Identity.customer_id == customer.id)
                .order_by(Identity.created_at, Identity.id)
            )
        )
        # A mail's Message-ID as it came (``meta.email.message_id``) where one too long for
        # external_id is stored as its digest (``stored_id``), which names nothing to the
        # customer's mail client.
        thread_refs = [
            said if said and email.stored_id(said) == ref else ref
            for ref, said in db.execute(
                select(Message.external_id, Message.meta[("email", "message_id")].as_string())
                .where(Message.conversation_id == conv.id, Message.external_id.is_not(None))
                .order_by(Message.created_at, Message.id)
            )
            if ref and ref.startswith("<")
        ]
        # Where they last wrote: not a line nobody wrote (Telegram: the bot blocked, or
        # removed from a group), which would send the reply there.
        last_inbound = last_written(db, conversation_id=conv.id, inbox_id=inbox.id)
        # What a provider's reply window counts from, read at the send (the reply may have
        # waited in the queue): Meta sends it as a response or with the human agent tag.
        opened = (
            last_wrote_through(db, conversation=conv, inbox=inbox)
            if hasattr(base.get(inbox.channel), "check_reply")
            else None
        )
        attached = files.of_messages(db, [msg.id])[msg.id]
        # Asked again here: the customer may have opted out (an SMS STOP) since the reply
        # was queued, and the provider would refuse it or, worse, deliver it.
        refusal = consent_refusal(db, conversation=conv, inbox=inbox)
    if not inbox.enabled:
        # Switched off after the reply was queued (its credentials revoked, the number
        # given up): nothing goes out through it; the agent can send it again once it is on.
        _mark(
            ctx,
            message_id,
            DeliveryStatus.failed,
            f"not sent: the inbox “{inbox.name}” is disabled",
        )
        return
    if refusal is not None:
        _mark(ctx, message_id, DeliveryStatus.failed, f"not sent: {profile.why_not(refusal)}")
        log.info(
            "a queued message was not sent: the customer opted out",
            extra={
                "event": "deliver.no_consent",
                "workspace_id": msg.workspace_id,
                "conversation_id": conv.id,
                "message_id": message_id,
            },
        )
        return
    channel = base.get(inbox.channel)
    if channel is None:
        _mark(
            ctx,
            message_id,
            DeliveryStatus.failed,
            f"no channel {inbox.channel!r} is installed",
            counted=True,
            account=True,
        )
        raise PermanentError(f"no channel {inbox.channel!r}")
    secret_key = ctx.settings.secret_key.get_secret_value()
    storage = LocalStorage(ctx.settings.attachments_dir)
    out = base.Outbound(
        inbox=inbox,
        secrets=box_for(secret_key).decrypt_json(inbox.secrets_encrypted),
        message=msg,
        conversation=conv,
        customer=customer,
        identities=identities,
        public_url=ctx.settings.public_url,
        thread_refs=thread_refs,
        last_inbound=dict(last_inbound or {}),
        files=[
            base.OutboundFile(
                id=a.id,
                filename=a.filename,
                content_type=a.content_type,
                size=a.size,
                url=files.signed_link(
                    public_url=ctx.settings.public_url, secret_key=secret_key, attachment=a
                ).url,
                read=lambda key=a.storage_key: storage.open(key),  # type: ignore[misc]
            )
            for a in attached
        ],
        parts_sent=dict((msg.meta or {}).get("parts_sent") or {}),
        record_part=lambda key, external_id: _record_part(ctx, message_id, key, external_id),
        allow_private=ctx.settings.outbound_private_ok,
        window_opened_at=opened,
    )
    # Stay under the provider's sending rate (per inbox, shared through Redis when there
    # is one). A message over the limit waits for its turn, which is not one of its
    # attempts: a busy inbox delays messages, it must not fail them.
    if not _limiter(inbox.channel, inbox.settings, ctx.settings.redis_url).hit(f"send:{inbox.id}"):
        wait = RATE_WAIT * (1 + random.random())  # noqa: S311 - jitter, not security
        raise RetryLater(Later.sending_rate, seconds=wait)
    # The provider call happens outside any transaction: no lock is held while we wait.
    try:
        result = channel.send(out)
    except outbound.Blocked as exc:  # an admin's URL into our own network: never retried
        _mark(
            ctx, message_id, DeliveryStatus.failed, f"not sent: {exc}", counted=True, account=True
        )
        raise PermanentError(str(exc)) from exc
    except base.DeliveryError as exc:
        last_try = ctx.attempt >= ctx.max_attempts
        if exc.opted_out is not None:
            _opted_out(ctx, msg, inbox, customer.id, exc.opted_out, exc.reason)
            raise PermanentError(exc.reason) from exc
        if exc.permanent or last_try:
            # A customer with no address to send to is theirs, not the inbox's.
            _mark(
                ctx,
                message_id,
                DeliveryStatus.failed,
                exc.reason,
                counted=not isinstance(exc, base.NoRecipient),
                account=exc.account,
            )
            raise PermanentError(exc.reason) from exc
        # Still queued, and the agent sees why it has not gone yet (a mail server that
        # refuses connections): a message that only said "queued" for an hour told nothing.
        tried = f"attempt {ctx.attempt} of {ctx.max_attempts}"
        _mark(ctx, message_id, DeliveryStatus.queued, f"retrying ({tried} failed): {exc.reason}")
        raise
    marked = _mark(
        ctx, message_id, DeliveryStatus.sent, None, external_id=result.external_id, meta=result.meta
    )
    # A channel may have more to do once its message is out (web chat: email an away visitor).
    after = getattr(channel, "after_send", None)
    if after is not None and marked:
        after(database=ctx.database, settings=ctx.settings, out=out)


_LIMITERS: dict[tuple[str, int, str | None], RateLimiter] = {}


def _limiter(channel: str, settings: dict[str, object], redis_url: str | None) -> RateLimiter:
    # What the inbox says, else what its provider accepts from one sender (the setting's
    # default, declared by the channel).
    rate = int(
        str(settings.get("rate_per_second") or base.default_of(channel, "rate_per_second") or 20)
    )
    key = (channel, rate, redis_url)
    if key not in _LIMITERS:
        _LIMITERS[key] = RateLimiter(limit=rate, window=1.0, redis_url=redis_url)
    return _LIMITERS[key]


# A provider can report on a message before the send that got its id has stored it: its
# answer to our call and its callback race, for as long as our commit takes after it (the
# write lock's wait included). Such a report is tried again after each of these many
# seconds while a send of the workspace is under way, then dropped: a number or page also
# sends what Rapport did not (its phone app, another tool), and each try costs a job row.
REPORT_RETRIES = (5, 30)
_SENDING = select(Job.id).where(
    Job.state.in_((JobState.queued, JobState.running)), Job.name == "deliver"
)


def apply_report(
    db: Session, *, inbox_id: str, workspace_id: str, report: dict[str, Any], tries: int = 0
) -> None:
    """One provider report (``external_id``, ``status``, ``error``, and ``at``: when the
    provider says it came about, if it does) on one of our messages; on an id not known
    yet, a ``delivery_report`` job tries it again later. A report with a ``watermark``
    instead names a moment (see ``_up_to``)."""
    if "watermark" in report:
        _up_to(db, inbox_id=inbox_id, report=report)
        return
    external_id = str(report["external_id"])
    status = DeliveryStatus(report["status"])
    # What a failure report finds before it: one that fails the message counts against
    # the inbox's health; a repeat of it (a provider's retry) or a late one does not.
    before = _delivery_of(db, inbox_id, external_id) if status == DeliveryStatus.failed else None
    found = update_delivery(
        db,
        inbox_id=inbox_id,
        external_id=external_id,
        status=status,
        error=report.get("error"),
        at=datetime.fromisoformat(report["at"]) if report.get("at") else None,
    )
    if found is not None:
        if before is not None and (found.status, found.error) != before:
            if found.status == DeliveryStatus.failed and before[0] != DeliveryStatus.failed:
                health.record_failure(
                    db,
                    inbox_id=inbox_id,
                    workspace_id=workspace_id,
                    error=found.error or "the provider reported a failure",
                    at_send=False,
                )
        return
    if delivery_known(db, inbox_id=inbox_id, external_id=external_id):
        return  # ours, and the report changed nothing (or it was on an inbound message)
    # While a send of the workspace is under way, the report may be on it, its id not
    # stored yet; otherwise it is on a message sent elsewhere (the number's phone app).
    if tries < len(REPORT_RETRIES) and db.scalar(
        _SENDING.where(Job.workspace_id == workspace_id).limit(1)
    ):
        enqueue(
            db,
            name="delivery_report",
            args={"inbox_id": inbox_id, "report": report, "tries": tries + 1},
            workspace_id=workspace_id,
            run_at=utcnow() + timedelta(seconds=REPORT_RETRIES[tries]),
        )
        return
    # Acknowledged all the same (an error would have the provider retry it for days): said
    # here, so that reports that never find their message can be seen.
    log.info(
        "a report on a message this inbox does not know was left out",
        extra={"event": "webhook.report_unknown", "inbox_id": inbox_id, "tries": tries},
    )


def _delivery_of(
    db: Session, inbox_id: str, external_id: str
) -> tuple[DeliveryStatus, str | None] | None:
    """The status and error of the message of ours a provider's id names (the message of
    a part), as they are before a report moves them; None if it names none."""
    part = db.get(MessagePart, (inbox_id, external_id))
    query = select(Message.status, Message.error)
    if part is not None:
        query = query.where(Message.id == part.message_id)
    else:
        query = query.where(Message.inbox_id == inbox_id, Message.external_id == external_id)
    row = db.execute(query).first()
    return (row[0], row[1]) if row is not None else None


def _up_to(db: Session, *, inbox_id: str, report: dict[str, Any]) -> None:
    """Messenger's delivery and read receipts may name no message but a moment (the
    ``watermark``, in milliseconds): everything this inbox sent the person (``kind`` and
    ``handle``: who reports) up to it moves, at the receipt's own time (``at``) if it has
    one; a message sent in parts, by its last part."""
    up_to = datetime.fromtimestamp(int(report["watermark"]) / 1000, UTC)
    at = datetime.fromisoformat(report["at"]) if report.get("at") else None
    status = DeliveryStatus(report["status"])
    moving = (DeliveryStatus.sent,) if status == DeliveryStatus.delivered else _UNREAD
    sent = db.execute(
        select(Message.id, Message.external_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(
            Identity,
            (Identity.customer_id == Conversation.customer_id)
            & (Identity.kind == IdentityKind(report["kind"]))
            & (Identity.value == str(report["handle"])),
        )
        .where(
            Message.inbox_id == inbox_id,
            Message.direction == Direction.outbound,
            Message.external_id.is_not(None),
            Message.created_at <= up_to,
            Message.status.in_(moving),
        )
    ).all()
    for message_id, external_id in sent:
        last = db.scalar(
            select(MessagePart.external_id)
            .where(MessagePart.message_id == message_id)
            .order_by(MessagePart.position.desc())
            .limit(1)
        )
        update_delivery(
            db,
            inbox_id=inbox_id,
            external_id=last or str(external_id),
            status=status,
            error=None,
            at=at,
        )


_UNREAD = (DeliveryStatus.sent, DeliveryStatus.delivered)


def apply_echo(
    db: Session, *, inbox_id: str, workspace_id: str, echo: dict[str, Any]
) -> Message | None:
    """A message the business sent a customer outside Rapport (``WebhookEvents.echoes``):
    recorded as sent, in the conversation of the customer's latest message through this
    inbox, as a person's answer. The provider echoes Rapport's own sends too: those are
    known by the message they name (``ours``: Messenger's metadata), by their id, or, while
    a send to the same customer through the inbox is under way (its id not stored yet), as
    what that send is sending (its text, or a file of it); anything else is another app's,
    recorded even then. An echo that cannot name ours (Instagram's) and is like a part of
    a message of ours whose id is not recorded (``_unrecorded_part``) is that part's id."""
    external_id = str(echo["external_id"])
    if echo.get("ours") and db.scalar(
        select(Message.id).where(
            Message.id == str(echo["ours"]),
            Message.inbox_id == inbox_id,
            Message.direction == Direction.outbound,
        )
    ):
        return None  # Rapport's own: its send stores the id (a redelivery finds it so too)
    conv = _latest_conversation(db, inbox_id=inbox_id, workspace_id=workspace_id, of=echo)
    # Read before the ids: a send that stores its id and ends between the two reads is
    # then found by the second (each read sees what was committed before it).
    sending = (
        _sending_to(db, inbox_id=inbox_id, workspace_id=workspace_id, customer_id=conv.customer_id)
        if conv is not None
        else []
    )
    if delivery_known(db, inbox_id=inbox_id, external_id=external_id):
        return None
    if conv is None:  # nobody Rapport knows: no conversation to show it in
        log.info(
            "an echo for a customer without a conversation was left out",
            extra={"event": "webhook.echo_unknown", "inbox_id": inbox_id},
        )
        return None
    if not echo.get("marks_ours") and (
        found := _unrecorded_part(
            db, echo, inbox_id=inbox_id, workspace_id=workspace_id, customer_id=conv.customer_id
        )
    ):
        _record_echoed(db, *found, external_id=external_id)
        log.info(
            "an echo was taken for a send of ours whose id was not recorded",
            extra={"event": "webhook.echo_recorded", "inbox_id": inbox_id},
        )
        return None
    if any(_echoes(db, echo, msg) for msg in sending):
        # Meta echoes a send at once, and may do so before the send has stored the id it
        # answered with: recorded now, it would be the same message twice, and the send's
        # own id would then collide with it.
        log.info(
            "an echo during a send to the same customer was taken for that send",
            extra={"event": "webhook.echo_of_send", "inbox_id": inbox_id},
        )
        return None
    sent_at = datetime.fromisoformat(echo["sent_at"]) if echo.get("sent_at") else None
    msg = add_message(
        db,
        conversation=conv,
        direction=Direction.outbound,
        kind=MessageKind.message,
        sender_type="user",
        sender_id=None,
        text=str(echo.get("text") or ""),
        external_id=external_id,
        status=DeliveryStatus.sent,
        meta={**(echo.get("meta") or {}), "sent_elsewhere": True},
        at=sent_at,
        inbox_id=inbox_id,
    )
    # Someone answered for the business: the customer no longer waits, as after an agent's
    # reply (the first response, the SLA response clocks).
    if conv.first_response_at is None:
        conv.first_response_at = msg.created_at
    sla.on_agent_reply(db, conversation=conv)
    inbox = db.get(Inbox, inbox_id)
    if inbox is not None and media.queue_if_any(inbox.channel, msg.meta):
        db.flush()  # the message's id, for the job
        media.request_fetch(db, message_id=msg.id, workspace_id=workspace_id)
    return msg


def _echoes(db: Session, echo: dict[str, Any], msg: Message) -> bool:
    """Whether ``echo`` may be a part of ``msg``, being sent: its text (or a piece of it,
    a long text going as several messages), or, carrying files, one of its files."""
    if (echo.get("meta") or {}).get("attachments"):
        return bool(files.of_messages(db, [msg.id])[msg.id])
    said = str(echo.get("text") or "").strip()
    if not said:
        return False
    pieces = [piece for _, piece in _parts(db, msg) if piece is not None]
    return said in {p.strip() for p in pieces} | {msg.text.strip()}


def _parts(db: Session, msg: Message) -> list[tuple[str, str | None]]:
    """The parts a send of ``msg`` goes as, keyed as ``base.file_parts`` keys them: its
    text's pieces (each with its text), then its files (with None)."""
    inbox = db.get(Inbox, msg.inbox_id)
    channel = base.get(inbox.channel) if inbox is not None else None
    limit = getattr(channel, "text_limit", None)
    size = getattr(channel, "text_size", base.utf16_units)
    parts: list[tuple[str, str | None]] = []
    if msg.text.strip():
        pieces = base.text_pieces(msg.text, limit, size) if limit else [msg.text]
        parts += [("text" if n == 0 else f"text:{n + 1}", p) for n, p in enumerate(pieces)]
    parts += [(f"file:{f.id}", None) for f in files.of_messages(db, [msg.id])[msg.id]]
    return parts


# Instagram's echoes name none of Rapport's sends (Messenger's carry our metadata): one is
# known by what it says, as a part of a message of ours to the customer whose id is not
# recorded: still queued (being sent, or to be tried again after an attempt whose answer
# was lost though Meta took it), or sent, Meta's answer naming no id, this long ago at most.
ECHO_WINDOW = timedelta(minutes=10)
# How alike an echo's text and a part of ours must be (difflib's ratio, both read as
# ``_loosely`` does): Instagram hands back what it delivered, not always quite as sent.
ECHO_LIKENESS = 0.9


def _loosely(text: str) -> str:
    """A text as an echo's is compared: composed alike, its spaces and case not counted."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _unrecorded_part(
    db: Session, echo: dict[str, Any], *, inbox_id: str, workspace_id: str, customer_id: str
) -> tuple[Message, str, list[str]] | None:
    """The message of ours to this customer through the inbox, the key of its part, and the
    keys of all its parts, that ``echo`` reports (see ``ECHO_WINDOW``): the part whose text
    is most like the echo's, or, for an echo with a file, the one file not yet recorded.
    The earliest such message: Meta echoes in the order it took them. Held (PostgreSQL):
    its send records its parts meanwhile (``_record_part``)."""
    at = datetime.fromisoformat(echo["sent_at"]) if echo.get("sent_at") else utcnow()
    unrecorded = db.scalars(
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Message.workspace_id == workspace_id,
            Message.inbox_id == inbox_id,
            Conversation.customer_id == customer_id,
            Message.direction == Direction.outbound,
            Message.kind == MessageKind.message,
            or_(
                Message.status == DeliveryStatus.queued,
                and_(
                    Message.status == DeliveryStatus.sent,
                    Message.external_id.is_(None),
                    Message.created_at >= at - ECHO_WINDOW,
                ),
            ),
        )
        .order_by(Message.created_at, Message.id)
        .with_for_update(of=Message)
        .execution_options(populate_existing=True)
    ).all()
    said = _loosely(str(echo.get("text") or ""))
    with_files = bool((echo.get("meta") or {}).get("attachments"))
    for msg in unrecorded:
        parts = _parts(db, msg)
        recorded = (msg.meta or {}).get("parts_sent") or {}
        open_parts = [(key, piece) for key, piece in parts if not recorded.get(key)]
        keys = [key for key, _ in parts]
        if with_files:
            open_files = [key for key, piece in open_parts if piece is None]
            if len(open_files) == 1:
                return msg, open_files[0], keys
            continue
        likeness = [
            (SequenceMatcher(None, said, _loosely(piece)).ratio(), key)
            for key, piece in open_parts
            if piece is not None and said
        ]
        if likeness and (best := max(likeness))[0] >= ECHO_LIKENESS:
            return msg, best[1], keys
    return None


def _record_echoed(
    db: Session, msg: Message, key: str, keys: list[str], *, external_id: str
) -> None:
    """Record the echo's id as that of ``msg``'s part ``key``, as its send would have: a
    retry sends it no more, and reports on it reach the message. A queued message whose
    parts are all recorded so went: it is sent (its job, tried again, finds nothing to do);
    one sent without an id takes its last part's."""
    sent = _note_part(msg, key, external_id)
    db.add(_part(msg, external_id, keys.index(key)))
    if msg.status == DeliveryStatus.queued:
        if all(sent.get(k) for k in keys):
            ids = [sent[k] for k in keys]
            _set_status(
                db, msg, DeliveryStatus.sent, None, external_id=ids[-1], meta=base.parts_meta(ids)
            )
    elif key == keys[-1]:
        msg.external_id = external_id
        emit(
            db,
            workspace_id=msg.workspace_id,
            type="message.updated",
            payload=message_payload(msg),
        )


def _take_over_copy(db: Session, msg: Message, external_id: str) -> None:
    """Delete the copy of ``msg`` an echo left, stored as another app's message before its
    send recorded this id (an echo that names none, matched to nothing then): ``msg`` is
    that message. Left, the two were one message shown twice, and the send, storing its
    id, collided with the copy's, failed and was sent again, to collide again."""
    copy = db.scalar(
        select(Message).where(
            Message.inbox_id == msg.inbox_id,
            Message.external_id == external_id,
            Message.id != msg.id,
            Message.direction == Direction.outbound,
        )
    )
    if copy is None or not (copy.meta or {}).get("sent_elsewhere"):
        return
    conv = db.get(Conversation, copy.conversation_id)
    # Open threads showed the message twice: the copy leaves them (told once this commits).
    messages_deleted(
        db,
        workspace_id=copy.workspace_id,
        conversation_id=copy.conversation_id,
        message_ids=[copy.id],
    )
    db.delete(copy)
    # Now: a flush writes updates before deletes, and ``msg`` taking the id would collide.
    db.flush()
    if conv is not None:
        conv.messages_count = max((conv.messages_count or 0) - 1, 0)
    log.info(
        "the copy an echo left of a message of ours was taken over by it",
        extra={"event": "deliver.echo_copy_merged", "message_id": msg.id},
    )


def apply_activity(
    db: Session, *, inbox_id: str, workspace_id: str, activity: dict[str, Any]
) -> Message | None:
    """What happened to a customer's thread at the provider (``WebhookEvents.activities``):
    an activity line in the conversation of their latest message through this inbox, once
    (a redelivery is known by its id). Nobody said it: nothing reopens, waits or answers."""
    external_id = str(activity["external_id"])
    if delivery_known(db, inbox_id=inbox_id, external_id=external_id):
        return None
    conv = _latest_conversation(db, inbox_id=inbox_id, workspace_id=workspace_id, of=activity)
    if conv is None:
        log.info(
            "an activity for a customer without a conversation was left out",
            extra={"event": "webhook.activity_unknown", "inbox_id": inbox_id},
        )
        return None
    return add_message(
        db,
        conversation=conv,
        direction=Direction.outbound,
        kind=MessageKind.activity,
        sender_type="system",
        sender_id=None,
        text=str(activity["text"]),
        external_id=external_id,
        meta=activity.get("meta") or {},
        inbox_id=inbox_id,
    )


def _latest_conversation(
    db: Session, *, inbox_id: str, workspace_id: str, of: dict[str, Any]
) -> Conversation | None:
    """The conversation of the latest message through the inbox from the customer ``of``
    names by its ``kind`` and ``handle``."""
    return db.scalar(
        select(Conversation)
        .join(Message, Message.conversation_id == Conversation.id)
        .join(Identity, Identity.customer_id == Conversation.customer_id)
        .where(
            Message.inbox_id == inbox_id,
            Message.direction == Direction.inbound,
            Identity.workspace_id == workspace_id,
            Identity.kind == IdentityKind(of["kind"]),
            Identity.value == str(of["handle"]),
        )
        .order_by(Message.created_at.desc())
        .limit(1)
    )


def _sending_to(
    db: Session, *, inbox_id: str, workspace_id: str, customer_id: str
) -> list[Message]:
    """The messages of this inbox to this customer a ``deliver`` job is sending right now
    (a few jobs run at once: their message ids are read, not matched in SQL)."""
    running = db.scalars(
        select(Job.args).where(
            Job.name == "deliver",
            Job.state == JobState.running,
            Job.workspace_id == workspace_id,
        )
    ).all()
    ids = [str(a.get("message_id")) for a in running if a.get("message_id")]
    if not ids:
        return []
    return list(
        db.scalars(
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.id.in_(ids),
                Message.inbox_id == inbox_id,
                Conversation.customer_id == customer_id,
            )
        )
    )


@job("delivery_report", keep_done=False)
def delivery_report(ctx: JobContext, *, inbox_id: str, report: dict[str, Any], tries: int) -> None:
    """A provider's report that came before its message's id was stored, tried again."""
    assert ctx.workspace_id is not None
    with ctx.database.session() as db:
        apply_report(
            db, inbox_id=inbox_id, workspace_id=ctx.workspace_id, report=report, tries=tries
        )


def _record_part(ctx: JobContext, message_id: str, key: str, external_id: str) -> None:
    """Remember at once that the provider accepted one part of a message, so that a retry
    after a later part failed does not send it twice, and so that the provider's reports on
    that part reach the message."""
    with ctx.database.session() as db:
        # Held (PostgreSQL): an echo may be recording a part of it too (``_record_echoed``).
        msg = db.get(Message, message_id, with_for_update=True)
        if msg is not None:
            sent = _note_part(msg, key, external_id)
            if external_id:
                _take_over_copy(db, msg, external_id)
            if external_id and db.get(MessagePart, (msg.inbox_id, external_id)) is None:
                db.add(_part(msg, external_id, len(sent) - 1))


def _note_part(msg: Message, key: str, external_id: str | None) -> dict[str, Any]:
    """``msg``'s parts sent, with ``key``'s id noted among them (its meta updated)."""
    sent = dict((msg.meta or {}).get("parts_sent") or {})
    sent[key] = external_id
    msg.meta = {**(msg.meta or {}), "parts_sent": sent}
    return sent


def _part(msg: Message, external_id: str, position: int) -> MessagePart:
    """The row by which a provider's id for one part of ``msg`` leads back to it."""
    return MessagePart(
        inbox_id=msg.inbox_id,
        external_id=external_id,
        workspace_id=msg.workspace_id,
        message_id=msg.id,
        position=position,
    )


def _opted_out(
    ctx: JobContext, msg: Message, inbox: Inbox, customer_id: str, why: str, reason: str
) -> None:
    """The provider refused the send because the customer opted out with it (a STOP that
    never reached Rapport: sent before the inbox was connected, or through another tool on
    the number). The message fails with the reason, and the opt-out is recorded in the
    same transaction, as if its keyword had come in: the panel shows it, and replies are
    refused before they are queued instead of failing one by one at the provider."""
    channel = base.consent_channel(inbox.channel)
    with ctx.database.session() as db:
        row = db.get(Message, msg.id)
        if row is not None and ctx.holds(db):
            _set_status(db, row, DeliveryStatus.failed, reason)
        # Two sends refused at once record one withdrawal: the second waits, then finds it.
        lock_row(db, Customer, customer_id)
        if (
            channel is not None
            and profile.withdrawn(db, customer_id=customer_id, channel=channel) is None
        ):
            profile.record_keyword(
                db,
                workspace_id=msg.workspace_id,
                customer_id=customer_id,
                channel=channel,
                keyword="",
                granted=False,
                source=(profile.keyword_source(channel, "") + f"at {why}")[:200],
            )
    log.info(
        "the provider refused a send: the customer opted out there",
        extra={
            "event": "deliver.opted_out",
            "workspace_id": msg.workspace_id,
            "message_id": msg.id,
        },
    )


def _mark(
    ctx: JobContext,
    message_id: str,
    status: DeliveryStatus,
    error: str | None,
    *,
    external_id: str | None = None,
    meta: dict[str, object] | None = None,
    counted: bool = False,
    account: bool = False,
) -> bool:
    """What came of this attempt, written while it still holds its job; False if it no
    longer does (its lease ran out and another worker's attempt has the say). A reply sent,
    or failed and ``counted`` against its inbox (not one the customer's consent or a
    switched-off inbox stopped), is written into the inbox's health in the same
    transaction (``account``: refused for the inbox itself: its credentials, its settings)."""
    with ctx.database.session() as db:
        if not ctx.holds(db):
            return False
        # Held (PostgreSQL): an echo may be recording a part of it (``_record_echoed``).
        msg = db.get(Message, message_id, with_for_update=True)
        if msg is not None:
            _set_status(db, msg, status, error, external_id=external_id, meta=meta)
            where = {"inbox_id": msg.inbox_id, "workspace_id": msg.workspace_id}
            if status == DeliveryStatus.sent:
                health.record_sent(db, **where)
            elif status == DeliveryStatus.failed and counted:
                health.record_failure(db, **where, error=error or "", at_send=True, account=account)
        return True


def _still_listed(report: dict[str, object], meta: dict[str, Any]) -> dict[str, object]:
    """A send's report with only the refused copies the message still lists (``meta``, as
    it is now): the send read its lists before it went, and an erasure committed meanwhile
    took the person's address out of them, which the report would put back."""
    refused = report.get("refused_copies")
    if not isinstance(refused, list):
        return report
    mail = meta.get("email") or {}
    copies = {addresses.written(a) for k in ("cc", "bcc") for a in mail.get(k) or []}
    return {**report, "refused_copies": [a for a in refused if addresses.written(a) in copies]}


def _set_status(
    db: Session,
    msg: Message,
    status: DeliveryStatus,
    error: str | None,
    *,
    external_id: str | None = None,
    meta: dict[str, object] | None = None,
) -> None:
    msg.status = status
    msg.error = error
    if external_id:
        _take_over_copy(db, msg, external_id)
        msg.external_id = external_id
    if meta:
        msg.meta = {**msg.meta, "delivery": _still_listed(meta, msg.meta)}
    emit(
        db,
        workspace_id=msg.workspace_id,
        type="message.updated",
        payload=message_payload(msg),
    )
    if status == DeliveryStatus.sent:
        # Parts may have reported while the rest was sent: they count now.
        settle_parts(db, message=msg)
