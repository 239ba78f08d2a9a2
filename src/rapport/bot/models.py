"""The bot: intents with their examples, HTTP integrations, and its state per conversation."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Intent(Base):
    """Something customers ask for, and how the bot answers it."""

    __tablename__ = "bot_intents"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    # A sandboxed template: {{ customer.first_name }}, and {{ data.* }} from an integration.
    reply: Mapped[str] = mapped_column(Text, default="")
    integration_id: Mapped[str | None] = mapped_column(
        ForeignKey("bot_integrations.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IntentExample(Base):
    __tablename__ = "bot_intent_examples"
    __table_args__ = (
        Index("ix_bot_examples_intent", "intent_id"),
        # An erasure deletes the phrasings taught from the person's messages: found by
        # them, not by reading every phrasing. Most were typed, and name no message.
        Index(
            "ix_bot_examples_message",
            "message_id",
            sqlite_where=text("message_id IS NOT NULL"),
            postgresql_where=text("message_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    intent_id: Mapped[str] = mapped_column(ForeignKey("bot_intents.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(1000))
    # manual, or the conversation message an agent labelled
    message_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Integration(Base):
    """An HTTP service an intent calls (an order-status endpoint...), signed with a secret."""

    __tablename__ = "bot_integrations"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    # Sandboxed template of the URL: {{ customer.email }}, {{ customer.phone }},
    # {{ customer.id }}, {{ customer.attributes.* }}, {{ order_number }} (digits in the message).
    url: Mapped[str] = mapped_column(String(1000))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BotConversation(Base):
    """What the bot did in one conversation: whether it handed over, and its misses."""

    __tablename__ = "bot_conversations"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    handed_over_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the bot took the conversation: its first customer message, or the moment it was
    # resolved (the customer's next message is the bot's again). An agent assigned before
    # then belongs to an earlier round and does not silence the bot.
    held_since: Mapped[datetime | None] = mapped_column(default=None)
    # What the customer asked and what the bot tried, for the hand-over note.
    log: Mapped[list[dict[str, Any]]] = mapped_column(default=list)


class UnansweredQuestion(Base):
    """A question the bot could not answer: work for the knowledge-base team."""

    __tablename__ = "bot_unanswered"
    __table_args__ = (
        Index("ix_bot_unanswered_ws", "workspace_id", "created_at"),
        # A conversation deleted (an erasure) deletes its questions: found by it.
        Index("ix_bot_unanswered_conversation", "conversation_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(2000))
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IntentModelBlob(Base):
    """The workspace's trained intent classifier."""

    __tablename__ = "bot_intent_models"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[bytes] = mapped_column(LargeBinary)
    examples: Mapped[int] = mapped_column(Integer, default=0)
    trained_at: Mapped[datetime] = mapped_column(default=utcnow)
