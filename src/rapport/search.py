"""Full-text search over message text: SQLite FTS5 or PostgreSQL's tsvector with GIN.

The index objects are not tables the ORM knows, so they are created by DDL here: after
``create_all`` (tests, fresh installs) and by the migration that introduced them.
"""

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from rapport.db import Base

FTS_NAMES = ("messages_fts", "customers_fts", "ix_messages_fts", "ix_customers_fts")

# Only when a column of the index is written: every inbound message moves its customer's
# last_seen_at, which must not rewrite the customer's entry in the index each time.
CUSTOMERS_FTS_UPDATE = (
    "CREATE TRIGGER IF NOT EXISTS customers_fts_au "
    "AFTER UPDATE OF name, email, phone, workspace_id ON customers BEGIN "
    "INSERT INTO customers_fts(customers_fts, rowid, name, email, phone, workspace_id) "
    "VALUES ('delete', old.rowid, old.name, old.email, old.phone, old.workspace_id); "
    "INSERT INTO customers_fts(rowid, name, email, phone, workspace_id) "
    "VALUES (new.rowid, new.name, new.email, new.phone, new.workspace_id); END"
)

_SQLITE = [
    # External content: the index holds only tokens; the text stays in messages. The
    # workspace id is indexed too, so a search intersects with one tenant inside FTS5
    # instead of filtering every tenant's hits afterwards.
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
    "text, workspace_id, content='messages', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_ai AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, text, workspace_id) "
    "VALUES (new.rowid, new.text, new.workspace_id); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_ad AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, text, workspace_id) "
    "VALUES ('delete', old.rowid, old.text, old.workspace_id); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_au AFTER UPDATE OF text ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, text, workspace_id) "
    "VALUES ('delete', old.rowid, old.text, old.workspace_id); "
    "INSERT INTO messages_fts(rowid, text, workspace_id) "
    "VALUES (new.rowid, new.text, new.workspace_id); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
    # Customers by name, email and phone, the same way.
    "CREATE VIRTUAL TABLE IF NOT EXISTS customers_fts USING fts5("
    "name, email, phone, workspace_id, content='customers', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS customers_fts_ai AFTER INSERT ON customers BEGIN "
    "INSERT INTO customers_fts(rowid, name, email, phone, workspace_id) "
    "VALUES (new.rowid, new.name, new.email, new.phone, new.workspace_id); END",
    "CREATE TRIGGER IF NOT EXISTS customers_fts_ad AFTER DELETE ON customers BEGIN "
    "INSERT INTO customers_fts(customers_fts, rowid, name, email, phone, workspace_id) "
    "VALUES ('delete', old.rowid, old.name, old.email, old.phone, old.workspace_id); END",
    CUSTOMERS_FTS_UPDATE,
    "INSERT INTO customers_fts(customers_fts) VALUES ('rebuild')",
]
# PostgreSQL's parser keeps emails, hosts, URLs, decimals, versions and IP addresses as
# single lexemes, and "A-1234" as "a" and "-1234": none would match the words a search is
# split into. Every ASCII character other than a letter or digit (``_`` too, as FTS5 has
# it) is made a space first, so the parser is left with words of letters and digits, as
# FTS5's unicode61 tokenizer makes them. Not a [:alnum:] class, which depends on the
# database's locale (under "C" it takes every non-ASCII letter for a separator): non-ASCII
# text is left to the parser.
_SEPARATORS = r"'[\x01-\x2F\x3A-\x40\x5B-\x60\x7B-\x7F]+'"
# Accents count for nothing, as FTS5's remove_diacritics has it ("José" and "jose" find
# each other): a text search configuration of our own is 'simple' with the unaccent
# extension's dictionary first, for the index and the query words alike. Not unaccent() in
# the expressions: it is STABLE, which an index expression may not be, and applied to the
# query text it could turn a word into tsquery syntax ("ʼ" becomes a quote), where the
# dictionary works on the words once the parser has split them.
CONFIG = "rapport_search"
# Every token type 'simple' maps (all but blanks): non-ASCII letters can be in several.
_PARTS = (
    "asciiword, word, numword, email, url, host, sfloat, version, hword_numpart, hword_part, "
    "hword_asciipart, numhword, asciihword, hword, url_path, file, float, int, uint"
)
# Idempotent, as install() runs after every create_all: the configuration has no IF NOT
# EXISTS. The dictionary is named in the schema the extension is in, wherever that is.
_CONFIG_DDL = [
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    "DO $$ BEGIN "  # noqa: S608 - constant SQL
    f"IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = '{CONFIG}' "
    "AND cfgnamespace = current_schema()::regnamespace) THEN "
    f"CREATE TEXT SEARCH CONFIGURATION {CONFIG} (COPY = pg_catalog.simple); "
    f"EXECUTE format('ALTER TEXT SEARCH CONFIGURATION {CONFIG} ALTER MAPPING FOR "
    f"{_PARTS} WITH %s.unaccent, pg_catalog.simple', "
    "(SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'unaccent')); "
    "END IF; END $$",
]
# The queries use these very expressions, or the planner would not use the indexes.
_MESSAGE_TSV = f"to_tsvector('{CONFIG}', regexp_replace(text, {_SEPARATORS}, ' ', 'g'))"
_CUSTOMER_TSV = (
    f"to_tsvector('{CONFIG}', regexp_replace(coalesce(name, '') || ' ' || coalesce(email, '') "
    f"|| ' ' || coalesce(phone, ''), {_SEPARATORS}, ' ', 'g'))"
)
_POSTGRES = [
    *_CONFIG_DDL,
    f"CREATE INDEX IF NOT EXISTS ix_messages_fts ON messages USING gin ({_MESSAGE_TSV})",
    f"CREATE INDEX IF NOT EXISTS ix_customers_fts ON customers USING gin ({_CUSTOMER_TSV})",
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
    return bool(name and name.startswith(FTS_NAMES))


def _fts5_query(q: str) -> str:
    # Every word must appear, as a prefix; quoting makes user input data, not FTS syntax.
    words = re.findall(r"\w+", q, flags=re.UNICODE)
    return " AND ".join(f'"{w}"*' for w in words[:12])


def _tsquery(q: str) -> str:
    """The words of ``q`` as FTS5 matches them: every word, as a prefix. A word FTS5
    splits (``ab_cd``) is a phrase of its parts, the last a prefix, as in FTS5. Built from
    letters and digits only: user input is never tsquery syntax."""
    words = (re.findall(r"[^\W_]+", w) for w in re.findall(r"\w+", q)[:12])
    return " & ".join(" <-> ".join(parts) + ":*" for parts in words if parts)


def _folded(word: str) -> str:
    """A word as the index compares it: accents dropped, case folded (``Café`` → ``cafe``)."""
    if word.isascii():  # most words: nothing to drop
        return word.lower()
    return "".join(
        c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c)
    ).casefold()


