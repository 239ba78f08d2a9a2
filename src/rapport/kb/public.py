"""The public help center: server-rendered pages anyone (and any search engine) can read.

Only published articles ever appear here. Pages are plain HTML with no script, so they
are fast, work without JavaScript, and read well to screen readers and crawlers.
"""

from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from rapport.db import Database
from rapport.kb import render, search, service
from rapport.kb.models import Article, Collection, HelpCenter
from rapport.problems import Invalid
from rapport.web.views import HERE

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/help", include_in_schema=False)

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; "
    "style-src 'self'; script-src 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _base_url(request: Request) -> str:
    return str(request.app.state.settings.public_url).rstrip("/")


def _locale(db: Session, request: Request, center: HelpCenter, asked: str | None) -> str:
    """``?locale=``, else the best Accept-Language match, else the default locale."""
    available = service.published_locales(db, workspace_id=center.workspace_id)
    wanted: list[str] = []
    if asked:
        try:
            wanted.append(render.normalize_locale(asked))
        except Invalid:
            pass
    wanted += render.accepted_locales(request.headers.get("accept-language"))
    for tag in wanted:
        if tag in available:
            return tag
        primary = tag.split("-")[0]
        if primary in available:
            return primary
        for have in available:
            if have.split("-")[0] == primary:
                return have
    return center.default_locale


def _page(
    request: Request, name: str, *, status: int = 200, cache: bool = True, **ctx: Any
) -> HTMLResponse:
    headers = dict(_HEADERS)
    headers["Cache-Control"] = "public, max-age=60" if cache and status == 200 else "no-store"
    return templates.TemplateResponse(request, name, ctx, status_code=status, headers=headers)


def _not_found(request: Request, center: HelpCenter | None, what: str) -> HTMLResponse:
    return _page(
        request,
        "help_404.html",
        status=404,
        center=center,
        locale=center.default_locale if center else "en",
        what=what,
        base=f"/help/{center.slug}" if center else "",
    )


def _article_url(center: HelpCenter, article: Article) -> str:
    return search.public_url("", center, article)


def _collection_url(center: HelpCenter, collection: Collection, locale: str) -> str:
    url = f"/help/{center.slug}/collections/{collection.slug}"
    return url if locale == center.default_locale else f"{url}?locale={locale}"


def _common(center: HelpCenter, locale: str, request: Request) -> dict[str, Any]:
    return {
        "center": center,
        "locale": locale,
        "base": f"/help/{center.slug}",
        "origin": _base_url(request),
        "article_url": lambda a: _article_url(center, a),
        "collection_url": lambda c: _collection_url(center, c, locale),
    }


@router.get("/{center_slug}")
def home_redirect(center_slug: str) -> Response:
    return RedirectResponse(f"/help/{center_slug}/", status_code=308)


@router.get("/{center_slug}/", response_class=HTMLResponse)
def home(request: Request, center_slug: str, locale: str | None = None) -> Response:
    with _database(request).session(write=False) as db:
        center = service.by_slug(db, center_slug)
        if center is None:
            return _not_found(request, None, "help center")
        loc = _locale(db, request, center, locale)
        articles = service.public_articles(db, workspace_id=center.workspace_id, locale=loc)
        groups = _by_collection(db, center, loc, articles)
        return _page(request, "help_home.html", groups=groups, **_common(center, loc, request))


def _by_collection(
    db: Session, center: HelpCenter, locale: str, articles: list[Article]
) -> list[tuple[Collection | None, list[Article]]]:
    """Collections in order with their published articles; empty collections left out."""
    cols = service.collections(db, workspace_id=center.workspace_id)
    by_id: dict[str | None, list[Article]] = {}
    for a in articles:
        by_id.setdefault(a.collection_id, []).append(a)
    # A collection shows in the locale of its articles, whichever locale it was written in.
    out: list[tuple[Collection | None, list[Article]]] = [
        (c, by_id[c.id]) for c in cols if c.id in by_id
    ]
    if None in by_id:
        out.append((None, by_id[None]))
    return out


@router.get("/{center_slug}/collections/{collection_slug}", response_class=HTMLResponse)
def collection_page(
    request: Request, center_slug: str, collection_slug: str, locale: str | None = None
) -> Response:
    with _database(request).session(write=False) as db:
        center = service.by_slug(db, center_slug)
        if center is None:
            return _not_found(request, None, "help center")
        loc = _locale(db, request, center, locale)
        cols = [
            c
            for c in service.collections(db, workspace_id=center.workspace_id)
            if c.slug == collection_slug
        ]
        col = next((c for c in cols if c.locale == loc), cols[0] if cols else None)
        if col is None:
            return _not_found(request, center, "collection")
        articles = service.public_articles(
            db, workspace_id=center.workspace_id, locale=loc, collection_id=col.id
        )
        return _page(
            request,
            "help_collection.html",
            collection=col,
            articles=articles,
            **_common(center, loc, request),
        )


