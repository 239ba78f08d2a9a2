"""Workspaces, their members and teams."""

from typing import Any

import phonenumbers
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from rapport.auth import service as auth
from rapport.auth.models import ApiToken, AuthSession, Membership, Role, Team, TeamMember, User
from rapport.automation.models import Macro
from rapport.conversations import routing
from rapport.db import hold, lock_row, utcnow
from rapport.problems import Conflict, Forbidden, Invalid, NotFound, Problem
from rapport.realtime.service import emit
from rapport.scoped import get_scoped
from rapport.workspaces.models import SavedView, Workspace

_SETTING_KEYS: dict[str, type] = {
    "require_2fa": bool,
    "reopen_window_hours": int,
    "default_region": str,
    # Duplicate customers at or above this match probability are merged without asking.
    "auto_merge_threshold": float,
    # Conversations one customer opens on two channels within this many minutes are linked.
    "simultaneous_contact_minutes": int,
    # Automatic replies (a rule's, the bot's) one customer gets by email within an hour.
    "automatic_replies_per_hour": int,
}
_RANGES: dict[str, tuple[float, float]] = {
    "reopen_window_hours": (0, 24 * 366),
    "auto_merge_threshold": (0.5, 1.0),
    "simultaneous_contact_minutes": (0, 24 * 60),
    "automatic_replies_per_hour": (1, 1000),
}


def create(
    db: Session, *, name: str, owner_email: str, owner_password: str, owner_name: str = ""
) -> tuple[Workspace, User]:
    """A new workspace and its owner (an existing user keeps their password)."""
    name = name.strip()
    if not name:
        raise Invalid("workspace name must not be empty")
    if db.scalar(select(Workspace.id).where(Workspace.name == name)):
        raise Conflict(f"a workspace named {name!r} exists")
    ws = Workspace(name=name, settings={})
    db.add(ws)
    user = auth.user_by_email(db, owner_email) or auth.create_user(
        db, email=owner_email, password=owner_password, name=owner_name
    )
    db.flush()
    db.add(Membership(workspace_id=ws.id, user_id=user.id, role=Role.owner))
    db.flush()
    return ws, user


def get_by_name(db: Session, name: str) -> Workspace:
    ws = db.scalar(select(Workspace).where(Workspace.name == name))
    if ws is None:
        raise NotFound("workspace")
    return ws


def lock(db: Session, workspace_id: str) -> None:
    """Hold the workspace's row until the transaction ends (``db.lock_row``): storing its
    retrained models, say, runs one at a time."""
    lock_row(db, Workspace, workspace_id)


def update_settings(db: Session, *, workspace: Workspace, changes: dict[str, Any]) -> Workspace:
    settings = dict(workspace.settings)
    for key, value in changes.items():
        kind = _SETTING_KEYS.get(key)
        if kind is None:
            raise Invalid(f"unknown setting {key!r}")
        if value is None:  # back to the default
            settings.pop(key, None)
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise Invalid(f"setting {key!r} must be {kind.__name__}")
        low, high = _RANGES.get(key, (float("-inf"), float("inf")))
        if isinstance(value, int | float) and not low <= value <= high:
            raise Invalid(f"setting {key!r} must be between {low:g} and {high:g}")
        if key == "default_region":
            value = _region(str(value))
        settings[key] = value
    workspace.settings = settings
    return workspace


def _region(value: str) -> str:
    """A region national phone numbers are read in: a two-letter code phonenumbers knows
    (any case). Another was stored, and every national number was then refused."""
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(
            f"default_region must be a two-letter country code, such as US or GB: {value!r}"
        )
    return code


def members(db: Session, *, workspace_id: str) -> list[tuple[Membership, User]]:
    return [
        (m, u)
        for m, u in db.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.workspace_id == workspace_id)
            .order_by(Membership.created_at)
        )
    ]


# The realtime events that redraw a member on the pages open in their workspace (the
# settings' members table, the inbox's and a conversation's lists of agents).
MEMBER_JOINED = "member.joined"
MEMBER_UPDATED = "member.updated"
MEMBER_REMOVED = "member.removed"


def member_event(db: Session, *, type: str, membership: Membership, user: User) -> None:
    """Tell the workspace's open pages what this member now is (once this commits)."""
    payload: dict[str, Any] = {"user_id": user.id}
    if type != MEMBER_REMOVED:
        payload |= {
            "name": user.name,
            "email": user.email,
            "role": membership.role.value,
            "capacity": membership.capacity,
            "totp_enabled": user.totp_enabled,
            "presence": routing.presence(membership, utcnow()),
        }
    emit(db, workspace_id=membership.workspace_id, type=type, payload=payload)


def announce_member(db: Session, *, membership: Membership) -> None:
    """The membership changed (its role, capacity or presence): the workspace redraws the
    member."""
    user = db.get(User, membership.user_id)
    assert user is not None
    member_event(db, type=MEMBER_UPDATED, membership=membership, user=user)


