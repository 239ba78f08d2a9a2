"""Copies of an email: the Cc everyone sees, and the Bcc no recipient sees.

A customer's mail may copy others (a colleague, their manager). A reply, or a conversation
an agent starts by email, carries ``cc`` (in the mail's header) and ``bcc`` (on the SMTP
envelope only), kept on the message as ``meta.email.cc`` and ``meta.email.bcc``. What the
agent is offered as a reply's Cc is ``reply_all``: whom the thread's latest mail copied,
besides the customer and the workspace's own addresses.
"""

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, Direction, Message, MessageKind
from rapport.customers.identity import InvalidHandle, normalize
from rapport.customers.models import Customer, Identity, IdentityKind
from rapport.problems import Invalid

MAX_COPIES = 20  # addresses in a reply's Cc, and in its Bcc
# A plain address, as normalized: a dot-atom local part and a domain of letter-digit-hyphen
# labels. What else RFC 5322 allows (a quoted local part, a group "team: a@b;", a route)
# would reach others than the address shown, or be split at its comma by a mail client.
_PLAIN = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
)
# The thread's latest mail is among its newest messages: notes and activity lines between.
_LOOKED_AT = 50


def plain(raw: str) -> str | None:
    """The address normalized (``normalize_email``), or None when it is not a plain one
    (``_PLAIN``): a header is built of them, so a line break, a list separator, a group or
    a quoted part has no place."""
    try:
        value = normalize(IdentityKind.email, raw.strip())
    except InvalidHandle:
        return None
    return value if _PLAIN.fullmatch(value) else None


def addresses(values: list[str], *, field: str) -> list[str]:
    """The addresses, normalized, each once, in order; one that is not a plain address
    (``plain``) is refused by name, as are more than ``MAX_COPIES``."""
    kept: dict[str, None] = {}
    for raw in values:
        written = raw.strip()
        if not written:
            continue
        value = plain(written)
        if value is None:
            raise Invalid(f"{field}: “{written[:80]}” is not an email address")
        kept[value] = None
    if len(kept) > MAX_COPIES:
        raise Invalid(f"{field}: at most {MAX_COPIES} addresses, not {len(kept)}")
    return list(kept)


def for_message(
    db: Session,
    cc: list[str],
    bcc: list[str],
    *,
    customer_id: str,
    inbox: Inbox,
    kind: MessageKind,
) -> dict[str, Any]:
    """What a message to the customer going out through ``inbox`` keeps of its copies (its
    ``meta``): nothing when none are asked for; refused where they cannot go (another
    channel than email, a private note, the workspace's own addresses: the copy would come
    back in). The customer's own addresses are left out: the mail is to them."""
    cc, bcc = addresses(cc, field="cc"), addresses(bcc, field="bcc")
    if inbox.channel == "email" and kind != MessageKind.note and (cc or bcc):
        ours = own_addresses(db, inbox.workspace_id)
        for field, given in (("cc", cc), ("bcc", bcc)):
            if mine := next((a for a in given if is_ours(a, ours)), None):
                raise Invalid(
                    f"{field}: {mine} is this workspace's own address: a copy would come back "
                    "in as a new mail"
                )
        theirs = customer_addresses(db, inbox.workspace_id, customer_id)
        cc = [a for a in cc if a not in theirs]
        bcc = [a for a in bcc if a not in theirs]
    field = "cc" if cc else "bcc"
    if kind == MessageKind.note:
        if cc or bcc:
            raise Invalid(f"{field}: a private note goes to no one")
        return {}
    if inbox.channel != "email":
        if cc or bcc:
            raise Invalid(
                f"{field}: only an email has copies, and this goes through “{inbox.name}” "
                f"({inbox.channel})"
            )
        return {}
    # Kept when empty too: a reply sent without the copies offered is the thread's latest
    # word on them (``reply_all``).
    return {"email": {"cc": cc, "bcc": [a for a in bcc if a not in cc]}}


def own_addresses(db: Session, workspace_id: str) -> set[str]:
    """The workspace's own sending addresses (its email inboxes')."""
    rows = db.scalars(
        select(Inbox.settings).where(Inbox.workspace_id == workspace_id, Inbox.channel == "email")
    )
    return {str((s or {}).get("address") or "").lower() for s in rows} - {""}


def customer_addresses(db: Session, workspace_id: str, customer_id: str) -> set[str]:
    """The customer's own email addresses (their handles and the one on their record)."""
    theirs = set(
        db.scalars(
            select(Identity.value).where(
                Identity.workspace_id == workspace_id,
                Identity.customer_id == customer_id,
                Identity.kind == IdentityKind.email,
            )
        )
    )
    customer = db.get(Customer, customer_id)
    if customer is not None and customer.email:
        theirs.add(customer.email.lower())
    return theirs


def untagged(address: str) -> list[str]:
    """The address, lower-cased, then each it is a tag of, the nearest first:
    ``support+billing+c123@`` is ``support+billing@``'s tag, which is ``support@``'s (an
    inbox's own address may hold a ``+``, and takes its own tags before ``support@`` does)."""
    local, _, domain = address.strip().lower().rpartition("@")
    parts = local.split("+")
    return [f"{'+'.join(parts[:n])}@{domain}" for n in range(len(parts), 0, -1)]


def is_ours(address: str, ours: set[str]) -> bool:
    """One of our addresses, or one with a tag (``support+c123@``: a thread's reply address)."""
    return any(a in ours for a in untagged(address))


def reply_all(db: Session, *, conversation: Conversation) -> list[str]:
    """Whom a reply in the conversation copies unless the agent says otherwise: those the
    thread's latest mail came from, went to or copied (a customer's or a guest's From, To
    and Cc, our reply's Cc), but the customer and the workspace's own addresses."""
    rows = db.execute(
        select(Message.direction, Message.meta)
        .where(
            Message.workspace_id == conversation.workspace_id,
            Message.conversation_id == conversation.id,
            Message.kind == MessageKind.message,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(_LOOKED_AT)
    )
    mails = (
        # A colleague's mail from their own mailbox (``sent_elsewhere``) reads as a mail
        # that came in: whom it went to, and its writer.
        (Direction.inbound if m.get("sent_elsewhere") else d, m["email"])
        for d, m in rows
        if isinstance((m or {}).get("email"), dict)
    )
    direction, latest = next(mails, (None, None))
    if latest is None:
        return []
    # A customer's mail lists whom it went to (To and Cc); our reply, whom it copied. One
    # of a guest (someone copied, answering all) is from one more to copy.
    written = latest.get("to") if direction == Direction.inbound else latest.get("cc")
    if direction == Direction.inbound and isinstance(latest.get("from"), str):
        written = [latest["from"], *(written or [])]
    named = [a for raw in written or [] if (a := plain(str(raw))) is not None]
    theirs = customer_addresses(db, conversation.workspace_id, conversation.customer_id)
    ours = own_addresses(db, conversation.workspace_id)
    kept = [a for a in dict.fromkeys(named) if a not in theirs and not is_ours(a, ours)]
    return kept[:MAX_COPIES]
