"""The ``Annotated`` dependencies views use: the database session and the caller."""

from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from rapport import cache
from rapport.auth import service
from rapport.auth.models import Role
from rapport.config import Settings
from rapport.crypto import SecretBox, same
from rapport.db import Database
from rapport.guard import route_path
from rapport.problems import Forbidden, Problem

SESSION_COOKIE = "rapport_session"
CSRF_COOKIE = "rapport_csrf"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# What a member of a workspace that requires two-factor authentication may do before
# enrolling. (Before finishing their own second factor, only what a route allows itself:
# ``allow_pending_mfa``, the second step, ``me`` and ``logout``.)
_ENROLMENT = frozenset(
    {
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/totp/enroll"),
        ("POST", "/api/v1/auth/totp/activate"),
    }
)


def get_database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.box
    return box


def get_db(request: Request) -> Iterator[Session]:
    """A session for this request: it commits when the view returns, rolls back on error."""
    database = get_database(request)
    with database.session(write=request.method not in _SAFE_METHODS) as db:
        yield db


def get_read_db(request: Request) -> Iterator[Session]:
    """A read-only session whatever the method: for a POST that only looks (a heartbeat),
    which must not take SQLite's one write lock, nor wait for it."""
    with get_database(request).session(write=False) as db:
        yield db


class Unauthorized(Problem):
    def __init__(self, detail: str = "sign in or send a bearer token") -> None:
        super().__init__(401, "unauthorized", detail)


class PrincipalCache:
    """Credential -> principal for a few seconds, so the hot path skips a query per request.

    A change to who may do what (sign-out, revoked token, role, two-factor) empties it in
    every process (``forget``), and for the next moments credentials are looked up afresh:
    the change commits after the call (``rapport.cache``, which keeps it).
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self._cache: cache.TtlCache[str, service.Principal | None] = cache.TtlCache(
            ttl, name="principals", max_items=50_000
        )

    def get(self, key: str) -> tuple[bool, service.Principal | None]:
        return self._cache.found(key)

    def put(self, key: str, value: service.Principal | None) -> None:
        self._cache.put(key, value)

    def forget(self) -> None:
        """Credentials changed: every process forgets what it cached."""
        self._cache.forget(None)


def forget_principals(request: Request) -> None:
    principal_cache: PrincipalCache = request.app.state.principal_cache
    principal_cache.forget()


def _credential(request: HTTPConnection) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return "token", auth[7:].strip()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return "session", cookie
    return None


def _lookup(database: Database, kind: str, secret: str) -> service.Principal | None:
    with database.session(write=False) as db:
        if kind == "token":
            return service.token_principal(db, token=secret)
        return service.session_principal(db, token=secret)


async def resolve_principal(
    request: Request, *, allow_pending_mfa: bool = False
) -> service.Principal:
    cred = _credential(request)
    if cred is None:
        raise Unauthorized()
    kind, secret = cred
    cache: PrincipalCache = request.app.state.principal_cache
    key = f"{kind}:{secret}"
    hit, principal = cache.get(key)
    if not hit:
        principal = await run_in_threadpool(_lookup, get_database(request), kind, secret)
        cache.put(key, principal)
    if principal is None:
        raise Unauthorized("the session or token is not valid")
    if principal.via == "session" and request.method not in _SAFE_METHODS:
        # Cookies ride along with cross-site requests; the CSRF token does not.
        # Compared in constant time: ``!=`` stops at the first differing character, and
        # its timing tells a guesser how much of the token they have right.
        if not same(request.headers.get(CSRF_HEADER), principal.csrf_token or ""):
            raise Forbidden("missing or wrong CSRF token (send the X-CSRF-Token header)")
    if not principal.mfa_passed and not allow_pending_mfa:
        raise Unauthorized("finish signing in with your two-factor code")
    enrolling = (request.method, route_path(request.scope)) in _ENROLMENT
    if principal.require_2fa and not principal.totp_enabled and not enrolling:
        raise Problem(
            403, "2fa-required", "this workspace requires two-factor authentication: enrol first"
        )
    request.state.principal = principal
    return principal


async def websocket_principal(ws: HTTPConnection) -> service.Principal | None:
    """The caller of a websocket: bearer header, ``?token=``, or the session cookie.

    Browsers send cookies with cross-site websocket handshakes too, so a cookie is only
    trusted when the Origin is our own.
    """
    cred = _credential(ws)
    if cred is None and ws.query_params.get("token"):
        cred = ("token", ws.query_params["token"])
    if cred is None:
        return None
    if cred[0] == "session":
        origin = ws.headers.get("origin")
        if origin is not None and not own_origin(ws, origin):
            return None
    database: Database = ws.app.state.database
    principal = await run_in_threadpool(_lookup, database, *cred)
    if principal is None or not principal.mfa_passed:
        return None
    if principal.require_2fa and not principal.totp_enabled:
        return None
    return principal


def own_origin(conn: HTTPConnection, origin: str) -> bool:
    """Whether a browser's ``Origin`` is Rapport's own: its public URL's, or the one the
    request came to. An Origin is a scheme and a host, never a path (the public URL may
    have one)."""
    settings: Settings = conn.app.state.settings
    public = urlsplit(settings.public_url)
    own = {
        f"{public.scheme}://{public.netloc}",
        f"{conn.url.scheme.replace('ws', 'http')}://{conn.url.netloc}",
    }
    return origin.rstrip("/") in own


def require_role(role: Role) -> Callable[..., Any]:
    """A dependency that lets through members whose effective role is at least ``role``."""

    async def check(request: Request) -> service.Principal:
        principal = await resolve_principal(request)
        if not principal.has(role):
            raise Forbidden(f"this needs the {role.value} role")
        return principal

    return check


# "function" scope: commit before the response is sent, so an acknowledged write is durable
# and the client's next request sees it.
Db = Annotated[Session, Depends(get_db, scope="function")]
ReadDb = Annotated[Session, Depends(get_read_db, scope="function")]
Box = Annotated[SecretBox, Depends(get_box)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]
CurrentMember = Annotated[service.Principal, Depends(require_role(Role.viewer))]
CurrentAgent = Annotated[service.Principal, Depends(require_role(Role.agent))]
CurrentAdmin = Annotated[service.Principal, Depends(require_role(Role.admin))]
CurrentOwner = Annotated[service.Principal, Depends(require_role(Role.owner))]
