"""The customers' search index is rewritten only when an indexed column changes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 22:40:00

On SQLite the trigger that keeps ``customers_fts`` in step fired on every update of a
customer, so each inbound message (which moves ``last_seen_at``) deleted and re-inserted
its customer's index entry. It now fires on updates of name, email, phone or workspace
only. PostgreSQL's index is an expression index: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

import rapport.search

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = (
    "CREATE TRIGGER IF NOT EXISTS customers_fts_au AFTER UPDATE ON customers BEGIN "
    "INSERT INTO customers_fts(customers_fts, rowid, name, email, phone, workspace_id) "
    "VALUES ('delete', old.rowid, old.name, old.email, old.phone, old.workspace_id); "
    "INSERT INTO customers_fts(rowid, name, email, phone, workspace_id) "
    "VALUES (new.rowid, new.name, new.email, new.phone, new.workspace_id); END"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS customers_fts_au")
        op.execute(rapport.search.CUSTOMERS_FTS_UPDATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS customers_fts_au")
        op.execute(_OLD)
