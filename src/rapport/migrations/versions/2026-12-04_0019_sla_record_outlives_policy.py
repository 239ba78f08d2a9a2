"""A conversation's SLA record outlives its policy

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 18:00:00

``conversation_slas.policy_id`` was NOT NULL with ON DELETE CASCADE: deleting a policy
deleted the SLA record of every conversation under it, and with it the misses kept on
record (``breached_at``, ``breaches``). It is now nullable with ON DELETE SET NULL
(``rapport.conversations.sla.delete_policy`` stops the clocks first). SQLite rebuilds the
table (batch mode); PostgreSQL alters it in place.

Downgrade: the old column cannot hold a record without a policy, so those records (of
conversations whose policy was deleted) are deleted, as the old cascade would have.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_conversation_slas_policy_id_sla_policies"
_slas = sa.table("conversation_slas", sa.column("policy_id", sa.String))


def _policy_fk(*, nullable: bool, ondelete: str) -> None:
    with op.batch_alter_table("conversation_slas") as batch:
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.alter_column("policy_id", existing_type=sa.String(length=32), nullable=nullable)
        batch.create_foreign_key(_FK, "sla_policies", ["policy_id"], ["id"], ondelete=ondelete)


def upgrade() -> None:
    _policy_fk(nullable=True, ondelete="SET NULL")


def downgrade() -> None:
    op.execute(sa.delete(_slas).where(_slas.c.policy_id.is_(None)))
    _policy_fk(nullable=False, ondelete="CASCADE")
