"""Knowledge base: collections, articles (Markdown, per locale, draft / published), the
help center's settings, and readers' feedback.

A published article's columns are its live version: the help center, its search and the
bot read them and nothing else. Its editor's "Save draft" keeps changes apart, in an
``ArticleDraft``, until they are published (copied over the live version) or discarded.
"""

import hashlib
import hmac
import re
import unicodedata
from typing import Any

from markdown_it import MarkdownIt
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rapport import pagination
from rapport.assistant import embeddings
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.kb import search
from rapport.kb.models import (
    Article,
    ArticleDraft,
    ArticleFeedback,
    ArticleStatus,
    Collection,
    HelpCenter,
)
from rapport.problems import Conflict, Invalid, NotFound
from rapport.sanitize import clean_html
from rapport.scoped import get_scoped

# Raw HTML in Markdown is shown as text, and what Markdown makes is sanitized once more.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_LOCALE = re.compile(r"^[a-z]{2}(?:-[A-Z]{2})?$")


def render(markdown: str) -> str:
    # The business's own article: its images are shown (a message's are held).
    return clean_html(_markdown.render(markdown), images="shown")


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:120] or "article"


def _check_locale(locale: str) -> str:
    if not _LOCALE.match(locale):
        raise Invalid("a locale looks like en or pt-BR")
    return locale


def _check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise Invalid("a slug is lower-case letters and digits joined by hyphens")
    return slug


# --- the help center -------------------------------------------------------------------


def help_center(db: Session, *, workspace_id: str) -> HelpCenter | None:
    return db.get(HelpCenter, workspace_id)


def configure_help_center(db: Session, *, workspace_id: str, changes: dict[str, Any]) -> HelpCenter:
    center = db.get(HelpCenter, workspace_id)
    if center is None:
        slug = changes.get("slug")
        if not slug:
            raise Invalid("choose the help center's address (slug)")
        center = HelpCenter(workspace_id=workspace_id, slug=_check_slug(slug))
        db.add(center)
    for key, value in changes.items():
        if value is None:
            continue
        if key == "slug":
            value = _check_slug(value)
            taken = db.scalar(
                select(HelpCenter.workspace_id).where(
                    HelpCenter.slug == value, HelpCenter.workspace_id != workspace_id
                )
            )
            if taken:
                raise Conflict(f"the address /help/{value}/ is taken")
        if key == "default_locale":
            value = _check_locale(value)
        setattr(center, key, value)
    db.flush()
    return center


def center_by_slug(db: Session, slug: str) -> HelpCenter:
    center = db.scalar(select(HelpCenter).where(HelpCenter.slug == slug))
    if center is None or not center.enabled:
        raise NotFound("help center")
    return center


# --- collections -----------------------------------------------------------------------


def collections(db: Session, *, workspace_id: str, locale: str | None = None) -> list[Collection]:
    query = select(Collection).where(Collection.workspace_id == workspace_id)
    if locale:
        query = query.where(Collection.locale == locale)
    return list(db.scalars(query.order_by(Collection.position, Collection.title)))


def get_collection(db: Session, *, workspace_id: str, collection_id: str) -> Collection:
    return get_scoped(db, Collection, collection_id, workspace_id=workspace_id, name="collection")


def save_collection(
    db: Session, *, workspace_id: str, data: dict[str, Any], row: Collection | None = None
) -> Collection:
    if row is None:
        title = (data.get("title") or "").strip()
        if not title:
            raise Invalid("a collection needs a title")
        row = Collection(
            workspace_id=workspace_id,
            title=title,
            slug=_check_slug(data.get("slug") or slugify(title)),
            locale=_check_locale(data.get("locale") or "en"),
        )
        db.add(row)
    for key in ("title", "description", "position"):
        if data.get(key) is not None:
            setattr(row, key, data[key])
    if data.get("slug") is not None:
        row.slug = _check_slug(data["slug"])
    try:
        db.flush()
    except IntegrityError as exc:
        raise Conflict("a collection with this address exists in this locale") from exc
    return row


