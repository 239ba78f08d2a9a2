"""Knowledge base API shapes."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from rapport.kb.models import ArticleStatus


class HelpCenterIn(BaseModel):
    """What to set up or change; fields left out (or null) stay as they are."""

    slug: str | None = Field(default=None, max_length=64, examples=["acme"])
    title: str | None = Field(default=None, max_length=200)
    intro: str | None = Field(default=None, max_length=500)
    default_locale: str | None = Field(default=None, max_length=16)
    enabled: bool | None = None


class HelpCenterRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    title: str
    intro: str
    default_locale: str
    enabled: bool
    url: str = ""


class CollectionIn(BaseModel):
    """A new collection, or what to change of one; fields left out (or null) stay as they are."""

    title: str | None = Field(default=None, max_length=200)
    slug: str | None = Field(default=None, max_length=120)
    description: str | None = Field(default=None, max_length=500)
    locale: str | None = Field(default=None, max_length=16)
    position: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)


class CollectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    slug: str
    description: str
    locale: str
    position: int
    created_at: datetime


class ArticleIn(BaseModel):
    """A new article, or what to change of one; fields left out (or null) stay as they are."""

    title: str | None = Field(default=None, max_length=300)
    slug: str | None = Field(default=None, max_length=160)
    description: str | None = Field(default=None, max_length=500)
    body: str | None = Field(default=None, max_length=200_000, description="Markdown")
    locale: str | None = Field(default=None, max_length=16)
    collection_id: str | None = Field(
        default=None, max_length=32, description='"" for none (null keeps the collection)'
    )
    position: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    translation_of: str | None = Field(
        default=None, max_length=32, description="the id of the article this translates"
    )


class ArticleDraftIn(BaseModel):
    """An article's content saved as a draft; a field left out (or null) keeps its value."""

    title: str | None = Field(default=None, max_length=300)
    slug: str | None = Field(default=None, max_length=160)
    description: str | None = Field(default=None, max_length=500)
    body: str | None = Field(default=None, max_length=200_000, description="Markdown")
    collection_id: str | None = Field(
        default=None, max_length=32, description='"" for none (null keeps the collection)'
    )


class ArticleDraftRead(BaseModel):
    """A published article's unpublished changes, seen by members only."""

    model_config = ConfigDict(from_attributes=True)

    collection_id: str | None
    slug: str
    title: str
    description: str
    body: str
    html: str
    author_id: str | None
    created_at: datetime
    updated_at: datetime


class ArticleRead(BaseModel):
    """An article as it is live (or, unpublished, as it stands) and, for a published
    article with unpublished changes, those changes in ``draft``."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    group_id: str
    collection_id: str | None
    locale: str
    slug: str
    title: str
    description: str
    body: str
    html: str
    status: ArticleStatus
    author_id: str | None
    views: int
    helpful: int
    not_helpful: int
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    draft: ArticleDraftRead | None = None


class ArticlePage(BaseModel):
    items: list[ArticleRead]
    next_cursor: str | None


class ArticleHitRead(BaseModel):
    article_id: str
    title: str
    url: str
    excerpt: str
    score: float
    confidence: float
    lexical: float
    semantic: float | None