def announce_user(db: Session, *, user: User) -> None:
    """The account changed (its name, its two-factor): every workspace it is a member of
    redraws it."""
    for membership in auth.memberships(db, user_id=user.id):
        member_event(db, type=MEMBER_UPDATED, membership=membership, user=user)


def get_member(db: Session, *, workspace_id: str, user_id: str) -> tuple[Membership, User]:
    row = db.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
    ).first()
    if row is None:
        raise NotFound("member")
    return row[0], row[1]


def hold_account(db: Session, user: User) -> None:
    """Hold the account's row until the transaction ends, before it joins a workspace:
    a two-factor reset holds it too before it reads the account's workspaces (it is
    refused for an account of several), so a membership is never added unseen while a
    reset decides. A membership's insert alone takes only the row's KEY SHARE lock on
    PostgreSQL, which no other lock here waits for; SQLite's one writer serialises."""
    lock_row(db, User, user.id)


def add_member(
    db: Session,
    *,
    workspace_id: str,
    email: str,
    role: Role,
    password: str | None,
    name: str = "",
    actor_role: Role,
) -> tuple[Membership, User]:
    """Add a user (new or existing) to the workspace with a role no higher than the actor's,
    outright: for the operator's own tools (the demo, tests). People join through the API and
    the web UI by accepting an invitation (``rapport.workspaces.invitations``)."""
    if role.rank > actor_role.rank:
        raise Forbidden("you cannot grant a role above your own")
    user = auth.user_by_email(db, email)
    if user is None:
        if not password:
            raise Invalid("a new user needs a password")
        user = auth.create_user(db, email=email, password=password, name=name)
    hold_account(db, user)
    if db.scalar(
        select(Membership.id).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user.id
        )
    ):
        raise Conflict("this user is already a member")
    m = Membership(workspace_id=workspace_id, user_id=user.id, role=role)
    db.add(m)
    db.flush()
    member_event(db, type=MEMBER_JOINED, membership=m, user=user)
    return m, user


def update_member(
    db: Session,
    *,
    membership: Membership,
    role: Role | None,
    capacity: int | None,
    actor_id: str,
    actor_role: Role,
) -> Membership:
    """Change a member's role or capacity (an admin's or owner's act: the API asks for one);
    never of a member above the actor's own role (an admin cannot touch an owner)."""
    if membership.role.rank > actor_role.rank:
        raise Forbidden("you cannot change a member above your own role")
    if role is not None:
        change_role(db, membership=membership, role=role, actor_role=actor_role, actor_id=actor_id)
    if capacity is not None:
        if capacity > membership.capacity:
            routing.wake(db, workspace_id=membership.workspace_id)
        membership.capacity = capacity
    announce_member(db, membership=membership)
    return membership


def change_role(
    db: Session,
    *,
    membership: Membership,
    role: Role,
    actor_role: Role,
    actor_id: str | None = None,
) -> Membership:
    if role.rank > actor_role.rank or membership.role.rank > actor_role.rank:
        raise Forbidden("you cannot change a role above your own")
    if membership.role == Role.owner and role != Role.owner:
        _keep_an_owner(db, membership)
    if role == Role.viewer and membership.role != Role.viewer:
        # A viewer is never given conversations: those they held go back to the queue.
        routing.release(
            db, workspace_id=membership.workspace_id, user_id=membership.user_id, actor_id=actor_id
        )
    membership.role = role
    return membership


