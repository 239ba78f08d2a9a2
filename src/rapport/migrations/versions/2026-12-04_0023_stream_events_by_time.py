"""Realtime events indexed by time

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 23:00:00

The outbox is read from a moment on: pruning finds the first event young enough to keep,
and an erasure's search for copies starts at the first event stored since the oldest
erased record was made. Without this index the erasure read every event of the workspace.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_stream_events_created_at", "stream_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_stream_events_created_at", table_name="stream_events")
