"""Alembic environment: runs migrations on the engine Rapport itself would use."""

from alembic import context

import rapport.models  # noqa: F401  (registers every table on the metadata)
from rapport.db import Base, make_engine
from rapport.migrate import compared

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
            include_object=lambda obj, name, kind, reflected, other: compared(
                obj, name, connection.dialect.name
            ),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
