"""The widget's own API, for pages on other origins: a visitor token in a header, no
cookies, CORS limited to the origins the inbox allows."""

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Form,
    Header,
    Query,
    Request,
    Response,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, tuple_, update
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as Sent

from rapport.auth import service as auth
from rapport.auth.models import Membership
from rapport.auth.ratelimit import RateLimiter
from rapport.auth.views import budget_address
from rapport.bot import service as bot
from rapport.bus import get_bus
from rapport.channels import base, webchat
from rapport.channels.models import Inbox
from rapport.channels.webchat.models import Visitor
from rapport.conversations import files
from rapport.conversations.models import Attachment, Conversation, Message, MessageKind
from rapport.conversations.routing import is_online
from rapport.conversations.service import message_payload
from rapport.crypto import SecretBox, sha256_hex
from rapport.db import Database, utcnow
from rapport.guard import route_path
from rapport.ingest import InboundAttachment, InboundMessage, IngestWriter
from rapport.problems import Forbidden, Invalid, NotFound
from rapport.realtime import service as realtime
from rapport.storage import LocalStorage
from rapport.workspaces.models import Workspace

log = logging.getLogger(__name__)
router = APIRouter(tags=["web chat"], include_in_schema=True)
STATIC = Path(__file__).parent / "static"
_VISIBLE = (MessageKind.message, MessageKind.bot)


def shown(message: Message, conversation: Conversation | None, visitor: Visitor) -> bool:
    """Whether the visitor's widget shows this message: one of their customer's that came or
    went through this chat, in whichever conversation it sits now (an agent may have merged
    the chat into the customer's email thread, or that thread into the chat)."""
    return webchat.in_chat(message, conversation, visitor) and message.kind in _VISIBLE


# Who the visitor is: the token the session call returned, kept by the widget.
VisitorToken = Annotated[
    str,
    Header(
        alias="X-Rapport-Visitor",
        max_length=100,
        description="The visitor's token, as the session call returned it.",
    ),
]


def _visitor_and_region(database: Database, inbox: Inbox, token: str) -> tuple[Visitor, str]:
    """The visitor the token names, and the region its phone numbers are read in."""
    with database.session(write=False) as db:
        visitor = webchat.visitor_by_token(db, inbox=inbox, token=token)
        ws = db.get(Workspace, inbox.workspace_id)
        db.expunge(visitor)
        return visitor, ws.default_region if ws else "US"


class SessionIn(BaseModel):
    visitor_token: str | None = Field(default=None, max_length=100)
    name: str = Field(default="", max_length=300)
    email: str | None = Field(default=None, max_length=320)
    user_id: str | None = Field(default=None, max_length=200)
    user_hash: str | None = Field(default=None, max_length=128)


class WidgetLimits:
    """What one visitor may send, and how many new visitors one address may make, in each
    chat: the widget needs no sign-in, and each message it stores sets the workers going
    (the bot, routing, rules). Without them one script posting in a loop filled an inbox,
    and the job queue every workspace shares. Counted in Redis when configured, so every
    process of a deployment shares them."""

    def __init__(self, redis_url: str | None = None) -> None:
        # A person types a few messages a minute; a paste of lines comes in a burst.
        self.messages = RateLimiter(limit=20, window=60, redis_url=redis_url)
        # Files are up to 10 MB each: fewer, over longer.
        self.files = RateLimiter(limit=10, window=600, redis_url=redis_url)
        # Every new browser on the host site is a new visitor; many share one address
        # behind a carrier's NAT, so the budget is wide: it stops a loop, not a crowd.
        self.visitors = RateLimiter(limit=300, window=3600, redis_url=redis_url)
        # What all the visitors of one address send into one chat: a script making a new
        # visitor whenever one's budget was spent had 300 of them an hour, each with its
        # own (6,000 messages a minute, 3,000 files of 10 MB in ten minutes). Wide enough
        # for the few dozen people a carrier's NAT may put behind one address at once.
        self.address_messages = RateLimiter(limit=120, window=60, redis_url=redis_url)
        self.address_files = RateLimiter(limit=30, window=600, redis_url=redis_url)
        # Typing, read receipts and ratings: each one an event to every agent's page, or a
        # write. The widget says "typing" at most every three seconds.
        self.actions = RateLimiter(limit=60, window=60, redis_url=redis_url)
        # The sockets each visitor has open in this process (``SOCKETS_PER_VISITOR``);
        # counted on the event loop, which alone opens and closes them.
        self.sockets: dict[str, int] = {}


