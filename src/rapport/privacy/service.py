"""Writing the audit log."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from rapport.privacy.models import AuditLog


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user (by session or token), or the system itself."""

    kind: str  # user / token / system
    user_id: str | None = None
    ip: str | None = None


SYSTEM = Actor(kind="system")


def audit(
    db: Session,
    *,
    workspace_id: str,
    actor: Actor,
    action: str,
    target_type: str | None = None,
    target_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditLog:
    """Record an action in the caller's transaction (it is kept only if that commits)."""
    row = AuditLog(
        workspace_id=workspace_id,
        actor=actor.kind,
        actor_user_id=actor.user_id,
        ip=actor.ip,
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=data or {},
    )
    db.add(row)
    return row
