"""The public help center: server-rendered pages that readers and search engines read.

``/help/{slug}/`` home with the collections, ``/help/{slug}/collections/{collection}``,
``/help/{slug}/articles/{article}``, ``/help/{slug}/search?q=``, ``/help/{slug}/sitemap.xml``,
and the "was this helpful?" form (a plain POST: it works without JavaScript). Only published
articles are public. The locale comes from ``?locale=``, then the reader's Accept-Language,
then the help center's default.
"""

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from rapport.auth.deps import own_origin
from rapport.auth.ratelimit import RateLimiter, Refused
from rapport.auth.views import budget_address
from rapport.kb import search, service
from rapport.kb.models import Article, ArticleStatus, Collection, HelpCenter
from rapport.problems import Forbidden, NotFound, wait_text

# The sitemaps.org protocol: at most 50,000 URLs (and 50 MB) in one sitemap. An entry here
# is a few hundred bytes (ASCII slugs of at most 64 and 160 characters, a locale of 16, and
# RAPPORT_PUBLIC_URL), so the count is the limit that binds.
SITEMAP_URLS = 50_000

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(prefix="/help", include_in_schema=False)


# What one reader's address may search a minute: a person reads between searches; a script
# asking without pause made the server rank articles for it alone.
SEARCHES_A_MINUTE = 30


class HelpCenterLimits:
    """What one reader's address may do on one workspace's public help center, which needs
    no sign-in. Each workspace's help center has a budget of its own: an address shared by
    many readers (an office, a carrier's NAT) busy on one tenant's help center is not
    refused on another's. Counted in Redis when configured, as the widget's are
    (``WidgetLimits``): each process behind a balancer counting its own let an address have
    the budget once per process."""

    def __init__(self, redis_url: str | None = None) -> None:
        # Votes ("was this helpful?"): each is a write.
        self.votes = RateLimiter(limit=30, window=3600, redis_url=redis_url)
        # A reader's view of an article counts once an hour: each reload (or a script
        # fetching one page in a loop) was a view more, which put any article at the top of
        # "Popular", and a write transaction more, on SQLite's one writer that every inbound
        # message waits for.
        self.viewers = RateLimiter(limit=1, window=3600, redis_url=redis_url)
        # Searches: each ranks every published article (BM25; with the ai extra, an
        # embedding of the question too), for anyone, signed in or not.
        self.searches = RateLimiter(limit=SEARCHES_A_MINUTE, window=60, redis_url=redis_url)


def _limits(request: Request) -> HelpCenterLimits:
    limits: HelpCenterLimits = request.app.state.help_limits
    return limits


_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; "
    "style-src 'self'; script-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


# A reader's browser is given a page, never problem JSON, for a link it was handed: an
# address with an odd ?locale= (too long, unknown), ?thanks= or a long ?q= is read as far
# as it makes sense (an unknown locale is the help center's default).
_LOCALE = Query(default=None, description="en, pt-BR, ...")


def _locales(db: Any, workspace_id: str) -> set[str]:
    return set(
        db.scalars(
            select(Article.locale)
            .where(Article.workspace_id == workspace_id, Article.status == ArticleStatus.published)
            .distinct()
        )
    )


def _locale(request: Request, center: HelpCenter, available: set[str], asked: str | None) -> str:
    if asked and asked in available:
        return asked
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip()
        for candidate in (tag, tag.split("-")[0]):
            if candidate in available:
                return candidate
    return center.default_locale


def _page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status, headers=_HEADERS)


def _not_found(request: Request, what: str) -> HTMLResponse:
    return _page(request, "help_404.html", status=404, what=what, center=None, locale="en")


def _base(request: Request) -> str:
    return str(request.app.state.settings.public_url).rstrip("/")


@router.get("/{slug}/", response_class=HTMLResponse)
def home(request: Request, slug: str, locale: str | None = _LOCALE) -> Response:
    with request.app.state.database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return _not_found(request, "help center")
        available = _locales(db, center.workspace_id)
        loc = _locale(request, center, available, locale)
        cols = service.collections(db, workspace_id=center.workspace_id, locale=loc)
        articles = list(
            db.scalars(
                select(Article)
                .where(
                    Article.workspace_id == center.workspace_id,
                    Article.status == ArticleStatus.published,
                    Article.locale == loc,
                )
                .order_by(Article.position, Article.title)
            )
        )
        by_collection: dict[str | None, list[Article]] = {}
        for a in articles:
            by_collection.setdefault(a.collection_id, []).append(a)
        return _page(
            request,
            "help_home.html",
            center=center,
            locale=loc,
            locales=sorted(available),
            collections=[c for c in cols if by_collection.get(c.id)],
            by_collection=by_collection,
            popular=sorted(articles, key=lambda a: -a.views)[:5],
            base=_base(request),
        )


