"""Test frame: a fresh database per test (SQLite always, PostgreSQL when configured),
the app on it, and the personas of two workspaces.

alice owns Acme, bob is an agent there and victor a viewer; mallory owns Globex.
"""

import os
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from alembic import command
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import event, text

import rapport.models  # noqa: F401  (every table on the metadata)
from rapport import bus, migrate
from rapport.app import create_app
from rapport.auth import security
from rapport.config import Settings
from rapport.db import Base, Database
from tests import compiles_once, routes_once
from tests.factories import World, build_world

if TYPE_CHECKING:
    from tests.channels.email.test_email import Outbox

# The stand-in servers the tests call (webhook receivers, integrations, providers) listen
# on 127.0.0.1, which a real installation refuses by default (tests/test_outbound.py).
os.environ.setdefault("RAPPORT_OUTBOUND_PRIVATE_OK", "1")
# Apps in tests store inbound messages on a thread: starting a writer process per app would
# add seconds to every test. tests/test_ingest.py and the multi-process test in
# tests/realtime/test_stream.py run the writer process, the default of `rapport serve`.
os.environ.setdefault("RAPPORT_INGEST_PROCESS", "0")

# `make test` runs the suite in one process per core (pytest-xdist). Each has a PostgreSQL
# database of its own (``pg_migrated``) and a Redis database of its own, set here before any
# test module reads it: keys and pub/sub channels (named by database, ``bus.channel``) apart;
# databases 14 and 15 are tests/realtime/test_bus.py's.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...; unset in one process
if _WORKER and os.environ.get("RAPPORT_TEST_REDIS_URL"):
    _url = urlsplit(os.environ["RAPPORT_TEST_REDIS_URL"])
    _own = (int(_url.path.strip("/") or 0) + int(_WORKER.removeprefix("gw")) + 1) % 14
    os.environ["RAPPORT_TEST_REDIS_URL"] = _url._replace(path=f"/{_own}").geturl()

PG_URL = os.environ.get("RAPPORT_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("RAPPORT_TEST_REDIS_URL")
SECRET = "test-secret-key-0123456789abcdefghijklmnop"

# Hashing at production cost would make the suite slow; the algorithm is the same. The
# least memory argon2 takes (8 KiB): every test's world hashes four passwords, which at
# 8 MiB cost ~11 ms each on a quiet machine and ~30 on a loaded one.
security._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
# The hash a sign-in for an unknown address is checked against is made with it too (it
# carries the parameters it was made with: at production cost, each such sign-in took
# ~0.1-0.4 s).
security.dummy_hash.cache_clear()
# FastAPI prepares each route once a process, not once an app (tests/routes_once.py).
routes_once.install()
# And each SQL statement is compiled once a process, not once an engine (tests/compiles_once.py).
compiles_once.install()


def create_schema(url: str) -> None:
    """The models' schema, stamped as migrated. tests/test_migrations.py proves that the
    migrations build this same schema; building it from the models keeps work in progress
    testable before its migration is written."""
    db = Database(url, pool_size=1)
    Base.metadata.create_all(db.engine)
    db.dispose()
    command.stamp(migrate.config(url), "heads")


_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
# For what only SQLite has (its one write lock): the test runs on SQLite alone, never skipped.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# A test that drives Chromium runs on SQLite alone (below) unless marked so.
on_both_backends = pytest.mark.on_both_backends
# And for what only PostgreSQL has (skipped, saying so, where it is not configured).
postgresql_only = pytest.mark.parametrize("database_url", _BACKENDS[1:], indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that drives Chromium runs on SQLite alone, unless marked ``on_both_backends``.

    What a page shows is the browser's work on what the API answers, and the API's every
    query runs on PostgreSQL in the tests beside these; running each browser test twice
    took a third of the suite's time. Added here, before the fixtures' own parameters are:
    a test's own ``parametrize`` of the database is left as it is."""
    test = metafunc.definition
    if (
        "browser" in metafunc.fixturenames
        and "database_url" in metafunc.fixturenames
        and test.get_closest_marker("on_both_backends") is None
        and not any(
            "database_url" in str(mark.args[0]) for mark in test.iter_markers("parametrize")
        )
    ):
        test.add_marker(sqlite_only)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "rapport.db"
    create_schema(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, created beside the configured one,
    so that parallel runs on one server never truncate each other's tables."""
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set RAPPORT_TEST_DATABASE_URL")
    base, _, dbname = PG_URL.rpartition("/")
    own = f"{dbname}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = Database(PG_URL, pool_size=1)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{own}"'))
    url = f"{base}/{own}"
    create_schema(url)
    yield url
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database: a copy of the SQLite template, or a truncated PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "rapport.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_migrated")
    db = Database(url, pool_size=1)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(_EMPTYING)
    db.dispose()
    return url


# One statement that empties every table and restarts every sequence: DELETE, not TRUNCATE
# (a test leaves a few rows, and TRUNCATE gives each of the ~50 tables and their indexes new
# files, ~0.7 s a test against ~0.03), all in one round trip (a statement each took two to
# three times as long on a loaded machine). ``%%``: the driver reads ``%`` as a placeholder.
# The names are the models' own tables.
_DELETES = "".join(f'DELETE FROM "{t.name}"; ' for t in reversed(Base.metadata.sorted_tables))  # noqa: S608
_RESTARTS = (
    "FOR s IN SELECT schemaname, sequencename FROM pg_sequences LOOP "
    "EXECUTE format('ALTER SEQUENCE %%I.%%I RESTART', s.schemaname, s.sequencename); "
    "END LOOP;"
)
_EMPTYING = f"DO $$DECLARE s record; BEGIN {_DELETES}{_RESTARTS} END$$"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=SECRET,  # type: ignore[arg-type]
        attachments_dir=tmp_path / "attachments",
        worker_in_process=False,
        public_url="http://testserver",
        log_json=False,
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database_url, pool_size=5)
    yield db
    db.dispose()


@pytest.fixture
def app(settings: Settings, database: Database):  # type: ignore[no-untyped-def]
    return create_app(settings, database=database)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c
    bus.set_bus(bus.LocalBus())


@pytest.fixture
def world(database: Database, settings: Settings) -> World:
    return build_world(database, settings)


def write_lock_held(database: Database) -> bool:
    """Whether a transaction holds SQLite's one write lock right now (asked from another
    connection, which does not wait for it)."""
    path = database.engine.url.database
    assert database.is_sqlite and path
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.rollback()
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        other.close()


def record_write_lock(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, database: Database
) -> list[bool]:
    """Wrap ``owner.name``: each call records whether SQLite's write lock is held then."""
    held: list[bool] = []
    original = getattr(owner, name)

    def probing(*args: Any, **kwargs: Any) -> Any:
        held.append(write_lock_held(database))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, probing)
    return held


