"""Invitations: a person joins a workspace by accepting an emailed link, never by an admin's
say-so.

An admin names an address and a role. The address gets a single-use link that expires; only
its token's hash is stored, and the queued email job carries it encrypted. Whoever opens the
link either creates their account there (choosing their own password) or, if the address
already has one, proves it with that account's password; only then does the membership
exist. The admin's answer is the same whether the address has an account or not, so an
admin of one workspace learns nothing about accounts elsewhere, and nobody is added to a
workspace without saying yes.
"""

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rapport.auth import security
from rapport.auth import service as auth
from rapport.auth.models import Invitation, Membership, Role, User
from rapport.crypto import SecretBox, box_for
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.mail import send_mail
from rapport.problems import Conflict, Forbidden, Invalid, NotFound
from rapport.workspaces import service as workspaces
from rapport.workspaces.models import Workspace

DAYS = 7


class InvitationInvalid(Invalid):
    def __init__(self) -> None:
        super().__init__(
            "this invitation link is invalid, used, withdrawn or expired: ask for a new one"
        )


def invite(
    db: Session,
    *,
    workspace_id: str,
    email: str,
    role: Role,
    name: str,
    actor_id: str | None,
    actor_role: Role,
    box: SecretBox,
    mail: bool = True,
) -> tuple[Invitation, str]:
    """Invite an address with a role no higher than the actor's; the invitation and its
    link's token. Inviting it again replaces its pending invitation: the earlier link stops
    working. With ``mail`` the link is emailed from the job queue; without, the caller hands
    it over (the operator's command, on an installation without a mail relay)."""
    if role.rank > actor_role.rank:
        raise Forbidden("you cannot grant a role above your own")
    email = email.strip().lower()
    if "@" not in email:
        raise Invalid("email must be an email address")
    member = (
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == workspace_id, User.email == email)
    )
    if db.scalar(member) is not None:
        raise Conflict("this address is already a member")
    token = security.new_session_token()
    invitation = db.scalar(
        select(Invitation).where(Invitation.workspace_id == workspace_id, Invitation.email == email)
    )
    if invitation is None:
        invitation = Invitation(workspace_id=workspace_id, email=email)
        db.add(invitation)
    invitation.name, invitation.role, invitation.invited_by_id = name, role, actor_id
    invitation.token_hash = security.token_hash(token)
    invitation.created_at = utcnow()
    invitation.expires_at = invitation.created_at + timedelta(days=DAYS)
    db.flush()
    if mail:
        # The job row must not hold a usable link: the token travels encrypted.
        enqueue(
            db,
            name="invitation_email",
            args={"invitation_id": invitation.id, "token": box.encrypt(token)},
            workspace_id=workspace_id,
            max_attempts=5,
        )
    return invitation, token


def link(public_url: str, token: str) -> str:
    """The invitation's link; the token rides in the fragment, which browsers never send to
    a server or in a Referer."""
    return f"{public_url.rstrip('/')}/invite#{token}"


def pending(db: Session, *, workspace_id: str) -> list[Invitation]:
    """The workspace's invitations not accepted yet (expired ones too, until withdrawn)."""
    return list(
        db.scalars(
            select(Invitation)
            .where(Invitation.workspace_id == workspace_id)
            .order_by(Invitation.created_at.desc(), Invitation.id)
        )
    )


def withdraw(db: Session, *, workspace_id: str, invitation_id: str) -> Invitation:
    """Withdraw an invitation: its link stops working."""
    invitation = db.scalar(
        select(Invitation).where(
            Invitation.id == invitation_id, Invitation.workspace_id == workspace_id
        )
    )
    if invitation is None:
        raise NotFound("invitation")
    db.delete(invitation)
    db.flush()
    return invitation


def by_token(db: Session, token: str) -> Invitation:
    """The live invitation this link token opens."""
    invitation = db.scalar(
        select(Invitation).where(Invitation.token_hash == security.token_hash(token))
    )
    if invitation is None or invitation.expires_at <= utcnow():
        raise InvitationInvalid()
    return invitation


def accept(
    db: Session,
    *,
    token: str,
    password: str,
    name: str,
    max_failures: int,
    lockout_minutes: int,
    checked: tuple[str | None, bool] | None = None,
) -> tuple[Membership, User, bool]:
    """Join the invitation's workspace; returns the membership, the user and whether the
    account was created here. An address without an account gets one with ``password``;
    an address with one proves it with that account's password (counted against its lock-out
    as a login is)."""
    invitation = by_token(db, token)
    user = auth.user_by_email(db, invitation.email)
    created = user is None
    if user is None:
        user = auth.create_user(
            db, email=invitation.email, password=password, name=name.strip() or invitation.name
        )
    else:
        user = auth.check_password(
            db,
            email=invitation.email,
            password=password,
            max_failures=max_failures,
            lockout_minutes=lockout_minutes,
            checked=checked,
        )
    # Conditional: of two acceptances racing with the same link, only one spends it.
    spent = db.execute(delete(Invitation).where(Invitation.id == invitation.id))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise InvitationInvalid()
    workspaces.hold_account(db, user)
    member = db.scalar(
        select(Membership).where(
            Membership.workspace_id == invitation.workspace_id, Membership.user_id == user.id
        )
    )
    if member is None:
        member = Membership(
            workspace_id=invitation.workspace_id, user_id=user.id, role=invitation.role
        )
        db.add(member)
        db.flush()
        workspaces.member_event(db, type=workspaces.MEMBER_JOINED, membership=member, user=user)
    return member, user, created


def account_exists(db: Session, invitation: Invitation) -> bool:
    return auth.user_by_email(db, invitation.email) is not None


def workspace_name(db: Session, invitation: Invitation) -> str:
    return db.scalar(select(Workspace.name).where(Workspace.id == invitation.workspace_id)) or ""


@job("invitation_email")
def invitation_email(ctx: JobContext, *, invitation_id: str, token: str) -> None:
    """Email the invitation link (errors are retried by the queue); nothing once it is
    withdrawn, accepted or replaced by a newer one."""
    plain = box_for(ctx.settings.secret_key.get_secret_value()).decrypt(token)
    with ctx.database.session(write=False) as db:
        invitation = db.get(Invitation, invitation_id)
        if invitation is None or invitation.token_hash != security.token_hash(plain):
            return
        to, role, expires = invitation.email, invitation.role, invitation.expires_at
        workspace = workspace_name(db, invitation)
        inviter = db.get(User, invitation.invited_by_id) if invitation.invited_by_id else None
        by = f"{inviter.name or inviter.email} invited you" if inviter else "You are invited"
    send_mail(
        ctx.settings,
        to=to,
        subject=f"Join {workspace} on Rapport",
        text=(
            f"Hello,\n\n{by} to join {workspace} on Rapport as {article(role)} {role.value}.\n\n"
            f"Open this link to accept (it works once, until {_day(expires)}):\n\n"
            f"{link(ctx.settings.public_url, plain)}\n\n"
            "If you already have a Rapport account with this address, you will confirm it "
            "with its password; otherwise you choose one there.\n"
            "If you did not expect this, ignore this email: nothing happens unless you accept.\n"
        ),
    )


def article(role: Role) -> str:
    return "an" if role.value[0] in "aeiou" else "a"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
