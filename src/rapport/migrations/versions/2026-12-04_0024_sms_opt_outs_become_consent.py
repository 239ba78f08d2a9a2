"""SMS opt-outs stored before consent was recorded count as consent withdrawn

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04 23:30:00

A customer's SMS STOP has been recorded as SMS consent withdrawn (purpose ``all`` and every
purpose granted on SMS, source ``SMS keyword STOP``) since consent rows were written by
ingest; a STOP stored before then is only a message (``meta.sms.opt_out``, or its bare
text before that flag), so replies and the bot still wrote to a number Twilio blocks. For
each customer whose newest SMS keyword message is an opt-out with no SMS consent recorded
at or after it, the rows ingest would have recorded are added, dated when the STOP came.
A newest keyword that is a START adds nothing: its grant of ``all`` would read as a yes
to marketing nobody recorded, and without a withdrawal a reply is allowed anyway.

Frozen here, as this revision must keep meaning what it meant: the keywords of
``rapport.channels.twilio`` and the rows of ``rapport.customers.profile.record_keyword``.
Run again, it adds nothing: the rows it adds are dated at their STOP.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Twilio's keywords that can only mean opting out or back in (others count only with its
# OptOutType, kept as the meta flag).
_STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE"})
_START = frozenset({"START", "UNSTOP"})
# The longest text a keyword message is read for (UNSUBSCRIBE with some spaces); a longer
# one counts only with its flag.
_LONGEST = 40
_EVERY_PURPOSE = "all"

_inboxes = sa.table("inboxes", sa.column("id", sa.String), sa.column("channel", sa.String))
_conversations = sa.table(
    "conversations",
    sa.column("id", sa.String),
    sa.column("workspace_id", sa.String),
    sa.column("customer_id", sa.String),
)
_messages = sa.table(
    "messages",
    sa.column("id", sa.String),
    sa.column("conversation_id", sa.String),
    sa.column("inbox_id", sa.String),
    sa.column("direction", sa.String),
    sa.column("sender_type", sa.String),
    sa.column("text", sa.Text),
    sa.column("meta", rapport.db.JSONType),
    sa.column("created_at", rapport.db.UTCDateTime()),
)
_consents = sa.table(
    "consents",
    sa.column("id", sa.String),
    sa.column("workspace_id", sa.String),
    sa.column("customer_id", sa.String),
    sa.column("channel", sa.String),
    sa.column("purpose", sa.String),
    sa.column("granted", sa.Boolean),
    sa.column("source", sa.String),
    sa.column("recorded_by_user_id", sa.String),
    sa.column("recorded_at", rapport.db.UTCDateTime()),
)


def _keyword(text: str, meta: dict[str, Any] | None) -> str | None:
    """``STOP`` or ``START`` for a keyword message as Twilio's channel read it, else None."""
    sms = (meta or {}).get("sms")
    sms = sms if isinstance(sms, dict) else {}
    if sms.get("opt_out") is True:
        return "STOP"
    if sms.get("opt_in") is True:
        return "START"
    word = text.strip().upper()
    return "STOP" if word in _STOP else "START" if word in _START else None


# Per (workspace, customer): their newest keyword message's time, id, keyword and text.
_Newest = dict[tuple[str, str], tuple[datetime, str, str, str]]


def _newest_keywords(conn: sa.Connection) -> _Newest:
    """Each customer's newest SMS keyword message, read from every message of a Twilio SMS
    inbox short enough to be one (or flagged as one)."""
    meta_text = sa.cast(_messages.c.meta, sa.Text)
    rows = conn.execute(
        sa.select(
            _conversations.c.workspace_id,
            _conversations.c.customer_id,
            _messages.c.id,
            _messages.c.text,
            _messages.c.meta,
            _messages.c.created_at,
        )
        .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
        .join(_inboxes, _inboxes.c.id == _messages.c.inbox_id)
        .where(
            _inboxes.c.channel == "twilio_sms",
            _messages.c.direction == "inbound",
            _messages.c.sender_type == "customer",
            # The flags are checked below; this only spares reading every long message.
            sa.or_(
                sa.func.length(_messages.c.text) <= _LONGEST,
                meta_text.like('%"opt_out"%'),
                meta_text.like('%"opt_in"%'),
            ),
        )
        .execution_options(yield_per=1000)
    )
    newest: _Newest = {}
    for workspace_id, customer_id, message_id, text, meta, created_at in rows:
        keyword = _keyword(text or "", meta)
        key = (workspace_id, customer_id)
        if keyword and (key not in newest or (created_at, message_id) > newest[key][:2]):
            newest[key] = (created_at, message_id, keyword, text or "")
    return newest


def upgrade() -> None:
    conn = op.get_bind()
    for (workspace_id, customer_id), (at, _, keyword, text) in sorted(
        _newest_keywords(conn).items()
    ):
        if keyword == "STOP":
            _withdraw(conn, workspace_id, customer_id, at, text.strip() or keyword)


def _withdraw(
    conn: sa.Connection, workspace_id: str, customer_id: str, at: datetime, word: str
) -> None:
    """Record the STOP sent ``at`` as ``record_keyword`` would have, unless SMS consent was
    recorded at or after it (by ingest, an agent, or this revision before)."""
    sms = sa.select(_consents.c.purpose, _consents.c.granted, _consents.c.recorded_at).where(
        _consents.c.workspace_id == workspace_id,
        _consents.c.customer_id == customer_id,
        _consents.c.channel == "sms",
    )
    decided = conn.execute(sms.order_by(_consents.c.recorded_at, _consents.c.id)).all()
    if any(recorded_at >= at for _, _, recorded_at in decided):
        return
    in_force = {purpose: granted for purpose, granted, _ in decided}  # the newest wins
    purposes = {_EVERY_PURPOSE} | {p for p, granted in in_force.items() if granted}
    source = f"SMS keyword {word.upper()[:40]}"
    conn.execute(
        sa.insert(_consents),
        [
            {
                "id": rapport.db.new_id(),
                "workspace_id": workspace_id,
                "customer_id": customer_id,
                "channel": "sms",
                "purpose": purpose,
                "granted": False,
                "source": source,
                "recorded_by_user_id": None,
                "recorded_at": at,
            }
            for purpose in sorted(purposes)
        ],
    )


def downgrade() -> None:
    pass  # the rows stay: older code reads them as any recorded withdrawal