# --- articles --------------------------------------------------------------------------


def get_article(db: Session, *, workspace_id: str, article_id: str) -> Article:
    return get_scoped(db, Article, article_id, workspace_id=workspace_id, name="article")


def list_articles(
    db: Session,
    *,
    workspace_id: str,
    status: ArticleStatus | None = None,
    locale: str | None = None,
    collection_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Article], str | None]:
    limit = pagination.clamp(limit)
    query = select(Article).where(Article.workspace_id == workspace_id)
    if status:
        query = query.where(Article.status == status)
    if locale:
        query = query.where(Article.locale == locale)
    if collection_id:
        query = query.where(Article.collection_id == collection_id)
    after = pagination.decode(cursor)
    if after:
        query = query.where(
            (Article.updated_at < after[0])
            | ((Article.updated_at == after[0]) & (Article.id < after[1]))
        )
    rows = list(
        db.scalars(query.order_by(Article.updated_at.desc(), Article.id.desc()).limit(limit + 1))
    )
    return pagination.page_of(rows, limit, lambda a: (a.updated_at, a.id))


def save_article(
    db: Session,
    *,
    workspace_id: str,
    data: dict[str, Any],
    author_id: str | None,
    row: Article | None = None,
    html: str | None = None,
) -> Article:
    """Create or change an article; the body is rendered and sanitized on every save.

    ``html``: the body already rendered by ``render``, before the transaction began (200 KB
    of Markdown take half a second: not while holding SQLite's write lock)."""
    if data.get("collection_id"):
        get_collection(db, workspace_id=workspace_id, collection_id=data["collection_id"])
    if data.get("translation_of"):
        original = get_article(db, workspace_id=workspace_id, article_id=data["translation_of"])
        data = {**data, "group_id": original.group_id}
    if row is None:
        title = (data.get("title") or "").strip()
        if not title:
            raise Invalid("an article needs a title")
        row = Article(
            workspace_id=workspace_id,
            title=title,
            slug=_check_slug(data.get("slug") or slugify(title)),
            locale=_check_locale(data.get("locale") or "en"),
            author_id=author_id,
        )
        if data.get("group_id"):
            row.group_id = data["group_id"]
        db.add(row)
    draft = draft_of(db, article=row) if row.id and row not in db.new else None
    live = {key: getattr(row, key) for key in _DRAFTED}
    was = row.html or ""
    for key in ("title", "description", "collection_id", "position"):
        if key in data and data[key] is not None:
            setattr(row, key, data[key] or None if key == "collection_id" else data[key])
    if data.get("slug") is not None:
        row.slug = _check_slug(data["slug"])
    if data.get("body") is not None:
        row.body = data["body"]
        row.html = html if html is not None else render(row.body)
    _describe(row, data, was)
    row.updated_at = utcnow()
    if draft is not None:
        # A change made live (an API client's PATCH) goes into the pending draft too where
        # the draft had left that field as it was: publishing the draft undid it.
        for key in _DRAFTED:
            if getattr(row, key) != live[key] and getattr(draft, key) == live[key]:
                setattr(draft, key, getattr(row, key))
    try:
        db.flush()
    except IntegrityError as exc:
        raise Conflict("an article with this address exists in this locale") from exc
    _queue_embedding(db, row)
    return row


def _summary(html: str) -> str:
    """The description of an article given none (search results, the help center's meta
    description): the start of its text."""
    return search.plain_text(html).strip()[:200]


def _describe(target: Article | ArticleDraft, data: dict[str, Any], was: str) -> None:
    """A description given is kept; none (or one that was only the start of the body before
    this change) is the start of the body now. It was written once, from the first body,
    and then described a text the article no longer had."""
    if not target.description or (
        data.get("description") is None and target.description == _summary(was)
    ):
        target.description = _summary(target.html)


