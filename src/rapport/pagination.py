"""Opaque keyset cursors: stable under inserts, constant cost at any depth."""

import base64
from datetime import datetime
from typing import Any

import orjson

from rapport.db import as_utc
from rapport.problems import Invalid


def encode(at: datetime, id_: str) -> str:
    raw = orjson.dumps([at.isoformat(), id_])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, id_ = orjson.loads(base64.urlsafe_b64decode(padded))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive")
        value: tuple[datetime, str] = (as_utc(when), str(id_))
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise Invalid("the cursor is not one this API returned") from exc
    return value


def clamp(limit: int, *, maximum: int = 100) -> int:
    return max(1, min(limit, maximum))


def page_of(rows: list[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """Split ``limit + 1`` fetched rows into a page and the cursor of the next one."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    at, id_ = key(rows[-1])
    return rows, encode(at, id_)
