"""Accounts, logins, sessions, API tokens and two-factor authentication."""

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from rapport.auth import security
from rapport.auth.models import (
    ROLE_RANK,
    ApiToken,
    AuthSession,
    LoginFailure,
    Membership,
    Role,
    User,
)
from rapport.cache import TtlCache
from rapport.crypto import SecretBox, sha256_hex
from rapport.db import Database, lock_row, utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.privacy.models import AuditLog
from rapport.privacy.service import SYSTEM, Actor, audit
from rapport.problems import Forbidden, Invalid, NotFound, Problem, TooMany, wait_text
from rapport.workspaces.models import Workspace


@dataclass(frozen=True)
class Principal:
    """Who is calling: a member of one workspace, by session or by API token."""

    user_id: str
    email: str
    name: str
    workspace_id: str
    role: Role  # effective role: a token's role capped by its member's role
    via: str  # session / token
    credential_id: str  # the AuthSession or ApiToken id
    csrf_token: str | None
    mfa_passed: bool
    totp_enabled: bool
    require_2fa: bool
    region: str = "US"  # the workspace's default region for national phone numbers

    def has(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def min_role(a: Role, b: Role) -> Role:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def check_new_password(password: str) -> None:
    """The policy every new password meets, whoever chooses it (a new account, a reset
    link, a member changing their own)."""
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must be at least {security.MIN_PASSWORD_LENGTH} characters")


def create_user(db: Session, *, email: str, password: str, name: str = "") -> User:
    """A new account; the email is its login, unique across Rapport."""
    email = email.strip().lower()
    if "@" not in email:
        raise Invalid("email must be an email address")
    check_new_password(password)
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        raise Problem(409, "conflict", "a user with this email exists")
    user = User(
        email=email,
        name=name or email.split("@")[0],
        password_hash=security.hash_password(password),
    )
    db.add(user)
    db.flush()
    return user


def user_by_email(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == email.strip().lower()))


class LoginFailed(Problem):
    def __init__(self) -> None:
        super().__init__(401, "login-failed", "email or password is wrong")


class NoSuchAccount(LoginFailed):
    """A login for an address with no account: answered exactly as a wrong password, so
    that only the server tells the two apart."""


class AccountLocked(TooMany):
    """A login to an account (or an address) locked ``until``: when to try again is what is
    left of the lock, not its whole length, in whole minutes rounded up (seconds would tell
    an account from an address with none, by when each was locked, a second apart)."""

    def __init__(self, until: datetime, *, now: datetime | None = None) -> None:
        left = (until - (now or utcnow())).total_seconds()
        seconds = 60 * max(1, math.ceil(left / 60))
        super().__init__(
            f"too many failed logins: try again in {wait_text(seconds)} or reset the password",
            seconds=seconds,
            slug="account-locked",
        )


def password_matches(database: Database, *, email: str, password: str) -> tuple[str | None, bool]:
    """The stored hash and whether ``password`` matches it, checked with no write
    transaction open: argon2 costs ~90 ms by design, and inside the login's transaction
    every attempt (a credential-stuffing run, say) held SQLite's one write lock that long."""
    with database.session(write=False) as db:
        user = user_by_email(db, email)
        stored = user.password_hash if user else None
    return stored, security.verify_password(stored, password)


def check_password(
    db: Session,
    *,
    email: str,
    password: str,
    max_failures: int,
    lockout_minutes: int,
    checked: tuple[str | None, bool] | None = None,
) -> User:
    """The user with these credentials; counts failures and locks the account after too many.

    ``checked`` is ``password_matches``'s answer, used unless the hash changed since."""
    user = user_by_email(db, email)
    now = utcnow()
    if user is None:
        # No account: locked, counted and answered as an account would be, with the same
        # work (argon2 against a dummy hash, one counting statement, a commit).
        address = _address_hash(email)
        locked_until = db.scalar(
            select(LoginFailure.locked_until).where(LoginFailure.address_hash == address)
        )
        if locked_until is not None and locked_until > now:
            raise AccountLocked(locked_until, now=now)
    elif user.locked_until is not None and user.locked_until > now:
        raise AccountLocked(user.locked_until, now=now)
    stored = user.password_hash if user else None
    if checked is not None and checked[0] == stored:
        matches = checked[1]
    else:
        matches = security.verify_password(stored, password)
    if not matches:
        if user is None:
            _count_address_failure(
                db, address, max_failures=max_failures, lockout_minutes=lockout_minutes
            )
            raise NoSuchAccount()
        count_failure(db, user, max_failures=max_failures, lockout_minutes=lockout_minutes)
        raise LoginFailed()
    assert user is not None
    if not user.totp_enabled:  # else only once the second factor passes too (signed_in)
        signed_in(user)
    if security.needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    return user


