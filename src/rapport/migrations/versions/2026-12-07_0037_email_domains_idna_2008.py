"""Email domains are written as IDNA 2008 says, not IDNA 2003

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-07 04:00:00

Email handles wrote an internationalized domain with Python's ``idna`` codec, IDNA 2003,
which maps ``ß``, ``ς`` and the joiners away: ``kim@faß.de`` was kept as ``kim@fass.de``,
another domain under IDNA 2008 (what mail systems use), so the person at ``faß.de`` and
the one at ``fass.de`` were one customer, and replies went to ``fass.de``. New handles
are written with IDNA 2008 (``kim@xn--fa-hia.de``); an ASCII domain is kept as it was.

A stored ``fass.de`` does not say which it was written as: the mail the customer sent
does. For each email a customer sent from a domain IDNA 2003 wrote otherwise:

- the customer wrote only from that form: their handle is written again (``xn--fa-hia.de``)
  and their shown email follows it;
- they wrote from both forms (two people made one customer): nothing is changed, as
  nothing can tell whose history is whose; mail from ``faß.de`` finds them no more and
  makes its sender a customer of their own;
- another customer holds the handle as newly written: neither handle is moved and the
  two are put to duplicate review (a pending merge suggestion), never merged here.

A handle stored before the domains were encoded (a domain in Unicode) is written anew
the same way: left as it is if IDNA 2008 refuses it, or if another customer holds the
new form (then suggested for review too). Nothing to undo: the downgrade leaves the
handles as written, which the old code also reads.
"""

import unicodedata
from collections.abc import Sequence
from typing import Any

import idna
import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0037"
down_revision: str | None = "0036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000
MAX_LENGTH = 320
# What IDNA 2003 mapped and IDNA 2008 keeps (UTS #46's deviations): only an address
# holding one of them was written as another address.
DEVIATIONS = ("\u00df", "\u03c2", "\u200c", "\u200d")
REASON = "The same email address once IDNA 2008 writes its domain (written otherwise before)"

identities = sa.table(
    "identities",
    sa.column("id"),
    sa.column("workspace_id"),
    sa.column("customer_id"),
    sa.column("kind"),
    sa.column("value"),
)
customers = sa.table("customers", sa.column("id"), sa.column("email"))
conversations = sa.table("conversations", sa.column("id"), sa.column("customer_id"))
messages = sa.table(
    "messages",
    sa.column("id"),
    sa.column("workspace_id"),
    sa.column("conversation_id"),
    sa.column("sender_type"),
    sa.column("sender_id"),
    sa.column("meta", sa.JSON()),
)
suggestions = sa.table(
    "merge_suggestions",
    sa.column("id"),
    sa.column("workspace_id"),
    sa.column("left_id"),
    sa.column("right_id"),
    sa.column("probability"),
    sa.column("reason"),
    sa.column("status"),
    sa.column("created_at", rapport.db.UTCDateTime(timezone=True)),
    sa.column("updated_at", rapport.db.UTCDateTime(timezone=True)),
)


def _split(raw: str) -> tuple[str, str] | None:
    value = unicodedata.normalize("NFC", raw.strip().strip("<>").strip())
    local, sep, domain = value.rpartition("@")
    domain = domain.strip(".")
    labels = domain.split(".")
    if not sep or not local or " " in value or len(labels) < 2 or not all(labels):
        return None
    return local.lower(), domain


def old_form(raw: str) -> str | None:
    """The address as the code before this revision kept it (IDNA 2003)."""
    parts = _split(raw)
    if parts is None:
        return None
    try:
        return f"{parts[0]}@{parts[1].encode('idna').decode('ascii').lower()}"
    except UnicodeError:
        return None


def new_form(raw: str) -> str | None:
    """The address as ``identity.normalize_email`` keeps it from this revision on (copied
    here: a migration keeps the rule of its day)."""
    parts = _split(raw)
    if parts is None:
        return None
    local, domain = parts
    try:
        if not domain.isascii():
            domain = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        out = []
        for label in domain.strip(".").split("."):
            if label.isascii():
                if not 0 < len(label) < 64:
                    return None
                out.append(label.lower())
            else:
                out.append(idna.alabel(label).decode("ascii"))
    except idna.IDNAError:
        return None
    value = f"{local}@{'.'.join(out)}"
    return value if len(out) >= 2 and len(value) <= MAX_LENGTH else None


