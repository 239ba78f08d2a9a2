"""Members remember when they were last given a conversation

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 09:00:00

Routing's round-robin gives the next conversation to whoever was given one least recently.
It found that out by reading every conversation ever assigned in the workspace, inside the
transaction that assigns (about a quarter of a second at 300,000 conversations, growing
with history); the member's row now keeps it, filled here from the conversations.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(
            sa.Column("last_assigned_at", rapport.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute(
        """
        UPDATE memberships SET last_assigned_at = (
            SELECT max(conversations.assigned_at) FROM conversations
            WHERE conversations.workspace_id = memberships.workspace_id
              AND conversations.assignee_id = memberships.user_id
        )
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("last_assigned_at")
