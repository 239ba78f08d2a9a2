"""A business calendar counts its changes; an SLA record, the one its clocks were timed under

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-07 12:00:00

Changing a workspace's opening hours left the SLA clocks already running with due times
counted under the old ones. ``business_calendars.version`` is counted up at each change
(``changed_at`` is when), and ``conversation_slas.calendar_version`` says which version an
SLA record's running clocks were timed under: the records behind are timed anew, a chunk
per transaction, by a job (``sla_retime``), and by the checker before it announces one.
Everything stored before is version 0 on both sides: timed under the calendar it has.

Both are plain columns with a constant default: no table is rewritten, nothing indexed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0041"
down_revision: str | None = "0040"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "business_calendars",
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "business_calendars",
        sa.Column("changed_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "conversation_slas",
        sa.Column("calendar_version", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN, SQLite's too (3.35 on), as 0039 does.
    op.drop_column("conversation_slas", "calendar_version")
    op.drop_column("business_calendars", "changed_at")
    op.drop_column("business_calendars", "version")
