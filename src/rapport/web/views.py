"""The agent web UI: server-rendered pages, enhanced by our own small script (static/app.js)."""

import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from rapport import sanitize, search
from rapport.auth import service as auth_service
from rapport.auth.deps import CurrentMember, Db, Unauthorized, resolve_principal
from rapport.auth.models import Membership, Role, Team, User
from rapport.automation import service as automation
from rapport.automation.models import Webhook
from rapport.channels import base as channel_registry
from rapport.channels import service as inboxes
from rapport.channels import webchat
from rapport.channels.email import inline as email_inline
from rapport.channels.models import Inbox
from rapport.conversations import files as conversation_files
from rapport.conversations import inbox_filters, merging, routing, sla
from rapport.conversations import labels as label_list
from rapport.conversations import service as conversations
from rapport.conversations.models import (
    CannedResponse,
    Conversation,
    Message,
    Priority,
    Status,
)
from rapport.crypto import box_for
from rapport.customers import duplicates, merge, profile
from rapport.customers import service as customers
from rapport.customers.models import AttributeType, Customer, CustomerTag, Identity
from rapport.db import utcnow
from rapport.notifications import service as notifications
from rapport.problems import Forbidden, Invalid, NotFound, Problem
from rapport.realtime import service as realtime
from rapport.workspaces import invitations, saved_views
from rapport.workspaces import service as workspaces
from rapport.workspaces.models import BusinessCalendar

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# A mail's cid: images, drawn from the attachments they were stored as (message.html).
templates.env.filters["inline_images"] = lambda markup, m, files: email_inline.shown(
    markup, meta=m.meta, files=files, conversation_id=m.conversation_id, message_id=m.id
)
router = APIRouter(include_in_schema=False)


async def _member(request: Request) -> auth_service.Principal | None:
    """The member signed in, or None."""
    try:
        return await resolve_principal(request)
    except (Unauthorized, Problem):
        return None


async def _principal(request: Request) -> auth_service.Principal | None:
    """The member signed in, or None; and the newest event of their workspace, read before
    the page reads anything else, so that its socket is sent what commits after (the page
    shows what came before; in between a page used to miss it)."""
    principal = await _member(request)
    if principal is None:
        return None
    (
        request.state.last_event_id,
        request.state.pending_event_ids,
        request.state.unread_notifications,
    ) = await run_in_threadpool(_newest_event, request.app.state.database, principal)
    return principal


# A page's member, read on the event loop (the session lookup goes to the threadpool);
# the pages themselves are plain ``def``, which FastAPI runs in its threadpool, as the
# API's views are: a page's queries held the loop, and every other request and socket with
# it, for as long as they ran.
Viewer = Annotated[auth_service.Principal | None, Depends(_principal)]


def _newest_event(database: Any, principal: auth_service.Principal) -> tuple[int, list[int], int]:
    """The workspace's newest event id, the ids below it still pending (their events, if
    they come, are sent to the page's socket: it cannot show them), then the member's
    unread notifications (counted after: one that commits in between is counted and sent
    again, and the page counts again on each, never adding one up)."""
    with database.session(write=False) as db:
        newest = realtime.latest_id(db, workspace_id=principal.workspace_id)
        pending = realtime.pending_ids(db, up_to_id=newest)
        unread = notifications.unread_count(
            db, workspace_id=principal.workspace_id, user_id=principal.user_id
        )
    return newest, pending, unread


