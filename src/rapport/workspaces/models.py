"""Workspaces: the tenants. Every row of every other table belongs to exactly one."""

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Workspace-wide policies: require_2fa, reopen_window_hours, default_region.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def require_2fa(self) -> bool:
        return bool(self.settings.get("require_2fa", False))

    @property
    def default_region(self) -> str:
        return str(self.settings.get("default_region", "US"))


class BusinessCalendar(Base):
    """Opening hours in the workspace's time zone, and its holidays; SLA clocks run inside."""

    __tablename__ = "business_calendars"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # {"mon": [["09:00", "17:00"]], ...}; a missing day is closed.
    hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # ISO dates (local) on which the business is closed.
    holidays: Mapped[list[str]] = mapped_column(default=list)
