"""Conversation guests: who else wrote in a customer's conversation

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-06 22:10:00

A customer's mail may copy others; one of them answering all (to a mail of the thread
that was addressed to them) now writes in that conversation instead of starting one of
their own. Each such person is a row here, by which their messages in others'
conversations are found (export, erasure, merges).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0034"
down_revision: str | None = "0033"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_guests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", rapport.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_guests_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_conversation_guests_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_conversation_guests_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_guests")),
    )
    with op.batch_alter_table("conversation_guests", schema=None) as batch_op:
        batch_op.create_index("ix_conversation_guests_customer", ["customer_id"], unique=False)
        batch_op.create_index(
            "ix_conversation_guests_conversation", ["conversation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("conversation_guests", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_guests_conversation")
        batch_op.drop_index("ix_conversation_guests_customer")
    op.drop_table("conversation_guests")
