"""Database frame: engine, sessions, the declarative base and after-commit hooks."""

import hashlib
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import orjson
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StringConstraints
from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    MetaData,
    Select,
    SQLColumnExpression,
    create_engine,
    event,
    make_url,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, configure_mappers, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from rapport.config import sqlalchemy_url


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only kind Rapport stores)."""
    return datetime.now(UTC)


_last_stamp = 0  # the time part (milliseconds and 4096ths of one) of the last id made here
_stamp_lock = threading.Lock()


def new_id() -> str:
    """A new primary key: a UUIDv7 (RFC 9562) as 32 hex digits.

    Opaque, so ids never leak counts, and with 62 random bits never guessable; its leading
    48 bits are the creation time in milliseconds, so new rows land at the right edge of
    every primary-key index instead of on a random page of it (far fewer pages written per
    commit on a large table). The next 12 bits are the fraction of the millisecond, and
    never go back within a process (RFC 9562 section 6.2, method 3): ids made one after the
    other sort in that order, so rows of one instant (a batch's events stamped with one
    clock reading) list as they were received, not as their random bits fell."""
    global _last_stamp
    ns = time.time_ns()
    stamp = (ns // 1_000_000) << 12 | (ns % 1_000_000) * 4096 // 1_000_000
    with _stamp_lock:
        stamp = _last_stamp = max(stamp, _last_stamp + 1)
    # 48 bits of milliseconds, version 7, 12 bits of fraction, variant 0b10, 62 random bits
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0x2 << 62
    value |= int.from_bytes(os.urandom(8)) >> 2
    return f"{value:032x}"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no zone, so a naive value read back is UTC by construction.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Rapport stores timezone-aware UTC only")
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Any) -> Callable[[datetime | None], Any]:
        """The type's own conversion, remembering its last answer: a batch writes one
        moment into many rows and columns (ingest: ~15 a message), and SQLite's text
        formatting of it costs more than the row's other values together."""
        process = super().bind_processor(dialect)
        assert process is not None
        last: tuple[datetime | None, Any] = (None, None)

        def remembered(value: datetime | None) -> Any:
            nonlocal last
            seen, out = last  # one read: another thread may replace it meanwhile
            if value is seen and value is not None:
                return out
            out = process(value)
            last = (value, out)  # it holds the value: no other object can take its id
            return out

        return remembered

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable), plain JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

naming = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=naming)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[str]: JSONType,
        list[dict[str, Any]]: JSONType,
    }


_mappers_ready = False


def _configure_mappers() -> None:
    # Attributes can be set only on configured mappers; the first construction may come
    # before anything else asked SQLAlchemy to configure them.
    global _mappers_ready
    configure_mappers()
    _mappers_ready = True


@event.listens_for(Base, "init", propagate=True)
def _eager_defaults(target: Any, args: Any, kwargs: dict[str, Any]) -> None:
    # Python-side defaults apply at construction, not at flush: ids are known at once (so
    # related rows can point at an unflushed parent) and enums are never None in memory.
    if not _mappers_ready:
        _configure_mappers()
    for column in target.__table__.columns:
        default = column.default
        if default is None or column.key in kwargs or not hasattr(default, "arg"):
            continue
        if default.is_scalar:
            setattr(target, column.key, default.arg)
        elif default.is_callable:
            setattr(target, column.key, default.arg(None))


def _sqlite_on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    assert isinstance(dbapi_conn, sqlite3.Connection)
    # Take transaction control away from pysqlite so SAVEPOINT and BEGIN IMMEDIATE work.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # A commit is on disk before anyone is told it happened: an inbound message answered
    # 201 survives a power cut (NORMAL could lose the last commits; bench/ingest.py could
    # not tell the two apart through this machine's run-to-run noise).
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


