"""RFC 9457 problem documents: the one shape of every error an API client sees."""

import html
import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rapport.db import transient

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://rapport.dev/problems/"
LOGGED = "rapport: logged with its request"
MEDIA_TYPE = "application/problem+json"


_FIELDS = ("status", "slug", "detail", "extra")


class Problem(Exception):
    """An error with a stable ``type`` slug, an HTTP status and a human-readable detail."""

    # Seconds after which asking again may succeed (a 429's, a 503's Retry-After).
    retry_after: int | None = None

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra

    def response(self, instance: str | None = None) -> JSONResponse:
        """This problem as the RFC 9457 document answered for it."""
        answer = problem_response(self.status, self.slug, self.detail, instance, **self.extra)
        if self.retry_after is not None:
            answer.headers["Retry-After"] = str(self.retry_after)
        return answer

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as what it is (the ingest writer process sends problems back), not by
        # re-calling a subclass's __init__ with the finished detail.
        # Plain attributes a subclass set besides (an Unsendable's ``why``) go along; not
        # objects such as NoConsent's withdrawal, a database row.
        own = {
            k: v
            for k, v in vars(self).items()
            if k not in _FIELDS and isinstance(v, str | int | float | bool | None)
        }
        return (_restore, (type(self), self.status, self.slug, self.detail, self.extra, own))


