"""Uploads for a first message: files an agent attaches to a conversation not started yet

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-06 22:40:00

An agent starting a conversation with a customer attaches files before the conversation
exists: such an upload is the customer's (``customer_id``) until the conversation is
started with it, and has no conversation yet (``conversation_id`` may be empty). Erasing
the customer takes it with them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035"
down_revision: str | None = "0034"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.alter_column("conversation_id", existing_type=sa.String(length=32), nullable=True)
        batch_op.add_column(sa.Column("customer_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_uploads_customer_id"), ["customer_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_uploads_customer_id_customers"),
            "customers",
            ["customer_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    op.execute("DELETE FROM uploads WHERE conversation_id IS NULL")
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_uploads_customer_id_customers"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_uploads_customer_id"))
        batch_op.drop_column("customer_id")
        batch_op.alter_column("conversation_id", existing_type=sa.String(length=32), nullable=False)
