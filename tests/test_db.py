"""The database frame's own types."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select

from rapport.db import Database, UTCDateTime, new_id


def test_timestamps_round_trip_as_utc_whatever_was_bound_before(database: Database) -> None:
    # One moment is bound into many rows and columns at once (ingest), and the type
    # remembers its last conversion: an equal moment in another zone, a later one, None
    # and the first again must each be stored as themselves.
    meta = MetaData()
    table = Table(
        "moments_test",
        meta,
        Column("k", String(10), primary_key=True),
        Column("at", UTCDateTime()),
    )
    meta.create_all(database.engine)
    try:
        first = datetime(2026, 12, 3, 8, 30, 15, 123456, tzinfo=UTC)
        same_elsewhere = first.astimezone(timezone(timedelta(hours=5, minutes=30)))
        later = first + timedelta(microseconds=1)
        rows = [
            {"k": "a", "at": first},
            {"k": "b", "at": first},
            {"k": "c", "at": same_elsewhere},
            {"k": "d", "at": later},
            {"k": "e", "at": None},
            {"k": "f", "at": first},
        ]
        with database.engine.begin() as conn:
            conn.execute(insert(table), rows)
            got = dict(conn.execute(select(table.c.k, table.c.at)).all())
        assert got == {"a": first, "b": first, "c": first, "d": later, "e": None, "f": first}
        assert all(v is None or v.tzinfo is not None for v in got.values())
    finally:
        meta.drop_all(database.engine)


def test_a_released_savepoint_runs_no_commit_hook_before_its_transaction_commits(
    database: Database,
) -> None:
    # SQLAlchemy signals after_commit for a savepoint's release too: the hooks (the bus
    # publishing the transaction's events) ran then, and again for nothing at the real
    # commit, so a transaction that rolled back later had its events published all the same.
    from rapport.db import on_commit, savepoint

    ran: list[str] = []
    with pytest.raises(RuntimeError), database.session() as db:
        on_commit(db, lambda: ran.append("before the savepoint"))
        with savepoint(db):
            on_commit(db, lambda: ran.append("inside it"))
        assert ran == []
        raise RuntimeError("the transaction rolls back")
    assert ran == []
    with database.session() as db:
        on_commit(db, lambda: ran.append("before the savepoint"))
        with savepoint(db):
            on_commit(db, lambda: ran.append("inside it"))
        assert ran == []
    assert ran == ["before the savepoint", "inside it"]


def test_ids_made_one_after_another_sort_in_that_order_and_are_uuid7() -> None:
    # Thousands a millisecond: those of one millisecond sorted as their random bits fell.
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}
