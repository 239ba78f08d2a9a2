"""Automation rules remember their last failure

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 17:30:00

A rule whose action cannot run (a template error) is skipped, its failure shown to the
workspace's admins, instead of failing the event's whole automation job again and again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automation_rules") as batch:
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("last_error_at", rapport.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("automation_rules") as batch:
        batch.drop_column("last_error_at")
        batch.drop_column("last_error")
