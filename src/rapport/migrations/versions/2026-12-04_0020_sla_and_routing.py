"""Conversation SLA records are found by their policy through an index

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 20:00:00

Deleting an SLA policy stops the clocks of its conversations (``sla.delete_policy``) and
the foreign key nulls their ``policy_id`` (ON DELETE SET NULL, since 0019): both looked
for the policy's records by walking every conversation's SLA record in every workspace.
``ix_conversation_slas_policy`` finds them directly.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_conversation_slas_policy", "conversation_slas", ["policy_id"])


def downgrade() -> None:
    op.drop_index("ix_conversation_slas_policy", table_name="conversation_slas")