def _limits(request: Request) -> WidgetLimits:
    limits: WidgetLimits = request.app.state.widget_limits
    return limits


def _address_key(what: str, inbox: Inbox, request: Request) -> str:
    """The budget key of what every visitor of the caller's address sends into this chat
    (counted after the visitor's own: one visitor past theirs spends none of the others')."""
    return f"webchat:address-{what}:{inbox.id}:{budget_address(request)}"


async def _spend(limiter: RateLimiter, key: str, what: str) -> None:
    """Count one against ``key``'s budget; 429 (asking again later) once it is spent."""
    await run_in_threadpool(limiter.spend, key, f"too many {what}")


class SayIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


def _allowed(request: HTTPConnection, inbox: Inbox) -> bool:
    """Whether the page asking (its Origin; none outside a browser) may use this chat."""
    origin = request.headers.get("origin")
    allowed = inbox.settings.get("allowed_origins") or ["*"]
    return (
        not origin
        or "*" in allowed
        or webchat.origin_of(origin) in {webchat.origin_of(a) for a in allowed}
    )


def _cors(request: Request, inbox: Inbox, response: Response) -> Response:
    origin = request.headers.get("origin")
    if not _allowed(request, inbox):
        raise Forbidden("this page's origin may not use this chat")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-Rapport-Visitor"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    return response


def _inbox(database: Database, token: str) -> Inbox:
    with database.session(write=False) as db:
        inbox = webchat.inbox_by_token(db, token)
        db.expunge(inbox)
        return inbox


async def _chat(request: Request, token: str) -> Inbox:
    """The chat of ``token``, for a page its inbox allows: refused before anything is done
    (a page of another origin had its visitor made, its message stored, its read receipt
    written, and only the answer refused)."""
    inbox = await run_in_threadpool(_inbox, request.app.state.database, token)
    if not _allowed(request, inbox):
        raise Forbidden("this page's origin may not use this chat")
    return inbox


class ReadableErrors:
    """ASGI middleware: an error of the widget's API (a problem document: a visitor not
    found, a budget spent, a file too large, a field refused) carries the CORS headers its
    answers carry, so the widget on the host's page can read it. Only the answers went
    through ``_cors``; a browser hides a cross-origin answer without them, so the widget
    saw each error as the network failing: it asked again for what would never succeed (a
    refused session, every few seconds for good), and never learnt that its visitor was
    gone (a poll's 404) or to wait (a 429). A problem document says nothing a page of any
    origin may not read; the origin check itself is ``_chat``'s, before anything is done.
    Outside the app's handlers, so the request guard's refusals (413) are readable too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = (
            next((v for k, v in scope["headers"] if k == b"origin"), None)
            if scope["type"] == "http" and route_path(scope).startswith("/widget/api/")
            else None
        )
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def sending(message: Sent) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "access-control-allow-origin" not in headers:
                    headers["Access-Control-Allow-Origin"] = origin.decode("latin-1")
                    headers["Access-Control-Expose-Headers"] = "Retry-After"
                    headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, sending)


@router.get("/widget.js", include_in_schema=False)
async def widget_script() -> FileResponse:
    """The widget: embed with ``<script src=".../widget.js" data-token="...">``."""
    return FileResponse(
        STATIC / "widget.js",
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.options("/widget/api/{token}/{rest:path}", include_in_schema=False)
async def preflight(token: str, rest: str, request: Request) -> Response:
    inbox = await run_in_threadpool(_inbox, request.app.state.database, token)
    return _cors(request, inbox, Response(status_code=204))


def _config(db: Any, inbox: Inbox) -> dict[str, Any]:
    now = utcnow()
    members = db.scalars(select(Membership).where(Membership.workspace_id == inbox.workspace_id))
    online = any(is_online(m, now) for m in members)
    return {
        "name": inbox.settings.get("title") or inbox.name,
        "reply_time": base.setting("webchat", inbox.settings, "reply_time"),
        "agents_online": online,
        "ask_name": bool(base.setting("webchat", inbox.settings, "ask_name")),
        "ask_email": bool(base.setting("webchat", inbox.settings, "ask_email")),
    }


@router.post("/widget/api/{token}/session")
async def session(token: str, body: SessionIn, request: Request) -> Response:
    """Start or resume a visitor: the token goes back to the browser's storage."""
    database: Database = request.app.state.database
    box: SecretBox = request.app.state.box
    inbox = await _chat(request, token)

    limits = _limits(request)

    def work() -> dict[str, Any]:
        with database.session() as db:
            secret = box.decrypt_json(inbox.secrets_encrypted).get("hmac_secret")
            visitor, plain = webchat.start(
                db,
                inbox=inbox,
                visitor_token=body.visitor_token,
                name=body.name,
                email=body.email,
                user_id=body.user_id,
                user_hash=body.user_hash,
                secret=secret,
            )
            if plain != body.visitor_token:
                # Raised inside the transaction: the visitor just made is not kept.
                limits.visitors.spend(
                    f"webchat:visitors:{inbox.id}:{budget_address(request)}",
                    "too many new visitors from this address",
                )
            return {
                "visitor_token": plain,
                "visitor_id": visitor.id,
                "verified": visitor.verified_user_id is not None,
                "config": _config(db, inbox),
                "last_event_id": realtime.latest_id(db, workspace_id=inbox.workspace_id),
            }

    return _cors(request, inbox, JSONResponse(await run_in_threadpool(work)))


