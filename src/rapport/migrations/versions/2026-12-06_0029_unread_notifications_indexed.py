"""Unread notifications have an index of their own

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06 04:10:00

Every page counts the member's unread notifications (the badge beside "Notifications").
The index on (user, workspace, time) holds the read ones too, which pile up for years;
a partial index of the unread ones keeps the count to what it counts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["user_id", "workspace_id"],
        sqlite_where=sa.text("read_at IS NULL"),
        postgresql_where=sa.text("read_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_unread", table_name="notifications")
