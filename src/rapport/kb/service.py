"""Knowledge base state changes: help center settings, collections, articles, feedback."""

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session

from rapport import pagination
from rapport.db import utcnow
from rapport.jobs.service import enqueue
from rapport.kb import render, search
from rapport.kb.models import Article, ArticleFeedback, ArticleStatus, Collection, HelpCenter
from rapport.kb.schemas import (
    ArticleCreate,
    ArticleUpdate,
    CollectionCreate,
    CollectionUpdate,
    HelpCenterUpdate,
)
from rapport.problems import Conflict, Invalid, NotFound
from rapport.workspaces.models import Workspace

# help center --------------------------------------------------------------------------


def help_center(db: Session, *, workspace_id: str) -> HelpCenter:
    """The workspace's help center, created on first use with a slug from its name."""
    row = db.get(HelpCenter, workspace_id)
    if row is not None:
        return row
    ws = db.get(Workspace, workspace_id)
    if ws is None:
        raise NotFound("workspace")
    base = render.slugify(ws.name, fallback="help")[:50]
    slug, n = base, 1
    while db.scalar(select(HelpCenter.workspace_id).where(HelpCenter.slug == slug)):
        n += 1
        slug = f"{base}-{n}"
    row = HelpCenter(workspace_id=workspace_id, slug=slug, title=ws.name, default_locale="en")
    db.add(row)
    db.flush()
    return row


def update_help_center(db: Session, *, workspace_id: str, data: HelpCenterUpdate) -> HelpCenter:
    row = help_center(db, workspace_id=workspace_id)
    if data.slug is not None:
        slug = render.check_slug(data.slug)
        taken = db.scalar(
            select(HelpCenter.workspace_id).where(
                HelpCenter.slug == slug, HelpCenter.workspace_id != workspace_id
            )
        )
        if taken:
            raise Conflict(f"the help center address {slug!r} is taken")
        row.slug = slug
    if data.title is not None:
        row.title = data.title.strip()
    if data.default_locale is not None:
        row.default_locale = render.normalize_locale(data.default_locale)
    db.flush()
    return row


def by_slug(db: Session, slug: str) -> HelpCenter | None:
    return db.scalar(select(HelpCenter).where(HelpCenter.slug == slug.lower()))


# collections --------------------------------------------------------------------------


def collections(db: Session, *, workspace_id: str, locale: str | None = None) -> list[Collection]:
    stmt = select(Collection).where(Collection.workspace_id == workspace_id)
    if locale:
        stmt = stmt.where(Collection.locale == render.normalize_locale(locale))
    return list(db.scalars(stmt.order_by(Collection.position, Collection.title, Collection.id)))


def get_collection(db: Session, *, workspace_id: str, collection_id: str) -> Collection:
    row = db.scalar(
        select(Collection).where(
            Collection.id == collection_id, Collection.workspace_id == workspace_id
        )
    )
    if row is None:
        raise NotFound("collection")
    return row


def _check_collection_slug(
    db: Session, *, workspace_id: str, locale: str, slug: str, own_id: str | None
) -> None:
    other = db.scalar(
        select(Collection.id).where(
            Collection.workspace_id == workspace_id,
            Collection.locale == locale,
            Collection.slug == slug,
        )
    )
    if other and other != own_id:
        raise Conflict(f"a collection with the slug {slug!r} exists in {locale}")


def create_collection(db: Session, *, workspace_id: str, data: CollectionCreate) -> Collection:
    """A new collection; its slug comes from the title unless given."""
    center = help_center(db, workspace_id=workspace_id)
    locale = render.normalize_locale(data.locale) if data.locale else center.default_locale
    row = Collection(
        workspace_id=workspace_id,
        title=data.title.strip(),
        description=data.description.strip(),
        position=data.position,
        locale=locale,
    )
    row.slug = (
        render.check_slug(data.slug)
        if data.slug
        else render.slugify(data.title, fallback=row.id[:8])
    )
    _check_collection_slug(db, workspace_id=workspace_id, locale=locale, slug=row.slug, own_id=None)
    db.add(row)
    db.flush()
    return row


def update_collection(db: Session, *, collection: Collection, data: CollectionUpdate) -> Collection:
    if data.title is not None:
        collection.title = data.title.strip()
    if data.description is not None:
        collection.description = data.description.strip()
    if data.position is not None:
        collection.position = data.position
    if data.locale is not None:
        collection.locale = render.normalize_locale(data.locale)
    if data.slug is not None:
        collection.slug = render.check_slug(data.slug)
    _check_collection_slug(
        db,
        workspace_id=collection.workspace_id,
        locale=collection.locale,
        slug=collection.slug,
        own_id=collection.id,
    )
    collection.updated_at = utcnow()
    db.flush()
    return collection


