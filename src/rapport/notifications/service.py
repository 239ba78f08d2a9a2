"""Notifying agents, and finding who a note mentions."""

import re
from dataclasses import dataclass, field

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.orm import Session

from rapport import pagination
from rapport.auth.models import Membership, Role, User
from rapport.db import utcnow
from rapport.notifications.models import Notification
from rapport.realtime.service import emit

# @bob, @bob.smith, @carol-ann, @bob@acme.example: a member's first name, full name (its
# words joined by dots), email local part or whole email, in any case.
_MENTION = re.compile(r"(?<![\w@])@([\w][\w.\-]*(?:@[\w\-]+(?:\.[\w\-]+)+)?)")


@dataclass(frozen=True)
class Member:
    """A member a handle fits, as the author is shown them to pick the one meant."""

    id: str
    name: str
    email: str


@dataclass(frozen=True)
class Mentions:
    """Who a text's @handles name. A handle that fits one member names them; one that fits
    several (two Bobs, or a Bob whose email is someone else's first name) names nobody:
    notifying the first one found would tell the wrong person and leave the right one
    unaware, so the author is told instead and can write the full name or email."""

    user_ids: list[str] = field(default_factory=list)
    # Each handle that fits several members, as written (lower-cased), with those members.
    ambiguous: dict[str, list[Member]] = field(default_factory=dict)
    # Each handle that fits no member who can be mentioned (a typo, a viewer, someone who
    # left): it notified nobody, which the author is told (it was dropped without a word).
    unknown: list[str] = field(default_factory=list)


def _handles(email: str, name: str | None) -> set[str]:
    email = email.lower()
    words = (name or "").lower().split()
    handles = {email, email.split("@")[0]}
    if words:
        handles |= {words[0], ".".join(words)}
    return handles


def mentioned(db: Session, *, workspace_id: str, text: str) -> Mentions:
    """The members (not viewers) that ``text`` mentions, in order, once each, and the
    handles that fit several members, which mention none of them."""
    handles = [h.lower().rstrip(".") for h in _MENTION.findall(text)]
    if not handles:
        return Mentions()
    members = db.execute(
        select(User.id, User.email, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id, Membership.role != Role.viewer)
        .order_by(User.id)
    ).all()
    fits: dict[str, list[Member]] = {}
    for uid, email, name in members:
        for handle in _handles(email, name):
            fits.setdefault(handle, []).append(Member(id=uid, name=name or "", email=email))
    out = Mentions()
    for h in handles:
        found = fits.get(h, [])
        if len(found) > 1:
            out.ambiguous[h] = found
        elif found and found[0].id not in out.user_ids:
            out.user_ids.append(found[0].id)
        elif not found and h not in out.unknown:
            out.unknown.append(h)
    return out


def notify(
    db: Session,
    *,
    workspace_id: str,
    user_id: str,
    kind: str,
    text: str,
    conversation_id: str | None = None,
    message_id: str | None = None,
) -> Notification:
    """Record a notification and push it to the agent's open pages."""
    row = Notification(
        workspace_id=workspace_id,
        user_id=user_id,
        kind=kind,
        text=text[:500],
        conversation_id=conversation_id,
        message_id=message_id,
    )
    db.add(row)
    emit(
        db,
        workspace_id=workspace_id,
        type="notification.created",
        payload={
            "id": row.id,
            "user_id": user_id,
            "kind": kind,
            "text": row.text,
            "conversation_id": conversation_id,
            "message_id": message_id,
        },
    )
    return row


# The most a page holds (the list took up to 200 before it had pages: still allowed).
MAX_PAGE = 200


def for_user(
    db: Session,
    *,
    workspace_id: str,
    user_id: str,
    unread_only: bool,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Notification], str | None]:
    """The user's notifications (the unread ones only, if asked), newest first: a page and
    the cursor of the next. Keyset, not offset: one that comes meanwhile is newer than the
    cursor and moves nothing, and marking a page read moves nothing either."""
    limit = pagination.clamp(limit, maximum=MAX_PAGE)
    stmt = select(Notification).where(
        Notification.workspace_id == workspace_id, Notification.user_id == user_id
    )
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    after = pagination.decode(cursor)
    if after:
        stmt = stmt.where(tuple_(Notification.created_at, Notification.id) < after)
    stmt = stmt.order_by(Notification.created_at.desc(), Notification.id.desc())
    rows = list(db.scalars(stmt.limit(limit + 1)))
    return pagination.page_of(rows, limit, lambda n: (n.created_at, n.id))


# Unread notifications are counted up to this many (the badge then says 99+): a count that
# reads every row of a member who never reads theirs would grow without end.
COUNT_CAP = 100

# SQLite's planner, with no statistics, took the (user, workspace, time) index in some runs
# and read every notification the member ever had: there the unread index is named.
_UNREAD_SQLITE = text(
    "SELECT count(*) FROM (SELECT 1 FROM notifications INDEXED BY ix_notifications_unread"
    " WHERE user_id = :user_id AND workspace_id = :workspace_id AND read_at IS NULL"
    " LIMIT :cap)"
)


def unread_count(db: Session, *, workspace_id: str, user_id: str) -> int:
    """How many of the user's notifications are unread, up to COUNT_CAP."""
    if db.get_bind().dialect.name == "sqlite":
        found = db.scalar(
            _UNREAD_SQLITE, {"user_id": user_id, "workspace_id": workspace_id, "cap": COUNT_CAP}
        )
        return int(found or 0)
    unread = (
        select(Notification.id)
        .where(
            Notification.workspace_id == workspace_id,
            Notification.user_id == user_id,
            Notification.read_at.is_(None),
        )
        .limit(COUNT_CAP)
        .subquery()
    )
    return int(db.scalar(select(func.count()).select_from(unread)) or 0)


def mark_read(
    db: Session,
    *,
    workspace_id: str,
    user_id: str,
    ids: list[str] | None,
    conversation_id: str | None = None,
    up_to: str | None = None,
) -> int:
    """Mark some (or, with None, all) of the user's notifications read, those of one
    conversation only if it is named, none newer than ``up_to`` (the newest one a page
    showed) if it is given; the user's other open pages hear of it
    (``notifications.read``) to count again."""
    mine = (Notification.workspace_id == workspace_id, Notification.user_id == user_id)
    stmt = update(Notification).where(*mine, Notification.read_at.is_(None))
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(ids))
    if conversation_id is not None:
        stmt = stmt.where(Notification.conversation_id == conversation_id)
    if up_to is not None:
        # "Mark all read" reads what the agent saw: one that came after the page drew its
        # list stays unread. Bounded in the list's own order (time, then id); one gone since
        # (its conversation erased) by its id, which begins with the time it was made.
        seen = db.execute(
            select(Notification.created_at, Notification.id).where(*mine, Notification.id == up_to)
        ).first()
        stmt = stmt.where(
            tuple_(Notification.created_at, Notification.id) <= tuple_(*seen)
            if seen is not None
            else Notification.id <= up_to
        )
    marked = int(getattr(db.execute(stmt.values(read_at=utcnow())), "rowcount", 0) or 0)
    if marked:
        emit(
            db,
            workspace_id=workspace_id,
            type="notifications.read",
            payload={"user_id": user_id, "marked": marked},
        )
    return marked
