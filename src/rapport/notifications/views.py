"""An agent's own notifications."""

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from rapport.auth.deps import CurrentMember, Db
from rapport.notifications import service

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


class NotificationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    text: str
    conversation_id: str | None
    message_id: str | None
    created_at: datetime
    read_at: datetime | None


class ReadIn(BaseModel):
    # Bounded: they go into one query, and PostgreSQL takes 65,535 parameters at most.
    ids: list[str] | None = Field(default=None, max_length=1_000)


@router.get("", response_model=list[NotificationRead])
def list_notifications(
    principal: CurrentMember, db: Db, unread: bool = False
) -> list[NotificationRead]:
    rows = service.for_user(
        db, workspace_id=principal.workspace_id, user_id=principal.user_id, unread_only=unread
    )
    return [NotificationRead.model_validate(r) for r in rows]


@router.post("/read")
def mark_read(body: ReadIn, principal: CurrentMember, db: Db) -> dict[str, int]:
    """Mark the given notifications (or all of them) read."""
    n = service.mark_read(
        db, workspace_id=principal.workspace_id, user_id=principal.user_id, ids=body.ids
    )
    return {"marked": n}
