"""Knowledge base API: viewers read, agents write and publish, admins delete and configure.

That is Zendesk Guide's split too: agents maintain content, administrators own the
structure and the help center itself.
"""

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from rapport.auth.deps import CurrentAdmin, CurrentAgent, CurrentMember, CurrentSettings, Db
from rapport.kb import render, search, service
from rapport.kb.models import Article, ArticleStatus
from rapport.kb.schemas import (
    ArticleCreate,
    ArticlePage,
    ArticleRead,
    ArticleUpdate,
    CollectionCreate,
    CollectionRead,
    CollectionUpdate,
    HelpCenterRead,
    HelpCenterUpdate,
    PreviewIn,
    PreviewOut,
    SearchHitRead,
)

router = APIRouter(prefix="/api/v1/kb", tags=["knowledge base"])


def _read(db: Session, article: Article, base_url: str) -> ArticleRead:
    out = ArticleRead.model_validate(article)
    center = service.help_center(db, workspace_id=article.workspace_id)
    if article.status == ArticleStatus.published:
        out.public_url = search.public_url(base_url, center, article)
    return out


def _center(db: Session, workspace_id: str, base_url: str) -> HelpCenterRead:
    center = service.help_center(db, workspace_id=workspace_id)
    out = HelpCenterRead.model_validate(center)
    out.url = f"{base_url.rstrip('/')}/help/{center.slug}/"
    return out


@router.get("/settings", response_model=HelpCenterRead)
def get_help_center(principal: CurrentMember, db: Db, settings: CurrentSettings) -> HelpCenterRead:
    """The public help center's address, title and default locale."""
    return _center(db, principal.workspace_id, settings.public_url)


@router.patch("/settings", response_model=HelpCenterRead)
def update_help_center(
    body: HelpCenterUpdate, principal: CurrentAdmin, db: Db, settings: CurrentSettings
) -> HelpCenterRead:
    service.update_help_center(db, workspace_id=principal.workspace_id, data=body)
    return _center(db, principal.workspace_id, settings.public_url)


@router.get("/collections", response_model=list[CollectionRead])
def list_collections(
    principal: CurrentMember, db: Db, locale: str | None = Query(default=None, max_length=16)
) -> list[CollectionRead]:
    """Collections in display order (position, then title)."""
    rows = service.collections(db, workspace_id=principal.workspace_id, locale=locale)
    return [CollectionRead.model_validate(r) for r in rows]


@router.post("/collections", response_model=CollectionRead, status_code=201)
def create_collection(body: CollectionCreate, principal: CurrentAgent, db: Db) -> CollectionRead:
    row = service.create_collection(db, workspace_id=principal.workspace_id, data=body)
    return CollectionRead.model_validate(row)


@router.get("/collections/{collection_id}", response_model=CollectionRead)
def get_collection(collection_id: str, principal: CurrentMember, db: Db) -> CollectionRead:
    row = service.get_collection(
        db, workspace_id=principal.workspace_id, collection_id=collection_id
    )
    return CollectionRead.model_validate(row)


@router.patch("/collections/{collection_id}", response_model=CollectionRead)
def update_collection(
    collection_id: str, body: CollectionUpdate, principal: CurrentAgent, db: Db
) -> CollectionRead:
    row = service.get_collection(
        db, workspace_id=principal.workspace_id, collection_id=collection_id
    )
    return CollectionRead.model_validate(service.update_collection(db, collection=row, data=body))


@router.delete("/collections/{collection_id}", status_code=204)
def delete_collection(collection_id: str, principal: CurrentAdmin, db: Db) -> Response:
    """Delete a collection; its articles stay, outside any collection."""
    row = service.get_collection(
        db, workspace_id=principal.workspace_id, collection_id=collection_id
    )
    service.delete_collection(db, collection=row)
    return Response(status_code=204)


