"""Unreadable provider payloads indexed by time

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 23:25:00

A provider's webhook call that could not be parsed was kept for ever, and it may hold a
customer's message and number: it is now pruned after 30 days (the daily
``prune_unparsed`` job), which finds the expired rows through this index.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_unparsed_payloads_created_at", "unparsed_payloads", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_unparsed_payloads_created_at", table_name="unparsed_payloads")