def _page(
    request: Request, name: str, principal: auth_service.Principal | None, **ctx: Any
) -> HTMLResponse:
    now = utcnow()
    return templates.TemplateResponse(
        request,
        name,
        {
            "principal": principal,
            "csrf": principal.csrf_token if principal else "",
            # What colleagues see of a member (online, busy, offline), next to their name.
            "presence_of": lambda member: routing.presence(member, now),
            "last_event_id": getattr(request.state, "last_event_id", None),
            "pending_event_ids": getattr(request.state, "pending_event_ids", []),
            "unread_notifications": getattr(request.state, "unread_notifications", 0),
            "count_cap": notifications.COUNT_CAP,
            **ctx,
        },
        headers={
            # Our own scripts and styles only: a message that slipped past sanitizing still
            # runs and restyles nothing.
            # https: for the images an agent asks to see (a message's remote images are
            # held by the sanitizer, which every message passes again as it is drawn) and a
            # help-center article's; nothing loads from a sender's server unasked.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data:; "
            "style-src 'self'; script-src 'self'; "
            "connect-src 'self' ws: wss:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse(
        "/app/inbox" if await _principal(request) else "/login", status_code=303
    )


@router.get("/app", include_in_schema=False)
@router.get("/app/", include_in_schema=False)
async def app_root() -> Response:
    return RedirectResponse("/", status_code=303)


def _to_login(request: Request) -> RedirectResponse:
    """To the sign-in page, which comes back here once signed in (a link to a conversation
    opened while signed out led to the inbox instead)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return _page(request, "login.html", None)


@router.get("/forgot-password", response_class=HTMLResponse)
async def forgot_page(request: Request) -> Response:
    return _page(request, "forgot.html", None)


@router.get("/reset-password", response_class=HTMLResponse)
async def reset_page(request: Request) -> Response:
    """The token is in the URL's fragment, read by our script: it never reaches a server."""
    return _page(request, "reset.html", None)


@router.get("/invite", response_class=HTMLResponse)
async def invite_page(request: Request) -> Response:
    """Accept an invitation; its token is in the URL's fragment, as a reset link's is."""
    return _page(request, "invite.html", None)


@router.get("/app/inbox", response_class=HTMLResponse)
def inbox_page(
    request: Request,
    principal: Viewer,
    view: str = "mine",
    status: str | None = None,
    inbox_id: str | None = None,
    team_id: str | None = None,
    label: str | None = None,
    channel: str | None = None,
    priority: str | None = None,
    sla_state: str | None = None,
    active_from: str | None = None,
    active_until: str | None = None,
    sort: str | None = None,
    cursor: str | None = None,
) -> Response:
    if principal is None:
        return _to_login(request)
    database = request.app.state.database
    view, filters = inbox_filters.read(
        {
            "view": view,
            "status": status,
            "inbox_id": inbox_id,
            "team_id": team_id,
            "label": label,
            "channel": channel,
            "priority": priority,
            "sla_state": sla_state,
            "active_from": active_from,
            "active_until": active_until,
            "sort": sort,
        }
    )
    with database.session(write=False) as db:
        rows, nxt = conversations.search(
            db,
            workspace_id=principal.workspace_id,
            **inbox_filters.search_args(view, filters, user_id=principal.user_id),
            cursor=cursor,
            limit=50,
        )
        all_inboxes = inboxes.list_inboxes(db, workspace_id=principal.workspace_id)
        shown = rows_context(db, workspace_id=principal.workspace_id, rows=rows, of=all_inboxes)
        teams = workspaces.teams(db, workspace_id=principal.workspace_id)
        members = workspaces.members(db, workspace_id=principal.workspace_id)
        unread = conversations.unread_counts(
            db, workspace_id=principal.workspace_id, user_id=principal.user_id
        )
        macros = automation.macros(
            db, workspace_id=principal.workspace_id, user_id=principal.user_id
        )
        views = _saved_views(db, principal, "inbox")
    # A saved view (or a link kept) may name an inbox or a team deleted since: said, not
    # shown as a list that merely happens to be empty.
    gone = (
        "inbox"
        if filters["inbox_id"] and all(i.id != filters["inbox_id"] for i in all_inboxes)
        else "team"
        if filters["team_id"] and all(t.id != filters["team_id"] for t, _ in teams)
        else None
    )
    more = urlencode({k: v for k, v in {**filters, "view": view, "cursor": nxt}.items() if v})
    return _page(
        request,
        "inbox.html",
        principal,
        view=view,
        filters=filters,
        conversations=rows,
        inboxes=all_inboxes,
        channels=sorted({i.channel for i in all_inboxes}),
        teams=teams,
        agents=[(m, u) for m, u in members if m.role.value != "viewer"],
        next_cursor=nxt,
        more_query=more,
        unread=unread,
        macros=macros,
        gone=gone,
        **views,
        current_query=saved_views.encode("inbox", {**filters, "view": view}),
        can_act=principal.role.value != "viewer",
        **shown,
    )


def _saved_views(db: Db, principal: auth_service.Principal, page: str) -> dict[str, Any]:
    """A page's saved views as its sidebar lists them: the workspace's shared ones and the
    member's own, each marked with whether the member may delete it. The inbox's counts are
    not drawn here: app.js asks for them once the page is drawn (``GET
    /api/v1/saved-views/counts``), so no page waits on counting."""
    admin = principal.has(Role.admin)
    user = principal.user_id
    rows = saved_views.listed(db, workspace_id=principal.workspace_id, user_id=user, page=page)
    return {
        "saved_views": [
            {
                "id": v.id,
                "name": v.name,
                "query": v.query,
                "shared": v.owner_id is None,
                "mine": saved_views.may_change(v, user_id=user, admin=admin),
            }
            for v in rows
        ],
        "may_share": admin,
    }


def rows_context(
    db: Db, *, workspace_id: str, rows: list[Conversation], of: list[Inbox]
) -> dict[str, Any]:
    """What a list of conversations shows of each (``conversation_list.html``): its
    customer, inbox and channel (``of`` the workspace's inboxes), assignee, labels, latest
    message and SLA."""
    ids = {c.customer_id for c in rows}
    slas = sla.states_of(db, [c.id for c in rows])
    agents = {c.assignee_id for c in rows if c.assignee_id}
    return {
        "assignees": auth_service.names_of(db, agents),
        "customers": (
            {c.id: c for c in db.scalars(select(Customer).where(Customer.id.in_(ids)))}
            if ids
            else {}
        ),
        "inbox_channel": {i.id: i.channel for i in of},
        "inbox_name": {i.id: i.name for i in of},
        "labels": conversations.labels_of(db, [c.id for c in rows]),
        "previews": conversations.previews_of(
            db, workspace_id=workspace_id, ids=[c.id for c in rows]
        ),
        "colours": label_list.colours(db, workspace_id=workspace_id),
        "slas": slas,
        "paused": {cid: _open_time(left) for cid, left in sla.paused(db, rows, slas).items()},
    }


def _open_time(left: timedelta) -> str:
    """Business time left on a paused SLA clock, as an agent reads it: "9 h 30 min"."""
    hours, minutes = divmod(int(left.total_seconds()) // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@router.get("/app/conversations/{conversation_id}", response_class=HTMLResponse)
def conversation_page(request: Request, principal: Viewer, conversation_id: str) -> Response:
    if principal is None:
        return _to_login(request)
    database = request.app.state.database
    with database.session(write=False) as db:
        conv = conversations.get(
            db, workspace_id=principal.workspace_id, conversation_id=conversation_id
        )
        if conv.merged_into_id is not None:
            # Its messages are the survivor's now (a link in a notification or an old tab
            # led to an empty thread, whose reply box still took replies).
            survivor = merging.where_merged(db, conv)
            if survivor is not None and survivor.id != conv.id:
                return RedirectResponse(f"/app/conversations/{survivor.id}", status_code=303)
        customer = customers.get(
            db, workspace_id=principal.workspace_id, customer_id=conv.customer_id
        )
        inbox = inboxes.get(db, workspace_id=principal.workspace_id, inbox_id=conv.inbox_id)
        # The inbox a reply goes through (the one the customer last wrote through).
        reply_inbox = inboxes.get(
            db,
            workspace_id=principal.workspace_id,
            inbox_id=conversations.last_channel(db, conversation=conv),
        )
        all_inboxes = inboxes.list_inboxes(db, workspace_id=principal.workspace_id)
        previous = conversations.of_customer(db, customer=customer, limit=10, besides=conv.id)
        msgs = conversations.messages(db, conversation=conv)
        ctx: dict[str, Any] = {
            "conversation": conv,
            "inbox": inbox,
            "reply_inbox": reply_inbox,
            "messages": msgs,
            "attachments": conversation_files.of_messages(db, [m.id for m in msgs]),
            "labels": conversations.labels_of(db, [conv.id])[conv.id],
            "colours": label_list.colours(db, workspace_id=principal.workspace_id),
            "members": (members := workspaces.members(db, workspace_id=principal.workspace_id)),
            "teams": [t for t, _ in workspaces.teams(db, workspace_id=principal.workspace_id)],
            # Who wrote what: today's members (for messages still to come) and those who wrote.
            "senders": {u.id: u.name or u.email for _, u in members}
            | _sender_names(db, msgs)
            | (guests := conversations.guest_names(db, conversation=conv, messages=msgs)),
            # Who else writes here (copied on the customer's mail), each person once.
            "guests": _people(db, guests),
            "previous": previous,
            "inbox_channel": {i.id: i.channel for i in all_inboxes},
            # The names of the workspace's inboxes, for the ones a mail also came to
            # (``meta.email.also_received_by``): an id none of them has is not shown.
            "inbox_name": {i.id: i.name for i in all_inboxes},
            # A reply by email carries copies: the composer offers whom the thread copied.
            "reply_cc": conversations.reply_copies(db, conversation=conv),
            # The panel's consent form starts on the channel a reply here goes through.
            "consent_channel": channel_registry.consent_channel(inbox.channel),
            # What the member may run here: the workspace's macros and their own.
            "macros": automation.macros(
                db, workspace_id=principal.workspace_id, user_id=principal.user_id
            ),
            **_customer_context(db, customer),
        }
    return _page(request, "conversation.html", principal, **ctx)


@router.get(
    "/app/conversations/{conversation_id}/messages/{message_id}/body", response_class=HTMLResponse
)
def message_body(
    request: Request, principal: CurrentMember, conversation_id: str, message_id: str
) -> Response:
    """One message's body as its conversation's page draws it (message_body.html), for the
    page to draw a message with HTML arriving live: it took the whole page for that, a long
    thread's worth per email. No stream to follow: the page that asks has its own. Signed
    out, a 401 as the API answers (problem JSON): a script follows no sign-in page."""
    with request.app.state.database.session(write=False) as db:
        conv = conversations.get(
            db, workspace_id=principal.workspace_id, conversation_id=conversation_id
        )
        m = conversations.get_message(db, conversation=conv, message_id=message_id)
        attachments = conversation_files.of_messages(db, [m.id])
    return _page(request, "message_body.html", principal, m=m, attachments=attachments)


def _message_html(m: Message) -> sanitize.Cleaned:
    """A message's HTML as the page shows it (message.html): sanitized again, so that one
    stored under older rules holds its remote images too; its own files' images shown."""
    own = f"/api/v1/conversations/{m.conversation_id}/messages/{m.id}/attachments/"
    return sanitize.message_html(m.html or "", own_images=own)


templates.env.filters["message_html"] = _message_html
templates.env.filters["html_version"] = conversations.html_version


def _people(db: Db, names: dict[str, str]) -> list[tuple[str, str]]:
    """(name, id) of each person among these customers, by the record their merges ended
    in (two records of one person are one; two people of one name are two), by name."""
    people: dict[str, str] = {}
    for customer_id, name in names.items():
        found = db.get(Customer, customer_id)
        if found is not None:
            people[customers.root_of(db, found).id] = name
    return sorted((name, root) for root, name in people.items())


def _sender_names(db: Db, msgs: list[Any]) -> dict[str, str]:
    """The name of each member who wrote one of these messages (one who has left the
    workspace since included), by user id: messages said "user" where an agent wrote."""
    return auth_service.names_of(
        db, {m.sender_id for m in msgs if m.sender_type == "user" and m.sender_id}
    )


def _customer_context(db: Db, customer: Customer) -> dict[str, Any]:
    """What the customer's side of a page shows (``customer_aside.html``)."""
    timeline, _ = customers.timeline(
        db, customer=customer, kinds=None, channel=None, cursor=None, limit=30
    )
    return {
        "customer": _CustomerView(customer),
        "identities": customers.identities(db, customer=customer),
        "timeline": timeline,
    }


@router.get("/app/customers", response_class=HTMLResponse)
def customers_page(
    request: Request,
    principal: Viewer,
    q: str = Query(default="", max_length=320),
    tag: str = Query(default="", max_length=100),
    attr: str = "",  # how long each may be: said on the page (attribute_is), not a 422
    value: str = "",
    cursor: str | None = None,
) -> Response:
    """Every customer of the workspace, newest activity first; by name, email, phone or any
    handle with ``q``, by tag with ``tag``, by a custom attribute with ``attr`` and
    ``value`` ("plan" is "Pro")."""
    if principal is None:
        return _to_login(request)
    refused = ""
    with request.app.state.database.session(write=False) as db:
        defined = profile.definitions(db, workspace_id=principal.workspace_id)
        pairs = [(attr, value)] if attr.strip() else []
        try:
            found = customers.search(
                db,
                workspace_id=principal.workspace_id,
                q=q.strip() or None,
                tag=tag.strip() or None,
                attributes=pairs,
                cursor=cursor,
                limit=50,
            )
        except Invalid as exc:  # "seats is a number, not 'many'": said above an empty list
            refused, found = exc.detail, customers.Found([], None)
        channels = _channels_of(db, principal.workspace_id, [c.id for c in found.customers])
        tags = _tags_of(db, principal.workspace_id, [c.id for c in found.customers])
        pending = len(duplicates.pending(db, workspace_id=principal.workspace_id, limit=100))
        views = _saved_views(db, principal, "customers")
    chosen = {"q": q, "tag": tag, "attr": attr if pairs else "", "value": value if pairs else ""}
    more = urlencode({k: v for k, v in {**chosen, "cursor": found.next_cursor}.items() if v})
    return _page(
        request,
        "customers.html",
        principal,
        q=q,
        tag=tag,
        attr=chosen["attr"],
        value=chosen["value"],
        definitions=defined,
        refused=refused,
        found=found.customers,
        channels=channels,
        tags=tags,
        duplicates=pending,
        truncated=found.truncated,
        next_cursor=found.next_cursor,
        more_query=more,
        **views,
        current_query=saved_views.encode("customers", chosen),
    )


def _channels_of(db: Db, workspace_id: str, ids: list[str]) -> dict[str, list[str]]:
    """One person across channels: the kinds of handle each of these customers has."""
    kinds: dict[str, set[str]] = {c: set() for c in ids}
    for customer_id, kind in db.execute(
        select(Identity.customer_id, Identity.kind).where(
            Identity.workspace_id == workspace_id, Identity.customer_id.in_(ids)
        )
    ):
        kinds[customer_id].add(kind.value)
    return {cid: sorted(k) for cid, k in kinds.items()}


def _tags_of(db: Db, workspace_id: str, ids: list[str]) -> dict[str, list[str]]:
    """The tags of each of these customers, alphabetical (a column of the customer table)."""
    tags: dict[str, list[str]] = {c: [] for c in ids}
    for customer_id, tag in db.execute(
        select(CustomerTag.customer_id, CustomerTag.tag)
        .where(CustomerTag.workspace_id == workspace_id, CustomerTag.customer_id.in_(ids))
        .order_by(CustomerTag.tag)
    ):
        tags[customer_id].append(tag)
    return tags


@router.get("/app/customers/duplicates", response_class=HTMLResponse)
def duplicates_page(request: Request, principal: Viewer) -> Response:
    """The pairs of customers that may be one person (a scan's or a channel's word),
    likeliest first, each side by side, to merge or keep apart."""
    if principal is None:
        return _to_login(request)
    ws = principal.workspace_id
    with request.app.state.database.session(write=False) as db:
        pairs = duplicates.pending(db, workspace_id=ws, limit=100)
        ids = list({i for p in pairs for i in (p.left_id, p.right_id)})
        people = {c.id: c for c in db.scalars(select(Customer).where(Customer.id.in_(ids)))}
        talks = conversations.counts_of_customers(db, workspace_id=ws, ids=ids)
        channels = _channels_of(db, ws, ids)
    return _page(
        request,
        "duplicates.html",
        principal,
        pairs=pairs,
        people=people,
        conversations_of=talks,
        channels=channels,
        can_act=principal.role.value != "viewer",
        can_scan=principal.role.value in ("owner", "admin"),
    )


@router.get("/app/customers/{customer_id}", response_class=HTMLResponse)
def customer_page(request: Request, principal: Viewer, customer_id: str) -> Response:
    """One customer: their handles, profile, timeline and every conversation, on any channel."""
    if principal is None:
        return _to_login(request)
    ws = principal.workspace_id
    with request.app.state.database.session(write=False) as db:
        customer = customers.get(db, workspace_id=ws, customer_id=customer_id)
        if customer.merged_into_id is not None:  # one person: the page is the survivor's
            return RedirectResponse(f"/app/customers/{customer.merged_into_id}", status_code=303)
        rows = conversations.of_customer(db, customer=customer, limit=100)
        guest_in = conversations.guest_in(db, customer=customer, limit=100)
        # The records merged into this one and not given back: each can be undone here.
        done = [
            m
            for m in merge.merges_of(db, workspace_id=ws, customer_id=customer.id)
            if m.survivor_id == customer.id and m.undone_at is None
        ]
        members = {
            u.id: u.name
            for u in db.scalars(
                select(User).where(User.id.in_({m.actor_user_id for m in done} - {None}))
            )
        }
        merged_in = [
            (m, other, members.get(m.actor_user_id or ""))
            for m in done
            if (other := db.get(Customer, m.merged_id)) is not None
        ]
        every_inbox = inboxes.list_inboxes(db, workspace_id=ws)
        ctx = {
            **_customer_context(db, customer),
            **rows_context(db, workspace_id=ws, rows=[*rows, *guest_in], of=every_inbox),
        }
        # "New conversation" (agents and up): each enabled inbox, with why a conversation
        # cannot be started through it (None: it can), by the API's own rule.
        identities = ctx["identities"]
        reach = [
            (i, conversations.start_refusal(db, customer=customer, inbox=i, identities=identities))
            for i in every_inbox
            if i.enabled and principal.has(Role.agent)
        ]
        # Whom it can go to: the caller first (the API's default), then each colleague.
        agents = sorted(
            (
                (m, u)
                for m, u in workspaces.members(db, workspace_id=ws)
                if m.role != Role.viewer and u.id != principal.user_id
            ),
            key=lambda mu: (mu[1].name or mu[1].email).casefold(),
        )
        teams = [t for t, _ in workspaces.teams(db, workspace_id=ws)]
    return _page(
        request,
        "customer.html",
        principal,
        reach=reach,
        agents=agents,
        teams=teams,
        merged_in=merged_in,
        conversation=None,
        conversations=rows,
        guest_in=guest_in,
        filters={},
        can_act=False,
        consent_channel="",
        **ctx,
    )


@router.get("/app/account", response_class=HTMLResponse)
def account_page(request: Request, principal: Viewer) -> Response:
    """Every member's own account (viewers too): their name, their password, two-factor,
    and their API tokens in this workspace."""
    if principal is None:
        return _to_login(request)
    with request.app.state.database.session(write=False) as db:
        tokens = auth_service.list_tokens(
            db, workspace_id=principal.workspace_id, user_id=principal.user_id
        )
    return _page(
        request,
        "account.html",
        principal,
        tokens=tokens,
        # A token's role is at most its maker's own.
        token_roles=[r.value for r in Role if principal.has(r)],
    )


@router.get("/app/macros", response_class=HTMLResponse)
def macros_page(request: Request, principal: Viewer) -> Response:
    """The macros a member may run (the workspace's and their own), and the form that makes
    and changes them: personal ones by any agent, the workspace's by admins and owners."""
    if principal is None:
        return _to_login(request)
    from rapport.conversations import canned

    with request.app.state.database.session(write=False) as db:
        ws = principal.workspace_id
        members = workspaces.members(db, workspace_id=ws)
        listed = automation.macros(db, workspace_id=ws, user_id=principal.user_id)
        form = _rule_form(
            members=members,
            teams=workspaces.teams(db, workspace_id=ws),
            inboxes=[],
            canned=canned.list_all(db, workspace_id=ws),
            webhooks=[],
        )
        labels = [row.name for row in label_list.list_all(db, workspace_id=ws)]
    admin = principal.has(Role.admin)
    return _page(
        request,
        "macros.html",
        principal,
        macros=listed,
        form=form,
        labels=labels,
        # The order the form offers them in: as an agent works a conversation.
        macro_actions=[a for a in _MACRO_ORDER if a in automation.MACRO_ACTIONS],
        me=automation.ME,
        admin=admin,
        may_change={
            m.id for m in listed if automation.may_change(m, user_id=principal.user_id, admin=admin)
        },
        can_act=principal.role != Role.viewer,
    )


_MACRO_ORDER = (
    "send_message",
    "send_canned",
    "add_note",
    "assign_agent",
    "assign_team",
    "add_label",
    "remove_label",
    "set_priority",
    "set_status",
)


@router.get("/app/notifications", response_class=HTMLResponse)
def notifications_page(
    request: Request, principal: Viewer, cursor: str | None = None, unread: bool = False
) -> Response:
    """The member's own notifications (mentions, assignments), or the unread ones only,
    newest first, a page at a time (the older ones behind a link: they could not be seen
    at all)."""
    if principal is None:
        return _to_login(request)
    with request.app.state.database.session(write=False) as db:
        rows, nxt = notifications.for_user(
            db,
            workspace_id=principal.workspace_id,
            user_id=principal.user_id,
            unread_only=unread,
            cursor=cursor,
            limit=NOTIFICATIONS_SHOWN,
        )
        # "Mark all read" reads up to the newest the member has now (an older page's
        # button reads the newer pages too), not one that comes after this page is drawn.
        newest = (
            rows
            if cursor is None and not unread
            else notifications.for_user(
                db,
                workspace_id=principal.workspace_id,
                user_id=principal.user_id,
                unread_only=False,
                limit=1,
            )[0]
        )
        about = _notified_about(db, principal.workspace_id, rows)
    return _page(
        request,
        "notifications.html",
        principal,
        items=rows,
        newest_id=newest[0].id if newest else "",
        next_cursor=nxt,
        more_query=urlencode({"cursor": nxt, **({"unread": 1} if unread else {})}),
        older=cursor is not None,
        unread_only=unread,
        **about,
    )


def _notified_about(db: Db, workspace_id: str, rows: list[Any]) -> dict[str, Any]:
    """Who each notification concerns (its conversation's customer) and who wrote the note
    that mentioned the member: they listed the note's text alone."""
    conv_ids = {n.conversation_id for n in rows if n.conversation_id}
    msg_ids = {n.message_id for n in rows if n.message_id}
    customers_of = {
        conv_id: name or email or phone or "Customer"
        for conv_id, name, email, phone in (
            db.execute(
                select(Conversation.id, Customer.name, Customer.email, Customer.phone)
                .join(Customer, Customer.id == Conversation.customer_id)
                .where(Conversation.workspace_id == workspace_id, Conversation.id.in_(conv_ids))
            )
            if conv_ids
            else []
        )
    }
    authors = {
        msg_id: name or email
        for msg_id, name, email in (
            db.execute(
                select(Message.id, User.name, User.email)
                .join(User, User.id == Message.sender_id)
                .where(
                    Message.workspace_id == workspace_id,
                    Message.id.in_(msg_ids),
                    Message.sender_type == "user",
                )
            )
            if msg_ids
            else []
        )
    }
    return {"customers_of": customers_of, "authors": authors}


NOTIFICATIONS_SHOWN = 100


_OP_NAMES = {"in": "is one of", "gt": "greater than", "lt": "less than", "regex": "matches"}


def _rule_form(
    *,
    members: list[tuple[Membership, User]],
    teams: list[tuple[Team, list[str]]],
    inboxes: list[Inbox],
    canned: list[CannedResponse],
    webhooks: list[Webhook],
) -> dict[str, Any]:
    """What the automation rule form offers (settings.html, app.js setupRules), read from the
    automation module's own tables: each condition field with the ops it takes and the values
    it can hold, each action's choices by name, and the names of what rules name by id."""

    assignable = [[u.id, u.name or u.email] for m, u in members if m.role in automation.ASSIGNABLE]
    by_kind = {
        "member": assignable,
        "team": [[t.id, t.name] for t, _ in teams],
        "inbox": [[i.id, i.name] for i in inboxes],
    }

    def spec(name: str, field: automation.Field) -> dict[str, Any]:
        # "exists" last: the first op is the one a new condition starts with.
        ops = sorted(field.ops, key=lambda op: (op == "exists", op))
        label = name.removesuffix("_id").replace(".", " ").replace("_", " ")
        out: dict[str, Any] = {"label": label, "of": field.of, "ops": ops, "kind": "text"}
        if field.labels:
            out["kind"] = "labels"
        elif field.ids in by_kind:
            out |= {"kind": "pick", "choices": by_kind[field.ids]}
        elif field.choices is not None:
            out |= {"kind": "pick", "choices": [[v, v] for v in field.choices()]}
        return out

    fields = {name: spec(name, f) for name, f in automation.FIELDS.items()}
    anything = automation.ANY_ATTRIBUTE
    groups: dict[str, list[str]] = {}
    for name, f in fields.items():
        groups.setdefault(f["of"], []).append(name)
    return {
        "conditions": {
            "fields": fields,
            "attribute": {
                **spec(automation.ATTRIBUTES, anything),
                "label": "customer attribute…",
                "prefix": automation.ATTRIBUTES,
            },
            # How the form says each op ("gt": "greater than"); the others as written.
            "op_names": {
                op: _OP_NAMES.get(op, op.replace("_", " ")) for op in sorted(automation.OPERATORS)
            },
            # What each event comes with (a conversation, a message, a customer).
            "events": {
                e: [of for of, has in automation.EVENT_HAS.items() if e in has]
                for e in sorted(automation.EVENTS)
            },
        },
        "groups": groups,
        "attribute_of": anything.of,
        "member": assignable,
        "team": by_kind["team"],
        "canned": [[c.id, f"/{c.shortcut}"] for c in canned],
        "webhook": [[h.id, h.url if h.enabled else f"{h.url} (switched off)"] for h in webhooks],
        "priority": [p.value for p in Priority],
        # As automation checks set_status: snoozing needs a time to wake at.
        "status": [s.value for s in Status if s != Status.snoozed],
        # What the list of rules shows for an id a rule names.
        "names": {
            **{u.id: u.name or u.email for _, u in members},
            **{t.id: t.name for t, _ in teams},
            **{i.id: i.name for i in inboxes},
            **{c.id: f"/{c.shortcut}" for c in canned},
            **{h.id: h.url for h in webhooks},
        },
    }


@router.get("/app/settings", response_class=HTMLResponse)
def settings_page(request: Request, principal: Viewer) -> Response:
    if principal is None:
        return _to_login(request)
    if principal.role.value not in ("admin", "owner"):
        raise Forbidden("settings are for admins")
    from rapport.conversations import canned
    from rapport.workspaces.models import Workspace

    database = request.app.state.database
    settings = request.app.state.settings
    box = box_for(settings.secret_key.get_secret_value())
    with database.session(write=False) as db:
        ws = db.get(Workspace, principal.workspace_id)
        ctx: dict[str, Any] = {
            "workspace": ws,
            "inboxes": (listed := inboxes.list_inboxes(db, workspace_id=principal.workspace_id)),
            # The names of each inbox's credentials, never their values.
            "inbox_secrets": {i.id: sorted(inboxes.secrets_of(i, box)) for i in listed},
            "channel_fields": {
                name: channel.fields
                for name in channel_registry.names()
                if (channel := channel_registry.get(name)) is not None
            },
            "members": workspaces.members(db, workspace_id=principal.workspace_id),
            "invitations": invitations.pending(db, workspace_id=principal.workspace_id),
            "now": utcnow(),
            "presence": routing.presence,
            "teams": workspaces.teams(db, workspace_id=principal.workspace_id),
            "canned": canned.list_all(db, workspace_id=principal.workspace_id),
            "policies": sla.policies(db, principal.workspace_id),
            "priorities": [p.value for p in Priority],
            "rules": automation.rules(db, workspace_id=principal.workspace_id),
            "webhooks": automation.webhooks(db, workspace_id=principal.workspace_id),
            "label_rows": label_list.list_all(db, workspace_id=principal.workspace_id),
            "attribute_definitions": profile.definitions(db, workspace_id=principal.workspace_id),
            "attribute_types": [t.value for t in AttributeType],
            "calendar": _calendar_form(
                sla.get_calendar_row(db, workspace_id=principal.workspace_id)
            ),
            "timezones": sorted(zoneinfo.available_timezones()),
            "rule_events": sorted(automation.EVENTS),
            "rule_operators": sorted(automation.OPERATORS),
            "rule_actions": sorted(automation.ACTIONS),
            "channels": channel_registry.names(),
            "public_url": settings.public_url.rstrip("/"),
        }
        # Each inbox's status, its reasons behind the badge (channels.health).
        ctx["inbox_health"] = {
            h.inbox_id: h
            for h in inboxes.health_of(
                db, workspace_id=principal.workspace_id, box=box, inboxes=listed
            )
        }
        ctx["rule_form"] = _rule_form(
            members=ctx["members"],
            teams=ctx["teams"],
            inboxes=listed,
            canned=ctx["canned"],
            webhooks=ctx["webhooks"],
        )
    ctx["inbox_missing"] = {i.id: inboxes.missing(i, ctx["inbox_secrets"][i.id]) for i in listed}
    return _page(request, "settings.html", principal, **ctx)


@router.get("/app/inboxes/{inbox_id}/try", response_class=HTMLResponse)
def try_widget(request: Request, principal: Viewer, inbox_id: str) -> Response:
    """A page that stands for the customer's website, with the inbox's chat widget on it:
    what a visitor sees, for the team to try (messages go through like any visitor's)."""
    if principal is None:
        return _to_login(request)
    with request.app.state.database.session(write=False) as db:
        inbox = inboxes.get(db, workspace_id=principal.workspace_id, inbox_id=inbox_id)
        if inbox.channel != "webchat":
            raise NotFound("inbox")
        db.expunge(inbox)
    public_url = request.app.state.settings.public_url.rstrip("/")
    allowed = inbox.settings.get("allowed_origins") or ["*"]
    return _page(
        request,
        "try_widget.html",
        principal,
        inbox=inbox,
        public_url=public_url,
        # Compared as origins: a public URL with a path (Rapport under a proxy's prefix)
        # runs the widget on its origin alone, and an entry may be written with a slash.
        blocked="*" not in allowed
        and webchat.origin_of(public_url) not in {webchat.origin_of(a) for a in allowed},
    )


@router.get("/app/search", response_class=HTMLResponse)
def search_page(
    request: Request, principal: Viewer, q: str = Query(default="", max_length=320)
) -> Response:
    if principal is None:
        return _to_login(request)
    database = request.app.state.database
    hits = SearchHits([], [], {})
    shown: dict[str, Any] = {}
    if q.strip():
        ws = principal.workspace_id
        with database.session(write=False) as db:
            hits = find(db, workspace_id=ws, q=q)
            shown = rows_context(
                db,
                workspace_id=ws,
                rows=hits.conversations,
                of=inboxes.list_inboxes(db, workspace_id=ws),
            )
            shown["channels"] = _channels_of(db, ws, [c.id for c in hits.customers])
            shown["tags"] = _tags_of(db, ws, [c.id for c in hits.customers])
            # Each conversation found by its text shows the message that matched (its row
            # names it: the page drops the row at once when that message is deleted).
            shown["previews"].update(conversations.previews_of_hits(hits.matched, q))
            shown["matches"] = {cid: hit.message_id for cid, hit in hits.matched.items()}
    return _page(
        request,
        "search.html",
        principal,
        q=q,
        found=hits.customers,
        conversations=hits.conversations,
        filters={},
        can_act=False,
        **shown,
    )


@dataclass
class SearchHits:
    customers: list[Customer]
    conversations: list[Conversation]
    # Of the conversations found by their text: the newest message that matched.
    matched: dict[str, search.Hit]


def find(db: Db, *, workspace_id: str, q: str) -> SearchHits:
    """Customers matching by name or handle, and conversations by customer or message text.
    Not a conversation merged into another: it holds none of its messages, and its link
    opens the one it was merged into, found as well (the same customer's, the messages)."""
    found = customers.search(db, workspace_id=workspace_id, q=q, cursor=None, limit=25).customers
    matched = search.conversation_hits(db, workspace_id=workspace_id, q=q, limit=50)
    stmt = select(Conversation).where(
        Conversation.workspace_id == workspace_id, Conversation.merged_into_id.is_(None)
    )
    if found:
        stmt = stmt.where(
            Conversation.id.in_(matched) | Conversation.customer_id.in_([c.id for c in found])
        )
    elif matched:
        stmt = stmt.where(Conversation.id.in_(matched))
    else:
        return SearchHits(found, [], {})
    rows = list(db.scalars(stmt.order_by(Conversation.last_activity_at.desc()).limit(50)))
    return SearchHits(found, rows, matched)


DAYS = (
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
    ("sun", "Sunday"),
)


def _calendar_form(row: BusinessCalendar) -> dict[str, Any]:
    """The calendar as the settings form shows it: each day's spans as "09:00-17:00, …"."""
    return {
        "timezone": row.timezone,
        "days": [
            (key, name, ", ".join(f"{a}-{b}" for a, b in (row.hours or {}).get(key, [])))
            for key, name in DAYS
        ],
        "holidays": "\n".join(row.holidays or []),
    }


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
    """Customers (name, email, phone, any handle) and conversations (customer or message
    text). A conversation found by its text has ``match``: the newest message that matched,
    the ``snippet`` around what matched and the ``highlights`` in it (start, end offsets of
    the matching words); one found by its customer alone has ``match`` null."""
    hits = find(db, workspace_id=principal.workspace_id, q=q)
    shown = conversations.previews_of_hits(hits.matched, q)
    return {
        "customers": [
            {"id": c.id, "name": c.name, "email": c.email, "phone": c.phone} for c in hits.customers
        ],
        "conversations": [
            {
                "id": c.id,
                "customer_id": c.customer_id,
                "status": c.status.value,
                "last_activity_at": c.last_activity_at.isoformat(),
                "match": _match(hits.matched[c.id].message_id, shown[c.id])
                if c.id in shown
                else None,
            }
            for c in hits.conversations
        ],
    }


def _match(message_id: str, preview: conversations.Preview) -> dict[str, Any]:
    highlights, at = [], 0
    for piece, hit in preview.marked:
        if hit:
            highlights.append([at, at + len(piece)])
        at += len(piece)
    return {"message_id": message_id, "snippet": preview.text, "highlights": highlights}
