"""Invitations to join a workspace

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 20:10:00

Members used to be added by an admin outright: an address with an account anywhere in the
installation was attached to the admin's workspace without being asked, and the answer
told the admin whether that address had an account. An admin now invites an address; the
membership exists once its owner accepts the emailed link (``rapport.workspaces.invitations``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "role",
            sa.Enum("viewer", "agent", "admin", "owner", name="role", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by_id", sa.String(length=32), nullable=True),
        sa.Column("expires_at", rapport.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", rapport.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_invitations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_id"],
            ["users.id"],
            name=op.f("fk_invitations_invited_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
        sa.UniqueConstraint(
            "workspace_id", "email", name=op.f("uq_invitations_workspace_id_email")
        ),
    )


def downgrade() -> None:
    op.drop_table("invitations")
