"""Workspaces: the tenants. Every row of every other table belongs to exactly one."""

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
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
    # Counted up at each change, and when it was made: the SLA clocks timed under an earlier
    # version are timed anew (``sla.set_calendar``), a due time before ``changed_at`` kept.
    version: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime | None] = mapped_column(default=None)


class SavedView(Base):
    """A page's filters saved under a name (``saved_views.canonical`` form), listed in its
    sidebar: the workspace's, shared with every member (``owner_id`` NULL), or one
    member's own. Names are unique, whatever their case, among the workspace's shared
    views of a page and among each member's own (``saved_views._refuse_taken_name``)."""

    __tablename__ = "saved_views"
    __table_args__ = (Index("ix_saved_views_ws_page_owner", "workspace_id", "page", "owner_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # "inbox" or "customers": the page whose query string it is
    page: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(80))
    # The canonical query string, without "?"; "" is the page as it opens.
    query: Mapped[str] = mapped_column(Text, default="")
    # NULL: shared with the whole workspace; else the member whose own it is (it goes
    # with their account).
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    # Order in the sidebar, then by name.
    position: Mapped[int] = mapped_column(Integer, default=0)
    # A shared view outlives its author.
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
