"""Wrong passwords for addresses with no account, counted as an account's are

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-07 06:30:00

An account's wrong passwords are counted on its row until it locks; an address with no
account was counted in a sliding window of the lock-out's length, in memory or Redis. Nine
wrong passwords, a pause, and two more locked an account but not an address with no
account, which told anyone which addresses have one. Such an address is now counted in a
row of its own here, with the same statements, the same count and the same lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0038"
down_revision: str | None = "0037"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", rapport.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("address_hash", name=op.f("pk_login_failures")),
    )


def downgrade() -> None:
    op.drop_table("login_failures")