def publish(db: Session, *, article: Article, published: bool) -> Article:
    """Publish or unpublish an article. Its draft, if it has one, becomes its content
    either way: published, the draft goes live; unpublished, nothing is live and the
    article is its own draft again."""
    draft = draft_of(db, article=article)
    try:
        if draft is not None:
            for key in _DRAFTED:
                setattr(article, key, getattr(draft, key))
            # A bulk delete: a publish racing this one finds no draft, not a stale row.
            db.execute(delete(ArticleDraft).where(ArticleDraft.article_id == article.id))
        article.status = ArticleStatus.published if published else ArticleStatus.draft
        if published and article.published_at is None:
            article.published_at = utcnow()
        article.updated_at = utcnow()
        db.flush()
    except IntegrityError as exc:  # the draft's address was taken since it was saved
        raise Conflict("an article with this address exists in this locale") from exc
    if draft is not None:
        _queue_embedding(db, article)
    return article


# What a draft holds of an article: what its editor changes and readers see.
_DRAFTED = ("collection_id", "slug", "title", "description", "body", "html")


def draft_of(db: Session, *, article: Article) -> ArticleDraft | None:
    """The article's unpublished changes, if it has any."""
    return db.scalar(
        select(ArticleDraft).where(
            ArticleDraft.article_id == article.id,
            ArticleDraft.workspace_id == article.workspace_id,
        )
    )


def drafts_of(db: Session, *, workspace_id: str, article_ids: list[str]) -> dict[str, ArticleDraft]:
    """The unpublished changes of these articles, by article id, in one query."""
    if not article_ids:
        return {}
    rows = db.scalars(
        select(ArticleDraft).where(
            ArticleDraft.workspace_id == workspace_id, ArticleDraft.article_id.in_(article_ids)
        )
    )
    return {row.article_id: row for row in rows}


def save_draft(
    db: Session,
    *,
    article: Article,
    data: dict[str, Any],
    author_id: str | None,
    html: str | None = None,
) -> ArticleDraft | None:
    """Save changes to an article without putting them live; returns its draft.

    A published article stays as it is live, for readers, the help center's search and the
    bot; the changes are kept as its draft, over the draft saved before (or, for the first,
    a copy of the live version), until published or discarded. A draft that ends up the
    same as the live version is dropped: nothing is unpublished. An unpublished article is
    its own draft: the changes go to it, as ``save_article`` does, and None is returned.
    ``html``: the body rendered by ``render`` before the transaction began."""
    if data.get("title") is not None and not data["title"].strip():
        raise Invalid("an article needs a title")
    if article.status != ArticleStatus.published:
        save_article(
            db,
            workspace_id=article.workspace_id,
            data=data,
            author_id=author_id,
            row=article,
            html=html,
        )
        return None
    if data.get("collection_id"):
        get_collection(db, workspace_id=article.workspace_id, collection_id=data["collection_id"])
    draft = draft_of(db, article=article)
    if draft is None:
        draft = ArticleDraft(article_id=article.id, workspace_id=article.workspace_id)
        for key in _DRAFTED:
            setattr(draft, key, getattr(article, key))
        db.add(draft)
    if data.get("title") is not None:
        draft.title = data["title"].strip()
    if data.get("description") is not None:
        draft.description = data["description"]
    if data.get("collection_id") is not None:
        draft.collection_id = data["collection_id"] or None
    if data.get("slug") is not None:
        draft.slug = _check_slug(data["slug"])
        taken = db.scalar(
            select(Article.id).where(
                Article.workspace_id == article.workspace_id,
                Article.locale == article.locale,
                Article.slug == draft.slug,
                Article.id != article.id,
            )
        )
        if taken:
            raise Conflict("an article with this address exists in this locale")
    was = draft.html
    if data.get("body") is not None:
        draft.body = data["body"]
        draft.html = html if html is not None else render(draft.body)
    _describe(draft, data, was)
    if all(getattr(draft, key) == getattr(article, key) for key in _DRAFTED):
        if draft in db.new:
            db.expunge(draft)
        else:
            db.delete(draft)
        db.flush()
        return None
    draft.author_id = author_id
    draft.updated_at = utcnow()
    try:
        db.flush()
    except IntegrityError as exc:  # two first drafts of one article saved at once
        raise Conflict("this article's draft was just saved by someone else: reload it") from exc
    return draft


