"""Wrong passwords are counted only while they keep coming: each count keeps its last time

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-07 09:30:00

An account's wrong passwords (``users.failed_logins``) and those of an address with no
account (``login_failures``, 0038) were counted until a lock, however far apart: a handful
of typos spread over months locked a member out. Each count now keeps the time of its last
failure (``last_failed_at``), and one older than the lock-out's length starts again at one.
Counts made before this migration have none, and start again at their next failure.

``ix_login_failures_last_failed_at`` finds the rows of addresses whose count has lapsed,
which the periodic ``prune_login_failures`` deletes (every address ever guessed at stayed,
by its hash, for good).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db
from rapport.migrate import build_index

revision: str = "0039"
down_revision: str | None = "0038"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_login_failures_last_failed_at"


def upgrade() -> None:
    for table in ("users", "login_failures"):
        op.add_column(
            table, sa.Column("last_failed_at", rapport.db.UTCDateTime(timezone=True), nullable=True)
        )
    build_index(_INDEX, "login_failures", ["last_failed_at"])


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, SQLite's too (3.35 on): a batch copy of users would
    # drop the old table, which other tables' rows reference.
    op.drop_index(_INDEX, table_name="login_failures")
    for table in ("login_failures", "users"):
        op.drop_column(table, "last_failed_at")
