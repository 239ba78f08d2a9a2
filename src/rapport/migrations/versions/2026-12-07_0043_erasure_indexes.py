"""An erasure finds every row it reads or deletes by an index: the columns that had none

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-07 14:00:00

An erasure runs in one transaction, which on SQLite holds the one write lock every
workspace's ingest waits for. Several of its statements, and the database's own cascades
from the customers and conversations it deletes, read whole tables for want of an index
on the column they look up:

- ``bot_intent_examples.message_id``: the phrasings taught from the person's messages
  (partial: most were typed, and name no message);
- ``customers.merged_into_id``: the records merged into the person, and the ``SET NULL``
  of a deleted customer (partial: few customers were ever merged);
- ``webchat_visitors.customer_id``: the visitors who spoke for them, and the ``SET NULL``
  (partial: most visitors never wrote);
- ``customer_merges.merged_id`` and ``merge_suggestions.left_id``: the cascades from a
  deleted customer (the suggestions' unique key leads with the workspace);
- ``notifications.conversation_id``, ``bot_unanswered.conversation_id`` and
  ``conversation_reads.conversation_id``: the cascades from a deleted conversation (the
  read markers' key leads with the member);
- ``audit_log.target_id``: the entries about the person, whose typed words are blanked
  (a workspace's log is years of entries; a merge of conversations and a lock-out look
  entries up by their target too).

Built ``CONCURRENTLY`` on PostgreSQL (``rapport.migrate.build_index``): a running Rapport
keeps writing these tables meanwhile.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rapport.migrate import build_index

revision: str = "0043"
down_revision: str | None = "0042"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# (name, table, column, partial: only the rows where the column is set)
INDEXES = (
    ("ix_bot_examples_message", "bot_intent_examples", "message_id", True),
    ("ix_customers_merged_into", "customers", "merged_into_id", True),
    ("ix_webchat_visitors_customer", "webchat_visitors", "customer_id", True),
    ("ix_customer_merges_merged", "customer_merges", "merged_id", False),
    ("ix_merge_suggestions_left", "merge_suggestions", "left_id", False),
    ("ix_notifications_conversation", "notifications", "conversation_id", False),
    ("ix_bot_unanswered_conversation", "bot_unanswered", "conversation_id", False),
    ("ix_conversation_reads_conversation", "conversation_reads", "conversation_id", False),
    ("ix_audit_log_target", "audit_log", "target_id", False),
)


def upgrade() -> None:
    for name, table, column, partial in INDEXES:
        where = {}
        if partial:
            only = sa.text(f"{column} IS NOT NULL")
            where = {"sqlite_where": only, "postgresql_where": only}
        build_index(name, table, [column], **where)


def downgrade() -> None:
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
