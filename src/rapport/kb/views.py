"""Knowledge base endpoints for agents and admins: thin wrappers over kb.service.

Editing a published article: ``PATCH /articles/{id}`` changes it live, at once, as it
always has (API clients that sync articles rely on it). To stage changes, as the editor's
"Save draft" does, ``PUT /articles/{id}/draft``: the live version stays as it is for
readers, search and the bot, the changes are shown in the article's ``draft``, and
``POST /articles/{id}/publish`` puts them live or ``DELETE /articles/{id}/draft`` drops
them. On an unpublished article, which is its own draft, ``PUT .../draft`` is a PATCH.
"""

from dataclasses import asdict

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from rapport.auth.deps import CurrentAdmin, CurrentAgent, CurrentMember, Db
from rapport.auth.views import actor_of
from rapport.kb import search, service
from rapport.kb.models import Article, ArticleDraft, ArticleStatus
from rapport.kb.schemas import (
    ArticleDraftIn,
    ArticleDraftRead,
    ArticleHitRead,
    ArticleIn,
    ArticlePage,
    ArticleRead,
    CollectionIn,
    CollectionRead,
    HelpCenterIn,
    HelpCenterRead,
)
from rapport.privacy.service import audit
from rapport.problems import NotFound

router = APIRouter(prefix="/api/v1/kb", tags=["knowledge base"])


def _base(request: Request) -> str:
    return str(request.app.state.settings.public_url)


def _center(request: Request, center: object) -> HelpCenterRead:
    read = HelpCenterRead.model_validate(center)
    return read.model_copy(update={"url": f"{_base(request).rstrip('/')}/help/{read.slug}/"})


@router.get("/help-center", response_model=HelpCenterRead)
def get_help_center(principal: CurrentMember, request: Request, db: Db) -> HelpCenterRead:
    center = service.help_center(db, workspace_id=principal.workspace_id)
    if center is None:
        raise NotFound("help center")
    return _center(request, center)


@router.put("/help-center", response_model=HelpCenterRead)
def put_help_center(
    body: HelpCenterIn, principal: CurrentAdmin, request: Request, db: Db
) -> HelpCenterRead:
    """Set up or change the public help center (its address is ``/help/{slug}/``)."""
    center = service.configure_help_center(
        db, workspace_id=principal.workspace_id, changes=body.model_dump(exclude_unset=True)
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="kb.help_center",
        target_type="help_center",
        target_id=principal.workspace_id,
        data=body.model_dump(exclude_unset=True),
    )
    return _center(request, center)


@router.get("/collections", response_model=list[CollectionRead])
def list_collections(
    principal: CurrentMember, db: Db, locale: str | None = Query(default=None, max_length=16)
) -> list[CollectionRead]:
    rows = service.collections(db, workspace_id=principal.workspace_id, locale=locale)
    return [CollectionRead.model_validate(r) for r in rows]


@router.post("/collections", response_model=CollectionRead, status_code=201)
def create_collection(body: CollectionIn, principal: CurrentAgent, db: Db) -> CollectionRead:
    row = service.save_collection(
        db, workspace_id=principal.workspace_id, data=body.model_dump(exclude_unset=True)
    )
    return CollectionRead.model_validate(row)


@router.patch("/collections/{collection_id}", response_model=CollectionRead)
def update_collection(
    collection_id: str, body: CollectionIn, principal: CurrentAgent, db: Db
) -> CollectionRead:
    row = service.get_collection(
        db, workspace_id=principal.workspace_id, collection_id=collection_id
    )
    service.save_collection(
        db,
        workspace_id=principal.workspace_id,
        data=body.model_dump(exclude_unset=True),
        row=row,
    )
    return CollectionRead.model_validate(row)


@router.delete("/collections/{collection_id}", status_code=204)
def delete_collection(collection_id: str, principal: CurrentAdmin, db: Db) -> Response:
    """Delete a collection; its articles stay, outside any collection."""
    row = service.get_collection(
        db, workspace_id=principal.workspace_id, collection_id=collection_id
    )
    db.delete(row)
    return Response(status_code=204)


@router.get("/articles", response_model=ArticlePage)
def list_articles(
    principal: CurrentMember,
    db: Db,
    status: ArticleStatus | None = None,
    locale: str | None = Query(default=None, max_length=16),
    collection_id: str | None = Query(default=None, max_length=32),
    cursor: str | None = None,
    limit: int = Query(default=50, ge=1, le=100),
) -> ArticlePage:
    rows, nxt = service.list_articles(
        db,
        workspace_id=principal.workspace_id,
        status=status,
        locale=locale,
        collection_id=collection_id,
        cursor=cursor,
        limit=limit,
    )
    drafts = service.drafts_of(
        db, workspace_id=principal.workspace_id, article_ids=[r.id for r in rows]
    )
    return ArticlePage(items=[_read(r, drafts.get(r.id)) for r in rows], next_cursor=nxt)


def _read(row: Article, draft: ArticleDraft | None) -> ArticleRead:
    read = ArticleRead.model_validate(row)
    if draft is None:
        return read
    return read.model_copy(update={"draft": ArticleDraftRead.model_validate(draft)})


