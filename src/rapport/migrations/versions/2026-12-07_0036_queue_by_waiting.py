"""The routing queue serves the customer who has waited longest, in an index of its own

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-07 03:30:00

A routing pass handed out the open conversations nobody has by when they started
(``created_at``, ``id``): one started weeks ago and reopened by its customer today went
ahead of a customer who had waited an hour. It reads them by ``waiting_since`` now (those
nobody waits on, NULL, after them), in ``ix_conversations_queue``: partial, so it holds
only the conversations in the queue, and a message to anyone else's conversation writes
nothing to it. Its ``status`` column is 'open' in every entry: the query's equality on it
is what makes SQLite's planner take this index over ``ix_conversations_ws_waiting``
(otherwise the same keys), which it chose between by their order in the schema.

The ``created_at, id`` that 0020 put at the end of ``ix_conversations_ws_assignee_status``
served the old order alone and is dropped; the per-agent counts read its first three
columns, as before.

PostgreSQL only: ``ix_customers_attributes``, a GIN index (``jsonb_path_ops``) of the
customers' attributes, serves the customers list's attribute filter as it is written
(JSONB containment, ``@>``): a value few customers hold walked every customer newest
first to fill a page (170 ms at 300,000 customers, 0.1 ms in the index); a common one is
still read newest first, as the planner chooses. It costs every update of a customer row
(each message sets ``last_seen_at``) an entry per attribute value. SQLite's filter reads
each row's JSON (``json_each``) and has no such index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rapport.migrate import build_index, drop_index

revision: str = "0036"
down_revision: str | None = "0035"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_COUNTS = "ix_conversations_ws_assignee_status"
_COUNTED = ["workspace_id", "assignee_id", "status"]
_QUEUE = "ix_conversations_queue"
_IN_QUEUE = "assignee_id IS NULL AND status = 'open'"
_ATTRIBUTES = "ix_customers_attributes"


def upgrade() -> None:
    # Built on PostgreSQL without holding the tables' writes (rapport.migrate.build_index).
    if op.get_bind().dialect.name == "postgresql":
        build_index(
            _ATTRIBUTES,
            "customers",
            ["attributes"],
            postgresql_using="gin",
            postgresql_ops={"attributes": "jsonb_path_ops"},
        )
    build_index(
        _QUEUE,
        "conversations",
        ["workspace_id", "status", "waiting_since", "id"],
        sqlite_where=sa.text(_IN_QUEUE),
        postgresql_where=sa.text(_IN_QUEUE),
    )
    drop_index(_COUNTS, "conversations")
    build_index(_COUNTS, "conversations", _COUNTED)


def downgrade() -> None:
    op.drop_index(_COUNTS, table_name="conversations")
    op.create_index(_COUNTS, "conversations", [*_COUNTED, "created_at", "id"])
    op.drop_index(_QUEUE, table_name="conversations")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(_ATTRIBUTES, table_name="customers")