SQLITE_BUSY_SECONDS = 10


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> Engine:
    """An engine for a plain Rapport database URL (``sqlite:///path`` or ``postgresql://``)."""
    full = sqlalchemy_url(url)
    if full.startswith("sqlite"):
        parsed = make_url(full)
        path = parsed.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # How long a write waits for SQLite's one write lock before it gives up (and its
        # client gets 503 with Retry-After): ``?timeout=SECONDS`` on the URL, else 10.
        waits = {} if "timeout" in parsed.query else {"timeout": SQLITE_BUSY_SECONDS}
        engine = create_engine(
            full,
            pool_size=pool_size,
            max_overflow=20,
            connect_args={"check_same_thread": False, **waits},
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
        )
        event.listen(engine, "connect", _sqlite_on_connect)

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the lock up front: a deferred transaction that reads and then
            # writes fails at once (SQLITE_BUSY_SNAPSHOT) when another writer got in between.
            mode = "IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    engine = create_engine(
        full,
        pool_size=pool_size,
        max_overflow=20,
        pool_pre_ping=pre_ping,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        # No JIT compilation: Rapport's queries are short, and PostgreSQL compiles any
        # whose estimated cost passes jit_above_cost, which a search over a large table's
        # full-text index always does: ~120 ms of compiling for a 30 ms query (10,000,000
        # messages). A URL's own ``options`` win.
        connect_args={} if "options" in make_url(full).query else {"options": "-c jit=off"},
    )
    event.listen(engine, "before_cursor_execute", _without_nul_params, retval=True)
    return engine


def unindexed(column: SQLColumnExpression[str | None]) -> ColumnElement[str]:
    """``column`` as no index can serve it (``column || ''``): for a condition that only
    keeps a query within its workspace while another, narrower one finds its rows (the ids
    of one person). SQLite keeps no statistics here, so its planner rates an equality on
    the workspace as selective as an IN list of two ids, and took the workspace's index:
    every row the workspace has was read to find one person's."""
    return cast(ColumnElement[str], column.concat(""))


def without_nul(text: str) -> str:
    """``text`` with each NUL character replaced by U+FFFD, as PostgreSQL can store it."""
    return text.replace("\x00", "\ufffd")


