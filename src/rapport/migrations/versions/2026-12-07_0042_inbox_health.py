"""Inbox health: what the paths that fail record of each inbox, and its unreadable calls by inbox

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-07 12:00:00

Nothing told an admin that an inbox was broken (an expired token, a mailbox refusing the
login, webhook calls that no longer parse). ``inbox_health`` holds one row an inbox,
written only where something fails or goes out (a reply's send, a provider's failure
report, a mailbox's poll), never on the way a message comes in: the last reply that went
out (at most once a minute), the last failure and why (without addresses or numbers), the
failures in a row and by the hour of the last day, and the mailbox's polls
(``channels.health``). Inboxes have no row until something is recorded.

``ix_unparsed_payloads_inbox_created`` counts an inbox's unreadable webhook calls of the
last day; only such a call writes to it. The foreign key to the inbox, unindexed until now,
is served by it too (deleting an inbox read every workspace's unreadable calls).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import rapport.db
from rapport.migrate import build_index, drop_index

revision: str = "0042"
down_revision: str | None = "0041"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNPARSED = "ix_unparsed_payloads_inbox_created"


def upgrade() -> None:
    op.create_table(
        "inbox_health",
        sa.Column("inbox_id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("sent_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failed_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("failures_in_row", sa.Integer(), nullable=False),
        sa.Column("account_refused", sa.Boolean(), nullable=False),
        sa.Column(
            "failures",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("polled_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("poll_failed_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("poll_error", sa.Text(), nullable=True),
        sa.Column("poll_failing_since", rapport.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("login_refused", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_inbox_health_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_inbox_health_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", name=op.f("pk_inbox_health")),
    )
    # Built on PostgreSQL without holding the table's writes (rapport.migrate.build_index).
    build_index(_UNPARSED, "unparsed_payloads", ["inbox_id", "created_at"])


def downgrade() -> None:
    drop_index(_UNPARSED, "unparsed_payloads")
    op.drop_table("inbox_health")
