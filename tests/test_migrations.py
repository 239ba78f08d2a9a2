"""The migrations build exactly the schema the models describe."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from rapport import migrate
from rapport.db import Base, Database
from rapport.search import is_index_object


@pytest.fixture
def empty_url(database_url: str) -> str:
    """The test database emptied of every table, so only the migrations build it."""
    db = Database(database_url, pool_size=1)
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
        if db.is_sqlite:
            conn.execute(text("DROP TABLE IF EXISTS messages_fts"))
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()
    return database_url


def test_migrations_build_the_schema_of_the_models(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    db = Database(empty_url, pool_size=1)
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": lambda o, name, *_: not is_index_object(name)}
        )
        diff = compare_metadata(ctx, Base.metadata)
    db.dispose()
    assert diff == []
