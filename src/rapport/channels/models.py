"""Inboxes: one configured channel instance each, provider secrets encrypted at rest."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Inbox(Base):
    __tablename__ = "inboxes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    # Non-secret settings, shown to admins as they are.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Fernet token of a JSON object with the provider's credentials (rapport.crypto).
    secrets_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    # Public handle for widgets and webhook URLs that must not reveal the id.
    public_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_id)
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), default=None
    )
    auto_assign: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UnparsedPayload(Base):
    """A provider's webhook call we could not read: kept whole and flagged, for
    ``channels.service.UNPARSED_KEPT_DAYS`` (it may hold a customer's message and number)."""

    __tablename__ = "unparsed_payloads"
    # The daily prune finds the expired ones by time.
    __table_args__ = (Index("ix_unparsed_payloads_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
