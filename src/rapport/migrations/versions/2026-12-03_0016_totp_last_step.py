"""Users remember the last two-factor code accepted

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 15:00:00

A TOTP code is good for its 30-second step and the ones either side, about 90 seconds: one
seen over a shoulder or replayed could sign in again in that time. The user's row keeps the
step of the last code accepted, and a code of that step or an earlier one is refused.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("totp_last_step")