def _holder(conn: sa.Connection, workspace_id: str, value: str) -> Any:
    return conn.execute(
        sa.select(identities.c.id, identities.c.customer_id).where(
            identities.c.workspace_id == workspace_id,
            identities.c.kind == "email",
            identities.c.value == value,
        )
    ).first()


def _suggest(conn: sa.Connection, workspace_id: str, one: str, other: str) -> None:
    left, right = sorted((one, other))
    known = conn.execute(
        sa.select(suggestions.c.id).where(
            suggestions.c.workspace_id == workspace_id,
            suggestions.c.left_id == left,
            suggestions.c.right_id == right,
        )
    ).first()
    if known is not None:
        return  # already suggested, or decided: a decision stays
    now = rapport.db.utcnow()
    conn.execute(
        suggestions.insert().values(
            id=rapport.db.new_id(),
            workspace_id=workspace_id,
            left_id=left,
            right_id=right,
            probability=0.95,
            reason=REASON,
            status="pending",
            created_at=now,
            updated_at=now,
        )
    )


def _rewrite(
    conn: sa.Connection, workspace_id: str, identity_id: str, customer_id: str, old: str, new: str
) -> None:
    """The handle ``old`` of the customer is ``new``, unless another customer holds it."""
    taken = _holder(conn, workspace_id, new)
    if taken is not None:
        if taken.customer_id != customer_id:
            _suggest(conn, workspace_id, customer_id, taken.customer_id)
        return  # (one customer holding both keeps both, as 0028 did)
    conn.execute(identities.update().where(identities.c.id == identity_id).values(value=new))
    conn.execute(
        customers.update()
        .where(customers.c.id == customer_id, customers.c.email == old)
        .values(email=new)
    )


def _sender() -> Any:
    """The address a message's mail came from, as written (its meta's ``email.from``)."""
    return messages.c.meta[("email", "from")].as_string()


def _senders(conn: sa.Connection, customer_id: str) -> set[str]:
    """The addresses the customer's own mail came from, as written."""
    rows = conn.execute(
        sa.select(_sender())
        .select_from(messages.join(conversations, conversations.c.id == messages.c.conversation_id))
        .where(
            conversations.c.customer_id == customer_id,
            messages.c.sender_type == "customer",
            messages.c.sender_id == customer_id,
        )
    )
    return {str(sent) for (sent,) in rows if sent}


def upgrade() -> None:
    conn = op.get_bind()
    # 1. Handles stored before domains were encoded: written anew.
    last = ""
    while True:
        rows = conn.execute(
            sa.select(
                identities.c.id,
                identities.c.workspace_id,
                identities.c.customer_id,
                identities.c.value,
            )
            .where(identities.c.kind == "email", identities.c.id > last)
            .order_by(identities.c.id)
            .limit(CHUNK)
        ).all()
        for id_, workspace_id, customer_id, value in rows:
            if value.isascii():
                continue  # kept as it was, as new ones are
            new = new_form(value)
            if new is not None and new != value:
                _rewrite(conn, workspace_id, id_, customer_id, value, new)
        if len(rows) < CHUNK:
            break
        last = rows[-1][0]
    # 2. Handles IDNA 2003 wrote as another domain: told by the mail their customer sent.
    # The sender alone is read (not the meta: "Grüße" is in most German mail's text).
    sender = _sender()
    found = conn.execute(
        sa.select(messages.c.workspace_id, sender)
        .where(
            messages.c.sender_type == "customer",
            sa.or_(*(sender.like(f"%{c}%") for c in DEVIATIONS)),
        )
        .distinct()
    ).all()
    seen: set[tuple[str, str]] = set()
    for workspace_id, sent in found:
        if not isinstance(sent, str):
            continue
        old, new = old_form(sent), new_form(sent)
        if old is None or new is None or old == new or (workspace_id, old) in seen:
            continue
        seen.add((workspace_id, old))
        held = _holder(conn, workspace_id, old)
        if held is None:
            continue
        forms = {new_form(a) for a in _senders(conn, held.customer_id) if old_form(a) == old}
        if forms != {new}:
            continue  # they wrote from both forms (or from another): two people, left as is
        _rewrite(conn, workspace_id, held.id, held.customer_id, old, new)


def downgrade() -> None:
    pass  # the handles stay as IDNA 2008 writes them: the old code reads them as they are
