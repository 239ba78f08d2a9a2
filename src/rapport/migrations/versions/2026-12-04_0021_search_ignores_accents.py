"""PostgreSQL's search ignores accents, as SQLite's does

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 19:50:00

SQLite's FTS5 tables fold diacritics (``remove_diacritics 2``): "José" and "jose" find each
other. PostgreSQL's GIN indexes were over ``to_tsvector('simple', ...)``, which keeps them:
a customer "José" was not found by "jose", nor a message with "Köln" by "koln". The
``unaccent`` extension (trusted since PostgreSQL 13: the database's owner, or a role with
CREATE on it, may add it) provides a dictionary; the text search configuration
``rapport_search`` is 'simple' with that dictionary first, and the indexes are rebuilt over
it (``rapport.search``), the queries splitting their words with it too. SQLite: nothing to
do.

Downgrade: the indexes as 0018 built them, and the configuration dropped. The extension
stays: something else may use it, and it costs nothing.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONFIG = "rapport_search"
_PARTS = (
    "asciiword, word, numword, email, url, host, sfloat, version, hword_numpart, hword_part, "
    "hword_asciipart, numhword, asciihword, hword, url_path, file, float, int, uint"
)
# The configuration has no IF NOT EXISTS, and a fresh install made it already (revision
# 0002 runs rapport.search.install): made only where missing, with the dictionary named in
# the schema the extension is in.
_CREATE_CONFIG = (
    "DO $$ BEGIN "  # noqa: S608 - constant SQL
    f"IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = '{_CONFIG}' "
    "AND cfgnamespace = current_schema()::regnamespace) THEN "
    f"CREATE TEXT SEARCH CONFIGURATION {_CONFIG} (COPY = pg_catalog.simple); "
    f"EXECUTE format('ALTER TEXT SEARCH CONFIGURATION {_CONFIG} ALTER MAPPING FOR "
    f"{_PARTS} WITH %s.unaccent, pg_catalog.simple', "
    "(SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'unaccent')); "
    "END IF; END $$"
)
_SEPARATORS = r"'[\x01-\x2F\x3A-\x40\x5B-\x60\x7B-\x7F]+'"
_CUSTOMER = "coalesce(name, '') || ' ' || coalesce(email, '') || ' ' || coalesce(phone, '')"


def _indexes(config: str) -> dict[str, tuple[str, str]]:
    return {
        "ix_messages_fts": (
            "messages",
            f"to_tsvector('{config}', regexp_replace(text, {_SEPARATORS}, ' ', 'g'))",
        ),
        "ix_customers_fts": (
            "customers",
            f"to_tsvector('{config}', regexp_replace({_CUSTOMER}, {_SEPARATORS}, ' ', 'g'))",
        ),
    }


def _rebuild(indexes: dict[str, tuple[str, str]]) -> None:
    for name, (table, tsv) in indexes.items():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON {table} USING gin ({tsv})")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    op.execute(_CREATE_CONFIG)
    _rebuild(_indexes(_CONFIG))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _rebuild(_indexes("simple"))
    op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {_CONFIG}")
