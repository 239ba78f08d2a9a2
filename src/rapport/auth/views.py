"""Login, logout, two-factor enrolment and API tokens."""

import ipaddress
from dataclasses import replace

import segno
from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from rapport.auth import account, reset, security, service
from rapport.auth.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Box,
    CurrentMember,
    CurrentSettings,
    Db,
    forget_principals,
    resolve_principal,
)
from rapport.auth.models import User
from rapport.auth.schemas import (
    CodeIn,
    LoginIn,
    LoginOut,
    MeRead,
    MeUpdate,
    PasswordChangeIn,
    RecoveryCodesOut,
    ResetConfirmIn,
    ResetRequestIn,
    TokenCreate,
    TokenCreated,
    TokenRead,
    TotpActivateIn,
    TotpEnrollOut,
)
from rapport.db import utcnow
from rapport.privacy.service import Actor, audit
from rapport.problems import Forbidden, Problem
from rapport.workspaces import service as workspaces

router = APIRouter(prefix="/api/v1", tags=["auth"])


def actor_of(principal: service.Principal, request: Request) -> Actor:
    client = request.client.host if request.client else None
    return Actor(kind=principal.via, user_id=principal.user_id, ip=client)


def _me(p: service.Principal) -> MeRead:
    return MeRead(
        user_id=p.user_id,
        email=p.email,
        name=p.name,
        workspace_id=p.workspace_id,
        role=p.role,
        via=p.via,
        totp_enabled=p.totp_enabled,
        mfa_passed=p.mfa_passed,
        csrf_token=p.csrf_token,
    )


TOO_MANY_LOGINS = "too many login attempts"


def client_address(request: HTTPConnection) -> str:
    """The caller's address, as the audit log keeps it."""
    return request.client.host if request.client else "unknown"


def budget_address(request: HTTPConnection) -> str:
    """The caller's address as rate limits count it: an IPv6 address by its /64, the
    network a provider gives one subscriber, any address of which their machine may take.
    Counted one by one, each of its 2^64 addresses had a budget of its own, and every limit
    by address (sign-in, resets, the chat widget's visitors, the help center) was one new
    address away from none."""
    host = client_address(request)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if not isinstance(ip, ipaddress.IPv6Address):
        return host
    if ip.ipv4_mapped is not None:  # an IPv4 address, written within IPv6
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"


def spend_attempt(request: Request, *, client: bool = True, email: str | None = None) -> None:
    """Count one password check against the login budgets: the client's (``client``) and
    the address's (``email``); 429 once one is spent. A login, a password change and an
    invitation's acceptance share them, so none is a way round another's limit."""
    limiter = request.app.state.login_limiter
    spent = []
    for key in ([f"ip:{budget_address(request)}"] if client else []) + (
        [f"email:{email}"] if email is not None else []
    ):
        spent.append(limiter.spend(key, TOO_MANY_LOGINS))
    request.state.login_spent = spent  # what a right password gives back (login)


