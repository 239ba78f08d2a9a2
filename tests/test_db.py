"""The database frame's own types."""

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Column, MetaData, String, Table, insert, select

from rapport.db import Database, UTCDateTime


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