HISTORY_LIMIT = 500
# Seconds a visitor's socket takes a conversation it found to be someone else's for theirs.
OTHERS_KEPT_SECONDS = 30.0


def _history(db: Any, visitor: Visitor, after: str | None = None) -> list[dict[str, Any]]:
    """The visitor's chat, oldest first: its newest ``HISTORY_LIMIT`` messages, or those
    after the message ``after`` (what a widget that cannot keep a socket open polls for)."""
    if visitor.customer_id is None:
        return []
    query = (
        select(Message)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.customer_id == visitor.customer_id,
            Message.inbox_id == visitor.inbox_id,
            Message.kind.in_(_VISIBLE),
        )
    )
    if after is not None:
        seen = db.execute(
            query.with_only_columns(Message.created_at, Message.id).where(Message.id == after)
        ).first()
        if seen is None:
            raise NotFound("message")  # not one of this visitor's: nothing to count from
        query = query.where(tuple_(Message.created_at, Message.id) > tuple_(*seen))
        rows = db.scalars(query.order_by(Message.created_at, Message.id).limit(HISTORY_LIMIT))
        messages = list(rows)
    else:
        # The newest, not the first: a long chat's latest messages are the ones that count.
        rows = db.scalars(
            query.order_by(Message.created_at.desc(), Message.id.desc()).limit(HISTORY_LIMIT)
        )
        messages = list(rows)[::-1]
    # Every message's files in one query: a query each made a long chat's history (up to
    # 500 messages) cost as many round trips.
    attached = files.of_messages(db, [m.id for m in messages])
    return [_public(m, db, attached[m.id]) for m in messages]


def _agent_name(db: Any, user_id: str | None) -> str | None:
    """The name the visitor sees on an agent's reply, without a query for every reply
    (kept a while; a rename is seen at once: ``auth.display_name``)."""
    if not user_id:
        return None
    return auth.display_name(db, user_id) or None


def _public(
    m: Message | dict[str, Any], db: Any = None, attached: list[Attachment] | None = None
) -> dict[str, Any]:
    """What a visitor may see of a message: never notes, never agents' internal ids.
    ``attached``: its files, when the caller read them already (read here otherwise)."""
    p = m if isinstance(m, dict) else message_payload(m)
    keys = ("id", "conversation_id", "direction", "kind", "text", "status", "created_at")
    out = {k: p[k] for k in keys}
    if p.get("sender_type") == "user" and db is not None:
        out["sender_name"] = _agent_name(db, p.get("sender_id"))
    if db is not None:
        if attached is None:
            attached = files.of_messages(db, [p["id"]])[p["id"]]
        out["attachments"] = files.summary(attached)
        if p.get("kind") == "bot":  # answers (not hand-over notices) can be rated
            row = m if isinstance(m, Message) else db.get(Message, p["id"])
            source = ((row.meta or {}).get("bot") or {}).get("source") if row else None
            out["rateable"] = source in ("intent", "article")
    return out