@router.post("/auth/login", response_model=LoginOut)
def login(
    body: LoginIn, request: Request, response: Response, db: Db, settings: CurrentSettings, box: Box
) -> LoginOut:
    """Sign in with email and password (and the two-factor code when the account has one)."""
    email = body.email.strip().lower()
    spend_attempt(request, email=email)
    # Before this request's write transaction begins (at its first statement).
    checked = service.password_matches(
        request.app.state.database, email=body.email, password=body.password
    )
    try:
        user = service.check_password(
            db,
            email=body.email,
            password=body.password,
            max_failures=settings.login_max_failures,
            lockout_minutes=settings.login_lockout_minutes,
            checked=checked,
        )
    except Problem:
        db.commit()  # keep the failure count even though the request fails
        raise
    # A right password is no attempt to guess one: it leaves the budgets as they were, so
    # an office of agents behind one address can all sign in at the start of a shift.
    for spent in request.state.login_spent:
        request.app.state.login_limiter.refund(spent)
    member = service.membership(db, user_id=user.id, workspace=body.workspace)
    mfa_passed = not user.totp_enabled
    if user.totp_enabled and body.totp_code:
        # One budget per account for every code.
        request.app.state.login_limiter.spend(f"totp:{user.id}", TOO_MANY_LOGINS)
        if not service.verify_second_factor(db, user=user, box=box, code=body.totp_code):
            _count_failure(db, user, settings)
            raise Problem(401, "totp-invalid", "the two-factor code is wrong")
        service.signed_in(user)
        mfa_passed = True
    token, sess = service.start_session(
        db,
        user=user,
        workspace_id=member.workspace_id,
        mfa_passed=mfa_passed,
        days=settings.session_days,
    )
    audit(
        db,
        workspace_id=member.workspace_id,
        actor=Actor("user", user.id, client_address(request)),
        action="auth.login",
        data={"mfa_passed": mfa_passed},
    )
    _set_cookies(request, response, token, sess.csrf_token, settings)
    return LoginOut(
        user_id=user.id,
        email=user.email,
        name=user.name,
        workspace_id=member.workspace_id,
        role=member.role,
        via="session",
        totp_enabled=user.totp_enabled,
        mfa_passed=mfa_passed,
        csrf_token=sess.csrf_token,
        mfa_required=not mfa_passed,
    )


def _count_failure(db: Db, user: User, settings: CurrentSettings) -> None:
    service.count_failure(
        db,
        user,
        max_failures=settings.login_max_failures,
        lockout_minutes=settings.login_lockout_minutes,
    )
    db.commit()


def cookie_path(request: Request) -> str:
    """Where Rapport's cookies live: the app's own root path (``/rapport`` behind a proxy's
    prefix, see ``rapport serve --root-path``), so that other apps of the host never get
    them; ``/`` without one."""
    return str(request.scope.get("root_path") or "").rstrip("/") or "/"


def _set_cookies(
    request: Request, response: Response, token: str, csrf: str, settings: CurrentSettings
) -> None:
    max_age = settings.session_days * 86400
    path = cookie_path(request)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path=path,
    )
    # Readable by our own scripts, which echo it in X-CSRF-Token (double submit).
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        httponly=False,
        samesite="lax",
        secure=settings.secure_cookies,
        path=path,
    )
    if path != "/":
        # Cookies set on "/" before they moved to the prefix: a browser sends both, and
        # the older one, read last, would stand for a session that may have ended.
        _clear_cookies(response, "/")


def _clear_cookies(response: Response, path: str) -> None:
    response.delete_cookie(SESSION_COOKIE, path=path)
    response.delete_cookie(CSRF_COOKIE, path=path)


@router.post("/auth/login/totp", response_model=MeRead)
async def login_second_factor(
    body: CodeIn, request: Request, response: Response, settings: CurrentSettings, box: Box
) -> MeRead:
    """Finish a login with the two-factor code (or a recovery code). The session that
    passed only the password ends; a new one (new cookie, new CSRF token) starts."""
    principal = await resolve_principal(request, allow_pending_mfa=True)
    if principal.via != "session":
        raise Forbidden("only a browser session has a second step")
    request.app.state.login_limiter.spend(f"totp:{principal.user_id}", TOO_MANY_LOGINS)

    def finish() -> tuple[str, str]:
        database = request.app.state.database
        with database.session() as db:
            user = db.get(User, principal.user_id)
            assert user is not None
            if user.locked_until is not None and user.locked_until > utcnow():
                raise service.AccountLocked(user.locked_until)
            if not service.verify_second_factor(db, user=user, box=box, code=body.code):
                _count_failure(db, user, settings)
                raise Problem(401, "totp-invalid", "the two-factor code is wrong")
            token, sess = service.pass_second_factor(
                db, session_id=principal.credential_id, user=user, days=settings.session_days
            )
            return token, sess.csrf_token

    token, csrf = await run_in_threadpool(finish)
    forget_principals(request)
    _set_cookies(request, response, token, csrf, settings)
    return _me(replace(principal, credential_id="", csrf_token=csrf, mfa_passed=True))


