"""Full-text search over message text: SQLite FTS5 or PostgreSQL's tsvector with GIN.

The index objects are not tables the ORM knows, so they are created by DDL here: after
``create_all`` (tests, fresh installs) and by the migration that introduced them.
"""

import re
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from rapport.db import Base

FTS_PREFIX = "messages_fts"

_SQLITE = [
    # External content: the index holds only tokens; the text stays in messages.
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
    "text, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_ai AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, text) VALUES (new.rowid, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_ad AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, text) "
    "VALUES ('delete', old.rowid, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_au AFTER UPDATE OF text ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.rowid, old.text); "
    "INSERT INTO messages_fts(rowid, text) VALUES (new.rowid, new.text); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
]
_POSTGRES = [
    "CREATE INDEX IF NOT EXISTS ix_messages_fts ON messages "
    "USING gin (to_tsvector('simple', text))",
]


def ddl(dialect: str) -> list[str]:
    return _SQLITE if dialect == "sqlite" else _POSTGRES if dialect == "postgresql" else []


def install(conn: Connection) -> None:
    for stmt in ddl(conn.dialect.name):
        conn.execute(text(stmt))


@event.listens_for(Base.metadata, "after_create")
def _after_create(target: Any, conn: Connection, **kw: Any) -> None:
    install(conn)


def is_index_object(name: str | None) -> bool:
    """Objects of the search index, which schema comparisons must leave alone."""
    return bool(name and (name.startswith(FTS_PREFIX) or name == "ix_messages_fts"))


def _fts5_query(q: str) -> str:
    # Every word must appear, as a prefix; quoting makes user input data, not FTS syntax.
    words = re.findall(r"\w+", q, flags=re.UNICODE)
    return " ".join(f'"{w}"*' for w in words[:12])


def conversation_ids(db: Session, *, workspace_id: str, q: str, limit: int = 50) -> list[str]:
    """Conversations of the workspace with a message matching ``q``, most recent first."""
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        match = _fts5_query(q)
        if not match:
            return []
        sql = text(
            "SELECT c.id FROM messages_fts f JOIN messages m ON m.rowid = f.rowid "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE messages_fts MATCH :q AND m.workspace_id = :ws "
            "GROUP BY c.id ORDER BY MAX(c.last_activity_at) DESC LIMIT :limit"
        )
        params: dict[str, Any] = {"q": match, "ws": workspace_id, "limit": limit}
    else:
        # Prefix terms joined by AND, built from words only: user input is never syntax.
        words = re.findall(r"\w+", q, flags=re.UNICODE)[:12]
        if not words:
            return []
        q = " & ".join(f"{w}:*" for w in words)
        sql = text(
            "SELECT c.id FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE to_tsvector('simple', m.text) @@ to_tsquery('simple', :q) "
            "AND m.workspace_id = :ws "
            "GROUP BY c.id ORDER BY MAX(c.last_activity_at) DESC LIMIT :limit"
        )
        params = {"q": q, "ws": workspace_id, "limit": limit}
    return [row[0] for row in db.execute(sql, params)]
