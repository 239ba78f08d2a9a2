"""Attachments and uploads indexed by storage key

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:40:00

A stored file is deleted (after a customer is erased, or an upload pruned) only once no
attachment or upload refers to its content-addressed key; these indexes answer that
without reading either table whole.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_attachments_storage_key", "attachments", ["storage_key"])
    op.create_index("ix_uploads_storage_key", "uploads", ["storage_key"])


def downgrade() -> None:
    op.drop_index("ix_uploads_storage_key", table_name="uploads")
    op.drop_index("ix_attachments_storage_key", table_name="attachments")
