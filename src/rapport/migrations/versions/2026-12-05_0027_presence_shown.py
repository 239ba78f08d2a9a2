"""Memberships remember the presence last announced for them

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05 04:10:00

A member's presence (online, busy, offline) is computed from their chosen availability and
their browser's last heartbeat; a closed browser goes offline by time alone, which no
request announces. ``memberships.presence_shown`` keeps what was last announced, so that a
periodic sweep announces exactly the members whose presence has changed since, however
late or seldom it runs. Existing members start as shown offline: those online now are
announced again at their next heartbeat, and the first sweep has nothing to tell.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(
            sa.Column(
                "presence_shown", sa.String(length=16), nullable=False, server_default="offline"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("presence_shown")
