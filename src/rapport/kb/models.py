"""The knowledge base: collections of articles, per locale, and the public help center."""

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class HelpCenter(Base):
    """A workspace's public help center: where it lives and how it greets readers."""

    __tablename__ = "help_centers"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    # The public address: /help/{slug}/
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="Help center")
    intro: Mapped[str] = mapped_column(String(500), default="")
    default_locale: Mapped[str] = mapped_column(String(16), default="en")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Collection(Base):
    __tablename__ = "kb_collections"
    __table_args__ = (UniqueConstraint("workspace_id", "locale", "slug"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    locale: Mapped[str] = mapped_column(String(16), default="en")
    slug: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500), default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArticleStatus(enum.StrEnum):
    draft = "draft"
    published = "published"


class Article(Base):
    """One article in one locale. Translations of an article share its ``group_id``."""

    __tablename__ = "kb_articles"
    __table_args__ = (
        UniqueConstraint("workspace_id", "locale", "slug"),
        Index("ix_kb_articles_ws_status", "workspace_id", "status", "locale"),
        Index("ix_kb_articles_group", "group_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    collection_id: Mapped[str | None] = mapped_column(
        ForeignKey("kb_collections.id", ondelete="SET NULL"), default=None
    )
    group_id: Mapped[str] = mapped_column(String(32), default=new_id)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    slug: Mapped[str] = mapped_column(String(160))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(String(500), default="")
    body: Mapped[str] = mapped_column(Text, default="")  # Markdown, as written
    html: Mapped[str] = mapped_column(Text, default="")  # rendered and sanitized
    status: Mapped[ArticleStatus] = mapped_column(
        Enum(ArticleStatus, native_enum=False, length=16), default=ArticleStatus.draft
    )
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    position: Mapped[int] = mapped_column(Integer, default=0)
    views: Mapped[int] = mapped_column(Integer, default=0)
    helpful: Mapped[int] = mapped_column(Integer, default=0)
    not_helpful: Mapped[int] = mapped_column(Integer, default=0)
    # Sentence embedding (float32) of title and body, when the ``ai`` extra is installed.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ArticleDraft(Base):
    """A published article's unpublished changes: what its editor saved as a draft.

    Kept apart from the article, whose own columns stay the live version that the help
    center, its search and the bot read; publishing copies the draft over them and drops
    it, discarding drops it. At most one per article, and only on a published article (an
    unpublished article is its own draft: changes go straight to it)."""

    __tablename__ = "kb_article_drafts"

    article_id: Mapped[str] = mapped_column(
        ForeignKey("kb_articles.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    collection_id: Mapped[str | None] = mapped_column(
        ForeignKey("kb_collections.id", ondelete="SET NULL"), default=None
    )
    slug: Mapped[str] = mapped_column(String(160))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(String(500), default="")
    body: Mapped[str] = mapped_column(Text, default="")  # Markdown, as written
    html: Mapped[str] = mapped_column(Text, default="")  # rendered and sanitized
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ArticleFeedback(Base):
    """One reader's "was this helpful?"; one vote per reader per article."""

    __tablename__ = "kb_feedback"
    __table_args__ = (UniqueConstraint("article_id", "reader"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    article_id: Mapped[str] = mapped_column(ForeignKey("kb_articles.id", ondelete="CASCADE"))
    # A keyed hash of the reader's address and browser: counts votes, identifies nobody.
    reader: Mapped[str] = mapped_column(String(64))
    helpful: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