def discard_draft(db: Session, *, article: Article) -> bool:
    """Drop the article's unpublished changes; True when it had some."""
    gone = db.execute(
        delete(ArticleDraft).where(
            ArticleDraft.article_id == article.id,
            ArticleDraft.workspace_id == article.workspace_id,
        )
    )
    return bool(getattr(gone, "rowcount", 0))


def _queue_embedding(db: Session, article: Article) -> None:
    if embeddings.available():
        enqueue(
            db,
            name="kb_embed",
            args={"article_id": article.id},
            workspace_id=article.workspace_id,
            max_attempts=3,
        )


@job("kb_embed", max_attempts=3)
def kb_embed(ctx: JobContext, article_id: str) -> None:
    """Embed an article after it was saved: read, compute (the model takes seconds to load),
    then write, in two short transactions, so SQLite's single writer is never held."""
    with ctx.database.session(write=False) as db:
        article = db.get(Article, article_id)
        if article is None:
            return
        text, stamp = search.embedding_text(article), article.updated_at
    vector = search.embed_text(text)
    with ctx.database.session() as db:
        article = db.get(Article, article_id)
        if article is not None and article.updated_at == stamp:  # not changed meanwhile
            article.embedding = vector


def translations(db: Session, *, article: Article) -> list[Article]:
    return list(
        db.scalars(
            select(Article).where(
                Article.workspace_id == article.workspace_id,
                Article.group_id == article.group_id,
                Article.id != article.id,
                Article.status == ArticleStatus.published,
            )
        )
    )


# --- readers ---------------------------------------------------------------------------


def published_article(db: Session, *, workspace_id: str, slug: str, locale: str) -> Article:
    row = db.scalar(
        select(Article).where(
            Article.workspace_id == workspace_id,
            Article.slug == slug,
            Article.locale == locale,
            Article.status == ArticleStatus.published,
        )
    )
    if row is None:
        raise NotFound("article")
    return row


def count_view(db: Session, *, article_id: str) -> None:
    db.execute(update(Article).where(Article.id == article_id).values(views=Article.views + 1))


def reader_key(secret: str, address: str) -> str:
    """Who votes on an article, as kept: their address, keyed (never stored as it is). By
    address alone: with the User-Agent in it, one reader sending a new one each time was a
    new reader each time."""
    return hmac.new(secret.encode(), address.encode(), hashlib.sha256).hexdigest()


def feedback(
    db: Session, *, article: Article, reader: str, helpful: bool, comment: str = ""
) -> bool:
    """Record a reader's vote (a second vote of the same reader changes the first);
    returns True when it counted as new."""
    existing = db.scalar(
        select(ArticleFeedback).where(
            ArticleFeedback.article_id == article.id, ArticleFeedback.reader == reader
        )
    )
    if existing is not None:
        if existing.helpful != helpful:
            delta = 1 if helpful else -1
            article.helpful += delta
            article.not_helpful -= delta
            existing.helpful = helpful
        existing.comment = comment[:1000] or existing.comment
        return False
    db.add(
        ArticleFeedback(
            workspace_id=article.workspace_id,
            article_id=article.id,
            reader=reader,
            helpful=helpful,
            comment=comment[:1000],
        )
    )
    if helpful:
        article.helpful += 1
    else:
        article.not_helpful += 1
    return True
