"""Notifying agents, and finding who a note mentions."""

import re

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rapport.auth.models import Membership, Role, User
from rapport.db import utcnow
from rapport.notifications.models import Notification
from rapport.realtime.service import emit

# @bob, @bob.smith, @carol-ann: matched against each member's email local part and first name.
_MENTION = re.compile(r"(?<![\w@])@([\w][\w.\-]*)")


def mentioned(db: Session, *, workspace_id: str, text: str) -> list[str]:
    """The ids of the members (not viewers) that ``text`` mentions, in order, once each."""
    handles = [h.lower().rstrip(".") for h in _MENTION.findall(text)]
    if not handles:
        return []
    members = db.execute(
        select(User.id, User.email, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id, Membership.role != Role.viewer)
    ).all()
    by_handle: dict[str, str] = {}
    for uid, email, name in members:
        by_handle.setdefault(email.split("@")[0].lower(), uid)
        if name:
            by_handle.setdefault(name.split(" ")[0].lower(), uid)
            by_handle.setdefault(name.replace(" ", ".").lower(), uid)
    out: list[str] = []
    for h in handles:
        found = by_handle.get(h)
        if found and found not in out:
            out.append(found)
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


def for_user(
    db: Session, *, workspace_id: str, user_id: str, unread_only: bool, limit: int = 50
) -> list[Notification]:
    stmt = select(Notification).where(
        Notification.workspace_id == workspace_id, Notification.user_id == user_id
    )
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    return list(db.scalars(stmt.order_by(Notification.created_at.desc()).limit(limit)))


def mark_read(db: Session, *, workspace_id: str, user_id: str, ids: list[str] | None) -> int:
    """Mark some (or, with None, all) of the user's notifications read."""
    stmt = update(Notification).where(
        Notification.workspace_id == workspace_id,
        Notification.user_id == user_id,
        Notification.read_at.is_(None),
    )
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(ids))
    return int(getattr(db.execute(stmt.values(read_at=utcnow())), "rowcount", 0) or 0)
