"""The outbox of realtime events: written in the transaction that caused them.

Its increasing id is the event id clients resume from after a reconnect.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, utcnow


class StreamEvent(Base):
    __tablename__ = "stream_events"
    __table_args__ = (
        Index("ix_stream_events_ws_id", "workspace_id", "id"),
        # Where a time begins in the outbox: pruning's edge, an erasure's first event.
        Index("ix_stream_events_created_at", "created_at"),
    )

    # BIGINT identity on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    workspace_id: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
