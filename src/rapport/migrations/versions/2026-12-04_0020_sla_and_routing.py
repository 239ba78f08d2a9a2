"""SLA records are found by their policy, and the routing queue is read in an index

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 20:00:00

Deleting an SLA policy stops the clocks of its conversations (``sla.delete_policy``) and
the foreign key nulls their ``policy_id`` (ON DELETE SET NULL, since 0019): both looked
for the policy's records by walking every conversation's SLA record in every workspace.
``ix_conversation_slas_policy`` finds them directly.

A routing pass reads the open conversations nobody has, oldest first (``created_at``,
``id``): the (workspace, assignee, status) index of 0015 found them, and every one of them
was then sorted before the first page was handed out. That index now ends with
``created_at, id``, so the queue is read in order and a page stops at its limit; the
per-agent counts it served still read only its first three columns.

The resolution clock runs only while a conversation is open: ``resolution_started_at``
(when the current run began, null while paused or stopped) and
``resolution_used_seconds`` (the open time of the runs before) are added. Records from
before keep their due time; ``rapport.conversations.sla`` takes one still ahead as a clock
running since it is next touched, with what is left.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_QUEUE = "ix_conversations_ws_assignee_status"
_COUNTED = ["workspace_id", "assignee_id", "status"]


def upgrade() -> None:
    op.create_index("ix_conversation_slas_policy", "conversation_slas", ["policy_id"])
    # Plain ALTER TABLE ADD COLUMN on both databases (SQLite accepts NOT NULL with a
    # default): no rebuild of the table.
    op.add_column(
        "conversation_slas",
        sa.Column("resolution_started_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "conversation_slas",
        sa.Column(
            "resolution_used_seconds", sa.Integer(), nullable=False, server_default=sa.text("0")
        ),
    )
    op.drop_index(_QUEUE, table_name="conversations")
    op.create_index(_QUEUE, "conversations", [*_COUNTED, "created_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("conversation_slas") as batch:
        batch.drop_column("resolution_used_seconds")
        batch.drop_column("resolution_started_at")
    op.drop_index(_QUEUE, table_name="conversations")
    op.create_index(_QUEUE, "conversations", _COUNTED)
    op.drop_index("ix_conversation_slas_policy", table_name="conversation_slas")
