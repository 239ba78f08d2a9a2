"""Inboxes: one configured channel instance each, provider secrets encrypted at rest."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
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
    __table_args__ = (
        # The daily prune finds the expired ones by time.
        Index("ix_unparsed_payloads_created_at", "created_at"),
        # An inbox's health counts its own of the last day (``channels.health``); written
        # only when a call could not be read, never on the way of one that could.
        Index("ix_unparsed_payloads_inbox_created", "inbox_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboxHealth(Base):
    """What the paths that fail recorded of an inbox (``channels.health``): one row an
    inbox, written by a send's outcome and a mailbox's poll, never by a message coming in.
    Error texts are kept without addresses or numbers (``health.plain``)."""

    __tablename__ = "inbox_health"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    # The last send the provider took, to the minute (written at most once a minute).
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    # The last reply that failed (at its send, or by the provider's later report), and why.
    failed_at: Mapped[datetime | None] = mapped_column(default=None)
    failure: Mapped[str | None] = mapped_column(Text, default=None)
    # Replies refused at their send since the last that went out; and whether the last
    # refusal was of the inbox's own credentials (``DeliveryError.account``).
    failures_in_row: Mapped[int] = mapped_column(Integer, default=0)
    account_refused: Mapped[bool] = mapped_column(Boolean, default=False)
    # Failed replies by the hour they failed in ("2026-12-07T14": 3), the last day's only.
    failures: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # A polled mailbox (IMAP): when it was last reached (to five minutes), when a poll last
    # failed and why, since when the polls fail (None while they work), and whether the
    # server refused the login.
    polled_at: Mapped[datetime | None] = mapped_column(default=None)
    poll_failed_at: Mapped[datetime | None] = mapped_column(default=None)
    poll_error: Mapped[str | None] = mapped_column(Text, default=None)
    poll_failing_since: Mapped[datetime | None] = mapped_column(default=None)
    login_refused: Mapped[bool] = mapped_column(Boolean, default=False)
