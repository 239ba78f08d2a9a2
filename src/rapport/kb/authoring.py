"""The knowledge base in the agent UI: the list of articles and collections, and the
article editor (``/app/kb``). Writing goes through the API (``/api/v1/kb``)."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from rapport.auth import service as auth_service
from rapport.auth.models import Role
from rapport.kb import search, service
from rapport.kb.models import ArticleFeedback, ArticleStatus
from rapport.web.views import Viewer, _page

router = APIRouter(include_in_schema=False)


@router.get("/app/kb", response_class=HTMLResponse)
def kb_page(
    request: Request, principal: Viewer, cursor: str | None = None, status: str | None = None
) -> Response:
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    with request.app.state.database.session(write=False) as db:
        center = service.help_center(db, workspace_id=principal.workspace_id)
        rows, nxt = service.list_articles(
            db,
            workspace_id=principal.workspace_id,
            status=ArticleStatus(status)
            if status and status in ArticleStatus.__members__
            else None,
            cursor=cursor,
            limit=50,
        )
        collections = service.collections(db, workspace_id=principal.workspace_id)
        drafts = service.drafts_of(
            db, workspace_id=principal.workspace_id, article_ids=[a.id for a in rows]
        )
        return _page(
            request,
            "kb.html",
            principal,
            center=center,
            articles=rows,
            drafts=drafts,
            collections=collections,
            collection_titles={c.id: c.title for c in collections},
            status=status or "",
            next_cursor=nxt,
            can_write=principal.has(Role.agent),
            is_admin=principal.has(Role.admin),
            public_url=request.app.state.settings.public_url.rstrip("/"),
        )


@router.get("/app/kb/articles/new", response_class=HTMLResponse)
def new_article(
    request: Request,
    principal: Viewer,
    translation_of: str | None = None,
    locale: str | None = None,
) -> Response:
    return _editor(request, principal, None, translation_of=translation_of, locale=locale)


@router.get("/app/kb/articles/{article_id}", response_class=HTMLResponse)
def edit_article(request: Request, principal: Viewer, article_id: str) -> Response:
    return _editor(request, principal, article_id)


def _editor(
    request: Request,
    principal: auth_service.Principal | None,
    article_id: str | None,
    *,
    translation_of: str | None = None,
    locale: str | None = None,
) -> Response:
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    ws = principal.workspace_id
    base = request.app.state.settings.public_url
    with request.app.state.database.session(write=False) as db:
        center = service.help_center(db, workspace_id=ws)
        article = (
            service.get_article(db, workspace_id=ws, article_id=article_id) if article_id else None
        )
        original = (
            service.get_article(db, workspace_id=ws, article_id=translation_of)
            if translation_of
            else None
        )
        feedback = (
            list(
                db.scalars(
                    select(ArticleFeedback)
                    .where(ArticleFeedback.article_id == article.id)
                    .order_by(ArticleFeedback.created_at.desc())
                    .limit(20)
                )
            )
            if article
            else []
        )
        published = bool(article and article.status == ArticleStatus.published)
        # A published article's editor shows its unpublished changes, if any: the live
        # version is what the help center shows (linked from the page).
        draft = service.draft_of(db, article=article) if article and published else None
        return _page(
            request,
            "kb_article.html",
            principal,
            center=center,
            article=article,
            original=original,
            new_locale=locale or "",
            collections=service.collections(db, workspace_id=ws),
            translations=service.translations(db, article=article) if article else [],
            feedback=feedback,
            published=published,
            draft=draft,
            shown=draft or article,
            article_public_url=search.public_url(
                base, center.slug, article.slug, article.locale, center.default_locale
            )
            if article and center
            else "",
            can_write=principal.has(Role.agent),
        )