@router.post("/auth/password-reset", status_code=status.HTTP_202_ACCEPTED)
def request_password_reset(
    body: ResetRequestIn, request: Request, db: Db, box: Box
) -> dict[str, str]:
    """Email a reset link if the address has an account; the answer, and the work done to
    give it, are the same either way."""
    limiter = request.app.state.reset_limiter
    email = body.email.strip().lower()
    for key in (f"reset-ip:{budget_address(request)}", f"reset-email:{email}"):
        limiter.spend(key, "too many reset requests")
    reset.ask(db, email=email, box=box)
    return {"detail": "If an account has this address, a reset link is on its way."}


@router.post("/auth/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT)
def confirm_password_reset(body: ResetConfirmIn, request: Request, db: Db) -> Response:
    """Choose a new password with a reset link's token; every session of the account ends."""
    limiter = request.app.state.reset_limiter
    ip = client_address(request)
    limiter.spend(f"reset-confirm:{budget_address(request)}", "too many attempts")
    user = reset.confirm(db, token=body.token, password=body.password)
    service.audit_everywhere(
        db, user_id=user.id, actor=Actor("user", user.id, ip), action="auth.password_reset"
    )
    forget_principals(request)
    return Response(status_code=204)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, response: Response) -> Response:
    principal = await resolve_principal(request, allow_pending_mfa=True)

    def end() -> None:
        with request.app.state.database.session() as db:
            if principal.via == "session":
                service.end_session(db, session_id=principal.credential_id)

    await run_in_threadpool(end)
    forget_principals(request)
    out = Response(status_code=204)
    _clear_cookies(out, cookie_path(request))
    return out


@router.post("/auth/logout-all", status_code=status.HTTP_204_NO_CONTENT)
def logout_everywhere(principal: CurrentMember, request: Request, db: Db) -> Response:
    """Sign out of every browser: all of this user's sessions end."""
    service.end_all_sessions(db, user_id=principal.user_id)
    service.audit_everywhere(
        db, user_id=principal.user_id, actor=actor_of(principal, request), action="auth.logout_all"
    )
    forget_principals(request)
    out = Response(status_code=204)
    _clear_cookies(out, cookie_path(request))
    return out


@router.get("/auth/me", response_model=MeRead)
async def me(request: Request) -> MeRead:
    return _me(await resolve_principal(request, allow_pending_mfa=True))


@router.patch("/auth/me", response_model=MeRead)
def update_me(body: MeUpdate, principal: CurrentMember, request: Request, db: Db) -> MeRead:
    """Rename yourself: every workspace you are a member of shows the new name at once."""
    user, previous = account.rename(db, user_id=principal.user_id, name=body.name)
    if user.name != previous:
        service.audit_everywhere(
            db,
            user_id=user.id,
            actor=actor_of(principal, request),
            action="member.rename",
            target_type="user",
            target_id=user.id,
            data={"name": user.name, "previous": previous},
        )
        forget_principals(request)
    return _me(replace(principal, name=user.name))


