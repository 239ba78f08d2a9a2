"""What every HTTP request must be before a route reads it: a bounded body, and no NUL
characters where a person's or a client's text comes in.

- **Body size.** Starlette reads a whole body into memory (a form's files onto disk) before
  anything can look at it, and some routes read it before checking who is asking (a
  provider's webhook is signed over its body). Each request is held to its route's limit:
  a ``Content-Length`` beyond it is refused unread, and a streamed body is cut off there.
- **NUL characters.** PostgreSQL refuses them in text and in JSON (SQLite stores them), so a
  NUL in a name, a search or an id used to travel down to the database and fail there as a
  500, on PostgreSQL only. A URL or a JSON or form body that carries one is refused up front
  with a problem document, the same on both databases. Provider webhooks are exempt: what
  a provider sends is kept, not refused (the database layer replaces the NULs in it, see
  ``db.without_nul``).

And what every answer holding someone's data must be: kept by no cache (``NoStore``).
"""

from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rapport.db import JSON_NUL
from rapport.problems import Problem, problem_response

MB = 1024 * 1024
# The largest JSON body a route validates: 500,000 characters of HTML, escaped, and more.
DEFAULT_LIMIT = 4 * MB
# A form with one file of up to 10 MB (uploads in a conversation, the chat widget's files).
MULTIPART_LIMIT = 11 * MB
WEBHOOK_LIMIT = 5 * MB
IMPORT_LIMIT = 100 * MB
# The API channel takes attachments in the JSON body, base64 (a third larger than the file).
INBOUND_LIMIT = 64 * MB
# What the routes a stranger may call take: the chat widget's messages (10,000 characters,
# 120 KB should each be an emoji written as JSON escapes) and sessions, sign-in, reset and
# invitation forms. At the default, each of a stranger's connections had the server hold
# 4 MB for a body no such route reads.
SMALL_LIMIT = 128 * 1024
_SMALL = ("/widget/api/", "/api/v1/auth/", "/api/v1/invitations/")
# The events API (its write key is public in a site's pages) takes 500 KB a request, and
# says so itself: a little more is let through for it to.
EVENTS_LIMIT = 512 * 1024
# One message a websocket client may send (the server's default is 16 MB). Rapport's sockets
# only speak to the client (the inbox and the chat widget send nothing but their close), so
# a larger one closes the socket (1009) instead of being read into memory to be ignored.
WEBSOCKET_MESSAGE_LIMIT = 64 * 1024


def route_path(scope: Scope) -> str:
    """The request's path below the root path Rapport runs under (a proxy's prefix,
    ``uvicorn --root-path``): the ASGI server puts the root path in ``scope["path"]`` too,
    and the paths Rapport knows (the routes, the exemptions below) are without it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _members_only(path: str) -> int | None:
    """The limit of a route that takes more than others, and only from a member (an API
    client posting a customer's message, an admin's import); None for any other."""
    if path == "/api/v1/customer-files/import":
        return IMPORT_LIMIT
    parts = path.split("/")
    if len(parts) == 6 and parts[1:4] == ["api", "v1", "inboxes"] and parts[5] == "messages":
        return INBOUND_LIMIT
    return None


def limit_for(path: str, content_type: str) -> int:
    """The largest body ``path`` takes, in bytes."""
    if path.split("/")[1:2] == ["webhooks"]:
        return WEBHOOK_LIMIT
    if (members := _members_only(path)) is not None:
        return members
    if content_type.startswith("multipart/form-data"):
        return MULTIPART_LIMIT
    if path.startswith(_SMALL):
        return SMALL_LIMIT
    if path.startswith("/api/v1/events/"):
        return EVENTS_LIMIT
    return DEFAULT_LIMIT


def carries_nul(body: bytes, content_type: str) -> bool:
    """Whether a JSON or form body has a NUL character in it (other bodies are not text)."""
    if "json" in content_type:
        # The escape ``\u0000``, not itself escaped (``\\u0000`` is a backslash, then text).
        return b"\\u0000" in body and JSON_NUL.search(body.decode("utf-8", "replace")) is not None
    if content_type.startswith("application/x-www-form-urlencoded"):
        return b"%00" in body or b"\x00" in body
    return False


class RequestGuard:
    """ASGI middleware holding every request to the rules above."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            await self._refuse(scope, send, 400, "bad-request", "a URL cannot hold NUL characters")
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        limit = limit_for(path, content_type)
        declared = headers.get(b"content-length", b"")
        if _members_only(path) and not (declared.isdigit() and int(declared) <= DEFAULT_LIMIT):
            # A route taking more than others (the API channel's posts, an import) takes it
            # from a member: a stranger's body is read no further than another route's. It
            # was read whole (64 MB a request, and a copy) before the route looked at who
            # was asking: a few connections at once took gigabytes.
            if not await _known(scope):
                if declared.isdigit():
                    await self._refuse(scope, send, 401, "unauthorized", _UNKNOWN)
                    return
                limit = DEFAULT_LIMIT
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, 413, "too-large", _too_large(limit))
            return
        if path.startswith("/webhooks/") or not (
            "json" in content_type or content_type.startswith("application/x-www-form-urlencoded")
        ):
            await self.app(scope, _counted(receive, limit), send)
            return
        # A text body: read whole (it is small), looked at, then handed on as it came.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, send, 413, "too-large", _too_large(limit))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if carries_nul(body, content_type):
            await self._refuse(
                scope, send, 422, "invalid", "text in a request cannot hold NUL characters"
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, slug: str, detail: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": detail})
            return
        await problem_response(status, slug, detail, scope["path"])(scope, _nothing, send)


_UNKNOWN = "sign in or send a bearer token"


async def _known(scope: Scope) -> bool:
    """Whether the request's credentials are a member's (checked as the routes check them,
    through the principal cache)."""
    from rapport.auth.deps import resolve_principal  # auth reads the guard's route_path

    try:
        await resolve_principal(Request(scope))
    except Problem:
        return False
    return True


def _too_large(limit: int) -> str:
    size = f"{limit // MB} MB" if limit >= MB else f"{limit // 1024} KB"
    return f"a request here is at most {size}"


def _counted(receive: Receive, limit: int) -> Receive:
    """``receive`` that stops a streamed body at ``limit`` bytes (a 413 problem)."""
    size = 0

    async def counting() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise HTTPException(413, _too_large(limit))
        return message

    return counting


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


# The addresses whose answers hold someone's data: an agent's pages and API, a visitor's
# chat. (The help center, static files and the widget's script are public; a signed file
# link says its own Cache-Control.)
PRIVATE = ("/api/", "/app/", "/widget/api/")


class NoStore:
    """ASGI middleware: an answer under ``PRIVATE`` that says nothing of caching is kept by
    no cache (``Cache-Control: no-store``). Said nothing, a browser kept an agent's pages,
    a conversation's messages and files in its cache and history: signed out on a shared
    computer, Back showed the inbox and the conversations read, to the next person."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not route_path(scope).startswith(PRIVATE):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, sending)
