"""Automation rules, macros and outgoing webhooks, with the log of every webhook delivery."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Rule(Base):
    """When ``event`` happens and every condition holds, run the actions in order."""

    __tablename__ = "automation_rules"
    __table_args__ = (Index("ix_automation_rules_ws_event", "workspace_id", "event", "position"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(64))
    # [{"field": "message.text", "op": "contains", "value": "refund"}, ...]: all must hold.
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    # [{"type": "add_label", "value": "billing"}, ...]
    actions: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Later rules are not run for this event once this one matched.
    stop_processing: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Why its actions last failed to run (a template error), and when; cleared when they run.
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_error_at: Mapped[datetime | None] = mapped_column(default=None)


class Macro(Base):
    """A named, ordered list of actions (automation's, see ``service.MACRO_ACTIONS``) that an
    agent runs by hand on one conversation or many: the workspace's, which every member
    sees and runs, or one member's own (``personal``)."""

    __tablename__ = "macros"
    # Listed by name; a name is unique among the workspace's macros and among each member's
    # own (service._refuse_taken_name).
    __table_args__ = (Index("ix_macros_ws_name", "workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    # [{"type": "assign_agent", "value": "me"}, {"type": "add_label", "value": "refund"}, ...]
    actions: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    # "workspace" or "personal" (seen and run by ``created_by`` alone)
    visibility: Mapped[str] = mapped_column(String(16), default="workspace")
    # Whose personal macro it is; a workspace macro outlives its author leaving.
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    """An outside URL that receives chosen events, signed with its own secret."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    # Event types delivered to it as they happen (automation.service.publish_to_webhooks);
    # empty means it is only called by automation actions.
    events: Mapped[list[str]] = mapped_column(default=list)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_hook_time", "webhook_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pending / delivered / failed / cancelled (what it named was erased before it was sent)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