@router.get("/articles", response_model=ArticlePage)
def list_articles(
    principal: CurrentMember,
    db: Db,
    settings: CurrentSettings,
    collection_id: str | None = None,
    locale: str | None = Query(default=None, max_length=16),
    status: ArticleStatus | None = None,
    cursor: str | None = None,
    limit: int = Query(default=25, ge=1, le=100),
) -> ArticlePage:
    """Articles, drafts included, most recently updated first."""
    rows, nxt = service.articles(
        db,
        workspace_id=principal.workspace_id,
        collection_id=collection_id,
        locale=locale,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return ArticlePage(items=[_read(db, a, settings.public_url) for a in rows], next_cursor=nxt)


@router.post("/articles", response_model=ArticleRead, status_code=201)
def create_article(
    body: ArticleCreate, principal: CurrentAgent, db: Db, settings: CurrentSettings
) -> ArticleRead:
    """A new draft; ``translation_of`` makes it another locale's version of an article."""
    row = service.create_article(
        db, workspace_id=principal.workspace_id, author_id=principal.user_id, data=body
    )
    return _read(db, row, settings.public_url)


@router.post("/preview", response_model=PreviewOut)
def preview(body: PreviewIn, principal: CurrentAgent) -> PreviewOut:
    """Markdown rendered and sanitized exactly as a saved article would be."""
    return PreviewOut(body_html=render.markdown_to_html(body.body_markdown))


@router.get("/search", response_model=list[SearchHitRead])
def search_articles(
    principal: CurrentMember,
    db: Db,
    settings: CurrentSettings,
    q: str = Query(min_length=1, max_length=500),
    locale: str | None = Query(default=None, max_length=16),
    limit: int = Query(default=5, ge=1, le=50),
) -> list[SearchHitRead]:
    """Published articles matching ``q``: BM25, fused with embeddings when installed."""
    hits = search.search_articles(
        db,
        principal.workspace_id,
        q,
        locale=render.normalize_locale(locale) if locale else None,
        limit=limit,
        base_url=settings.public_url,
    )
    return [
        SearchHitRead(
            article_id=h.article.id,
            title=h.article.title,
            locale=h.article.locale,
            score=h.score,
            excerpt=h.excerpt,
            url=h.url,
        )
        for h in hits
    ]


@router.get("/articles/{article_id}", response_model=ArticleRead)
def get_article(
    article_id: str, principal: CurrentMember, db: Db, settings: CurrentSettings
) -> ArticleRead:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    return _read(db, row, settings.public_url)


@router.get("/articles/{article_id}/translations", response_model=list[ArticleRead])
def list_translations(
    article_id: str, principal: CurrentMember, db: Db, settings: CurrentSettings
) -> list[ArticleRead]:
    """Every locale's version of the article, itself included."""
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    return [_read(db, a, settings.public_url) for a in service.translations(db, article=row)]


@router.patch("/articles/{article_id}", response_model=ArticleRead)
def update_article(
    article_id: str,
    body: ArticleUpdate,
    principal: CurrentAgent,
    db: Db,
    settings: CurrentSettings,
) -> ArticleRead:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    return _read(db, service.update_article(db, article=row, data=body), settings.public_url)


@router.post("/articles/{article_id}/publish", response_model=ArticleRead)
def publish_article(
    article_id: str, principal: CurrentAgent, db: Db, settings: CurrentSettings
) -> ArticleRead:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    return _read(db, service.publish(db, article=row), settings.public_url)


@router.post("/articles/{article_id}/unpublish", response_model=ArticleRead)
def unpublish_article(
    article_id: str, principal: CurrentAgent, db: Db, settings: CurrentSettings
) -> ArticleRead:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    return _read(db, service.unpublish(db, article=row), settings.public_url)


@router.delete("/articles/{article_id}", status_code=204)
def delete_article(article_id: str, principal: CurrentAdmin, db: Db) -> Response:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    service.delete_article(db, article=row)
    return Response(status_code=204)