def _rendered(body: ArticleIn | ArticleDraftIn) -> str | None:
    return service.render(body.body) if body.body is not None else None


@router.post("/articles", response_model=ArticleRead, status_code=201)
def create_article(body: ArticleIn, principal: CurrentAgent, db: Db) -> ArticleRead:
    """A new draft; Markdown in ``body`` (raw HTML in it is shown as text)."""
    html = _rendered(body)  # before this request's write transaction begins
    row = service.save_article(
        db,
        workspace_id=principal.workspace_id,
        data=body.model_dump(exclude_unset=True),
        author_id=principal.user_id,
        html=html,
    )
    return ArticleRead.model_validate(row)


@router.get("/articles/{article_id}", response_model=ArticleRead)
def get_article(article_id: str, principal: CurrentMember, db: Db) -> ArticleRead:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    return _read(row, service.draft_of(db, article=row))


@router.patch("/articles/{article_id}", response_model=ArticleRead)
def update_article(
    article_id: str, body: ArticleIn, principal: CurrentAgent, db: Db
) -> ArticleRead:
    """Change an article as it stands: a published one changes live, at once. To save
    changes without publishing them, ``PUT /articles/{id}/draft``."""
    html = _rendered(body)  # before this request's write transaction begins
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    service.save_article(
        db,
        workspace_id=principal.workspace_id,
        data=body.model_dump(exclude_unset=True),
        author_id=principal.user_id,
        row=row,
        html=html,
    )
    return _read(row, service.draft_of(db, article=row))


@router.put("/articles/{article_id}/draft", response_model=ArticleRead)
def save_article_draft(
    article_id: str, principal: CurrentAgent, db: Db, body: ArticleDraftIn | None = None
) -> ArticleRead:
    """Save changes without publishing them ("Save draft").

    A published article stays live as it is (its page, the help center's search and the
    bot's answers); the changes, over those saved before, are its ``draft`` until
    ``publish`` puts them live or ``DELETE .../draft`` drops them. An unpublished article
    is changed as by ``PATCH``. Fields left out keep their value; no body changes nothing."""
    body = body or ArticleDraftIn()
    html = _rendered(body)  # before this request's write transaction begins
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    draft = service.save_draft(
        db,
        article=row,
        data=body.model_dump(exclude_unset=True),
        author_id=principal.user_id,
        html=html,
    )
    return _read(row, draft)


@router.delete("/articles/{article_id}/draft", status_code=204)
def discard_article_draft(
    article_id: str, principal: CurrentAgent, request: Request, db: Db
) -> Response:
    """Drop a published article's unpublished changes (none: nothing to do)."""
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    if service.discard_draft(db, article=row):
        audit(
            db,
            workspace_id=principal.workspace_id,
            actor=actor_of(principal, request),
            action="kb.discard_draft",
            target_type="article",
            target_id=row.id,
        )
    return Response(status_code=204)


@router.post("/articles/{article_id}/publish", response_model=ArticleRead)
def publish_article(
    article_id: str, principal: CurrentAgent, request: Request, db: Db
) -> ArticleRead:
    """Put the article live; with unpublished changes (its ``draft``), those changes."""
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    service.publish(db, article=row, published=True)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="kb.publish",
        target_type="article",
        target_id=row.id,
    )
    return ArticleRead.model_validate(row)


@router.post("/articles/{article_id}/unpublish", response_model=ArticleRead)
def unpublish_article(
    article_id: str, principal: CurrentAgent, request: Request, db: Db
) -> ArticleRead:
    """Take the article off the help center; unpublished changes become its content."""
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    service.publish(db, article=row, published=False)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="kb.unpublish",
        target_type="article",
        target_id=row.id,
    )
    return ArticleRead.model_validate(row)


@router.delete("/articles/{article_id}", status_code=204)
def delete_article(article_id: str, principal: CurrentAdmin, db: Db) -> Response:
    row = service.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
    db.delete(row)
    return Response(status_code=204)


class PreviewIn(BaseModel):
    body: str = Field(default="", max_length=200_000)


@router.post("/preview")
def preview(body: PreviewIn, principal: CurrentAgent) -> dict[str, str]:
    """Markdown rendered and sanitized exactly as readers will get it."""
    return {"html": service.render(body.body)}


@router.get("/search", response_model=list[ArticleHitRead])
def search_articles(
    principal: CurrentMember,
    request: Request,
    db: Db,
    q: str = Query(min_length=1, max_length=500),
    locale: str | None = Query(default=None, max_length=16),
    limit: int = Query(default=5, ge=1, le=20),
) -> list[ArticleHitRead]:
    """Published articles answering ``q``: keywords, and paraphrases with the ai extra."""
    hits = search.search_articles(
        db, principal.workspace_id, q, locale=locale, limit=limit, base_url=_base(request)
    )
    return [ArticleHitRead(**{k: v for k, v in asdict(h).items() if k != "slug"}) for h in hits]