@router.post("/auth/password", response_model=MeRead)
def change_password(
    body: PasswordChangeIn,
    principal: CurrentMember,
    request: Request,
    response: Response,
    db: Db,
    settings: CurrentSettings,
    box: Box,
) -> MeRead:
    """Change your password with the current one (and your two-factor code, if you have
    it). Every other session ends; this browser gets a new session cookie and CSRF token
    (in the answer). Attempts count as logins: rate-limited, and toward the lock-out."""
    spend_attempt(request, email=principal.email)
    if body.totp_code:
        request.app.state.login_limiter.spend(f"totp:{principal.user_id}", TOO_MANY_LOGINS)
    service.check_new_password(body.new_password)
    # Both hashes before this request's write transaction begins (at its first statement).
    checked = service.password_matches(
        request.app.state.database, email=principal.email, password=body.current_password
    )
    new_hash = security.hash_password(body.new_password) if checked[1] else None
    try:
        user = account.change_password(
            db,
            user_id=principal.user_id,
            current=body.current_password,
            new=body.new_password,
            totp_code=body.totp_code,
            box=box,
            max_failures=settings.login_max_failures,
            lockout_minutes=settings.login_lockout_minutes,
            checked=checked,
            new_hash=new_hash,
        )
    except Problem:
        db.commit()  # keep the failure count even though the request fails
        raise
    csrf = _signed_in_again(db, principal, user, request, response, settings)
    service.audit_everywhere(
        db, user_id=user.id, actor=actor_of(principal, request), action="auth.password_change"
    )
    if settings.mail_smtp_host:
        account.notify_password_changed(db, user=user)
    forget_principals(request)
    return _me(replace(principal, credential_id="", csrf_token=csrf, mfa_passed=True))


def _signed_in_again(
    db: Db,
    principal: service.Principal,
    user: User,
    request: Request,
    response: Response,
    settings: CurrentSettings,
) -> str | None:
    """How the user signs in changed and every session of theirs ended: the caller's own
    browser, if it is one, gets a new session (every factor passed). The caller's CSRF
    token from now on."""
    if principal.via != "session":
        return principal.csrf_token
    token, sess = service.start_session(
        db,
        user=user,
        workspace_id=principal.workspace_id,
        mfa_passed=True,
        days=settings.session_days,
    )
    _set_cookies(request, response, token, sess.csrf_token, settings)
    return sess.csrf_token


def in_a_browser(
    principal: service.Principal,
    why: str = "two-factor authentication is turned on from a signed-in browser",
) -> None:
    """Two-factor authentication is turned on (or a member's reset: ``why`` says which)
    from a signed-in browser. An API token is a script's credential for one workspace,
    capped to a role (a viewer's, say): a leaked one turned it on with a key of its
    holder's choosing, which ended every session of the account and left its owner unable
    to sign in to any of their workspaces (a reset link changes the password, not the
    key), the holder keeping the recovery codes."""
    if principal.via != "session":
        raise Forbidden(why)


def confirm_password(
    principal: service.Principal,
    password: str,
    request: Request,
    db: Db,
    settings: CurrentSettings,
) -> None:
    """The caller's own password, asked again before a change to how an account signs in
    (a browser left signed in, or a stolen cookie, must not make it): checked as a login's,
    rate-limited and counted toward the lock-out; wrong, a 403 ``current-password-wrong``.
    Called before the request's first statement: argon2 takes ~90 ms by design, and it
    is checked before the write transaction begins."""
    spend_attempt(request, email=principal.email)
    checked = service.password_matches(
        request.app.state.database, email=principal.email, password=password
    )
    try:
        service.check_password(
            db,
            email=principal.email,
            password=password,
            max_failures=settings.login_max_failures,
            lockout_minutes=settings.login_lockout_minutes,
            checked=checked,
        )
    except service.LoginFailed:
        db.commit()  # keep the failure count even though the request fails
        raise account.CurrentPasswordWrong() from None
    except Problem:
        db.commit()
        raise


@router.post("/auth/totp/enroll", response_model=TotpEnrollOut)
def totp_enroll(principal: CurrentMember, db: Db, box: Box) -> TotpEnrollOut:
    """Start two-factor enrolment: scan the URI with an authenticator app."""
    in_a_browser(principal)
    user = db.get(User, principal.user_id)
    assert user is not None
    secret, uri = service.totp_enroll(db, user=user, box=box)
    # Drawn here, by segno (no service is asked: the key never leaves Rapport).
    qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
    return TotpEnrollOut(secret=secret, otpauth_uri=uri, qr_code=qr)


