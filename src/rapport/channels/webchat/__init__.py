"""Web chat: an embeddable widget of our own, visitors who keep their history across pages,
and identity verified by the host site's HMAC, never by an email someone typed."""

import logging
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.auth.schemas import printable_name
from rapport.channels import base
from rapport.channels.models import Inbox
from rapport.channels.webchat.models import Visitor
from rapport.config import Settings
from rapport.conversations import files
from rapport.conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
)
from rapport.conversations.service import message_payload
from rapport.crypto import box_for, hmac_sha256_hex, random_token, same, sha256_hex
from rapport.customers import profile
from rapport.customers.identity import Handle, InvalidHandle, handle, normalize_email
from rapport.customers.models import ConsentChannel, Customer, IdentityKind
from rapport.db import Database, utcnow
from rapport.problems import Invalid, NotFound
from rapport.realtime.service import emit

log = logging.getLogger(__name__)
# A visitor whose widget has not been seen this long is away: replies go by email too.
AWAY_AFTER = timedelta(minutes=2)


def verified(secret: str | None, user_id: str | None, user_hash: str | None) -> bool:
    """Whether ``user_hash`` is HMAC-SHA256(user id, inbox secret) in hex."""
    if not (secret and user_id and user_hash):
        return False
    return same(user_hash.strip().lower(), hmac_sha256_hex(secret, user_id))