@router.get("/{center_slug}/articles/{article_slug}", response_class=HTMLResponse)
def article_page(
    request: Request,
    center_slug: str,
    article_slug: str,
    locale: str | None = None,
    thanks: str | None = None,
) -> Response:
    database = _database(request)
    with database.session(write=False) as db:
        center = service.by_slug(db, center_slug)
        if center is None:
            return _not_found(request, None, "help center")
        loc = _locale(db, request, center, locale)
        article = service.public_article(
            db, workspace_id=center.workspace_id, slug=article_slug, locale=loc
        )
        if article is None:
            return _not_found(request, center, "article")
        collection = (
            service.get_collection(
                db, workspace_id=center.workspace_id, collection_id=article.collection_id
            )
            if article.collection_id
            else None
        )
        variants = [
            a
            for a in service.translations(db, article=article)
            if a.status == article.status and a.id != article.id
        ]
        text = render.plain_text(article.body_html)
        ctx = {
            "article": article,
            "collection": collection,
            "variants": variants,
            "description": (text[:157] + "…") if len(text) > 160 else text,
            "thanks": thanks,
            **_common(center, article.locale, request),
        }
    with database.session() as db:
        service.count_view(db, article=article)
    return _page(request, "help_article.html", cache=False, **ctx)


@router.post("/{center_slug}/articles/{article_slug}/feedback", response_class=HTMLResponse)
def article_feedback(
    request: Request,
    center_slug: str,
    article_slug: str,
    helpful: str = Form(pattern="^(yes|no)$"),
    comment: str = Form(default="", max_length=2000),
    locale: str | None = Form(default=None, max_length=16),
) -> Response:
    """A reader's "was this helpful?": a plain form post, answered with a redirect."""
    client = request.client.host if request.client else "unknown"
    limiter = request.app.state.kb_feedback_limiter
    with _database(request).session() as db:
        center = service.by_slug(db, center_slug)
        if center is None:
            return _not_found(request, None, "help center")
        article = service.public_article(
            db,
            workspace_id=center.workspace_id,
            slug=article_slug,
            locale=render.normalize_locale(locale) if locale else center.default_locale,
        )
        if article is None:
            return _not_found(request, center, "article")
        if not limiter.hit(f"kb-feedback:{client}"):
            return _page(
                request,
                "help_404.html",
                status=429,
                center=center,
                locale=article.locale,
                base=f"/help/{center.slug}",
                what="rate",
            )
        voter = service.voter_key(
            secret=request.app.state.settings.secret_key.get_secret_value(),
            client=client,
            user_agent=request.headers.get("user-agent", ""),
            day=datetime.now(UTC),
        )
        service.record_feedback(
            db, article=article, helpful=helpful == "yes", comment=comment.strip(), voter=voter
        )
        url = _article_url(center, article)
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}thanks=1#feedback", status_code=303)


@router.get("/{center_slug}/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    center_slug: str,
    q: str = Query(default="", max_length=500),
    locale: str | None = None,
) -> Response:
    with _database(request).session(write=False) as db:
        center = service.by_slug(db, center_slug)
        if center is None:
            return _not_found(request, None, "help center")
        loc = _locale(db, request, center, locale)
        hits = (
            search.search_articles(
                db, center.workspace_id, q, locale=loc, limit=20, base_url=_base_url(request)
            )
            if q.strip()
            else []
        )
        return _page(
            request,
            "help_search.html",
            cache=False,
            q=q,
            hits=hits,
            **_common(center, loc, request),
        )


@router.get("/{center_slug}/sitemap.xml")
def sitemap(request: Request, center_slug: str) -> Response:
    """Every published article in every locale, with its last change, for crawlers."""
    base = _base_url(request)
    with _database(request).session(write=False) as db:
        center = service.by_slug(db, center_slug)
        if center is None:
            return _not_found(request, None, "help center")
        urls: list[tuple[str, datetime | None]] = [(f"{base}/help/{center.slug}/", None)]
        cols = {c.id: c for c in service.collections(db, workspace_id=center.workspace_id)}
        listed: set[tuple[str, str]] = set()
        for loc in service.published_locales(db, workspace_id=center.workspace_id):
            for a in service.public_articles(db, workspace_id=center.workspace_id, locale=loc):
                col = cols.get(a.collection_id or "")
                if col is not None and (col.id, loc) not in listed:
                    listed.add((col.id, loc))
                    urls.append((base + _collection_url(center, col, loc), None))
                urls.append((base + _article_url(center, a), a.updated_at))
    body = ['<?xml version="1.0" encoding="UTF-8"?>']
    body.append('<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">')
    for loc_url, changed in urls:
        lastmod = f"<lastmod>{changed.date().isoformat()}</lastmod>" if changed else ""
        body.append(f"<url><loc>{escape(loc_url)}</loc>{lastmod}</url>")
    body.append("</urlset>")
    return Response(
        "\n".join(body),
        media_type="application/xml",
        headers={"Cache-Control": "public, max-age=300"},
    )
