"""SLA breach history; when the bot took a conversation (back)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 19:20:00

``conversation_slas.state`` becomes live (it describes the clocks running now); the
history it used to carry moves to ``breached_at`` and ``breaches``, filled here from the
targets already announced as missed, and every state is computed again from the targets
still open.

``bot_conversations.held_since``: when the bot took the conversation, or took it back
when it was resolved; an agent assigned before then does not silence the bot.
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import rapport.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TARGETS = ("first_response", "next_response", "resolution")


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN on both databases (SQLite accepts NOT NULL with a
    # default): no rebuild of the table.
    op.add_column(
        "conversation_slas",
        sa.Column("breached_at", rapport.db.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "conversation_slas",
        sa.Column("breaches", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )

    op.add_column(
        "bot_conversations",
        sa.Column("held_since", rapport.db.UTCDateTime(timezone=True), nullable=True),
    )

    slas = sa.table(
        "conversation_slas",
        sa.column("conversation_id", sa.String),
        sa.column("state", sa.String),
        *(sa.column(f"{t}_due_at", rapport.db.UTCDateTime(timezone=True)) for t in TARGETS),
        sa.column(
            "announced",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
        ),
        sa.column("breached_at", rapport.db.UTCDateTime(timezone=True)),
        sa.column("breaches", sa.Integer),
    )
    conn = op.get_bind()
    updates = []
    for row in conn.execute(sa.select(slas)):
        announced = set(row.announced or [])
        # Announced keys read "target:kind:due-isoformat"; a miss happened at its due time.
        missed = sorted(
            datetime.fromisoformat(key.split(":", 2)[2])
            for key in announced
            if key.split(":", 2)[1:2] == ["breached"]
        )
        # The live state, as conversations.sla computes it from the open targets.
        state = "ok"
        for target in TARGETS:
            due = getattr(row, f"{target}_due_at")
            if due is None:
                continue
            if f"{target}:breached:{due.isoformat()}" in announced:
                state = "breached"
                break
            if f"{target}:warning:{due.isoformat()}" in announced:
                state = "warning"
        if missed or state != row.state:
            updates.append(
                {
                    "cid": row.conversation_id,
                    "at": missed[0] if missed else None,
                    "n": len(missed),
                    "st": state,
                }
            )
    if updates:
        conn.execute(
            slas.update()
            .where(slas.c.conversation_id == sa.bindparam("cid"))
            .values(
                breached_at=sa.bindparam("at"), breaches=sa.bindparam("n"), state=sa.bindparam("st")
            ),
            updates,
        )


def downgrade() -> None:
    with op.batch_alter_table("bot_conversations", schema=None) as batch_op:
        batch_op.drop_column("held_since")
    with op.batch_alter_table("conversation_slas", schema=None) as batch_op:
        batch_op.drop_column("breaches")
        batch_op.drop_column("breached_at")