def origin_of(text: str) -> str:
    """An origin as browsers send it: scheme and host in lower case, no default port, no
    path. What an admin pastes from the address bar ("https://Shop.example/") is the
    origin "https://shop.example" of the same page."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or not parts.hostname:
        return text
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def inbox_by_token(db: Session, token: str) -> Inbox:
    inbox = db.scalar(
        select(Inbox).where(
            Inbox.public_token == token, Inbox.channel == "webchat", Inbox.enabled.is_(True)
        )
    )
    if inbox is None:
        raise NotFound("chat")
    return inbox


def start(
    db: Session,
    *,
    inbox: Inbox,
    visitor_token: str | None,
    name: str,
    email: str | None,
    user_id: str | None,
    user_hash: str | None,
    secret: str | None,
) -> tuple[Visitor, str]:
    """The visitor behind a browser's token, or a new one; (visitor, plain token).

    A visitor signed in as a user of the host site (``verified_user_id``) is resumed only
    with the proof of that same user: the token lives in the browser, not with the person,
    and on a shared computer the next one to open the site (signed out, or signed in as
    someone else) was that user's visitor, reading their chat and writing as them. Anyone
    else gets a new visitor (an anonymous one, or one signed in as whom the proof names)."""
    visitor = None
    if visitor_token:
        visitor = db.scalar(
            select(Visitor).where(
                Visitor.token_hash == sha256_hex(visitor_token), Visitor.inbox_id == inbox.id
            )
        )
    proven = user_id if verified(secret, user_id, user_hash) else None
    if visitor is not None and visitor.verified_user_id not in (None, proven):
        visitor = None
    token = visitor_token if visitor is not None and visitor_token else random_token("v_", 24)
    if visitor is None:
        visitor = Visitor(
            workspace_id=inbox.workspace_id, inbox_id=inbox.id, token_hash=sha256_hex(token)
        )
        db.add(visitor)
    if name:
        # What agents read as the customer's name: no bidi override making it read as
        # another, no newline forging a line (in a notification, an email's From).
        visitor.name = printable_name(name)[:300]
    if email and email.strip():
        # One address, as customers' are kept: replies go to it when the visitor has left
        # (``after_send``), and a list typed here ("a@x.example,b@y.example") was their To.
        try:
            visitor.email = normalize_email(email)[:320]
        except InvalidHandle:
            raise Invalid("email: not an email address") from None
    if proven is not None:
        visitor.verified_user_id = proven
    visitor.last_seen_at = utcnow()
    db.flush()
    return visitor, token


def visitor_by_token(db: Session, *, inbox: Inbox, token: str) -> Visitor:
    visitor = db.scalar(
        select(Visitor).where(Visitor.token_hash == sha256_hex(token), Visitor.inbox_id == inbox.id)
    )
    if visitor is None:
        raise NotFound("visitor")
    return visitor


def visitor_of(db: Session, *, inbox_id: str, customer_id: str) -> Visitor | None:
    """The customer's visitor of this web chat inbox seen last: whose widget shows the
    customer's conversations in the inbox (None: they never wrote through it, or were
    erased)."""
    return db.scalar(
        select(Visitor)
        .where(Visitor.inbox_id == inbox_id, Visitor.customer_id == customer_id)
        .order_by(Visitor.last_seen_at.desc())
        .limit(1)
    )


def handles_of(visitor: Visitor, region: str) -> list[Handle]:
    """The visitor's handles: their own id (proven by the token), the host site's user id
    when HMAC-verified, and a typed email that is never trusted to find someone else."""
    out = [handle(IdentityKind.webchat, visitor.id)]
    if visitor.verified_user_id:
        out.insert(0, handle(IdentityKind.external, visitor.verified_user_id))
    if visitor.email:
        try:
            out.append(handle(IdentityKind.email, visitor.email, verified=False, region=region))
        except InvalidHandle:
            pass
    return out


# What a visitor may send in one file: the same as an agent.
MAX_UPLOAD_BYTES = files.MAX_UPLOAD_BYTES


def in_chat(message: Message, conversation: Conversation | None, visitor: Visitor) -> bool:
    """Whether the message came or went through the visitor's chat, in a conversation of
    their customer: by the message's own inbox, not its conversation's, which a merge may
    have made the customer's email thread (or made the chat hold that thread's mail)."""
    return (
        conversation is not None
        and visitor.customer_id is not None
        and conversation.id == message.conversation_id
        and conversation.customer_id == visitor.customer_id
        and message.inbox_id == visitor.inbox_id
    )


def mark_read(db: Session, *, visitor: Visitor, message_id: str) -> int:
    """The visitor saw everything we sent through their chat up to this message: mark it
    read (agents see the state change live). Returns how many messages moved."""
    upto = db.get(Message, message_id)
    conv = db.get(Conversation, upto.conversation_id) if upto else None
    if upto is None or conv is None or not in_chat(upto, conv, visitor):
        raise NotFound("message")
    rows = db.scalars(
        select(Message).where(
            Message.conversation_id == conv.id,
            # Not the customer's email replies a merge put beside the chat's.
            Message.inbox_id == visitor.inbox_id,
            Message.direction == Direction.outbound,
            Message.kind.in_((MessageKind.message, MessageKind.bot)),
            Message.created_at <= upto.created_at,
            Message.status.in_(
                (DeliveryStatus.queued, DeliveryStatus.sent, DeliveryStatus.delivered)
            ),
        )
    )
    moved = 0
    for message in rows:
        message.status = DeliveryStatus.read
        emit(
            db,
            workspace_id=message.workspace_id,
            type="message.updated",
            payload=message_payload(message),
        )
        moved += 1
    return moved


class WebchatChannel:
    name = "webchat"
    fields: tuple[base.Setting, ...] = (
        base.Setting("title", "Title", help="The widget's heading; the inbox's name if empty."),
        base.Setting(
            "reply_time",
            "Expected reply time",
            help='Shown to visitors as "We usually reply in ...".',
            default="a few minutes",
        ),
        base.Setting("ask_name", "Ask for the visitor's name", "flag", default=True),
        base.Setting("ask_email", "Ask for the visitor's email", "flag", default=True),
        base.Setting(
            "allowed_origins",
            "Allowed websites",
            "list",
            "Origins the widget may run on (https://www.example.com), one a line; any "
            "website if empty.",
        ),
        base.Setting(
            "email_inbox_id",
            "Email inbox for visitors who left",
            "inbox",
            "A reply written after the visitor left also goes to the email they gave, "
            "through this inbox.",
            choices=("email",),
        ),
        base.Setting(
            "hmac_secret",
            "Identity secret",
            "secret",
            "Signs your signed-in users in: data-user-hash is the HMAC-SHA256 of "
            "data-user-id with it.",
        ),
        base.rate_setting(1000),
    )
    secret_fields = base.secret_names(fields)
    # Files reach the widget with the message (its attachments), downloaded by the visitor.
    sends_files = True

    def after_send(self, *, database: Database, settings: Settings, out: base.Outbound) -> None:
        """A visitor who is away gets the reply by email, when they left an address and the
        inbox names an email inbox to send from (setting ``email_inbox_id``)."""
        email_inbox_id = out.inbox.settings.get("email_inbox_id")
        if not email_inbox_id or out.message.kind.value != "message":
            return
        with database.session(write=False) as db:
            visitor = visitor_of(db, inbox_id=out.inbox.id, customer_id=out.customer.id)
            mail_inbox = db.get(Inbox, str(email_inbox_id))
            if (
                visitor is None
                or not visitor.email
                or utcnow() - visitor.last_seen_at < AWAY_AFTER
                or mail_inbox is None
                or mail_inbox.workspace_id != out.inbox.workspace_id
            ):
                return
            if profile.withdrawn(db, customer_id=out.customer.id, channel=ConsentChannel.email):
                log.info(
                    "away visitor not emailed: they opted out of email",
                    extra={"event": "webchat.email_no_consent", "inbox_id": out.inbox.id},
                )
                return
            db.expunge(mail_inbox)
            email = visitor.email
        email_channel = base.get("email")
        assert email_channel is not None
        secrets = box_for(settings.secret_key.get_secret_value()).decrypt_json(
            mail_inbox.secrets_encrypted
        )
        # The address the visitor gave in the widget, not whatever else the customer has.
        to = Customer(workspace_id=out.customer.workspace_id, name=out.customer.name, email=email)
        try:
            email_channel.send(
                replace(
                    out,
                    inbox=mail_inbox,
                    secrets=secrets,
                    identities=[],
                    thread_refs=[],
                    customer=to,
                )
            )
        except base.DeliveryError:
            log.warning("away visitor not emailed", extra={"event": "webchat.email_failed"})

    def unreachable(self, db: Session, to: base.Addressee) -> str | None:
        """A message reaches the widget of a visitor of this inbox who is the customer (when
        they are away, it waits in its history, and goes by email as ``after_send`` says)."""
        if visitor_of(db, inbox_id=to.inbox.id, customer_id=to.customer.id) is None:
            return "they have never chatted through it: no widget would show the message"
        return None

    def send(self, out: base.Outbound) -> base.SendResult:
        """Nothing to hand over: the reply reached the visitor's widget as an event when it
        was stored, and waits in the history for their next visit."""
        return base.SendResult(meta={"widget": True})


CHANNEL = base.register(WebchatChannel())