@router.post("/auth/totp/activate", response_model=RecoveryCodesOut)
def totp_activate(
    body: TotpActivateIn,
    principal: CurrentMember,
    request: Request,
    response: Response,
    db: Db,
    box: Box,
    settings: CurrentSettings,
) -> RecoveryCodesOut:
    """Turn two-factor on with a first code and the account's password; the recovery codes
    are shown only now. Every other session ends: one signed in with the password alone (a
    stolen one, say) would otherwise hold on as if it had passed the second factor. The
    password is checked as a login's: rate-limited and counted toward the lock-out."""
    in_a_browser(principal)
    confirm_password(principal, body.password, request, db, settings)
    user = db.get(User, principal.user_id)
    assert user is not None
    codes = service.totp_activate(db, user=user, box=box, code=body.code)
    service.end_all_sessions(db, user_id=user.id)
    _signed_in_again(db, principal, user, request, response, settings)
    service.audit_everywhere(
        db, user_id=principal.user_id, actor=actor_of(principal, request), action="auth.totp_on"
    )
    workspaces.announce_user(db, user=user)
    forget_principals(request)
    return RecoveryCodesOut(recovery_codes=codes)


@router.post("/auth/totp/disable", status_code=status.HTTP_204_NO_CONTENT)
def totp_disable(
    body: CodeIn,
    principal: CurrentMember,
    request: Request,
    db: Db,
    box: Box,
    settings: CurrentSettings,
) -> Response:
    """Turn two-factor off with a code (or a recovery code), guessed no more freely than
    at login: the same budget per account and the same lock-out. Every session ends, the
    caller's browser gets a new one."""
    user = db.get(User, principal.user_id)
    assert user is not None
    if principal.require_2fa:
        raise Forbidden("this workspace requires two-factor authentication")
    request.app.state.login_limiter.spend(f"totp:{user.id}", TOO_MANY_LOGINS)
    if user.locked_until is not None and user.locked_until > utcnow():
        raise service.AccountLocked(user.locked_until)
    if not service.verify_second_factor(db, user=user, box=box, code=body.code):
        _count_failure(db, user, settings)
        raise Problem(401, "totp-invalid", "the two-factor code is wrong")
    service.signed_in(user)
    service.totp_disable(db, user=user)
    service.end_all_sessions(db, user_id=user.id)
    out = Response(status_code=204)
    _signed_in_again(db, principal, user, request, out, settings)
    service.audit_everywhere(
        db, user_id=principal.user_id, actor=actor_of(principal, request), action="auth.totp_off"
    )
    workspaces.announce_user(db, user=user)
    forget_principals(request)
    return out


@router.get("/tokens", response_model=list[TokenRead])
def list_tokens(principal: CurrentMember, db: Db) -> list[TokenRead]:
    rows = service.list_tokens(db, workspace_id=principal.workspace_id, user_id=principal.user_id)
    return [TokenRead.model_validate(r) for r in rows]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    body: TokenCreate, principal: CurrentMember, request: Request, db: Db
) -> TokenCreated:
    """A new API token for yourself, with a role no higher than your own, from a signed-in
    browser (or ``rapport token create``): a token that made tokens outlived its own
    revocation in them, so a leaked one, found and revoked, left its finder another."""
    if principal.via != "session":
        raise Forbidden("an API token is made from a signed-in browser, not with another token")
    if not principal.has(body.role):
        raise Forbidden("a token cannot have a role above your own")
    plain, row = service.create_token(
        db,
        user_id=principal.user_id,
        workspace_id=principal.workspace_id,
        name=body.name,
        role=body.role,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="token.create",
        target_type="token",
        target_id=row.id,
    )
    return TokenCreated(**TokenRead.model_validate(row).model_dump(), token=plain)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, principal: CurrentMember, request: Request, db: Db) -> Response:
    row = service.revoke_token(
        db,
        workspace_id=principal.workspace_id,
        token_id=token_id,
        actor_id=principal.user_id,
        actor_role=principal.role,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="token.revoke",
        target_type="token",
        target_id=row.id,
    )
    forget_principals(request)
    return Response(status_code=204)