def _nul_in(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return "\x00" in value
    return (kind is list or kind is tuple) and any(_nul_in(v) for v in value)


def _cleaned(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return without_nul(value)
    if kind is list or kind is tuple:
        return kind(_cleaned(v) for v in value)
    return value


def _has_nul(params: Any) -> bool:
    return any(_nul_in(v) for v in (params.values() if isinstance(params, dict) else params))


def _scrubbed(params: Any) -> Any:
    if isinstance(params, dict):
        return {k: _cleaned(v) for k, v in params.items()}
    return _cleaned(params)


def _without_nul_params(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    # PostgreSQL refuses a NUL in text ("cannot contain NUL (0x00) bytes"). The API refuses
    # it up front (rapport.guard); what a provider, a mail or a remote server sent is kept,
    # with U+FFFD in its place, rather than failing its whole transaction.
    if executemany:
        if any(_has_nul(p) for p in parameters):
            parameters = [_scrubbed(p) for p in parameters]
    elif parameters and _has_nul(parameters):
        parameters = _scrubbed(parameters)
    return statement, parameters


# The JSON escape of NUL, not itself escaped, with the backslash pairs before it.
JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_dumps(value: Any) -> str:
    # orjson: several times faster than json on the ingest path (message meta, job args,
    # event payloads), and it writes datetimes as ISO 8601. PostgreSQL's JSON types refuse
    # the escape \u0000: replaced by U+FFFD's, on both databases alike.
    out = orjson.dumps(value, default=_subclassed).decode()
    if "\\u0000" in out:
        out = JSON_NUL.sub(r"\1\\ufffd", out)
    return out


def _subclassed(value: Any) -> float:
    """A float of a subclass (money.Exact, an order total that keeps its text), which
    orjson writes only as a plain one; TypeError for any other type, as orjson raises."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _finite(value: Any) -> bool:
    """Whether no float in ``value`` (a dict or list, however nested) is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def storable(value: Any) -> Any:
    """``value`` if the database can keep it; else ``ValueError`` naming why (JSON text can
    carry what orjson refuses: an integer beyond 64 bits, a lone surrogate; and NaN or
    Infinity, which Python's JSON reads and orjson writes as null)."""
    try:
        out = _json_dumps(value)
    except TypeError as exc:  # orjson's depth limit also bounds _finite's recursion
        raise ValueError(f"cannot be stored: {exc}") from exc
    # Non-finite floats are written as null: with no null written, there is none to find.
    if "null" in out and not _finite(value):
        raise ValueError("cannot be stored: NaN and Infinity are not JSON numbers")
    return value


# Free-form JSON a client sends (attributes, settings, properties): checked as it comes in.
JsonObject = Annotated[dict[str, Any], AfterValidator(storable)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# What a client names something (an inbox, a team, a policy): trimmed, never blank (a name
# of spaces showed as nothing where it was listed). ``Field(max_length=...)`` bounds it.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
# Text that must say something (a canned response), kept as written, line breaks and all.
SomeText = Annotated[str, AfterValidator(_not_blank)]


def transient(exc: BaseException) -> bool:
    """Whether a database error would likely pass if its transaction ran again: a deadlock
    or a serialization failure (PostgreSQL), a lock not had in time (both)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in ("40P01", "40001", "55P03"):
        return True
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


def as_utc(value: datetime) -> datetime:
    """``value`` (aware) in UTC; ``ValueError`` when it has none (0001-01-01T00:00+05:00)."""
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range once converted to UTC") from exc


# A moment a client sends: with its offset (a naive time means nothing stored in UTC).
UtcInstant = Annotated[AwareDatetime, AfterValidator(as_utc)]


def _given(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be null: leave it out to keep it as it is")
    return value


def _not_nullable(schema: dict[str, Any]) -> None:
    """The field's document without the null its Python type allows and its default."""
    kinds = [kind for kind in schema.pop("anyOf", []) if kind.get("type") != "null"]
    if len(kinds) == 1:
        schema.update(kinds[0])
    elif kinds:
        schema["anyOf"] = kinds
    schema.pop("default", None)


_Kept = TypeVar("_Kept")
# A field of a change (a PATCH) that may be left out, which keeps its value, but is never
# null: the document said null was fine and the service then refused it (or null would
# mean nothing). Declared ``Omittable[str] = Field(default=None, ...)``.
Omittable = Annotated[_Kept | None, BeforeValidator(_given), Field(json_schema_extra=_not_nullable)]


class Database:
    """One database: the engine plus a session factory for reads and one for writes."""

    def __init__(self, url: str, *, pool_size: int = 10, pre_ping: bool = True) -> None:
        """``pre_ping`` (PostgreSQL): a round trip before each checkout proves the connection
        alive; a caller that retries on a dropped connection can do without it."""
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, pre_ping=pre_ping)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        write_bind = self.engine.execution_options(sqlite_write=True)
        self.read_session = sessionmaker(self.engine, expire_on_commit=False)
        self.write_session = sessionmaker(write_bind, expire_on_commit=False)

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        factory = self.write_session if write else self.read_session
        with factory() as db:
            try:
                yield db
                db.commit()
            except BaseException:
                db.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


class WalCheckpointer:
    """Moves SQLite's WAL back into the database file from a thread of its own.

    By default the connection whose commit pushes the WAL past 1,000 pages does the
    checkpoint itself, inside that commit, with an fsync of the database file; on the ingest
    writer that stalls every sender of the batch. The writer turns that off for its own
    connection (``PRAGMA wal_autocheckpoint=0``) and this thread checkpoints instead, in
    PASSIVE mode, which never blocks a reader or a writer. Other connections keep the
    default, so the WAL stays bounded even if this thread stopped.

    A passive checkpoint alone never lets the WAL start over while the writer commits
    without pause: the log only rewinds when a write begins with every frame copied back,
    and new frames arrive while the copying runs. The WAL then grows by every page every
    commit writes (over a gigabyte a minute under load), and appending to an ever larger
    file costs the writer several times what rewriting the same pages does. So once the
    passive round has copied most of it, the thread finishes the job in RESTART mode
    between two of the writer's transactions (the writer holds ``lock`` around each): only
    the frames written meanwhile are left to copy, and the next commit writes from the
    start of the log again.
    """

    def __init__(self, path: str, *, interval: float = 0.25, restart_frames: int = 2000) -> None:
        self.path = path
        self.interval = interval
        self.restart_frames = restart_frames
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="rapport-wal-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(5)

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One round: copy the WAL back; rewind it once it has grown past
        ``restart_frames``."""
        try:
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames >= self.restart_frames:
                with self.lock:
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error:  # busy or locked: the next round catches up
            pass

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # RESTART waits for the other writers and for readers of older snapshots while
            # it holds the write lock (and ``lock``): a long read must not stall every write,
            # so it gives up soon and the next round tries again.
            conn.execute("PRAGMA busy_timeout=20")
            while not self._stop.wait(self.interval):
                self.checkpoint(conn)
        finally:
            conn.close()


def sqlite_path(engine: Engine) -> str | None:
    """The file of a file-backed SQLite engine, else ``None``."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return path if path and path != ":memory:" and not path.startswith("file:") else None


# after-commit hooks ---------------------------------------------------------------------

_HOOKS = "rapport_after_commit"


def on_commit(db: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the session's current transaction has committed; drop it on rollback."""
    db.info.setdefault(_HOOKS, []).append(fn)


def commit_hooks(db: Session) -> list[Callable[[], None]]:
    """The hooks the session's transaction holds so far, in order (a savepoint rolled
    back has taken its own away): what will run if it commits."""
    return list(db.info.get(_HOOKS, ()))


@event.listens_for(Session, "after_commit")
def _run_after_commit(db: Session) -> None:
    if db.in_nested_transaction():
        # A savepoint released (SQLAlchemy signals that as a commit too): nothing is
        # committed yet, and the transaction may still roll back.
        return
    hooks: list[Callable[[], None]] = db.info.pop(_HOOKS, [])
    for fn in hooks:
        fn()


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(db: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        db.info.pop(_HOOKS, None)


def drain(database: "Database", step: Callable[[Session], int], *, chunk: int) -> None:
    """Run ``step`` (which deletes up to ``chunk`` rows and says how many), a transaction
    each, until one deletes fewer: a big prune never holds a write lock for long."""
    while True:
        with database.session() as db:
            if step(db) < chunk:
                return


def only_one(db: Session, name: str) -> bool:
    """Whether this transaction is the only one doing ``name`` now: on PostgreSQL a lock of
    that name held until the transaction ends, taken if free (False: another has it, and
    does the work); SQLite's write transactions run one at a time anyway (BEGIN IMMEDIATE)."""
    if db.get_bind().dialect.name == "sqlite":
        return True
    return bool(db.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _lock_key(name)}))


def one_at_a_time(db: Session, name: str) -> None:
    """Wait until no other transaction holds ``name``, then hold it until this one ends:
    two that look for a row and write it if absent run one after the other, the second
    seeing what the first committed. On PostgreSQL a lock of that name (``only_one``'s,
    waited for); SQLite's write transactions run one at a time anyway (BEGIN IMMEDIATE).
    Take it before any row lock: one name a transaction, nothing waits in a circle
    through it."""
    if db.get_bind().dialect.name == "sqlite":
        return
    db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})


def _lock_key(name: str) -> int:
    """PostgreSQL's advisory lock key of a name: a signed 64-bit digest of it (with the
    32-bit one ``only_one`` took before, ~77,000 names gave even odds of two sharing one)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_row(db: Session, model: Any, row_id: str) -> None:
    """Hold one row until the transaction ends, so that work which replaces what hangs off
    it (a customer's tags, a team's members, a workspace's models) runs one at a time:
    the second waits, then sees and replaces what the first wrote instead of colliding
    with it on its keys. On PostgreSQL ``FOR NO KEY UPDATE``: rows that name it can still
    be inserted meanwhile. SQLite has one writer anyway (and no such clause)."""
    db.execute(select(model.id).where(model.id == row_id).with_for_update(key_share=True))


# The rows of each table ``hold`` took in the session's transaction (by table name).
_HELD = "rapport_held"
# The tables whose rows ``hold`` takes in one order across a transaction: customers, which
# a merge and its undo take two at a time, and every writer to a person follows merges to
# (an events batch reaches several). Others are taken in order within one call.
IN_ONE_ORDER = frozenset({"customers"})
# How often, and how far apart, a row out of order is tried before the transaction gives up.
OUT_OF_ORDER_TRIES = 5
OUT_OF_ORDER_PAUSE = 0.05


def hold(db: Session, model: Any, *row_ids: str) -> None:
    """``lock_row`` for each row, in one order, each read again as it is now: a copy the
    session loaded before may say what another transaction has changed since.

    For the tables of ``IN_ONE_ORDER``, one order across the whole transaction too (ids
    ascending): two transactions holding the same rows never wait on each other in a
    circle. A row sorting before one
    this transaction already holds (a merge's second pair, a customer a batch reaches
    after another, a merge followed to a survivor of a lower id) is taken only while free
    (``NOWAIT``, tried a few times a moment apart, never waiting): one who took the two in
    order may hold it and be waiting for ours, and waiting for it, the two deadlocked, the
    database then failing either (an agent's merge, its undo). Still taken, this
    transaction fails (lock not available, ``transient``: its caller may run it again),
    the other goes on. What the session would write is written once the row is held (a
    customer's last seen time waited for the row, out of order, before it was asked)."""
    if model.__tablename__ not in IN_ONE_ORDER or db.get_bind().dialect.name == "sqlite":
        # SQLite has one writer: nothing waits in a circle there.
        for row_id in sorted(row_ids):
            lock_row(db, model, row_id)
            db.get(model, row_id, populate_existing=True)
        return
    held: set[str] = db.info.setdefault(_HELD, {}).setdefault(model.__tablename__, set())
    for row_id in sorted(row_ids):
        with db.no_autoflush:
            if any(other > row_id for other in held):
                _hold_out_of_order(db, model, row_id)
            else:
                lock_row(db, model, row_id)
        held.add(row_id)
        db.get(model, row_id, populate_existing=True)


def hold_many(db: Session, model: Any, row_ids: Iterable[str]) -> None:
    """``hold`` for many rows, in one statement (ids ascending) while none of them sorts
    before a row of the table this transaction already holds (an import's batch, taking
    its customers first); else row by row through ``hold``, giving way where out of
    order. Not read again: the caller reads what it holds."""
    ids = sorted(set(row_ids))
    if not ids:
        return
    one_order = model.__tablename__ in IN_ONE_ORDER and db.get_bind().dialect.name != "sqlite"
    held: set[str] = (
        db.info.setdefault(_HELD, {}).setdefault(model.__tablename__, set()) if one_order else set()
    )
    if any(other > ids[0] for other in held):
        hold(db, model, *ids)
        return
    db.execute(_in_order(model, ids))
    held.update(ids)


def lock_in_order(conn: Connection, model: Any, row_ids: Iterable[str]) -> None:
    """``hold_many`` for a transaction on a bare connection (ingest's batch), which keeps no
    record of what it holds: the rows, ids ascending, in one statement. Nothing on SQLite,
    which has one writer."""
    if conn.dialect.name != "sqlite" and (ids := sorted(set(row_ids))):
        conn.execute(_in_order(model, ids))


def _in_order(model: Any, ids: list[str]) -> Select[Any]:
    return (
        select(model.id)
        .where(model.id.in_(ids))
        .order_by(model.id)  # PostgreSQL locks the rows as it returns them: sorted
        .with_for_update(key_share=True)
    )


def _hold_out_of_order(db: Session, model: Any, row_id: str) -> None:
    query = select(model.id).where(model.id == row_id).with_for_update(key_share=True, nowait=True)
    # The connection's own savepoint (the refusal would end the whole transaction on
    # PostgreSQL), not the session's: that would first write what the session holds, the
    # customer's row among it, waiting for it out of order.
    conn = db.connection()
    for attempt in range(1, OUT_OF_ORDER_TRIES + 1):
        nested = conn.begin_nested()
        try:
            conn.execute(query)
        except OperationalError as exc:
            nested.rollback()
            if attempt == OUT_OF_ORDER_TRIES or not transient(exc):
                raise
            time.sleep(OUT_OF_ORDER_PAUSE)  # waiting on no lock: no circle through us
        else:
            nested.commit()
            return


@event.listens_for(Session, "after_transaction_end")
def _forget_held(db: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the transaction, committed or not: its locks are gone
        db.info.pop(_HELD, None)


@contextmanager
def savepoint(db: Session) -> Iterator[None]:
    """A nested transaction whose after-commit hooks are dropped if it rolls back."""
    hooks: list[Callable[[], None]] = db.info.setdefault(_HOOKS, [])
    mark = len(hooks)
    nested = db.begin_nested()
    try:
        yield
        nested.commit()
    except BaseException:
        nested.rollback()
        del db.info.setdefault(_HOOKS, [])[mark:]
        raise
