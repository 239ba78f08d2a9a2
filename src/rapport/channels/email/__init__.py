"""The email channel: inbound over SMTP (``rapport smtp``), outbound over SMTP, threaded.

Threading never splits a reply from its conversation: ``In-Reply-To`` and ``References``
are looked up among the Message-IDs we stored (the customer's and our own), then the
conversation token in the reply address (``support+c<id>@``) or the subject (``[#<id>]``).
"""

import hashlib
import re
import smtplib
import ssl
from dataclasses import dataclass, replace
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

import idna
from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.auth.models import Membership, Role, User
from rapport.channels import base
from rapport.channels.email import inline, sender_auth
from rapport.channels.email.parse import ParsedEmail, parse
from rapport.channels.email.replies import visible_reply
from rapport.channels.models import Inbox
from rapport.config import Settings
from rapport.conversations import copies, merging
from rapport.conversations import service as conversation_service
from rapport.conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
    Status,
)
from rapport.customers import duplicates
from rapport.customers.identity import InvalidHandle, handle, normalize
from rapport.customers.models import ConsentChannel, Customer, IdentityKind
from rapport.db import hold, one_at_a_time, utcnow
from rapport.ingest import (
    InboundAttachment,
    InboundMessage,
    IngestResult,
    receive,
    with_stored_files,
    with_triage,
)
from rapport.mail import one_line
from rapport.problems import NotFound
from rapport.storage import LocalStorage
from rapport.workspaces.models import Workspace

_TOKEN_ADDR = re.compile(r"\+c([0-9a-f]{32})@", re.IGNORECASE)
_TOKEN_SUBJECT = re.compile(r"\[#([0-9a-f]{32})\]", re.IGNORECASE)
# A Message-ID we can name in a reply's headers: printable ASCII, no space, an "@".
_ONE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
MAX_TEXT = 200_000
# Message-IDs looked up per mail, to thread it or to mark what it bounces: clients trim
# References to the last few ids (RFC 5322), and one query holds 65,535 parameters at most
# on PostgreSQL, so a mail naming 70,000 ids would otherwise never be stored at all.
MAX_LOOKED_UP_IDS = 50
# Message.external_id holds 300 characters: a longer Message-ID is stored and looked up
# by its digest (``stored_id``).
MAX_STORED_ID = 300
# The longest Message-ID a reply names: one a line, which holds 998 characters (RFC 5322).
MAX_WRITTEN_ID = 998 - len("In-Reply-To: ")
# Headers set raw (``set_raw``) are written as they are: the mail library's own folding
# writes a word longer than a line as RFC 2047 encoded words, which in a Message-ID (one of
# Outlook's 80 characters) no mail client reads as the id.
_AS_SET = policy.default.clone(refold_source="none")
# Addresses of a mail's To and Cc kept with it: a list mailing copies thousands.
MAX_ADDRESSES = 100
# A stranger's answer in a customer's thread, signed with the customer's own full name.
SAME_NAME_IN_THREAD_PROBABILITY = 0.9


@dataclass
class EmailResult:
    ingest: IngestResult
    parsed: ParsedEmail

    @property
    def message(self) -> Message:
        return self.ingest.message

    @property
    def attachments(self) -> int:
        return len(self.parsed.attachments)


def stored_id(message_id: str) -> str:
    """A Message-ID as a message's ``external_id`` holds it, and as it is looked up: one
    longer than the column is known by its SHA-256 (cut to fit, it was no longer the id a
    reply names, and the thread split; two that began alike were one mail)."""
    if len(message_id) <= MAX_STORED_ID:
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"<sha256-id:{digest}>"


def _thread_ids(parsed: ParsedEmail) -> list[str]:
    """The Message-IDs a mail replies to, nearest first: In-Reply-To, then the References
    from the end, without repeats and bounded, as stored (``stored_id``)."""
    ids = dict.fromkeys(r for r in [*parsed.in_reply_to, *reversed(parsed.references)] if r)
    return [stored_id(r) for r in list(ids)[:MAX_LOOKED_UP_IDS]]


