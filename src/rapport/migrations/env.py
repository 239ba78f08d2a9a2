"""Alembic environment: runs migrations on the engine Rapport itself would use."""

from alembic import context

import rapport.models  # noqa: F401  (registers every table on the metadata)
from rapport.db import Base, make_engine
from rapport.search import is_index_object

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
if not url:
    raise RuntimeError("sqlalchemy.url is not set")


def run() -> None:
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            # The full-text index is DDL of its own (rapport.search), not ORM tables.
            include_object=lambda obj, name, kind, reflected, other: not is_index_object(name),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
