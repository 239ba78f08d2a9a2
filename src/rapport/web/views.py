"""The agent web UI: server-rendered pages, enhanced by our own small script (static/app.js)."""

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from rapport import search
from rapport.auth import service as auth_service
from rapport.auth.deps import CurrentMember, Db, Unauthorized, resolve_principal
from rapport.auth.models import Role
from rapport.channels import service as inboxes
from rapport.conversations import service as conversations
from rapport.conversations.models import Conversation, Status
from rapport.customers import service as customers
from rapport.customers.models import Customer
from rapport.problems import Forbidden, Problem
from rapport.workspaces import service as workspaces

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


async def _principal(request: Request) -> auth_service.Principal | None:
    try:
        return await resolve_principal(request)
    except (Unauthorized, Problem):
        return None


def _page(
    request: Request, name: str, principal: auth_service.Principal | None, **ctx: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"principal": principal, "csrf": principal.csrf_token if principal else "", **ctx},
        headers={
            # Our own scripts only: a message that slipped past sanitizing still runs nothing.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data: cid:; "
            "style-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; "
            "frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse(
        "/app/inbox" if await _principal(request) else "/login", status_code=303
    )


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return _page(request, "login.html", None)


@router.get("/app/inbox", response_class=HTMLResponse)
async def inbox_page(
    request: Request,
    view: str = "mine",
    status: str | None = None,
    inbox_id: str | None = None,
    team_id: str | None = None,
    label: str | None = None,
    cursor: str | None = None,
) -> Response:
    principal = await _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    database = request.app.state.database
    filters = {"status": status, "inbox_id": inbox_id, "team_id": team_id, "label": label}
    with database.session(write=False) as db:
        rows, nxt = conversations.search(
            db,
            workspace_id=principal.workspace_id,
            status=Status(status) if status and status in Status.__members__ else None,
            assignee_id=principal.user_id if view == "mine" else None,
            unassigned=view == "unassigned",
            team_id=team_id or None,
            inbox_id=inbox_id or None,
            label=label or None,
            cursor=cursor,
            limit=50,
        )
        ids = {c.customer_id for c in rows}
        people = (
            {c.id: c for c in db.scalars(select(Customer).where(Customer.id.in_(ids)))}
            if ids
            else {}
        )
        all_inboxes = inboxes.list_inboxes(db, workspace_id=principal.workspace_id)
        teams = workspaces.teams(db, workspace_id=principal.workspace_id)
        labels = conversations.labels_of(db, [c.id for c in rows])
        unread = conversations.unread_counts(
            db, workspace_id=principal.workspace_id, user_id=principal.user_id
        )
    more = urlencode({k: v for k, v in {**filters, "view": view, "cursor": nxt}.items() if v})
    return _page(
        request,
        "inbox.html",
        principal,
        view=view,
        filters=filters,
        conversations=rows,
        customers=people,
        inboxes=all_inboxes,
        teams=teams,
        labels=labels,
        next_cursor=nxt,
        more_query=more,
        unread=unread,
        inbox_channel={i.id: i.channel for i in all_inboxes},
    )


@router.get("/app/conversations/{conversation_id}", response_class=HTMLResponse)
async def conversation_page(request: Request, conversation_id: str) -> Response:
    principal = await _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    database = request.app.state.database
    with database.session(write=False) as db:
        conv = conversations.get(
            db, workspace_id=principal.workspace_id, conversation_id=conversation_id
        )
        customer = customers.get(
            db, workspace_id=principal.workspace_id, customer_id=conv.customer_id
        )
        inbox = inboxes.get(db, workspace_id=principal.workspace_id, inbox_id=conv.inbox_id)
        all_inboxes = inboxes.list_inboxes(db, workspace_id=principal.workspace_id)
        timeline, _ = customers.timeline(
            db, customer=customer, kinds=None, channel=None, cursor=None, limit=30
        )
        previous = list(
            db.scalars(
                select(Conversation)
                .where(Conversation.customer_id == customer.id, Conversation.id != conv.id)
                .order_by(Conversation.last_activity_at.desc())
                .limit(10)
            )
        )
        ctx = {
            "conversation": conv,
            "customer": _CustomerView(customer),
            "inbox": inbox,
            "messages": conversations.messages(db, conversation=conv),
            "identities": customers.identities(db, customer=customer),
            "members": workspaces.members(db, workspace_id=principal.workspace_id),
            "timeline": timeline,
            "previous": previous,
            "inbox_channel": {i.id: i.channel for i in all_inboxes},
        }
    return _page(request, "conversation.html", principal, **ctx)


@router.get("/app/settings", response_class=HTMLResponse)
async def settings_page(request: Request) -> Response:
    principal = await _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    if principal.role.value not in ("admin", "owner"):
        raise Forbidden("settings are for admins")
    from rapport.automation import service as automation
    from rapport.channels import base as channel_registry
    from rapport.conversations import canned, sla
    from rapport.workspaces.models import Workspace

    database = request.app.state.database
    with database.session(write=False) as db:
        ws = db.get(Workspace, principal.workspace_id)
        ctx = {
            "workspace": ws,
            "inboxes": inboxes.list_inboxes(db, workspace_id=principal.workspace_id),
            "members": workspaces.members(db, workspace_id=principal.workspace_id),
            "teams": workspaces.teams(db, workspace_id=principal.workspace_id),
            "canned": canned.list_all(db, workspace_id=principal.workspace_id),
            "policies": sla.policies(db, principal.workspace_id),
            "rules": automation.rules(db, workspace_id=principal.workspace_id),
            "channels": channel_registry.names(),
            "public_url": request.app.state.settings.public_url.rstrip("/"),
        }
    return _page(request, "settings.html", principal, **ctx)