def _thread_hint(db: Session, *, workspace_id: str, parsed: ParsedEmail) -> tuple[str | None, bool]:
    """The conversation the mail answers, and whether its sender was one a mail of that
    conversation it answers was addressed to (its To or Cc, a reply's Cc or Bcc, or who
    wrote it): then, though not its customer, they write in it (``copied_in_thread``),
    where answering all would otherwise start a conversation of their own. Never the
    workspace's own addresses or its members' (every customer's mail is addressed to us)."""
    refs = _thread_ids(parsed)
    if refs:
        row = db.execute(
            select(Message.conversation_id)
            .where(
                Message.inbox_id.in_(_inboxes_of(db, workspace_id)),
                Message.workspace_id == workspace_id,
                Message.external_id.in_(refs),
            )
            .order_by(Message.created_at.desc())
            .limit(1)
        ).first()
        if row is not None:
            conversation = str(row[0])
            return conversation, _addressed_in(db, workspace_id, conversation, refs, parsed)
    for address in parsed.to:
        m = _TOKEN_ADDR.search(address)
        if m:
            return m.group(1).lower(), False
    m = _TOKEN_SUBJECT.search(parsed.subject)
    return (m.group(1).lower() if m else None), False


def _new_mail_to_old_address(parsed: ParsedEmail, hint: str | None) -> bool:
    """Whether the conversation was found by our reply address alone, in a mail that
    answers nothing (no In-Reply-To, no References, not the subject's token): a mail
    client's address book offers ``support+c<id>@`` for any new mail, months later."""
    return bool(
        hint
        and not parsed.in_reply_to
        and not parsed.references
        and f"[#{hint}]" not in parsed.subject.lower()
    )


def _closed_for_new_mail(db: Session, conversation_id: str, settings: Settings) -> bool:
    """Whether the conversation (where its merges end) was resolved longer ago than its
    workspace reopens a conversation for a customer's new mail."""
    conv = merging.where_merged(db, db.get(Conversation, conversation_id))
    if conv is None or conv.status != Status.resolved:
        return False
    workspace = db.get(Workspace, conv.workspace_id)
    hours = ((workspace.settings if workspace else None) or {}).get(
        "reopen_window_hours", settings.reopen_window_hours
    )
    resolved_at = conv.resolved_at or conv.last_activity_at
    return bool(utcnow() - resolved_at > timedelta(hours=int(hours)))


def _inboxes_of(db: Session, workspace_id: str) -> list[str]:
    """The workspace's inboxes: Message-IDs are looked up by (inbox, external id), the key
    an index holds (by workspace, every message of the workspace was read)."""
    return list(db.scalars(select(Inbox.id).where(Inbox.workspace_id == workspace_id)))


def _addressed_in(
    db: Session, workspace_id: str, conversation: str, refs: list[str], parsed: ParsedEmail
) -> bool:
    """Whether the sender is among those the conversation's mails it answers went to,
    copied or came from (read from ``meta.email``'s address lists alone)."""
    sender = _normal(parsed.from_addr or "")
    if sender is None or copies.is_ours(sender, copies.own_addresses(db, workspace_id)):
        return False
    if colleague(db, workspace_id, sender) is not None:
        return False  # a colleague answering from their own mailbox is no customer
    fields = [Message.meta[("email", f)] for f in ("to", "cc", "bcc", "from")]
    for to, cc, bcc, sent_by in db.execute(
        select(*fields).where(
            Message.workspace_id == workspace_id,
            Message.conversation_id == conversation,
            Message.external_id.in_(refs),
        )
    ):
        named = [*(to or []), *(cc or []), *(bcc or []), sent_by or ""]
        if any(_normal(str(a)) == sender for a in named if a):
            return True
    return False


