"""Realtime events: written to the outbox in the caller's transaction, published on commit."""

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rapport.bus import get_bus
from rapport.db import on_commit, utcnow
from rapport.realtime.models import StreamEvent


def emit(db: Session, *, workspace_id: str, type: str, payload: dict[str, Any]) -> StreamEvent:
    """Record an event in this transaction; the bus publishes it once the transaction commits."""
    event = StreamEvent(workspace_id=workspace_id, type=type, payload=payload)
    db.add(event)

    def publish() -> None:
        get_bus().publish(as_dict(event))

    on_commit(db, publish)
    return event


def as_dict(event: StreamEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "workspace_id": event.workspace_id,
        "type": event.type,
        "payload": event.payload,
        "created_at": (event.created_at or utcnow()).isoformat(),
    }


def since(db: Session, *, workspace_id: str, after_id: int, limit: int = 1000) -> list[StreamEvent]:
    """The workspace's events after ``after_id``, oldest first."""
    rows = db.scalars(
        select(StreamEvent)
        .where(StreamEvent.workspace_id == workspace_id, StreamEvent.id > after_id)
        .order_by(StreamEvent.id)
        .limit(limit)
    )
    return list(rows)


def latest_id(db: Session, *, workspace_id: str) -> int:
    """The id of the newest event of a workspace (0 when none)."""
    value = db.scalar(
        select(StreamEvent.id)
        .where(StreamEvent.workspace_id == workspace_id)
        .order_by(StreamEvent.id.desc())
        .limit(1)
    )
    return int(value or 0)


def prune(db: Session, *, older_than_days: int = 7) -> int:
    """Delete outbox rows older than a reconnecting client could still ask for."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(days=older_than_days)
    result = db.execute(delete(StreamEvent).where(StreamEvent.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