def wait_text(seconds: int) -> str:
    """A wait of ``seconds`` (a Retry-After's) as a person reads it, never shorter than it:
    seconds under two minutes, whole minutes rounded up under two hours, then hours and
    minutes ("45 seconds", "5 minutes", "2 hours 5 minutes")."""
    seconds = max(1, seconds)
    if seconds < 120:
        return _count(seconds, "second")
    minutes = -(-seconds // 60)
    if minutes < 120:
        return _count(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    return _count(hours, "hour") + (f" {_count(minutes, 'minute')}" if minutes else "")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


class TooMany(Problem):
    """429: a limit was reached; the client may ask again after ``seconds`` (``wait_text``
    says it in the detail, from the same figure)."""

    def __init__(self, detail: str, *, seconds: int, slug: str = "rate-limited") -> None:
        super().__init__(429, slug, detail)
        self.retry_after = seconds


def _restore(
    cls: type[Problem],
    status: int,
    slug: str,
    detail: str,
    extra: dict[str, Any],
    own: dict[str, Any] | None = None,
) -> Problem:
    problem = cls.__new__(cls)
    Problem.__init__(problem, status, slug, detail, **extra)
    vars(problem).update(own or {})
    return problem


class NotFound(Problem):
    def __init__(self, what: str = "resource") -> None:
        super().__init__(404, "not-found", f"{what} not found")


class Forbidden(Problem):
    def __init__(self, detail: str = "you are not allowed to do this") -> None:
        super().__init__(403, "forbidden", detail)


class Conflict(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(409, "conflict", detail)


class Invalid(Problem):
    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(422, "invalid", detail, **extra)


class Unsendable(Problem):
    """A message that cannot go to the customer (they opted out of its channel, never wrote
    to its page): refused before anything is stored. ``why`` says it in a few words, for
    the agents of a conversation a rule or the bot could not answer in."""

    why: str


def problem_response(
    status: int, slug: str, detail: str, instance: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def busy_response(
    exc: BaseException,
    method: str,
    path: str,
    *,
    detail: str = "the database was busy with a conflicting change: nothing was changed, "
    "try again in a second",
) -> JSONResponse:
    """503 with Retry-After for a transient database error: a deadlock with another request
    (a team deleted while conversations are assigned to it), or a lock not had in time.
    Nothing was changed, and trying again works (``detail`` says so otherwise)."""
    log.warning(
        "database busy", exc_info=exc, extra={"event": "http.busy", "method": method, "path": path}
    )
    response = problem_response(503, "unavailable", detail, instance=path)
    response.headers["Retry-After"] = "1"
    return response


_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    422: "invalid",
    429: "rate-limited",
    503: "unavailable",
}


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "stable, per kind of error"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "instance": {"type": "string", "description": "the path asked for"},
        "errors": {
            "type": "array",
            "description": "the fields that are not valid (422)",
            "items": {"type": "object"},
        },
    },
}


def _document(schema: dict[str, Any]) -> None:
    """Say in the OpenAPI schema what the handlers below answer: FastAPI documents 422 as
    its own validation body, and no other error at all. An error a route describes itself
    (``responses={409: {"description": ...}}``) keeps its words and gets the body."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            # A body declared by hand (a route that reads it itself, after checking who
            # asks): the models it refers to join the others.
            for media in operation.get("requestBody", {}).get("content", {}).values():
                schema["components"]["schemas"].update(media.get("schema", {}).pop("$defs", {}))
            responses = operation.setdefault("responses", {})
            if responses.get("422", {}).get("description") == "Validation Error":  # FastAPI's
                responses["422"]["description"] = "the request is not valid"
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = content
            responses["default"] = {"description": "any other error", "content": content}
    for unused in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(unused, None)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Rapport</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/app.css">
</head>
<body>
<main class="error-page">
<h1>{title}</h1>
<p>{detail}</p>
{back}</main>
</body>
</html>
"""


# Addresses only programs call (the API, providers' webhooks, the widget's and the pages'
# files): what goes wrong there is a problem document, whatever the caller accepts.
_NOT_PAGES = ("/api/", "/webhooks/", "/static/", "/widget")


def collided(exc: IntegrityError, method: str, path: str) -> JSONResponse:
    """The answer to a write the database refused as a collision (its handler's, and the
    ingest fast path's, which answers outside the app's handlers)."""
    log.warning(
        "write collided",
        exc_info=exc,
        extra={"event": "http.conflict", "method": method, "path": path},
    )
    return problem_response(
        409,
        "conflict",
        "another request changed the same thing at the same moment: look, then try again",
        instance=path,
    )


def _for_reader(request: Request, response: JSONResponse) -> Response:
    """The problem as a page when a browser opened an address (one of the app's pages by a
    stale link, a filter typed into the address, a page that does not exist): a person
    reads it, with the way back. Everyone else (the API, scripts, the pages' own calls)
    gets the problem document."""
    from rapport.guard import route_path  # guard answers its own refusals as problems

    path = route_path(request.scope)
    if (
        request.method != "GET"
        or path.startswith(_NOT_PAGES)
        or "text/html" not in request.headers.get("accept", "")
    ):
        return response
    problem = json.loads(bytes(response.body))
    detail = problem["detail"]
    if response.status_code == 404 and detail == problem["title"]:  # no route at all
        detail = "There is no page at this address."
    fields = [f"{e['loc'][-1]}: {e['msg']}" for e in problem.get("errors", []) if e["loc"]]
    if fields:  # which part of the address is wrong, and how
        detail += " (" + "; ".join(fields) + ")"
    # The way back, for agents; whoever else lands here (a customer's expired file link, a
    # mistyped address) is not sent to a sign-in page.
    back = '<p><a href="/app/inbox">Back to the inbox</a></p>\n' if path.startswith("/app") else ""
    page = _PAGE.format(title=html.escape(problem["title"]), detail=html.escape(detail), back=back)
    kept = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return HTMLResponse(page, status_code=response.status_code, headers=kept)


def install(app: FastAPI) -> None:
    """Make every error leaving the app a problem document, and say so in its OpenAPI."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        if fresh:
            _document(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return _for_reader(request, exc.response(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = _SLUGS.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        answer = problem_response(exc.status_code, slug, detail, instance=request.url.path)
        answer.headers.update(exc.headers or {})  # a 405's Allow (RFC 9110 15.5.6)
        return _for_reader(request, answer)

    @app.exception_handler(IntegrityError)
    async def _collided(request: Request, exc: IntegrityError) -> JSONResponse:
        # Two requests made the same thing at the same moment: each checked first and saw
        # none, and the database let one in (PostgreSQL; SQLite takes writers one at a
        # time). The other is told so, as if it had come second.
        return collided(exc, request.method, request.url.path)

    @app.exception_handler(OperationalError)
    async def _busy(request: Request, exc: OperationalError) -> Response:
        if not transient(exc):
            return await _unexpected(request, exc)
        return _for_reader(request, busy_response(exc, request.method, request.url.path))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A defect of ours: the client still gets a problem document (never a stack); the
        # log gets the traceback and which request met it.
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={
                "event": "http.unhandled",
                "method": request.method,
                "path": request.url.path,
                "error": type(exc).__name__,
            },
        )
        exc.add_note(LOGGED)  # for the server's own log of it (``rapport.logs``)
        answer = problem_response(
            500, "internal", "something went wrong on our side", instance=request.url.path
        )
        return _for_reader(request, answer)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        answer = problem_response(
            422, "invalid", "the request is not valid", instance=request.url.path, errors=errors
        )
        return _for_reader(request, answer)