def delete_collection(db: Session, *, collection: Collection) -> None:
    """Delete a collection; its articles stay, outside any collection."""
    db.execute(
        update(Article)
        .where(Article.collection_id == collection.id)
        .values(collection_id=None)
        .execution_options(synchronize_session=False)
    )
    db.delete(collection)
    db.flush()


# articles -----------------------------------------------------------------------------


def get_article(db: Session, *, workspace_id: str, article_id: str) -> Article:
    row = db.scalar(
        select(Article).where(Article.id == article_id, Article.workspace_id == workspace_id)
    )
    if row is None:
        raise NotFound("article")
    return row


def articles(
    db: Session,
    *,
    workspace_id: str,
    collection_id: str | None = None,
    locale: str | None = None,
    status: ArticleStatus | None = None,
    cursor: str | None = None,
    limit: int = 25,
) -> tuple[list[Article], str | None]:
    """Articles of the workspace, most recently updated first, a page at a time."""
    limit = pagination.clamp(limit)
    stmt = select(Article).where(Article.workspace_id == workspace_id)
    if collection_id:
        stmt = stmt.where(Article.collection_id == collection_id)
    if locale:
        stmt = stmt.where(Article.locale == render.normalize_locale(locale))
    if status:
        stmt = stmt.where(Article.status == status)
    after = pagination.decode(cursor)
    if after:
        stmt = stmt.where(tuple_(Article.updated_at, Article.id) < after)
    rows = list(
        db.scalars(stmt.order_by(Article.updated_at.desc(), Article.id.desc()).limit(limit + 1))
    )
    return pagination.page_of(rows, limit, lambda a: (a.updated_at, a.id))


def translations(db: Session, *, article: Article) -> list[Article]:
    return list(
        db.scalars(
            select(Article)
            .where(Article.workspace_id == article.workspace_id)
            .where(Article.group_id == article.group_id)
            .order_by(Article.locale)
        )
    )


def _unique_article_slug(
    db: Session, *, workspace_id: str, locale: str, slug: str, own_id: str, given: bool
) -> str:
    def taken(candidate: str) -> bool:
        other = db.scalar(
            select(Article.id).where(
                Article.workspace_id == workspace_id,
                Article.locale == locale,
                Article.slug == candidate,
            )
        )
        return bool(other and other != own_id)

    if not taken(slug):
        return slug
    if given:
        raise Conflict(f"an article with the slug {slug!r} exists in {locale}")
    n = 2
    while taken(f"{slug}-{n}"):
        n += 1
    return f"{slug}-{n}"


def _render(db: Session, article: Article) -> None:
    """Render the article; with the ``ai`` extra, queue its embedding for after the commit."""
    article.body_html = render.markdown_to_html(article.body_markdown)
    article.embedding = None
    article.embedding_model = None
    if search.semantic_installed():
        enqueue(
            db,
            name="kb.embed",
            args={"article_id": article.id},
            workspace_id=article.workspace_id,
            max_attempts=3,
        )


def create_article(
    db: Session, *, workspace_id: str, author_id: str | None, data: ArticleCreate
) -> Article:
    """A new draft article (or a translation of one, sharing its group)."""
    center = help_center(db, workspace_id=workspace_id)
    locale = render.normalize_locale(data.locale) if data.locale else center.default_locale
    if data.collection_id:
        get_collection(db, workspace_id=workspace_id, collection_id=data.collection_id)
    row = Article(
        workspace_id=workspace_id,
        collection_id=data.collection_id,
        locale=locale,
        title=data.title.strip(),
        body_markdown=data.body_markdown,
        author_id=author_id,
        status=ArticleStatus.draft,
    )
    row.group_id = row.id
    if data.translation_of:
        original = get_article(db, workspace_id=workspace_id, article_id=data.translation_of)
        row.group_id = original.group_id
        if db.scalar(
            select(Article.id).where(Article.group_id == row.group_id, Article.locale == locale)
        ):
            raise Conflict(f"this article already has a {locale} version")
        if row.collection_id is None:
            row.collection_id = original.collection_id
    slug = (
        render.check_slug(data.slug)
        if data.slug
        else render.slugify(row.title, fallback=row.id[:8])
    )
    row.slug = _unique_article_slug(
        db,
        workspace_id=workspace_id,
        locale=locale,
        slug=slug,
        own_id=row.id,
        given=bool(data.slug),
    )
    db.add(row)
    db.flush()
    _render(db, row)
    return row