@router.get("/app/search", response_class=HTMLResponse)
async def search_page(request: Request, q: str = Query(default="", max_length=320)) -> Response:
    principal = await _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    database = request.app.state.database
    found: list[Customer] = []
    convs: list[Conversation] = []
    if q.strip():
        with database.session(write=False) as db:
            found, convs = find(db, workspace_id=principal.workspace_id, q=q)
    return _page(request, "search.html", principal, q=q, customers=found, conversations=convs)


def find(db: Db, *, workspace_id: str, q: str) -> tuple[list[Customer], list[Conversation]]:
    """Customers matching by name or handle, and conversations by customer or message text."""
    found, _ = customers.search(db, workspace_id=workspace_id, q=q, cursor=None, limit=25)
    ids = set(search.conversation_ids(db, workspace_id=workspace_id, q=q, limit=50))
    stmt = select(Conversation).where(Conversation.workspace_id == workspace_id)
    if found:
        stmt = stmt.where(
            Conversation.id.in_(ids) | Conversation.customer_id.in_([c.id for c in found])
        )
    elif ids:
        stmt = stmt.where(Conversation.id.in_(ids))
    else:
        return found, []
    rows = list(db.scalars(stmt.order_by(Conversation.last_activity_at.desc()).limit(50)))
    return found, rows


class _CustomerView:
    """A customer with the derived names templates use (``first_name`` for canned replies)."""

    def __init__(self, customer: Customer) -> None:
        self._c = customer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)

    @property
    def first_name(self) -> str:
        return (self._c.name or "").split(" ")[0]


api_router = APIRouter(prefix="/api/v1", tags=["search"])


@api_router.get("/search")
def search_api(
    principal: CurrentMember, db: Db, q: str = Query(min_length=1, max_length=320)
) -> dict[str, list[dict[str, Any]]]:
    """Customers (name, email, phone, any handle) and conversations (customer or message text)."""
    found, convs = find(db, workspace_id=principal.workspace_id, q=q)
    return {
        "customers": [
            {"id": c.id, "name": c.name, "email": c.email, "phone": c.phone} for c in found
        ],
        "conversations": [
            {
                "id": c.id,
                "customer_id": c.customer_id,
                "status": c.status.value,
                "last_activity_at": c.last_activity_at.isoformat(),
            }
            for c in convs
        ],
    }


# knowledge base authoring ------------------------------------------------------------------


@router.get("/app/kb", response_class=HTMLResponse)
async def kb_page(
    request: Request, cursor: str | None = None, status: str | None = None
) -> Response:
    principal = await _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    from rapport.kb import service as kb
    from rapport.kb.models import ArticleStatus

    database = request.app.state.database
    with database.session() as db:
        center = kb.help_center(db, workspace_id=principal.workspace_id)
        rows, nxt = kb.articles(
            db,
            workspace_id=principal.workspace_id,
            status=ArticleStatus(status)
            if status and status in ArticleStatus.__members__
            else None,
            cursor=cursor,
            limit=50,
        )
        collections = kb.collections(db, workspace_id=principal.workspace_id)
    return _page(
        request,
        "kb.html",
        principal,
        center=center,
        articles=rows,
        collections=collections,
        collection_titles={c.id: c.title for c in collections},
        status=status or "",
        next_cursor=nxt,
        can_write=principal.has(Role.agent),
        public_url=request.app.state.settings.public_url.rstrip("/"),
    )


@router.get("/app/kb/articles/new", response_class=HTMLResponse)
async def kb_new_article_page(
    request: Request, translation_of: str | None = None, locale: str | None = None
) -> Response:
    return await _kb_editor(request, None, translation_of=translation_of, locale=locale)


@router.get("/app/kb/articles/{article_id}", response_class=HTMLResponse)
async def kb_article_page(request: Request, article_id: str) -> Response:
    return await _kb_editor(request, article_id)


async def _kb_editor(
    request: Request,
    article_id: str | None,
    *,
    translation_of: str | None = None,
    locale: str | None = None,
) -> Response:
    principal = await _principal(request)
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    from rapport.kb import search as kb_search
    from rapport.kb import service as kb
    from rapport.kb.models import ArticleStatus

    database = request.app.state.database
    public_url = request.app.state.settings.public_url
    with database.session() as db:
        center = kb.help_center(db, workspace_id=principal.workspace_id)
        article = (
            kb.get_article(db, workspace_id=principal.workspace_id, article_id=article_id)
            if article_id
            else None
        )
        original = (
            kb.get_article(db, workspace_id=principal.workspace_id, article_id=translation_of)
            if translation_of
            else None
        )
        ctx = {
            "center": center,
            "article": article,
            "original": original,
            "new_locale": locale or "",
            "collections": kb.collections(db, workspace_id=principal.workspace_id),
            "translations": kb.translations(db, article=article) if article else [],
            "feedback": kb.feedback(db, article=article, limit=20) if article else [],
            "published": bool(article and article.status == ArticleStatus.published),
            "article_public_url": kb_search.public_url(public_url, center, article)
            if article
            else "",
            "can_write": principal.has(Role.agent),
        }
    return _page(request, "kb_article.html", principal, **ctx)
