"""Knowledge base API shapes."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from rapport.kb.models import ArticleStatus


class HelpCenterRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    slug: str
    title: str
    default_locale: str
    url: str = ""


class HelpCenterUpdate(BaseModel):
    slug: str | None = Field(default=None, max_length=64)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    default_locale: str | None = Field(default=None, max_length=16)


class CollectionCreate(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=120)
    description: str = Field(default="", max_length=2000)
    position: int = 0
    locale: str | None = Field(default=None, max_length=16)


class CollectionUpdate(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(default=None, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    position: int | None = None
    locale: str | None = Field(default=None, max_length=16)


class CollectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    slug: str
    title: str
    description: str
    position: int
    locale: str
    created_at: datetime
    updated_at: datetime


class ArticleCreate(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    body_markdown: str = Field(default="", max_length=200_000)
    collection_id: str | None = None
    locale: str | None = Field(default=None, max_length=16)
    slug: str | None = Field(default=None, max_length=120)
    # The id of an article this one translates: both then share a group.
    translation_of: str | None = None


class ArticleUpdate(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    body_markdown: str | None = Field(default=None, max_length=200_000)
    collection_id: str | None = None
    slug: str | None = Field(default=None, max_length=120)


class ArticleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    group_id: str
    collection_id: str | None
    locale: str
    slug: str
    title: str
    body_markdown: str
    body_html: str
    status: ArticleStatus
    author_id: str | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    view_count: int
    helpful_count: int
    not_helpful_count: int
    public_url: str = ""


class ArticlePage(BaseModel):
    items: list[ArticleRead]
    next_cursor: str | None


class PreviewIn(BaseModel):
    body_markdown: str = Field(max_length=200_000)


class PreviewOut(BaseModel):
    body_html: str


class SearchHitRead(BaseModel):
    article_id: str
    title: str
    locale: str
    score: float
    excerpt: str
    url: str
