"""Conversations are counted per agent and status through an index

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 15:00:00

Routing picks the online agent with room: it counted every agent's open and pending
conversations by walking every conversation ever assigned in the workspace, inside the
transaction that assigns (about 0.3 s at 300,000 conversations with 30,000 open, growing
with history, for each conversation routed). This index lets it count only the open and
pending ones of the agents it is choosing among, and lets a routing pass find the open
conversations nobody has yet.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_ws_assignee_status",
        "conversations",
        ["workspace_id", "assignee_id", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_ws_assignee_status", table_name="conversations")