def _counted(count: Any, last: Any, *, now: datetime, lockout_minutes: int) -> Any:
    """A failure count plus this one, in SQL: 1 again when the last failure is older than
    the lock-out's length (or unknown, counted before it was kept). A count that old is no
    guess in progress: its guesses were slower than a lock-out lets through anyway, and
    kept for ever, a handful of typos spread over months locked a member out."""
    stale = now - timedelta(minutes=lockout_minutes)
    return case((last.is_(None) | (last <= stale), 1), else_=count + 1)


def count_failure(db: Session, user: User, *, max_failures: int, lockout_minutes: int) -> None:
    """A wrong password or two-factor code: after ``max_failures`` of them, each within
    ``lockout_minutes`` of the one before, the account is locked for ``lockout_minutes``
    (and the count starts again).

    Counted by the database in one statement, which holds the row until commit: read,
    added to and written back by each request, failures sent side by side were one."""
    now = utcnow()
    count = db.execute(
        update(User)
        .where(User.id == user.id)
        .values(
            failed_logins=_counted(
                User.failed_logins, User.last_failed_at, now=now, lockout_minutes=lockout_minutes
            ),
            last_failed_at=now,
        )
        .returning(User.failed_logins)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    locked_until = user.locked_until
    if count >= max_failures:
        locked_until, count = now + timedelta(minutes=lockout_minutes), 0
        db.execute(
            update(User)
            .where(User.id == user.id)
            .values(locked_until=locked_until, failed_logins=0)
            .execution_options(synchronize_session=False)
        )
        _audit_lockout(db, user.id, at=now, failures=max_failures, minutes=lockout_minutes)
    set_committed_value(user, "failed_logins", count)
    set_committed_value(user, "last_failed_at", now)
    set_committed_value(user, "locked_until", locked_until)


def _address_hash(email: str) -> str:
    return sha256_hex("login:" + email.strip().lower())


def _count_address_failure(
    db: Session, address: str, *, max_failures: int, lockout_minutes: int
) -> None:
    """``count_failure`` for an address with no account: the same count, in one statement,
    and the same lock (an address's count lapses as an account's does)."""
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    table = LoginFailure.__table__
    now = utcnow()
    count = db.execute(
        insert(LoginFailure)
        .values(address_hash=address, failed_logins=1, last_failed_at=now)
        .on_conflict_do_update(
            index_elements=[table.c.address_hash],
            set_={
                "failed_logins": _counted(
                    table.c.failed_logins,
                    table.c.last_failed_at,
                    now=now,
                    lockout_minutes=lockout_minutes,
                ),
                "last_failed_at": now,
            },
        )
        .returning(table.c.failed_logins)
    ).scalar_one()
    if count >= max_failures:
        db.execute(
            update(LoginFailure)
            .where(LoginFailure.address_hash == address)
            .values(locked_until=now + timedelta(minutes=lockout_minutes), failed_logins=0)
            .execution_options(synchronize_session=False)
        )
        _audit_lockout(db, None, at=now, failures=max_failures, minutes=lockout_minutes)


def _audit_lockout(
    db: Session, user_id: str | None, *, at: datetime, failures: int, minutes: int
) -> None:
    """Audit a lock-out from the job queue (``audit_lockout``), queued in the locking
    request's transaction: it is never lost, and costs that request one row whoever was
    locked. Written there, an entry in each of the account's workspaces (and reading
    them first) made locking an account slower than locking an address with no account,
    which then enqueued nothing: the one step of a login that told the two apart. An
    address with no account queues it too, without a user, and it does nothing."""
    enqueue(
        db,
        name="audit_lockout",
        args={"user_id": user_id, "at": at.isoformat(), "failures": failures, "minutes": minutes},
    )


@job("audit_lockout", keep_done=False)
def audit_lockout(
    ctx: JobContext, *, user_id: str | None, at: str, failures: int, minutes: int
) -> None:
    """Someone is guessing: each workspace of the locked account sees it in its audit log,
    dated when it was locked. Once: a workspace whose log has it already (a run again after
    a crash) is not given it twice."""
    if user_id is None:
        return
    when = datetime.fromisoformat(at)
    with ctx.database.session() as db:
        done = set(
            db.scalars(
                select(AuditLog.workspace_id).where(
                    AuditLog.action == "auth.locked",
                    AuditLog.target_id == user_id,
                    AuditLog.created_at == when,
                )
            )
        )
        for member in memberships(db, user_id=user_id):
            if member.workspace_id not in done:
                row = audit(
                    db,
                    workspace_id=member.workspace_id,
                    actor=SYSTEM,
                    action="auth.locked",
                    target_type="user",
                    target_id=user_id,
                    data={"failures": failures, "minutes": minutes},
                )
                row.created_at = when


def prune_login_failures(db: Session, *, lockout_minutes: int, limit: int = 5000) -> int:
    """Delete up to ``limit`` rows of addresses with no account whose count has lapsed
    (``_counted``) and whose lock has ended: they say nothing more than no row does, and
    kept, every address ever guessed at stayed (by its hash) for good. Returns how many,
    for the caller to repeat in a new transaction while a whole chunk went."""
    now = utcnow()
    stale = now - timedelta(minutes=lockout_minutes)
    chunk = (
        select(LoginFailure.address_hash)
        .where(
            LoginFailure.last_failed_at.is_(None) | (LoginFailure.last_failed_at <= stale),
            LoginFailure.locked_until.is_(None) | (LoginFailure.locked_until <= now),
        )
        .limit(limit)
    )
    result = db.execute(delete(LoginFailure).where(LoginFailure.address_hash.in_(chunk)))
    return int(getattr(result, "rowcount", 0) or 0)


def signed_in(user: User) -> None:
    """Every factor passed: the failures counted so far are forgotten."""
    forget_failures(user)


def forget_failures(user: User) -> None:
    """The account's failure count and lock-out are gone (it signed in, or an admin
    vouched for its member)."""
    user.failed_logins = 0
    user.last_failed_at = None
    user.locked_until = None


def membership(db: Session, *, user_id: str, workspace: str | None) -> Membership:
    """The member's row in the named workspace (name or id), or in their first one."""
    stmt = select(Membership).where(Membership.user_id == user_id)
    if workspace:
        stmt = stmt.join(Workspace, Workspace.id == Membership.workspace_id).where(
            (Workspace.id == workspace) | (Workspace.name == workspace)
        )
    row = db.scalar(stmt.order_by(Membership.created_at).limit(1))
    if row is None:
        raise Forbidden("you are not a member of this workspace")
    return row


def memberships(db: Session, *, user_id: str) -> list[Membership]:
    """Every workspace membership of a user."""
    return list(db.scalars(select(Membership).where(Membership.user_id == user_id)))


def audit_everywhere(
    db: Session, *, user_id: str, actor: Actor, action: str, **detail: Any
) -> None:
    """Audit a change to an account in every workspace it is a member of: each one's admins
    see it in their own log."""
    for member in memberships(db, user_id=user_id):
        audit(db, workspace_id=member.workspace_id, actor=actor, action=action, **detail)


# How long a member's name is kept for what shows it on every message (a web chat
# visitor sees who answered); a rename forgets it in every process (``forget_name``).
NAMES_KEPT_SECONDS = 60.0
_NAMES: TtlCache[str, str] = TtlCache(NAMES_KEPT_SECONDS, name="agent_names", max_items=10_000)


def display_name(db: Session, user_id: str) -> str:
    """A member's name as others see it ("" for none), without a query each time."""

    def load() -> str:
        user = db.get(User, user_id)
        return user.name if user else ""

    return _NAMES.get(user_id, load)


def names_of(db: Session, user_ids: set[str]) -> dict[str, str]:
    """Members as a list or a thread shows them, by id: by name, else by address (one
    query; members who left the workspace since included)."""
    if not user_ids:
        return {}
    rows = db.execute(select(User.id, User.name, User.email).where(User.id.in_(user_ids)))
    return {user_id: name or email for user_id, name, email in rows}


def forget_name(user_id: str) -> None:
    """The member was renamed: every process reads their name afresh."""
    _NAMES.forget(user_id)


# How long a session that passed the password may wait for its second factor.
PENDING_MFA = timedelta(minutes=10)


def start_session(
    db: Session, *, user: User, workspace_id: str, mfa_passed: bool, days: int
) -> tuple[str, AuthSession]:
    """A browser session; the plain token goes in the cookie, only its hash is stored."""
    token = security.new_session_token()
    row = AuthSession(
        token_hash=security.token_hash(token),
        user_id=user.id,
        workspace_id=workspace_id,
        csrf_token=secrets.token_urlsafe(24),
        mfa_passed=mfa_passed,
        expires_at=utcnow() + timedelta(days=days),
    )
    db.add(row)
    return token, row


def session_principal(db: Session, *, token: str) -> Principal | None:
    row = db.execute(
        select(AuthSession, User, Membership, Workspace)
        .join(User, User.id == AuthSession.user_id)
        .join(
            Membership,
            (Membership.user_id == AuthSession.user_id)
            & (Membership.workspace_id == AuthSession.workspace_id),
        )
        .join(Workspace, Workspace.id == AuthSession.workspace_id)
        .where(AuthSession.token_hash == security.token_hash(token))
    ).first()
    if row is None:
        return None
    sess, user, member, ws = row
    now = utcnow()
    if sess.expires_at <= now:
        return None
    if not sess.mfa_passed and sess.created_at < now - PENDING_MFA:
        return None  # a password alone opens the second step for minutes, not for days
    if user.sessions_valid_after is not None and sess.created_at < user.sessions_valid_after:
        return None
    return Principal(
        user_id=user.id,
        email=user.email,
        name=user.name,
        workspace_id=ws.id,
        role=member.role,
        via="session",
        credential_id=sess.id,
        csrf_token=sess.csrf_token,
        mfa_passed=sess.mfa_passed,
        totp_enabled=user.totp_enabled,
        require_2fa=ws.require_2fa,
        region=ws.default_region,
    )


def token_principal(db: Session, *, token: str) -> Principal | None:
    row = db.execute(
        select(ApiToken, User, Membership, Workspace)
        .join(User, User.id == ApiToken.user_id)
        .join(
            Membership,
            (Membership.user_id == ApiToken.user_id)
            & (Membership.workspace_id == ApiToken.workspace_id),
        )
        .join(Workspace, Workspace.id == ApiToken.workspace_id)
        .where(ApiToken.token_hash == security.token_hash(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    tok, user, member, ws = row
    return Principal(
        user_id=user.id,
        email=user.email,
        name=user.name,
        workspace_id=ws.id,
        role=min_role(tok.role, member.role),
        via="token",
        credential_id=tok.id,
        csrf_token=None,
        # A token is a credential of its own, made from a fully signed-in session or the CLI.
        mfa_passed=True,
        totp_enabled=user.totp_enabled,
        require_2fa=ws.require_2fa,
        region=ws.default_region,
    )


def end_session(db: Session, *, session_id: str) -> None:
    db.execute(delete(AuthSession).where(AuthSession.id == session_id))


def end_all_sessions(db: Session, *, user_id: str) -> None:
    """Sign out everywhere: every session of this user, in every browser, is void."""
    db.execute(update(User).where(User.id == user_id).values(sessions_valid_after=utcnow()))
    db.execute(delete(AuthSession).where(AuthSession.user_id == user_id))


def pass_second_factor(
    db: Session, *, session_id: str, user: User, days: int
) -> tuple[str, AuthSession]:
    """The second factor passed: the half-signed-in session ends and a new one (a new
    cookie, a new CSRF token) starts, so whoever knew the first never holds a full one."""
    pending = db.get(AuthSession, session_id)
    assert pending is not None
    workspace_id = pending.workspace_id
    end_session(db, session_id=session_id)
    signed_in(user)
    return start_session(db, user=user, workspace_id=workspace_id, mfa_passed=True, days=days)


def totp_enroll(db: Session, *, user: User, box: SecretBox) -> tuple[str, str]:
    """Start enrolment: a new secret (not yet active) and its otpauth:// URI for the app."""
    if user.totp_enabled:
        raise Problem(409, "conflict", "two-factor authentication is already on")
    secret = security.new_totp_secret()
    user.totp_secret = box.encrypt(secret)
    return secret, security.totp_uri(secret, email=user.email)


def _spend_totp(db: Session, *, user: User, box: SecretBox, code: str) -> bool:
    """Whether ``code`` is the user's TOTP code of a step later than the last one accepted;
    that step is then the last (a code is good once, never replayed in its 90 seconds). The
    update is conditional: of two requests with one code at once, one wins."""
    if not user.totp_secret:
        return False
    step = security.totp_step(box.decrypt(user.totp_secret), code)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        return False
    spent = db.execute(
        update(User)
        .where(
            User.id == user.id,
            (User.totp_last_step.is_(None)) | (User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return False
    user.totp_last_step = step
    return True


def totp_activate(db: Session, *, user: User, box: SecretBox, code: str) -> list[str]:
    """Finish enrolment with a code from the app; returns the one-time recovery codes."""
    if not user.totp_secret:
        raise Invalid("start enrolment first")
    if not _spend_totp(db, user=user, box=box, code=code):
        raise Problem(401, "totp-invalid", "the two-factor code is wrong")
    codes = security.new_recovery_codes()
    user.totp_enabled = True
    user.recovery_codes = [security.recovery_hash(c) for c in codes]
    return codes


def verify_second_factor(db: Session, *, user: User, box: SecretBox, code: str) -> bool:
    """A TOTP code, or an unused recovery code (which is then used up)."""
    if not user.totp_enabled or not user.totp_secret:
        return False
    if _spend_totp(db, user=user, box=box, code=code):
        return True
    hashed = security.recovery_hash(code)
    if hashed in user.recovery_codes:
        # Two logins with one code at once (PostgreSQL runs them side by side): the second
        # waits for the first, then reads the code gone.
        lock_row(db, User, user.id)
        db.refresh(user)
        if hashed in user.recovery_codes:
            user.recovery_codes = [c for c in user.recovery_codes if c != hashed]
            return True
    return False


def totp_disable(db: Session, *, user: User) -> None:
    user.totp_enabled = False
    user.totp_secret = None
    user.recovery_codes = []
    user.totp_last_step = None


def create_token(
    db: Session, *, user_id: str, workspace_id: str, name: str, role: Role
) -> tuple[str, ApiToken]:
    """A new API token; the plain value is returned once and never stored."""
    plain = security.new_api_token()
    row = ApiToken(
        workspace_id=workspace_id,
        user_id=user_id,
        name=name,
        token_hash=security.token_hash(plain),
        prefix=plain[:8],
        role=role,
    )
    db.add(row)
    db.flush()
    return plain, row


def list_tokens(db: Session, *, workspace_id: str, user_id: str) -> list[ApiToken]:
    return list(
        db.scalars(
            select(ApiToken)
            .where(ApiToken.workspace_id == workspace_id, ApiToken.user_id == user_id)
            .order_by(ApiToken.created_at)
        )
    )


def revoke_token(
    db: Session, *, workspace_id: str, token_id: str, actor_id: str, actor_role: Role
) -> ApiToken:
    """Revoke one of the actor's own tokens or, for an admin, another member's; never one
    of a member above the actor's own role (an admin cannot cut off an owner)."""
    stmt = select(ApiToken).where(ApiToken.id == token_id, ApiToken.workspace_id == workspace_id)
    if actor_role.rank < Role.admin.rank:
        stmt = stmt.where(ApiToken.user_id == actor_id)
    row = db.scalar(stmt)
    if row is None:
        raise NotFound("token")
    if row.user_id != actor_id:
        holder = db.scalar(
            select(Membership.role).where(
                Membership.workspace_id == workspace_id, Membership.user_id == row.user_id
            )
        )
        if holder is not None and holder.rank > actor_role.rank:
            raise Forbidden("you cannot revoke a token of a member above your own role")
    row.revoked_at = utcnow()
    return row
