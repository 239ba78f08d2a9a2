"""PostgreSQL's search indexes hold the words a search is split into

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 17:40:00

The GIN indexes were over ``to_tsvector('simple', ...)`` of the raw text, whose parser
keeps an email, host, URL, decimal, version or IP address as one lexeme and "A-1234" as
"a" and "-1234", while a search is split into words of letters and digits: a message
with "kim@example.com" or "19.99" was not found by either, nor a customer by part of an
email. The indexes are rebuilt over the text with every ASCII character other than a
letter or digit made a space (``rapport.search``), as SQLite's FTS5 tokenizes it. SQLite:
nothing to do.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEPARATORS = r"'[\x01-\x2F\x3A-\x40\x5B-\x60\x7B-\x7F]+'"
_CUSTOMER = "coalesce(name, '') || ' ' || coalesce(email, '') || ' ' || coalesce(phone, '')"
_NEW = {
    "ix_messages_fts": (
        "messages",
        f"to_tsvector('simple', regexp_replace(text, {_SEPARATORS}, ' ', 'g'))",
    ),
    "ix_customers_fts": (
        "customers",
        f"to_tsvector('simple', regexp_replace({_CUSTOMER}, {_SEPARATORS}, ' ', 'g'))",
    ),
}
_OLD = {
    "ix_messages_fts": ("messages", "to_tsvector('simple', text)"),
    "ix_customers_fts": (
        "customers",
        "to_tsvector('simple', coalesce(name, '') || ' ' || "
        "replace(replace(coalesce(email, ''), '@', ' '), '.', ' ') || ' ' || "
        "coalesce(phone, ''))",
    ),
}


def _rebuild(indexes: dict[str, tuple[str, str]]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, tsv) in indexes.items():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON {table} USING gin ({tsv})")


def upgrade() -> None:
    _rebuild(_NEW)


def downgrade() -> None:
    _rebuild(_OLD)
