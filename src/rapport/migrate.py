"""Alembic, driven from code: ``rapport migrate`` and the readiness check use this."""

from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from rapport.db import Database
from rapport.search import is_index_object

SCRIPTS = Path(__file__).parent / "migrations"


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    # Alembic's config is an INI parser: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def compared(obj: Any, name: str | None, dialect: str) -> bool:
    """Whether schema comparisons (autogenerate, the migrations' test) take in this object:
    not the search index, DDL of its own (rapport.search), nor a model's index made on
    another database alone (``ddl_if``), which Alembic would otherwise ask to add here."""
    only = getattr(obj, "_ddl_if", None)  # SQLAlchemy keeps ddl_if's condition there
    elsewhere = only is not None and only.dialect not in (None, dialect)
    return not is_index_object(name) and not elsewhere


def build_index(name: str, table: str, columns: list[str], **kw: Any) -> None:
    """A migration's new index, built on PostgreSQL without holding its table's writes.

    A plain ``CREATE INDEX`` locks out every insert and update of the table until the whole
    migration run commits (ingest stalls for as long as a million conversations take to
    index). On PostgreSQL it is built ``CONCURRENTLY``, outside the run's transaction (what
    the migrations before it did is committed first); a build that failed half-way leaves
    an invalid index of that name, dropped here before building again. SQLite, whose one
    writer is the migration itself, builds it in the transaction."""
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(name, table, columns, **kw)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(name, table, columns, postgresql_concurrently=True, **kw)


def drop_index(name: str, table: str) -> None:
    """A migration's dropped index, on PostgreSQL without holding its table's writes (as
    ``build_index``)."""
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(name, table_name=table)
        return
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` (a plain Rapport URL) up to ``revision``."""
    command.upgrade(config(url), revision)


def head() -> str | None:
    return ScriptDirectory.from_config(config("sqlite://")).get_current_head()


def revisions(database: Database) -> tuple[str | None, str | None]:
    """(the database's revision, the newest revision of the code)."""
    with database.engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head()
