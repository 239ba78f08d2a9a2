"""Password reset by email: a single-use, expiring link whose token is stored only hashed.

The request never says whether the address has an account: the answer and its timing are
the same either way, because the request only queues a job (``ask``), which looks the
address up and, for an account, makes the link and mails it.
"""

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rapport.auth import security
from rapport.auth import service as auth
from rapport.auth.models import PasswordReset, User
from rapport.crypto import SecretBox, box_for
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.mail import send_mail
from rapport.problems import Invalid


class ResetInvalid(Invalid):
    def __init__(self) -> None:
        super().__init__("this reset link is invalid, used or expired: ask for a new one")


def ask(db: Session, *, email: str, box: SecretBox) -> None:
    """Queue a reset for this address, whether it has an account or not: the request does
    the same work either way (one job, one commit). Looked up, a known address wrote a link
    and its mail's job and an unknown one nothing, and a commit that writes waits for the
    disk: the answer's timing told which addresses have an account. The address travels
    encrypted: anyone may type any address here."""
    enqueue(db, name="password_reset_request", args={"email": box.encrypt(email)}, max_attempts=5)


@job("password_reset_request")
def password_reset_request(ctx: JobContext, *, email: str) -> None:
    """A reset asked for (``ask``): the link and its mail, if the address has an account."""
    box = box_for(ctx.settings.secret_key.get_secret_value())
    with ctx.database.session() as db:
        request(db, email=box.decrypt(email), minutes=ctx.settings.password_reset_minutes, box=box)


def request(db: Session, *, email: str, minutes: int, box: SecretBox) -> bool:
    """Queue a reset email when the address has an account; True if one was queued."""
    user = auth.user_by_email(db, email)
    if user is None:
        return False
    token = security.new_session_token()
    db.add(
        PasswordReset(
            token_hash=security.token_hash(token),
            user_id=user.id,
            expires_at=utcnow() + timedelta(minutes=minutes),
        )
    )
    # The job row must not hold a usable link: the token travels encrypted.
    enqueue(
        db,
        name="password_reset_email",
        args={"user_id": user.id, "token": box.encrypt(token)},
        max_attempts=5,
    )
    return True


def confirm(db: Session, *, token: str, password: str) -> User:
    """Set the new password, spend the link (and any other of the user's), end all sessions."""
    auth.check_new_password(password)
    now = utcnow()
    row = db.scalar(
        select(PasswordReset).where(PasswordReset.token_hash == security.token_hash(token))
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise ResetInvalid()
    # Conditional: of two requests racing with the same link, only one spends it.
    spent = db.execute(
        update(PasswordReset)
        .where(PasswordReset.id == row.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise ResetInvalid()
    spend_all(db, user_id=row.user_id)
    user = db.get(User, row.user_id)
    assert user is not None
    user.password_hash = security.hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    auth.end_all_sessions(db, user_id=user.id)
    return user


def spend_all(db: Session, *, user_id: str) -> None:
    """Every reset link of the user not used yet is spent: the password was just chosen, and
    a link asked for (or leaked) before would choose it again."""
    db.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user_id, PasswordReset.used_at.is_(None))
        .values(used_at=utcnow())
    )


@job("password_reset_email")
def password_reset_email(ctx: JobContext, *, user_id: str, token: str) -> None:
    """Email the reset link (errors are retried by the queue)."""
    with ctx.database.session(write=False) as db:
        user = db.get(User, user_id)
        if user is None:
            return
        email, name = user.email, user.name
    plain = box_for(ctx.settings.secret_key.get_secret_value()).decrypt(token)
    # The token rides in the fragment: browsers never send it to a server or in a Referer.
    link = f"{ctx.settings.public_url.rstrip('/')}/reset-password#{plain}"
    minutes = ctx.settings.password_reset_minutes
    send_mail(
        ctx.settings,
        to=email,
        subject="Reset your Rapport password",
        text=(
            f"Hello {name},\n\nSomeone (hopefully you) asked to reset the password of your "
            f"Rapport account. Open this link within {minutes} minutes to choose a new one:\n\n"
            f"{link}\n\nThe link works once. Setting a new password signs you out everywhere.\n"
            "If you did not ask for this, ignore this email: your password stays as it is.\n"
        ),
    )