@dataclass
class PausedFit:
    """A model training caught mid-fit: the first fit waits for ``release``."""

    fitting: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    sizes: list[int] = field(default_factory=list)  # examples of each fit, in order


def pause_first_fit(monkeypatch: pytest.MonkeyPatch) -> PausedFit:
    from rapport.assistant.classify import TextClassifier

    paused = PausedFit()
    fit = TextClassifier.fit

    def held(self: TextClassifier, texts: list[str], labels: list[str]) -> TextClassifier:
        paused.sizes.append(len(texts))
        if len(paused.sizes) == 1:
            paused.fitting.set()
            assert paused.release.wait(60)
        return fit(self, texts, labels)

    monkeypatch.setattr(TextClassifier, "fit", held)
    return paused


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def heard_until_note(ws: Any, client: TestClient, world: World) -> list[dict[str, Any]]:
    """What an Acme agent's stream socket hears before a note this adds now to Acme's first
    conversation (none a test looks at): a test of an event that never comes fails on what
    was heard instead of waiting forever."""
    marker = f"heard up to here {secrets.token_hex(4)}"
    r = client.post(
        f"/api/v1/conversations/{world.acme.opened.conversation.id}/notes",
        json={"text": marker},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    heard: list[dict[str, Any]] = []
    while (event := ws.receive_json())["type"] != "message.created" or (
        event["payload"]["text"] != marker
    ):
        heard.append(event)
    return heard


@contextmanager
def sqlite_plans(database: Database, *markers: str) -> Iterator[list[tuple[str, str]]]:
    """Each statement run meanwhile whose text holds one of ``markers``, with SQLite's plan
    of it (its steps joined by `` | ``): filled in once the block ends."""
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if any(marker in statement for marker in markers):
            statements.append((statement, parameters))

    plans: list[tuple[str, str]] = []
    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        yield plans
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)
    with database.engine.connect() as conn:
        for statement, parameters in statements:
            steps = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plans.append((statement, " | ".join(row[-1] for row in steps)))


@contextmanager
def published_events() -> Iterator[list[dict[str, Any]]]:
    """What this process publishes on the bus meanwhile."""
    published: list[dict[str, Any]] = []

    class Recorder(bus.LocalBus):
        def publish(self, event: dict[str, Any]) -> None:
            published.append(event)

    previous = bus.get_bus()
    bus.set_bus(Recorder())
    try:
        yield published
    finally:
        bus.set_bus(previous)


@pytest.fixture
def relay(settings: Settings) -> Iterator["Outbox"]:
    """A local SMTP server standing in for the mail relay, wired into the settings."""
    from aiosmtpd.controller import Controller

    from tests.channels.email.test_email import Outbox
    from tests.web.conftest import free_port

    box, port = Outbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    settings.mail_smtp_host, settings.mail_smtp_port = "127.0.0.1", port
    settings.mail_smtp_security = "none"
    yield box
    controller.stop()