def remove_member(
    db: Session, *, membership: Membership, actor_role: Role, actor_id: str | None = None
) -> None:
    if membership.role.rank > actor_role.rank:
        raise Forbidden("you cannot remove a member above your own role")
    if membership.role == Role.owner:
        _keep_an_owner(db, membership)
    # Their unresolved conversations go back to the queue; kept, nobody else would answer.
    routing.release(
        db, workspace_id=membership.workspace_id, user_id=membership.user_id, actor_id=actor_id
    )
    db.execute(
        delete(TeamMember).where(
            TeamMember.workspace_id == membership.workspace_id,
            TeamMember.user_id == membership.user_id,
        )
    )
    # Their API tokens end with them: kept, they would work again (a copy left in some
    # script or leaked) the day the same person is added back.
    db.execute(
        update(ApiToken)
        .where(
            ApiToken.workspace_id == membership.workspace_id,
            ApiToken.user_id == membership.user_id,
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    # So do their browsers' sessions here, which would come back to life that day too.
    db.execute(
        delete(AuthSession).where(
            AuthSession.workspace_id == membership.workspace_id,
            AuthSession.user_id == membership.user_id,
        )
    )
    # What was theirs alone goes with them: nobody else sees it, and it would come back
    # the day the same person is added again.
    db.execute(
        delete(SavedView).where(
            SavedView.workspace_id == membership.workspace_id,
            SavedView.owner_id == membership.user_id,
        )
    )
    db.execute(
        delete(Macro).where(
            Macro.workspace_id == membership.workspace_id,
            Macro.visibility == "personal",
            Macro.created_by == membership.user_id,
        )
    )
    db.delete(membership)
    user = db.get(User, membership.user_id)
    assert user is not None
    member_event(db, type=MEMBER_REMOVED, membership=membership, user=user)


def reset_member_totp(
    db: Session, *, membership: Membership, user: User, actor_id: str, actor_role: Role
) -> None:
    """Turn off the two-factor authentication of a member who lost both their phone and
    their recovery codes (an admin's or owner's act), ending every session of the account
    and lifting its lock-out: they sign in with their password alone, and enrol again.
    Never one's own (the account page turns it off with a code), nor a member above the
    actor's role. The second factor is the account's, guarding its sign-in to every
    workspace it is a member of: an admin of one is trusted with that one alone, so an
    account that is a member of another too keeps it (409), else this workspace's admin
    would open the others' door."""
    if user.id == actor_id:
        raise Forbidden("turn off your own two-factor authentication on your account page")
    if membership.role.rank > actor_role.rank:
        raise Forbidden(
            "you cannot reset the two-factor authentication of a member above your role"
        )
    # Of two resets at once, the second finds it off; a workspace joined meanwhile
    # (``hold_account``) is committed before the memberships are read below.
    hold(db, User, user.id)
    if not user.totp_enabled:
        raise Conflict("this member has no two-factor authentication to reset")
    if any(
        m.workspace_id != membership.workspace_id for m in auth.memberships(db, user_id=user.id)
    ):
        raise Problem(
            409,
            "member-of-other-workspaces",
            "this account is a member of other workspaces too, whose sign-in its two-factor "
            "authentication also guards: only its owner can turn it off (with a recovery "
            "code, on their account page), or the server's operator",
        )
    auth.totp_disable(db, user=user)
    # The admin has just vouched for them: a lock-out (someone guessing, or the member's
    # own tries with a lost phone) would keep them out of what they are let back into.
    auth.forget_failures(user)
    auth.end_all_sessions(db, user_id=user.id)
    announce_user(db, user=user)


def _keep_an_owner(db: Session, membership: Membership) -> None:
    owners = db.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.workspace_id == membership.workspace_id, Membership.role == Role.owner)
    )
    if (owners or 0) <= 1:
        raise Conflict("a workspace must keep at least one owner")


def teams(db: Session, *, workspace_id: str) -> list[tuple[Team, list[str]]]:
    rows = list(
        db.scalars(select(Team).where(Team.workspace_id == workspace_id).order_by(Team.name))
    )
    ids = [t.id for t in rows]
    by_team: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        for tid, uid in db.execute(
            select(TeamMember.team_id, TeamMember.user_id).where(TeamMember.team_id.in_(ids))
        ):
            by_team[tid].append(uid)
    return [(t, by_team[t.id]) for t in rows]


def get_team(db: Session, *, workspace_id: str, team_id: str) -> Team:
    return get_scoped(db, Team, team_id, workspace_id=workspace_id, name="team")


def create_team(db: Session, *, workspace_id: str, name: str, member_ids: list[str]) -> Team:
    _check_team_name(db, workspace_id, name)
    team = Team(workspace_id=workspace_id, name=name)
    db.add(team)
    db.flush()
    set_team_members(db, team=team, member_ids=member_ids)
    return team


def rename_team(db: Session, *, team: Team, name: str) -> None:
    _check_team_name(db, team.workspace_id, name, team_id=team.id)
    team.name = name


def _check_team_name(db: Session, workspace_id: str, name: str, team_id: str = "") -> None:
    taken = select(Team.id).where(
        Team.workspace_id == workspace_id, Team.name == name, Team.id != team_id
    )
    if db.scalar(taken):
        raise Conflict(f"a team named {name!r} exists")


def set_team_members(db: Session, *, team: Team, member_ids: list[str]) -> None:
    ids = set(member_ids)
    if ids:
        known = set(
            db.scalars(
                select(Membership.user_id).where(
                    Membership.workspace_id == team.workspace_id, Membership.user_id.in_(ids)
                )
            )
        )
        if ids - known:
            raise NotFound("member")
    lock_row(db, Team, team.id)  # two replacements at once: one after the other
    db.execute(delete(TeamMember).where(TeamMember.team_id == team.id))
    for uid in sorted(ids):
        db.add(TeamMember(team_id=team.id, user_id=uid, workspace_id=team.workspace_id))
    db.flush()
    routing.wake(db, workspace_id=team.workspace_id)  # a new member may take its waiting ones


def delete_team(db: Session, *, team: Team) -> None:
    """Delete a team; refused while an automation rule assigns to it or tests for it."""
    from rapport.automation import service as automation  # both build on workspaces
    from rapport.channels.models import Inbox

    automation.refuse_if_named(db, workspace_id=team.workspace_id, what="team", row_id=team.id)
    # An inbox's bot that handed over to this team hands over as with none named; kept,
    # the name made its settings unsavable as they stood (404 "team not found").
    for inbox in db.scalars(select(Inbox).where(Inbox.workspace_id == team.workspace_id)):
        bot = (inbox.settings or {}).get("bot")
        if isinstance(bot, dict) and bot.get("handover_team_id") == team.id:
            inbox.settings = {**inbox.settings, "bot": {**bot, "handover_team_id": None}}
    db.delete(team)
