"""A member's own account: the name others see them by, and their password.

Both belong to the person, not to a workspace: a rename shows in every workspace they are
a member of, and a new password opens all of them.
"""

from sqlalchemy.orm import Session

from rapport.auth import reset, security
from rapport.auth import service as auth
from rapport.auth.models import User
from rapport.crypto import SecretBox
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.mail import send_mail
from rapport.problems import Problem
from rapport.workspaces import service as workspaces


class CurrentPasswordWrong(Problem):
    """403, not login's 401: the caller is signed in, and a client told 401 would sign
    them out."""

    def __init__(self) -> None:
        super().__init__(403, "current-password-wrong", "the current password is wrong")


def rename(db: Session, *, user_id: str, name: str) -> tuple[User, str]:
    """Give the user a new name (``name`` as the schema cleaned it); the user and the name
    they had. Every workspace they are in redraws them, and every process reads their name
    afresh (the web chat shows it on each of their replies)."""
    user = db.get(User, user_id)
    assert user is not None
    previous = user.name
    if name != previous:
        user.name = name
        workspaces.announce_user(db, user=user)
        auth.forget_name(user.id)
    return user, previous


def change_password(
    db: Session,
    *,
    user_id: str,
    current: str,
    new: str,
    totp_code: str | None,
    box: SecretBox,
    max_failures: int,
    lockout_minutes: int,
    checked: tuple[str | None, bool] | None = None,
    new_hash: str | None = None,
) -> User:
    """Replace the password, proven with the current one (and the two-factor code when the
    account has one, as a login asks); every session of the user ends, the caller's own
    included (the caller's browser gets a new one). A wrong password or code
    counts toward the account's lock-out as at login; a locked account changes nothing.

    ``checked`` is ``auth.password_matches``'s answer and ``new_hash`` the new password's
    hash, both made before the transaction began: argon2 takes ~90 ms each by design."""
    auth.check_new_password(new)
    user = db.get(User, user_id)
    assert user is not None
    try:
        auth.check_password(
            db,
            email=user.email,
            password=current,
            max_failures=max_failures,
            lockout_minutes=lockout_minutes,
            checked=checked,
        )
    except auth.LoginFailed:
        raise CurrentPasswordWrong() from None
    if user.totp_enabled:
        if not totp_code:
            raise Problem(
                403, "totp-required", "this account has two-factor authentication: send its code"
            )
        if not auth.verify_second_factor(db, user=user, box=box, code=totp_code):
            auth.count_failure(db, user, max_failures=max_failures, lockout_minutes=lockout_minutes)
            raise Problem(403, "totp-invalid", "the two-factor code is wrong")
        auth.signed_in(user)
    user.password_hash = new_hash or security.hash_password(new)
    reset.spend_all(db, user_id=user.id)
    auth.end_all_sessions(db, user_id=user.id)
    return user


def notify_password_changed(db: Session, *, user: User) -> None:
    """Mail the account's address that its password changed (from the job queue)."""
    enqueue(
        db,
        name="password_changed_email",
        args={"user_id": user.id, "at": utcnow().isoformat()},
        max_attempts=5,
    )


@job("password_changed_email")
def password_changed_email(ctx: JobContext, *, user_id: str, at: str) -> None:
    """Tell the account's owner their password changed, so that a change they did not
    make is noticed (errors are retried by the queue)."""
    with ctx.database.session(write=False) as db:
        user = db.get(User, user_id)
        if user is None:
            return
        email, name = user.email, user.name
    when = at[:16].replace("T", " ") + " UTC"
    forgot = f"{ctx.settings.public_url.rstrip('/')}/forgot-password"
    send_mail(
        ctx.settings,
        to=email,
        subject="Your Rapport password was changed",
        text=(
            f"Hello {name},\n\nThe password of your Rapport account was changed at {when}. "
            "Every other browser signed in to it was signed out.\n\n"
            "If you did not change it, someone else knows your password: choose a new one "
            f"at once through\n\n{forgot}\n\nand tell your workspace's administrator.\n"
        ),
    )


def notify_totp_reset(db: Session, *, user: User, by: str) -> None:
    """Mail the account's address who (``by``: "Ada, an administrator of Acme") turned its
    two-factor authentication off (from the job queue)."""
    enqueue(
        db,
        name="totp_reset_email",
        args={"user_id": user.id, "by": by, "at": utcnow().isoformat()},
        max_attempts=5,
    )


@job("totp_reset_email")
def totp_reset_email(ctx: JobContext, *, user_id: str, by: str, at: str) -> None:
    """Tell the account's owner their second factor was turned off by someone else (an
    admin, the operator): a reset they did not ask for is noticed (a stolen admin session,
    a mistaken row)."""
    with ctx.database.session(write=False) as db:
        user = db.get(User, user_id)
        if user is None:
            return
        email, name = user.email, user.name
    when = at[:16].replace("T", " ") + " UTC"
    send_mail(
        ctx.settings,
        to=email,
        subject="Two-factor authentication was turned off for your Rapport account",
        text=(
            f"Hello {name},\n\n{by} turned off two-factor authentication for your "
            f"Rapport account at {when}. Every browser "
            "signed in to it was signed out; you now sign in with your password alone.\n\n"
            "Turn it on again from your account page. If you did not ask for this, tell "
            "your workspace's owner at once.\n"
        ),
    )