@router.get("/widget/api/{token}/messages")
async def history(
    token: str,
    request: Request,
    visitor_token: VisitorToken,
    after: str | None = Query(default=None, max_length=32),
) -> Response:
    """The visitor's chat (its newest 500 messages), or with ``after`` a message id, only
    the messages since that one."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)

    def work() -> list[dict[str, Any]]:
        with database.session(write=False) as db:
            visitor = webchat.visitor_by_token(db, inbox=inbox, token=visitor_token)
            return _history(db, visitor, after)

    return _cors(request, inbox, JSONResponse(await run_in_threadpool(work)))


@router.post("/widget/api/{token}/messages", status_code=201)
async def say(token: str, body: SayIn, request: Request, visitor_token: VisitorToken) -> Response:
    """The visitor writes: through the one ingest path, like every channel."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)

    visitor, region = await run_in_threadpool(_visitor_and_region, database, inbox, visitor_token)
    limits = _limits(request)
    await _spend(limits.messages, f"webchat:messages:{visitor.id}", "messages")
    await _spend(limits.address_messages, _address_key("messages", inbox, request), "messages")
    writer: IngestWriter = request.app.state.ingest
    stored = await writer.submit(
        InboundMessage(
            inbox_id=inbox.id,
            external_id=None,
            handles=webchat.handles_of(visitor, region),
            text=body.text,
            sender_name=visitor.name,
            expect_channel="webchat",
            visitor_id=visitor.id,
        )
    )

    def remember() -> None:
        with database.session() as db:
            _noted(db, visitor_id=visitor.id, customer_id=stored.customer_id)

    await run_in_threadpool(remember)
    out = {**_public(message_payload(stored.message)), "sender_name": visitor.name}  # type: ignore[arg-type]
    return _cors(request, inbox, JSONResponse(out, status_code=201))


