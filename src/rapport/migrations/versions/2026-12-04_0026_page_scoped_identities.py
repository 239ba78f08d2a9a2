"""Messenger and Instagram ids record the inbox (the page) that issued them

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 23:50:00

A Messenger page or an Instagram account gives each person an id of its own, and Meta
refuses a send through one page to another page's id; identities did not say which page
issued theirs, so a customer who wrote to two pages (or was merged across them) could be
answered through one at the other's id. ``identities.inbox_id`` now says (ON DELETE SET
NULL: an inbox gone leaves the id's page unknown). SQLite rebuilds the table (batch mode);
PostgreSQL alters it in place.

Backfilled, best effort, for the verified Messenger and Instagram identities: the inbox of
the first message a customer of the identity sent through an inbox of that channel at or
after the identity was made (ingest makes an identity in the transaction of the message
that brought it, with the same time). None found leaves it NULL: a page unknown, which a
send still tries (as before) when the customer has no id of the sending page itself.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_identities_inbox_id_inboxes"
# Frozen here: the kinds page-scoped when this revision was written, which are also the
# names of their channels.
_PAGE_SCOPED = ("messenger", "instagram")

_identities = sa.table(
    "identities",
    sa.column("id", sa.String),
    sa.column("customer_id", sa.String),
    sa.column("kind", sa.String),
    sa.column("verified", sa.Boolean),
    sa.column("inbox_id", sa.String),
    sa.column("created_at", rapport.db.UTCDateTime()),
)
_inboxes = sa.table("inboxes", sa.column("id", sa.String), sa.column("channel", sa.String))
_conversations = sa.table(
    "conversations", sa.column("id", sa.String), sa.column("customer_id", sa.String)
)
_messages = sa.table(
    "messages",
    sa.column("id", sa.String),
    sa.column("conversation_id", sa.String),
    sa.column("inbox_id", sa.String),
    sa.column("direction", sa.String),
    sa.column("sender_type", sa.String),
    sa.column("created_at", rapport.db.UTCDateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("inbox_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(_FK, "inboxes", ["inbox_id"], ["id"], ondelete="SET NULL")
        batch.create_index("ix_identities_inbox_id", ["inbox_id"])
    first_written = (
        sa.select(_messages.c.inbox_id)
        .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
        .join(_inboxes, _inboxes.c.id == _messages.c.inbox_id)
        .where(
            _conversations.c.customer_id == _identities.c.customer_id,
            _inboxes.c.channel == _identities.c.kind,
            _messages.c.direction == "inbound",
            _messages.c.sender_type == "customer",
            _messages.c.created_at >= _identities.c.created_at,
        )
        .order_by(_messages.c.created_at, _messages.c.id)
        .limit(1)
        .correlate(_identities)
        .scalar_subquery()
    )
    op.execute(
        sa.update(_identities)
        .where(
            _identities.c.kind.in_(_PAGE_SCOPED),
            _identities.c.verified.is_(True),
            _identities.c.inbox_id.is_(None),
        )
        .values(inbox_id=first_written)
    )


def downgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.drop_index("ix_identities_inbox_id")
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.drop_column("inbox_id")