def colleague(db: Session, workspace_id: str, address: str | None) -> tuple[str, Role] | None:
    """The member of the workspace whose address this is, and their role, if any (an
    internationalized domain matched as members type it, in Unicode, or as mail carries
    it, in IDNA)."""
    sender = _normal(address or "")
    if sender is None:
        return None
    forms = {sender}
    local, _, domain = sender.rpartition("@")
    try:
        forms.add(f"{local}@{idna.decode(domain)}")  # IDNA 2008, as identities write it
    except (idna.IDNAError, UnicodeError):
        pass
    row = db.execute(
        select(User.id, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        # (Members' addresses are kept lower-cased: the unique index finds them.)
        .where(Membership.workspace_id == workspace_id, User.email.in_(forms))
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None


def _normal(address: str) -> str | None:
    """An address as identities hold it (IDNA, lower-cased), or None if it is none."""
    try:
        return normalize(IdentityKind.email, address.strip())
    except InvalidHandle:
        return None


def _taken_by_another(db: Session, inbox_id: str, external_id: str, parsed: ParsedEmail) -> bool:
    """Whether another mail is stored under this Message-ID in the inbox: another sender's,
    or its sender's written at another time (a mailer that writes one Message-ID on every
    mail). Our own mail come back (through an address it copied that forwards here) is no
    other's: it is the message we sent, so nothing more is stored."""
    row = db.execute(
        select(Message.direction, Message.meta).where(
            Message.inbox_id == inbox_id, Message.external_id == external_id
        )
    ).first()
    if row is None or row.direction == Direction.outbound:
        return False
    return not _same_mail(row.meta or {}, parsed)


def _same_mail(meta: dict[str, Any], parsed: ParsedEmail) -> bool:
    """Whether a stored mail (its ``meta``) under the same Message-ID is this one: its
    sender's, written at the same time. A redelivery (by another route, a list's copy with
    its footer, the copy to another of our addresses) keeps the Date."""
    earlier = str((meta.get("email") or {}).get("from") or "")
    if earlier.lower() != (parsed.from_addr or "").lower():
        return False
    written = meta.get("sent_at")
    return not (written and parsed.date and written != parsed.date.isoformat())


def _copy_stored_elsewhere(
    db: Session, inbox: Inbox, msg: InboundMessage, parsed: ParsedEmail
) -> Message | None:
    """This same mail as another of the workspace's email inboxes stored it, if one did:
    a mail to support@ copying sales@ reaches each, and is one conversation, not one an
    inbox. Looked for after any other transaction storing it has committed (two mailboxes
    polled at once, each by its worker), by the (inbox, external id) index."""
    one_at_a_time(db, f"email:{inbox.workspace_id}:{msg.external_id}")
    for message in db.scalars(
        select(Message)
        .join(Inbox, Inbox.id == Message.inbox_id)
        .where(
            Inbox.workspace_id == inbox.workspace_id,
            Inbox.channel == "email",
            Inbox.id != inbox.id,
            Message.workspace_id == inbox.workspace_id,
            Message.external_id == msg.external_id,
        )
        .order_by(Message.created_at, Message.id)
    ):
        if _same_mail(message.meta or {}, parsed):
            return message
    return None


@dataclass
class PreparedEmail:
    """A raw email made ready to store: parsed, triaged, its thread looked up."""

    parsed: ParsedEmail
    msg: InboundMessage
    # A colleague's own mail in a thread (copied, answering all from their mailbox): the
    # member it is from and their role, stored as theirs in the thread (``_from_colleague``).
    colleague: tuple[str, Role] | None = None
    # Its conversation found by our reply address alone: a new mail, unless that
    # conversation may still be reopened (``_closed_for_new_mail``).
    by_address_alone: bool = False


def prepare_email(
    db: Session,
    raw: bytes,
    *,
    inbox_id: str,
    verified_by: str | None = None,
    storage: LocalStorage | None = None,
) -> PreparedEmail:
    """Parse and triage one raw email, reading only: the costly part (a 60 MB message takes
    a second to parse) runs before the transaction that stores it, so no other writer
    waits on it (SQLite has one).

    ``verified_by``: the authserv-id under which Rapport's own listener checked the sender;
    its Authentication-Results header, the topmost, is then the only one believed.
    ``storage``: its files (the original too) are written there now, not in the transaction."""
    inbox = db.get(Inbox, inbox_id)
    if inbox is None:
        raise NotFound("inbox")
    parsed = parse(raw)
    # What the sender sent, without the header our own listener wrote on top: a mail is
    # known by it (it has no Message-ID), and another of the sender's servers trying it
    # again gets another verdict there (another SPF result): it was stored twice.
    ours = verified_by and raw.startswith(b"Authentication-Results: ")
    sent = raw.split(b"\r\n", 1)[-1] if ours else raw
    handles = []
    if parsed.from_addr:
        try:
            # The address the mail came from is the channel's own word for who wrote.
            handles.append(handle(IdentityKind.email, parsed.from_addr, verified=True))
        except InvalidHandle:
            pass
    if not handles:
        digest = hashlib.sha256(sent).hexdigest()[:24]
        handles.append(handle(IdentityKind.external, f"email-unknown-sender:{digest}"))
    visible = visible_reply(parsed.text, parsed.html)
    notes = list(parsed.refused)
    meta: dict[str, dict[str, Any]] = {
        "email": {
            "message_id": parsed.message_id,
            "subject": parsed.subject,
            "from": parsed.from_addr,
            # Whom else it went to, and of them whom it copied (a reply's Cc offers them).
            "to": parsed.to[:MAX_ADDRESSES],
            "cc": parsed.cc[:MAX_ADDRESSES],
            "in_reply_to": parsed.in_reply_to[:MAX_LOOKED_UP_IDS],
            "references": parsed.references[-20:],
            "full_text": parsed.text[:MAX_TEXT],
            "auto_reply": parsed.auto_reply,
            "problems": parsed.problems,
            "refused": notes,
        }
    }
    verdict = sender_auth.check(
        # Checked by our own listener: its header, on top, is the only one that counts.
        parsed.authentication_results[:1] if verified_by else parsed.authentication_results,
        from_addr=parsed.from_addr,
        trusted={verified_by}
        if verified_by
        else set((inbox.settings or {}).get("trusted_authserv_ids") or []),
    )
    if verdict is not None:
        meta["email"]["sender_auth"] = verdict
    # Mail from one of our own addresses that is none we sent (a notice, a forward between
    # two inboxes): recorded, never answered, so that no rule or bot writes to ourselves.
    from_us = bool(parsed.from_addr) and copies.is_ours(
        parsed.from_addr or "", copies.own_addresses(db, inbox.workspace_id)
    )
    if from_us:
        meta["email"]["problems"] = [*parsed.problems, "From: one of the workspace's addresses"]
    cids = inline.content_ids([(a.content_id, a.data) for a in parsed.attachments], hashlib.sha256)
    if cids:
        meta["email"]["inline"] = cids  # the HTML's cid: images (``inline.shown``)
    text = visible or parsed.text.strip()
    if notes:
        text = (text + "\n\n" if text else "") + "\n".join(f"[{n}]" for n in notes)
    attachments = [
        InboundAttachment(a.filename, a.content_type, a.data) for a in parsed.attachments
    ]
    # The original, byte for byte, so an agent can always see what really arrived.
    attachments.append(InboundAttachment("original.eml", "message/rfc822", raw))
    by_content = "<sha256:" + hashlib.sha256(sent).hexdigest() + ">"
    external_id = stored_id(parsed.message_id) if parsed.message_id else by_content
    if parsed.message_id and _taken_by_another(db, inbox.id, external_id, parsed):
        # A mailer that reuses its Message-IDs, or a forgery: not a redelivery of that mail.
        external_id = by_content
        meta["email"]["problems"] = [*parsed.problems, "Message-ID: another mail had it"]
    hint, copied = _thread_hint(db, workspace_id=inbox.workspace_id, parsed=parsed)
    msg = InboundMessage(
        inbox_id=inbox.id,
        external_id=external_id,
        handles=handles,
        text=text[:MAX_TEXT],
        html=parsed.html,
        sender_name=parsed.from_name,
        subject=parsed.subject,
        attachments=attachments,
        conversation_hint=hint,
        copied_in_thread=copied,
        sent_at=parsed.date,
        meta=meta,
        auto_reply=parsed.auto_reply or from_us,
    )
    msg = with_triage(msg)
    return PreparedEmail(
        parsed,
        with_stored_files(msg, storage) if storage else msg,
        colleague(db, inbox.workspace_id, parsed.from_addr) if hint else None,
        _new_mail_to_old_address(parsed, hint),
    )


def store_email(
    db: Session,
    prepared: PreparedEmail,
    *,
    settings: Settings,
    storage: LocalStorage | None = None,
) -> EmailResult:
    """Store a prepared email in the caller's transaction, threaded; never loses what
    arrived."""
    parsed, msg = prepared.parsed, prepared.msg
    inbox = db.get(Inbox, msg.inbox_id)
    if inbox is None:
        raise NotFound("inbox")  # deleted since it was prepared
    first = _copy_stored_elsewhere(db, inbox, msg, parsed)
    if first is not None:
        # Kept once, where its first copy is; it also came here (``also_received_by``).
        conversation_service.also_received(db, message=first, inbox_id=inbox.id)
        conv = db.get(Conversation, first.conversation_id)
        assert conv is not None
        customer = db.get(Customer, conv.customer_id)
        assert customer is not None
        return EmailResult(IngestResult(first, conv, customer, True, "duplicate", "email"), parsed)
    if prepared.by_address_alone and _closed_for_new_mail(
        db, msg.conversation_hint or "", settings
    ):
        # A new mail to the reply address of a conversation resolved long ago: threaded as
        # any new mail of the customer's (it reopened last spring's thread).
        msg = replace(msg, conversation_hint=None)
        prepared = replace(prepared, msg=msg, colleague=None)
    bounced = [stored_id(b) for b in list(dict.fromkeys(parsed.bounce_of))[:MAX_LOOKED_UP_IDS]]
    # A report whose recipients' blocks say none failed (a delay notice) fails nothing.
    if bounced and (parsed.bounced_to or not parsed.report_read):
        # A bounce of our own message: the customer never got it, unless the report names
        # only addresses it copied (kept as ``meta.email.bounced``; the customer had it).
        failed = set(parsed.bounced_to)
        found = db.scalars(
            select(Message.id).where(
                Message.inbox_id.in_(_inboxes_of(db, inbox.workspace_id)),
                Message.workspace_id == inbox.workspace_id,
                Message.direction == Direction.outbound,
                Message.external_id.in_(bounced),
            )
        ).all()
        # Held, and read as they are now (PostgreSQL): an erasure committed since a copy was
        # read takes an address out of these lists, and writing that copy back with the
        # bounce would put it back.
        hold(db, Message, *found)
        for ours in db.scalars(select(Message).where(Message.id.in_(found))):
            kept = (ours.meta or {}).get("email") or {}
            copied = {*(kept.get("cc") or []), *(kept.get("bcc") or [])}
            if failed & copied:  # copies it names are known as bounced, whatever else
                gone = sorted((failed & copied) | set(kept.get("bounced") or []))
                ours.meta = {**ours.meta, "email": {**kept, "bounced": gone}}
            if not failed or not failed <= copied:
                ours.status = DeliveryStatus.failed
                ours.error = "bounced: the receiving server refused it"
    if prepared.colleague is not None:
        theirs = _from_colleague(db, prepared, inbox, settings=settings, storage=storage)
        if theirs is not None:
            return theirs
    result = EmailResult(receive(db, msg, settings=settings, storage=storage), parsed)
    _same_name_elsewhere(db, msg, result)
    return result


def _from_colleague(
    db: Session,
    prepared: PreparedEmail,
    inbox: Inbox,
    *,
    settings: Settings,
    storage: LocalStorage | None,
) -> EmailResult | None:
    """A colleague's own mail in a thread, stored in its conversation as theirs
    (``conversations.from_colleagues_mailbox``), once: their reply when it is one the
    customer had from them, proved to be theirs, by one who may answer customers; a note
    saying why not otherwise. None when it is no colleague's word here (the thread's
    conversation gone, or the colleague is that conversation's customer: a member asking
    us for help): then it is stored as any mail."""
    parsed, msg = prepared.parsed, prepared.msg
    assert prepared.colleague is not None
    author, role = prepared.colleague
    # An agent merged it into another: the thread goes on there.
    conv = merging.where_merged(db, db.get(Conversation, msg.conversation_hint or ""))
    if conv is None or conv.workspace_id != inbox.workspace_id:
        return None
    customer = db.get(Customer, conv.customer_id)
    assert customer is not None
    theirs = copies.customer_addresses(db, conv.workspace_id, customer.id)
    if _normal(parsed.from_addr or "") in theirs:
        return None
    mail = msg.meta.get("email") or {}
    kept = {"email": {k: v for k, v in mail.items() if k != "full_text"}}
    now = utcnow()
    written_at = min(parsed.date, now) if parsed.date else now
    why = _not_a_reply(parsed, mail, role, theirs)
    earlier = db.scalar(
        select(Message).where(Message.inbox_id == inbox.id, Message.external_id == msg.external_id)
    )
    if earlier is not None:  # delivered twice
        where = db.get(Conversation, earlier.conversation_id) or conv
        if why is None and earlier.kind == MessageKind.note and earlier.meta.get("sent_elsewhere"):
            # Kept as a note when it first came unproved; proved now: their reply.
            earlier = conversation_service.colleagues_note_proved(
                db,
                conversation=where,
                note=earlier,
                author_id=author,
                text=msg.text,
                html=msg.html,
                meta=kept,
                written_at=written_at,
            )
            return EmailResult(
                IngestResult(earlier, where, customer, False, "continued", "email"), parsed
            )
        return EmailResult(
            IngestResult(earlier, where, customer, True, "duplicate", "email"), parsed
        )
    store = storage or LocalStorage(settings.attachments_dir)
    stored = []
    for att in msg.attachments:
        key, digest = att.stored or store.put(att.data)
        stored.append((att.filename[:500], att.content_type[:200], len(att.data), digest, key))
    message = conversation_service.from_colleagues_mailbox(
        db,
        conversation=conv,
        author_id=author,
        text=msg.text,
        html=msg.html,
        inbox_id=inbox.id,
        external_id=msg.external_id or "",
        meta=kept,
        stored=stored,
        not_a_reply=why,
        said_by=f"{parsed.from_name or 'A colleague'} <{parsed.from_addr}>",
        written_at=written_at,
    )
    return EmailResult(IngestResult(message, conv, customer, False, "continued", "email"), parsed)


def _not_a_reply(
    parsed: ParsedEmail, mail: dict[str, Any], role: Role, theirs: set[str]
) -> str | None:
    """Why a colleague's mail in a thread is no reply of theirs to the customer, if it is
    none (``conversations.from_colleagues_mailbox``)."""
    if parsed.auto_reply:
        return "an automatic answer (an out-of-office, say)"
    if (mail.get("sender_auth") or {}).get("result") != "pass":
        return "the sending server could not be verified"
    if role not in (Role.owner, Role.admin, Role.agent):
        return "its writer is a viewer, who does not answer customers"
    if not theirs & {_normal(str(a)) for a in parsed.to}:
        return "it did not go to the customer"
    return None


def _same_name_elsewhere(db: Session, msg: InboundMessage, result: EmailResult) -> None:
    """A mail answering a customer's thread from an address it never went to, signed with
    the customer's own full name (their mail forwarded to another address of theirs, and
    answered from there): a conversation of its own, as any stranger's, but the two records
    put to duplicate review, which a merge of the people (then of the conversations) ends."""
    if msg.copied_in_thread or not msg.conversation_hint or result.ingest.duplicate:
        return
    thread = db.get(Conversation, msg.conversation_hint)
    sender = result.ingest.customer
    if (
        thread is None
        or thread.workspace_id != sender.workspace_id
        or thread.customer_id == sender.id
        or result.ingest.conversation.id == thread.id
    ):
        return
    theirs = db.get(Customer, thread.customer_id)
    name = " ".join(msg.sender_name.casefold().split())
    if theirs is None or len(name.split()) < 2 or " ".join(theirs.name.casefold().split()) != name:
        return
    duplicates.suggest(
        db,
        workspace_id=thread.workspace_id,
        a=theirs.id,
        b=sender.id,
        probability=SAME_NAME_IN_THREAD_PROBABILITY,
        reason="email: answered the other's conversation under the same full name, from an "
        "address it never went to",
    )


def ingest_email(
    db: Session,
    raw: bytes,
    *,
    inbox_id: str,
    settings: Settings,
    storage: LocalStorage | None = None,
    verified_by: str | None = None,
) -> EmailResult:
    """Prepare and store one raw email in the caller's transaction (the listener and the
    poller prepare it before theirs: ``prepare_email``, then ``store_email``)."""
    prepared = prepare_email(db, raw, inbox_id=inbox_id, verified_by=verified_by)
    return store_email(db, prepared, settings=settings, storage=storage)


# How each mail server is reached: the first is the default.
SMTP_SECURITY = ("starttls", "tls", "none")
IMAP_SECURITY = ("tls", "starttls", "none")


def _server(
    prefix: str, name: str, what: str, port: int, security: tuple[str, ...]
) -> tuple[base.Setting, ...]:
    """A mail server's settings: host, port, security, username and password."""
    return (
        base.Setting(
            f"{prefix}_host",
            f"{name} server",
            help=what,
            default="127.0.0.1" if prefix == "smtp" else None,
        ),
        base.Setting(f"{prefix}_port", f"{name} port", "number", default=port, low=1, high=65535),
        base.Setting(
            f"{prefix}_security",
            f"{name} security",
            "choice",
            choices=security,
            default=security[0],
        ),
        base.Setting(f"{prefix}_username", f"{name} username"),
        base.Setting(f"{prefix}_password", f"{name} password", "secret"),
    )


class EmailChannel:
    """Outbound email over SMTP, carrying the headers that keep the customer's thread whole."""

    name = "email"
    fields: tuple[base.Setting, ...] = (
        base.Setting(
            "address",
            "Address",
            "email",
            "Customers write to it; replies leave from it (answers come back to "
            "address+c<conversation>@ the same domain).",
            needed=True,
        ),
        base.Setting(
            "from_name", "Sender name", help="Shown as the sender; the inbox's name if empty."
        ),
        *_server("smtp", "SMTP", "Where replies are sent through.", 25, SMTP_SECURITY),
        *_server(
            "imap",
            "IMAP",
            "To poll an existing mailbox every minute instead of receiving mail through "
            "Rapport's own SMTP listener.",
            993,
            IMAP_SECURITY,
        ),
        base.Setting("imap_mailbox", "IMAP folder", default="INBOX"),
        base.Setting(
            "trusted_authserv_ids",
            "Trusted mail servers",
            "list",
            "Servers whose Authentication-Results verdict on the sender is believed "
            "(mx.google.com for a Gmail mailbox), one a line.",
        ),
        base.rate_setting(10),
    )
    secret_fields = base.secret_names(fields)
    sends_files = True
    consent_channel = ConsentChannel.email

    def recipient(self, to: base.Addressee) -> str:
        found = to.customer.email or to.handle(IdentityKind.email)
        if not found:
            raise base.NoRecipient("the customer has no email address")
        return found

    def send(self, out: base.Outbound) -> base.SendResult:
        settings = out.inbox.settings
        address = str(settings.get("address", ""))
        if not address or "@" not in address:
            raise base.DeliveryError("the inbox has no sending address", permanent=True)
        to = self.recipient(out)
        local, domain = address.split("@", 1)
        mail = EmailMessage(policy=_AS_SET)
        name = one_line(str(settings.get("from_name") or out.inbox.name))
        mail["From"] = formataddr((name, address))
        mail["To"] = to
        # Whom the agent copied (``conversations.copies``): Cc in the header, Bcc on the
        # envelope alone.
        kept = (out.message.meta or {}).get("email") or {}
        cc = [a for a in kept.get("cc") or [] if a != to.lower()]
        bcc = [a for a in kept.get("bcc") or [] if a != to.lower() and a not in cc]
        if cc:
            mail["Cc"] = ", ".join(cc)
        mail["Reply-To"] = f"{local}+c{out.conversation.id}@{domain}"
        # The subject as the customer's mail had it may hold line breaks (an encoded word
        # hides them): the mail library refused the header, and the reply never left.
        subject = one_line(out.conversation.subject or "") or "Your conversation with us"
        # A conversation we started answers nothing until the customer writes in it: its
        # first mail is no "Re:".
        answering = out.conversation.last_inbound_at is not None or bool(out.thread_refs)
        if answering and not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        token = f"[#{out.conversation.id}]"
        # The thread's token in the subject too: a reply whose client kept neither our
        # headers nor our reply address still finds its conversation.
        mail["Subject"] = subject if token in subject else f"{subject} {token}"
        # The same Message-ID on every attempt: a server that took the mail but whose answer
        # was lost gets it again under one id (receivers drop the second copy), and the
        # customer's reply to either copy names the id we store.
        message_id = f"<{out.message.id}@{domain}>"
        mail["Message-ID"] = message_id
        # Real Message-IDs only (not our <sha256:...> for a mail that had none), the
        # thread's first kept when it is long (RFC 5322: clients find its root by it).
        # (Each one id and no more (``_ONE_ID``), set raw: a line break would start a
        # header of its own.)
        refs = [r for r in out.thread_refs if len(r) <= MAX_WRITTEN_ID and _ONE_ID.fullmatch(r)]
        if refs:
            mail.set_raw("In-Reply-To", refs[-1])
            named = refs if len(refs) <= 20 else [refs[0], *refs[-19:]]
            mail.set_raw("References", "\r\n ".join(named))
        if out.message.kind == MessageKind.bot or out.message.sender_type == "system":
            # Said to be automatic (RFC 3834), so another responder (a bot, an out of
            # office, our own parser) does not answer it: two bots answered each other, and
            # a rule's acknowledgement and a vacation responder did.
            mail["Auto-Submitted"] = "auto-replied" if answering else "auto-generated"
            mail["X-Auto-Response-Suppress"] = "All"
        mail.set_content(out.message.text)
        if out.message.html:
            mail.add_alternative(out.message.html, subtype="html")
        for f in out.files:
            maintype, _, subtype = f.content_type.partition("/")
            if not subtype or maintype == "multipart":
                maintype, subtype = "application", "octet-stream"
            data = f.data()
            if maintype == "text":
                # A text part needs its charset said: UTF-8 when it is, else plain bytes.
                try:
                    mail.add_attachment(
                        data.decode("utf-8"), subtype=subtype, charset="utf-8", filename=f.filename
                    )
                    continue
                except UnicodeDecodeError:
                    maintype, subtype = "application", "octet-stream"
            mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=f.filename)
        host = str(base.setting(self.name, settings, "smtp_host"))
        port = int(base.setting(self.name, settings, "smtp_port"))
        security = str(base.setting(self.name, settings, "smtp_security")).lower()
        username = settings.get("smtp_username")
        password = out.secrets.get("smtp_password")
        try:
            context = ssl.create_default_context()
            smtp: smtplib.SMTP
            if security == "tls":
                smtp = smtplib.SMTP_SSL(host, port, timeout=30, context=context)
            else:
                smtp = smtplib.SMTP(host, port, timeout=30)
            with smtp:
                smtp.ehlo()
                if security == "starttls" and smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                elif security == "starttls":
                    raise base.DeliveryError(
                        "the SMTP server does not offer STARTTLS", account=True
                    )
                if username and password:
                    smtp.login(str(username), str(password))
                # Refused by the server, some recipients but not all: the others took it.
                refused = smtp.send_message(mail, to_addrs=[to, *cc, *bcc])
        except smtplib.SMTPRecipientsRefused as exc:
            raise base.DeliveryError(
                f"recipient refused: {exc.recipients}", permanent=True
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise base.DeliveryError(
                "SMTP authentication failed", permanent=True, account=True
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise base.DeliveryError(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from exc
        if to in refused:
            said = "recipient refused: " + to
            if len(refused) <= len(cc) + len(bcc):
                said += " (the copies were sent)"
            # Failed for good even on a 4xx: the copies were taken, and a retry would mail
            # them again (the agent's "Send again" does it knowingly).
            raise base.DeliveryError(said, permanent=True)
        if refused:  # only copies: the customer has it; which did not is kept and shown
            return base.SendResult(
                external_id=message_id, meta={"to": "email", "refused_copies": sorted(refused)}
            )
        return base.SendResult(external_id=message_id, meta={"to": "email"})


CHANNEL = base.register(EmailChannel())

__all__ = [
    "CHANNEL",
    "Conversation",
    "EmailResult",
    "PreparedEmail",
    "ingest_email",
    "prepare_email",
    "store_email",
]