def _noted(db: Any, *, visitor_id: str, **values: Any) -> bool:
    """The visitor seen now (with ``values`` too); False when they are gone (erased). One
    UPDATE, not a read then a write: an erasure committing in between left the write with no
    row (StaleDataError), a 500 for a stored message or a heartbeat dead with its socket
    open; a visitor gone meanwhile is simply not touched."""
    done = db.execute(
        update(Visitor)
        .where(Visitor.id == visitor_id)
        .values(last_seen_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


class RatingIn(BaseModel):
    helpful: bool


class ReadIn(BaseModel):
    message_id: str = Field(min_length=1, max_length=32)


@router.post("/widget/api/{token}/read", status_code=204)
async def read(token: str, body: ReadIn, request: Request, visitor_token: VisitorToken) -> Response:
    """The visitor has seen the conversation up to this message: agents see "read"."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)
    await _spend(
        _limits(request).actions, f"webchat:actions:{sha256_hex(visitor_token)}", "requests"
    )

    def work() -> None:
        with database.session() as db:
            visitor = webchat.visitor_by_token(db, inbox=inbox, token=visitor_token)
            webchat.mark_read(db, visitor=visitor, message_id=body.message_id)

    await run_in_threadpool(work)
    return _cors(request, inbox, Response(status_code=204))


@router.post("/widget/api/{token}/attachments", status_code=201)
async def upload(
    token: str,
    request: Request,
    visitor_token: VisitorToken,
    file: UploadFile,
    text: str = Form(default="", max_length=10_000),
) -> Response:
    """The visitor sends a file (with an optional message), through the one ingest path."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)
    data = await file.read(webchat.MAX_UPLOAD_BYTES + 1)
    if len(data) > webchat.MAX_UPLOAD_BYTES:
        raise Invalid(f"files up to {webchat.MAX_UPLOAD_BYTES // (1024 * 1024)} MB can be sent")
    if not data:
        raise Invalid("the file is empty")

    visitor, region = await run_in_threadpool(_visitor_and_region, database, inbox, visitor_token)
    limits = _limits(request)
    await _spend(limits.files, f"webchat:files:{visitor.id}", "files")
    await _spend(limits.messages, f"webchat:messages:{visitor.id}", "messages")
    await _spend(limits.address_files, _address_key("files", inbox, request), "files")
    await _spend(limits.address_messages, _address_key("messages", inbox, request), "messages")
    writer: IngestWriter = request.app.state.ingest
    name = files.clean_filename(file.filename)
    stored = await writer.submit(
        InboundMessage(
            inbox_id=inbox.id,
            external_id=None,
            handles=webchat.handles_of(visitor, region),
            text=text,
            sender_name=visitor.name,
            attachments=[
                InboundAttachment(name, file.content_type or "application/octet-stream", data)
            ],
            expect_channel="webchat",
            visitor_id=visitor.id,
        )
    )

    def public() -> dict[str, Any]:
        with database.session() as db:
            _noted(db, visitor_id=visitor.id, customer_id=stored.customer_id)
            message = db.get(Message, stored.message.id)
            if message is None:  # erased with its customer since it was stored
                return {**_public(message_payload(stored.message)), "sender_name": visitor.name}  # type: ignore[arg-type]
            return {**_public(message, db), "sender_name": visitor.name}

    return _cors(request, inbox, JSONResponse(await run_in_threadpool(public), status_code=201))


@router.get(
    "/widget/api/{token}/attachments/{attachment_id}",
    response_class=Response,
    responses=files.DOWNLOAD_RESPONSES,
)
async def download(
    token: str, attachment_id: str, request: Request, visitor_token: VisitorToken
) -> Response:
    """A file of the visitor's own conversation, always as a download."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)

    def work() -> tuple[Attachment, bytes]:
        with database.session(write=False) as db:
            visitor = webchat.visitor_by_token(db, inbox=inbox, token=visitor_token)
            row = db.get(Attachment, attachment_id)
            message = db.get(Message, row.message_id) if row else None
            conv = db.get(Conversation, message.conversation_id) if message else None
            if row is None or message is None or not shown(message, conv, visitor):
                raise NotFound("attachment")
            db.expunge(row)
        data = LocalStorage(request.app.state.settings.attachments_dir).open(row.storage_key)
        return row, data

    row, data = await run_in_threadpool(work)
    return _cors(request, inbox, files.download(data, row.filename))


@router.post("/widget/api/{token}/messages/{message_id}/rating", status_code=204)
async def rate(
    token: str, message_id: str, body: RatingIn, request: Request, visitor_token: VisitorToken
) -> Response:
    """The visitor says whether a bot answer helped (an unhelpful one counts as a miss)."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)
    await _spend(
        _limits(request).actions, f"webchat:actions:{sha256_hex(visitor_token)}", "requests"
    )

    def work() -> None:
        with database.session() as db:
            visitor = webchat.visitor_by_token(db, inbox=inbox, token=visitor_token)
            message = db.get(Message, message_id)
            conv = db.get(Conversation, message.conversation_id) if message else None
            if message is None or message.kind != MessageKind.bot:
                raise NotFound("message")
            if not shown(message, conv, visitor):
                raise NotFound("message")
            bot.rate(db, message=message, helpful=body.helpful)

    await run_in_threadpool(work)
    return _cors(request, inbox, Response(status_code=204))


@router.post("/widget/api/{token}/typing", status_code=204)
async def typing(token: str, request: Request, visitor_token: VisitorToken) -> Response:
    """The visitor is typing: told to the agents at once, stored nowhere."""
    database: Database = request.app.state.database
    inbox = await _chat(request, token)
    key = f"webchat:actions:{sha256_hex(visitor_token)}"
    if not await run_in_threadpool(_limits(request).actions.hit, key):
        # Past its budget a widget's "typing" is dropped, not refused: it is only a hint.
        return _cors(request, inbox, Response(status_code=204))

    def chat() -> tuple[str | None, str | None]:
        """The visitor's customer and the chat they type in: the conversation of their
        latest message through this inbox (an agent may have merged the chat into the
        customer's email thread: the visitor types into that one now). Counted first:
        each one is told to the agents' sockets (counted above)."""
        with database.session(write=False) as db:
            v = webchat.visitor_by_token(db, inbox=inbox, token=visitor_token)
            conv = db.scalar(
                select(Conversation.id)
                .join(Message, Message.conversation_id == Conversation.id)
                .where(
                    Conversation.customer_id == v.customer_id,
                    Message.inbox_id == inbox.id,
                    Conversation.merged_into_id.is_(None),
                )
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(1)
            )
            return v.customer_id, conv

    customer_id, conversation_id = await run_in_threadpool(chat)
    if conversation_id is not None:  # nothing to show before the first message
        get_bus().publish(
            {
                "id": 0,
                "workspace_id": inbox.workspace_id,
                "type": "visitor.typing",
                "payload": {
                    "inbox_id": inbox.id,
                    "customer_id": customer_id,
                    "conversation_id": conversation_id,
                },
                "created_at": utcnow().isoformat(),
            }
        )
    return _cors(request, inbox, Response(status_code=204))


@router.websocket("/widget/ws/{token}")
async def visitor_stream(ws: WebSocket, token: str) -> None:
    """The visitor's own events: replies and read receipts of their conversations only.
    Reconnect with ``last_event_id`` to receive what was missed."""
    database: Database = ws.app.state.database
    try:
        inbox = await run_in_threadpool(_inbox, database, token)
    except Exception:
        await ws.close(code=1008)
        return
    if not _allowed(ws, inbox):  # a browser names the page's origin on a socket too
        await ws.close(code=1008)
        return

    def who() -> Visitor | None:
        with database.session(write=False) as db:
            try:
                v = webchat.visitor_by_token(
                    db, inbox=inbox, token=ws.query_params.get("visitor", "")
                )
            except Exception:
                return None
            db.expunge(v)
        # Every page a visitor opens connects, just after its session call noted them
        # present: only a visitor not seen for a heartbeat is noted again, so most connects
        # never wait for (or hold) SQLite's one write lock. Erased since the read: unknown.
        if utcnow() - v.last_seen_at < timedelta(seconds=HEARTBEAT_SECONDS):
            return v
        return v if _seen(database, v.id) else None

    visitor = await run_in_threadpool(who)
    sockets: dict[str, int] = ws.app.state.widget_limits.sockets
    if visitor is not None and sockets.get(visitor.id, 0) >= SOCKETS_PER_VISITOR:
        # Refused before the accept, as a failed handshake: the widget tries again less and
        # less often, and polls meanwhile (accepted, then closed, it came back each second).
        await ws.close(code=1008)
        return
    await ws.accept()  # a close before the accept reaches a browser as a failed handshake
    if visitor is None:
        # An erased visitor's token (or one never given): the widget starts afresh.
        await ws.close(code=VISITOR_GONE, reason="unknown visitor")
        return
    sockets[visitor.id] = sockets.get(visitor.id, 0) + 1
    try:
        await _serve(ws, database, inbox, visitor)
    finally:
        if left := sockets.pop(visitor.id, 1) - 1:
            sockets[visitor.id] = left


# Sockets one visitor may hold open at once in a process: a tab each. Each socket hears
# every event of the workspace and asks the database about some: one visitor's token opened
# in thousands of sockets made every message in the workspace cost as many lookups.
SOCKETS_PER_VISITOR = 20


async def _serve(ws: WebSocket, database: Database, inbox: Inbox, visitor: Visitor) -> None:
    """The events of an accepted visitor's socket, until it closes (``visitor_stream``)."""

    def mine(event: dict[str, Any]) -> bool:
        p = event.get("payload", {})
        if event["type"] in ("customer.merged", "customer.unmerged"):
            owned.clear()  # whose conversations are whose may have changed: asked again
            return False
        if event["type"] == "agent.typing":  # in this chat only, not the customer's email
            return bool(p.get("inbox_id") == inbox.id and _owned(p))
        if event["type"] not in ("message.created", "message.updated"):
            return False
        return bool(
            p.get("inbox_id") == inbox.id and p.get("kind") in ("message", "bot") and _owned(p)
        )

    owned: set[str] = set()
    # Other visitors' conversations in this inbox, looked up once a while (a merge may make
    # one the visitor's): looked up at each of their events, a busy inbox cost every open
    # widget a query per message.
    others: dict[str, float] = {}

    def named(event: dict[str, Any]) -> dict[str, Any]:
        with database.session(write=False) as db:
            return _public(event["payload"], db)

    def _owned(p: dict[str, Any]) -> bool:
        cid = p.get("conversation_id")
        if cid in owned:
            return True
        if others.get(str(cid), 0.0) > time.monotonic():
            return False
        with database.session(write=False) as db:
            conv = db.get(Conversation, cid)
            customer = db.get(Visitor, visitor.id)
            if conv is None or customer is None or customer.customer_id is None:
                return False  # not known yet (the visitor's first message is on its way)
            if conv.customer_id == customer.customer_id:
                owned.add(str(cid))
                return True
        if len(others) > 10_000:
            others.clear()
        others[str(cid)] = time.monotonic() + OTHERS_KEPT_SECONDS  # surely someone else's
        return False

    last = realtime.client_id(ws.query_params.get("last_event_id"))

    async def send(event: dict[str, Any], *, live: bool = False) -> None:
        """The event to the visitor if it is theirs, once (a catch-up may repeat it)."""
        if event["id"] and not seen.add(event["id"], live=live):
            return
        if await run_in_threadpool(mine, event):
            payload = (
                # Never the agent's or the customer's internal ids.
                {"conversation_id": event["payload"]["conversation_id"]}
                if event["type"] == "agent.typing"
                else await run_in_threadpool(named, event)
            )
            await ws.send_json({**event, "payload": payload})

    with get_bus().subscribe(inbox.workspace_id) as sub:
        # A visitor away through more than a page of the workspace's events reads its
        # history again instead (what a replay would read is anyone's to ask for).
        seen, begin = await realtime.opening(
            database, inbox.workspace_id, last, replay_at_most=realtime.PAGE
        )
        try:
            if begin == "reset":  # the widget reads its history again
                await ws.send_json({"type": "reset", "last_event_id": seen.highest})
            elif begin == "replay":
                async for event in realtime.missed(database, inbox.workspace_id, seen.highest):
                    await send(event)
        except WebSocketDisconnect:
            return  # the page was left before its catch-up, not an error
        receiver = asyncio.create_task(_drain(ws))
        beat = asyncio.create_task(_heartbeat(database, visitor.id, receiver))
        erased = False
        try:
            quiet = get_bus().quiet  # a visitor's page waits longer: there are many more
            async for heard in sub.listen(receiver, quiet=quiet * 4 if quiet else None):
                if heard is not None and heard["type"] == realtime.VISITORS_ERASED:
                    if visitor.id in heard["payload"]["visitor_ids"]:
                        erased = True
                        receiver.cancel()  # the listening ends
                elif heard is None or sub.overflowed:
                    # Quiet (what missed the bus, another process's, is in the outbox), or
                    # the socket fell behind and the bus dropped some: the outbox has all.
                    sub.overflowed = False
                    async for event in realtime.missed(database, inbox.workspace_id, seen.highest):
                        await send(event)
                else:
                    await send(heard, live=True)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            receiver.cancel()
            erased = erased or bool(
                beat.done() and not beat.cancelled() and not beat.exception() and beat.result()
            )
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
            await run_in_threadpool(_seen, database, visitor.id)
        if erased:
            with contextlib.suppress(Exception):
                await ws.close(code=VISITOR_GONE, reason="visitor erased")


# The close code of a socket whose visitor is gone (erased) or was never known: the widget
# forgets its token and starts a new visitor instead of reconnecting.
VISITOR_GONE = 4404


def _seen(database: Database, visitor_id: str) -> bool:
    """Note the visitor present now; False when they are gone (erased)."""
    with database.session() as db:
        return _noted(db, visitor_id=visitor_id)


# How often an open widget's socket says its visitor is present (and learns whether they
# were erased meanwhile, should the bus have lost the word).
HEARTBEAT_SECONDS = 30.0


async def _heartbeat(database: Database, visitor_id: str, receiver: "asyncio.Task[None]") -> bool:
    """While the widget is open the visitor is present: replies need not go by email.
    True (and the socket's end) once the visitor is gone."""
    while not receiver.done():
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            present = await run_in_threadpool(_seen, database, visitor_id)
        except Exception:  # the database busy or away a moment: the next beat asks again
            log.warning("visitor heartbeat failed", extra={"event": "webchat.heartbeat_failed"})
            continue
        if not present:
            receiver.cancel()
            return True
    return False


async def _drain(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await ws.receive_text()