@router.get("/{slug}", include_in_schema=False)
def home_without_slash(slug: str) -> Response:
    return RedirectResponse(f"/help/{slug}/", status_code=308)


@router.get("/{slug}/collections/{collection}", response_class=HTMLResponse)
def collection_page(
    request: Request,
    slug: str,
    collection: str,
    locale: str | None = _LOCALE,
) -> Response:
    with request.app.state.database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return _not_found(request, "help center")
        loc = _locale(request, center, _locales(db, center.workspace_id), locale)
        col = db.scalar(
            select(Collection).where(
                Collection.workspace_id == center.workspace_id,
                Collection.slug == collection,
                Collection.locale == loc,
            )
        )
        if col is None:
            return _not_found(request, "collection")
        articles = list(
            db.scalars(
                select(Article)
                .where(
                    Article.collection_id == col.id,
                    Article.status == ArticleStatus.published,
                )
                .order_by(Article.position, Article.title)
            )
        )
        if not articles:
            # Not on the home page either: a collection of drafts alone (a launch still
            # being written) is not public yet, its title and description included.
            return _not_found(request, "collection")
        return _page(
            request,
            "help_collection.html",
            center=center,
            locale=loc,
            collection=col,
            articles=articles,
            base=_base(request),
        )


@router.get("/{slug}/articles/{article}", response_class=HTMLResponse)
def article_page(
    request: Request,
    slug: str,
    article: str,
    locale: str | None = _LOCALE,
    thanks: str = "",
) -> Response:
    database = request.app.state.database
    # Read and rendered in a read transaction; the view is counted after, in a short write
    # of its own: a public page that crawlers fetch must not hold SQLite's write lock while
    # it renders.
    with database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return _not_found(request, "help center")
        loc = _locale(request, center, _locales(db, center.workspace_id), locale)
        try:
            row = service.published_article(
                db, workspace_id=center.workspace_id, slug=article, locale=loc
            )
        except NotFound:
            return _not_found(request, "article")
        col = db.get(Collection, row.collection_id) if row.collection_id else None
        others = service.translations(db, article=row)
        canonical = search.public_url(
            _base(request), center.slug, row.slug, loc, center.default_locale
        )
        page = _page(
            request,
            "help_article.html",
            center=center,
            locale=loc,
            article=row,
            collection=col,
            translations=others,
            canonical=canonical,
            thanks=thanks not in ("", "0"),
            base=_base(request),
        )
    address = budget_address(request)
    if _limits(request).viewers.hit(f"kbview:{row.id}:{address}"):
        with database.session() as db:
            service.count_view(db, article_id=row.id)
    return page