_WORD = re.compile(r"[^\W_]+")


def snippet(text: str, q: str, width: int) -> list[tuple[str, bool]]:
    """The part of ``text`` a search for ``q`` found, as (piece, matched) pairs: on one
    line, at most ``width`` characters around the first word that matched (``…`` where
    text is cut), each word that matched as its own marked piece. Words match as the
    search does: accents and case aside, a word of the text starting with a word of ``q``.
    Without a match it is the line's start, nothing marked."""
    line = " ".join(text.split())
    wanted = tuple({_folded(w) for w in _WORD.findall(q)[:24]})
    if not wanted:
        hits = []
    elif line.isascii():  # folded as a whole, its words keep their places
        low = line.lower()
        hits = [w for w in _WORD.finditer(line) if low.startswith(wanted, w.start(), w.end())]
    else:
        hits = [w for w in _WORD.finditer(line) if _folded(w.group()).startswith(wanted)]
    start = 0
    if hits and len(line) > width and hits[0].start() > width // 4:
        # Some words of context before the first match, cut at a space.
        start = min(line.find(" ", hits[0].start() - width // 4) + 1, hits[0].start()) or (
            hits[0].start()
        )
    end = len(line) if len(line) - start <= width else line.rfind(" ", start, start + width)
    if end <= start:
        end = start + width
    pieces: list[tuple[str, bool]] = [("…", False)] if start else []
    at = start
    for w in hits:
        if start <= w.start() and w.end() <= end:
            pieces += [(line[at : w.start()], False), (w.group(), True)]
            at = w.end()
    pieces.append((line[at:end] + ("…" if end < len(line) else ""), False))
    return [p for p in pieces if p[0]]


def conversation_ids(db: Session, *, workspace_id: str, q: str, limit: int = 50) -> list[str]:
    """Conversations of the workspace with a message matching ``q``, most recent first."""
    return list(conversation_hits(db, workspace_id=workspace_id, q=q, limit=limit))


@dataclass(frozen=True)
class Hit:
    """A conversation's newest message that a search matched (read with the match: the
    results show it without another query)."""

    message_id: str
    text: str
    direction: str
    kind: str


def conversation_hits(db: Session, *, workspace_id: str, q: str, limit: int = 50) -> dict[str, Hit]:
    """Conversations of the workspace with a message matching ``q``, most recent first,
    each with its newest matching message."""
    dialect = db.get_bind().dialect.name
    if dialect == "sqlite":
        words = _fts5_query(q)
        if not words:
            return {}
        # Newest matching messages first (rowids grow with time), bounded, then their
        # conversations: the cost follows the page asked for, not the number of hits.
        # (With MAX, SQLite's bare columns are those of the row holding the maximum.)
        sql = text(
            "SELECT m.conversation_id, m.id, m.text, m.direction, m.kind, MAX(hits.rowid) FROM ("
            "  SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q"
            "  ORDER BY rowid DESC LIMIT :scan"
            ") hits JOIN messages m ON m.rowid = hits.rowid "
            "GROUP BY m.conversation_id ORDER BY MAX(hits.rowid) DESC LIMIT :limit"
        )
        params: dict[str, Any] = {
            "q": f'workspace_id : "{workspace_id}" AND text : ({words})',
            "scan": limit * 20,
            "limit": limit,
        }
    else:
        if not (tsquery := _tsquery(q)):
            return {}
        # Newest matching messages first, bounded, then their conversations: the same
        # shape as on SQLite, and no join the planner could turn into a scan.
        sql = text(
            "SELECT conversation_id, id, text, direction, kind FROM ("  # noqa: S608
            "  SELECT DISTINCT ON (conversation_id) conversation_id, id, text, direction, kind,"
            "  created_at FROM ("
            "    SELECT m.conversation_id, m.id, m.text, m.direction, m.kind, m.created_at"
            "    FROM messages m"
            f"    WHERE {_MESSAGE_TSV} @@ to_tsquery('{CONFIG}', :q)"
            "    AND m.workspace_id = :ws ORDER BY m.created_at DESC LIMIT :scan"
            "  ) hits ORDER BY conversation_id, created_at DESC"
            ") newest ORDER BY created_at DESC LIMIT :limit"
        )
        params = {"q": tsquery, "ws": workspace_id, "limit": limit, "scan": limit * 20}
    return {row[0]: Hit(row[1], row[2], row[3], row[4]) for row in db.execute(sql, params)}


def customer_ids(db: Session, *, workspace_id: str, q: str, limit: int = 200) -> list[str]:
    """Customers of the workspace whose name, email or phone has every word of ``q``, the
    most recently added first, up to ``limit``."""
    if db.get_bind().dialect.name == "sqlite":
        words = re.findall(r"\w+", q, flags=re.UNICODE)[:12]
        if not words:
            return []
        match = " AND ".join(f'"{w}"*' for w in words)
        sql = text(
            "SELECT c.id FROM (SELECT rowid FROM customers_fts WHERE customers_fts MATCH :q "
            "ORDER BY rowid DESC LIMIT :limit) hits JOIN customers c ON c.rowid = hits.rowid "
            "ORDER BY hits.rowid DESC"
        )
        params: dict[str, Any] = {
            "q": f'workspace_id : "{workspace_id}" AND {{name email phone}} : ({match})',
            "limit": limit,
        }
    else:
        if not (tsquery := _tsquery(q)):
            return []
        params = {"ws": workspace_id, "q": tsquery, "limit": limit, "few": FEW_CUSTOMERS}
        # Ordered by id and limited, PostgreSQL walks the key newest first, matching every
        # customer's text on the way: quick for a word many customers have, and the whole
        # table for one few have (2.6 s at a million customers for a word none has). A
        # prefix query's hits cannot be estimated, so it cannot tell the two apart: asked
        # first for at most FEW_CUSTOMERS hits, unordered, it reads them through the index;
        # only a word with more than that many is walked for along the key.
        found = list(db.scalars(text(_CUSTOMERS_FEW), params))
        if len(found) < FEW_CUSTOMERS:
            return sorted(found, reverse=True)[:limit]  # ids are time-ordered: newest first
        sql = text(_CUSTOMERS_NEWEST)
    return [row[0] for row in db.execute(sql, params)]


# Hits of a customer search read through the index before the key is walked instead.
FEW_CUSTOMERS = 10_000
_CUSTOMER_MATCH = f"workspace_id = :ws AND {_CUSTOMER_TSV} @@ to_tsquery('{CONFIG}', :q)"
_CUSTOMERS_FEW = f"SELECT id FROM customers WHERE {_CUSTOMER_MATCH} LIMIT :few"  # noqa: S608
_CUSTOMERS_NEWEST = (
    f"SELECT id FROM customers WHERE {_CUSTOMER_MATCH} ORDER BY id DESC LIMIT :limit"  # noqa: S608
)
