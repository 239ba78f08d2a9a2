"""Alembic, driven from code: ``rapport migrate`` and the readiness check use this."""

from pathlib import Path
from typing import Any

from alembic import command
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