def _cross_site(request: Request) -> bool:
    """Whether the browser says the request came from another site's page."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    return not own_origin(request, origin)


@router.post("/{slug}/articles/{article}/feedback")
def article_feedback(
    request: Request,
    slug: str,
    article: str,
    helpful: str = Form(...),
    locale: str = Form(default="", max_length=16),
    comment: str = Form(default="", max_length=1000),
) -> Response:
    address = budget_address(request)
    if _cross_site(request):
        # Another site's page making its visitors' browsers vote here (a form needs no
        # script, and a vote no sign-in).
        raise Forbidden("a vote comes from the help center's own pages")
    with request.app.state.database.session() as db:
        try:
            center = service.center_by_slug(db, slug)
            row = service.published_article(
                db,
                workspace_id=center.workspace_id,
                slug=article,
                locale=locale or center.default_locale,
            )
        except NotFound:
            return _not_found(request, "article")
        if _limits(request).votes.hit(f"kbvote:{center.workspace_id}:{address}"):
            secret = request.app.state.settings.secret_key.get_secret_value()
            reader = service.reader_key(secret, address)
            service.feedback(
                db, article=row, reader=reader, helpful=helpful == "yes", comment=comment
            )
        query = f"?locale={row.locale}&thanks=1" if locale else "?thanks=1"
    return RedirectResponse(f"/help/{slug}/articles/{article}{query}#feedback", status_code=303)


@router.get("/{slug}/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    slug: str,
    q: str = "",
    locale: str | None = _LOCALE,
) -> Response:
    q = q[:300]  # a longer question says nothing more, and costs more to rank
    address = budget_address(request)
    with request.app.state.database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return _not_found(request, "help center")
        loc = _locale(request, center, _locales(db, center.workspace_id), locale)
        # Past the budget the reader gets the page, saying to wait, and no ranking is done.
        taken = (
            _limits(request).searches.take(f"kbsearch:{center.workspace_id}:{address}")
            if q.strip()
            else None
        )
        busy = isinstance(taken, Refused)
        hits = (
            search.search_articles(
                db, center.workspace_id, q, locale=loc, limit=10, base_url=_base(request)
            )
            if q.strip() and not busy
            else []
        )
        page = _page(
            request,
            "help_search.html",
            status=429 if busy else 200,
            center=center,
            locale=loc,
            q=q,
            hits=hits,
            busy=busy,
            # When to search again, as Retry-After says it: the budget slides.
            wait=wait_text(taken.retry_after) if isinstance(taken, Refused) else None,
            base=_base(request),
        )
        if isinstance(taken, Refused):
            page.headers["Retry-After"] = str(taken.retry_after)
        return page


def _sitemap_urls(db: Any, center: HelpCenter, base: str, start: int, count: int) -> list[str]:
    """The ``<url>`` entries ``start`` to ``start + count`` of the help center's sitemap: its
    home first, then its published articles in a fixed order (by id), so that the numbered
    pages of a sitemap index neither skip nor repeat one."""
    urls = []
    if start == 0:
        urls.append(f"<url><loc>{escape(base)}/help/{escape(center.slug)}/</loc></url>")
        count -= 1
    rows = db.execute(
        select(Article.slug, Article.locale, Article.updated_at)
        .where(
            Article.workspace_id == center.workspace_id,
            Article.status == ArticleStatus.published,
        )
        .order_by(Article.id)
        .offset(max(start - 1, 0))
        .limit(max(count, 0))
    )
    for slug, locale, updated_at in rows:
        loc = search.public_url(base, center.slug, slug, locale, center.default_locale)
        urls.append(
            f"<url><loc>{escape(loc)}</loc><lastmod>{updated_at.date().isoformat()}</lastmod></url>"
        )
    return urls


def _xml(root: str, entries: list[str]) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{root} xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        + "\n".join(entries)
        + f"\n</{root}>\n"
    )
    return Response(body, media_type="application/xml")


def _published(db: Any, workspace_id: str) -> int:
    return int(
        db.scalar(
            select(func.count()).where(
                Article.workspace_id == workspace_id,
                Article.status == ArticleStatus.published,
            )
        )
        or 0
    )


@router.get("/{slug}/sitemap.xml")
def sitemap(request: Request, slug: str) -> Response:
    """The help center's sitemap; past ``SITEMAP_URLS`` addresses, a sitemap index of its
    numbered pages (``sitemap-1.xml``, ...), as the protocol allows no more in one file."""
    with request.app.state.database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return Response("not found", status_code=404, media_type="text/plain")
        base = _base(request)
        total = 1 + _published(db, center.workspace_id)
        if total <= SITEMAP_URLS:
            return _xml("urlset", _sitemap_urls(db, center, base, 0, total))
    pages = -(-total // SITEMAP_URLS)
    here = f"{escape(base)}/help/{escape(center.slug)}"
    return _xml(
        "sitemapindex",
        [f"<sitemap><loc>{here}/sitemap-{n}.xml</loc></sitemap>" for n in range(1, pages + 1)],
    )


@router.get("/{slug}/sitemap-{page:int}.xml")
def sitemap_page(request: Request, slug: str, page: int) -> Response:
    """Page ``page`` (from 1) of a sitemap index: at most ``SITEMAP_URLS`` addresses."""
    with request.app.state.database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return Response("not found", status_code=404, media_type="text/plain")
        start = (page - 1) * SITEMAP_URLS
        if page < 1 or start >= 1 + _published(db, center.workspace_id):
            return Response("not found", status_code=404, media_type="text/plain")
        return _xml("urlset", _sitemap_urls(db, center, _base(request), start, SITEMAP_URLS))


@router.get("/{slug}/{rest:path}", include_in_schema=False)
def unknown_page(request: Request, slug: str, rest: str) -> Response:
    """Any other address under a help center (a stale link, a typo, an old search result):
    the help center's own page saying so, with its header and search, not problem JSON."""
    with request.app.state.database.session(write=False) as db:
        try:
            center = service.center_by_slug(db, slug)
        except NotFound:
            return _not_found(request, "help center")
        return _page(
            request,
            "help_404.html",
            status=404,
            what="page",
            center=center,
            locale=center.default_locale,
        )