def update_article(db: Session, *, article: Article, data: ArticleUpdate) -> Article:
    fields = data.model_fields_set
    if "collection_id" in fields:
        if data.collection_id:
            get_collection(db, workspace_id=article.workspace_id, collection_id=data.collection_id)
        article.collection_id = data.collection_id
    if data.title is not None:
        article.title = data.title.strip()
    if data.slug is not None:
        article.slug = _unique_article_slug(
            db,
            workspace_id=article.workspace_id,
            locale=article.locale,
            slug=render.check_slug(data.slug),
            own_id=article.id,
            given=True,
        )
    if data.body_markdown is not None:
        article.body_markdown = data.body_markdown
    if data.title is not None or data.body_markdown is not None:
        _render(db, article)
    article.updated_at = utcnow()
    db.flush()
    return article


def publish(db: Session, *, article: Article) -> Article:
    """Make the article public; it keeps its first publication date."""
    if not article.title.strip():
        raise Invalid("an article needs a title to be published")
    now = utcnow()
    article.status = ArticleStatus.published
    article.published_at = article.published_at or now
    article.updated_at = now
    db.flush()
    return article


def unpublish(db: Session, *, article: Article) -> Article:
    article.status = ArticleStatus.draft
    article.updated_at = utcnow()
    db.flush()
    return article


def delete_article(db: Session, *, article: Article) -> None:
    db.delete(article)
    db.flush()


# the public side ------------------------------------------------------------------------


def public_articles(
    db: Session, *, workspace_id: str, locale: str, collection_id: str | None = None
) -> list[Article]:
    stmt = select(Article).where(
        Article.workspace_id == workspace_id,
        Article.status == ArticleStatus.published,
        Article.locale == locale,
    )
    if collection_id:
        stmt = stmt.where(Article.collection_id == collection_id)
    return list(db.scalars(stmt.order_by(Article.title, Article.id)))


def public_article(db: Session, *, workspace_id: str, slug: str, locale: str) -> Article | None:
    """The published article with ``slug``, in ``locale`` when it has that translation."""
    found = list(
        db.scalars(
            select(Article).where(
                Article.workspace_id == workspace_id,
                Article.slug == slug,
                Article.status == ArticleStatus.published,
            )
        )
    )
    if not found:
        return None
    for row in found:
        if row.locale == locale:
            return row
    variant = db.scalar(
        select(Article).where(
            Article.workspace_id == workspace_id,
            Article.group_id == found[0].group_id,
            Article.locale == locale,
            Article.status == ArticleStatus.published,
        )
    )
    return variant or found[0]


def published_locales(db: Session, *, workspace_id: str) -> list[str]:
    return list(
        db.scalars(
            select(Article.locale)
            .where(Article.workspace_id == workspace_id, Article.status == ArticleStatus.published)
            .distinct()
            .order_by(Article.locale)
        )
    )


def count_view(db: Session, *, article: Article) -> None:
    # One UPDATE, not read-modify-write: concurrent readers never lose each other's counts.
    db.execute(
        update(Article)
        .where(Article.id == article.id)
        .values(view_count=Article.view_count + 1)
        .execution_options(synchronize_session=False)
    )


def voter_key(*, secret: str, client: str, user_agent: str, day: datetime) -> str:
    """Who voted, as a keyed hash that changes daily: enough to count one vote per reader."""
    raw = f"{client}|{user_agent}|{day.date().isoformat()}".encode()
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def record_feedback(
    db: Session, *, article: Article, helpful: bool, comment: str, voter: str
) -> ArticleFeedback:
    """Count one reader's answer; a second answer from the same reader replaces the first."""
    row = db.scalar(
        select(ArticleFeedback).where(
            ArticleFeedback.article_id == article.id, ArticleFeedback.voter == voter
        )
    )
    if row is None:
        row = ArticleFeedback(
            workspace_id=article.workspace_id,
            article_id=article.id,
            helpful=helpful,
            comment=comment[:2000],
            voter=voter,
        )
        db.add(row)
    else:
        row.helpful = helpful
        row.comment = comment[:2000] or row.comment
        row.created_at = utcnow()
    db.flush()
    _recount(db, article=article)
    return row


def _recount(db: Session, *, article: Article) -> None:
    # Counted from the rows, so a changed vote moves from one count to the other exactly.
    yes, no = db.execute(
        select(
            func.count().filter(ArticleFeedback.helpful.is_(True)),
            func.count().filter(ArticleFeedback.helpful.is_(False)),
        ).where(ArticleFeedback.article_id == article.id)
    ).one()
    article.helpful_count = int(yes)
    article.not_helpful_count = int(no)
    db.flush()


def feedback(db: Session, *, article: Article, limit: int = 50) -> list[ArticleFeedback]:
    return list(
        db.scalars(
            select(ArticleFeedback)
            .where(ArticleFeedback.article_id == article.id)
            .order_by(ArticleFeedback.created_at.desc())
            .limit(limit)
        )
    )
