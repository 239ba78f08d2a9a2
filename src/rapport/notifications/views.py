"""An agent's own notifications."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from rapport.auth.deps import CurrentMember, Db, ReadDb
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


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    next_cursor: str | None = Field(
        description="give it as `cursor` for the next (older) page; null on the last"
    )


class ReadIn(BaseModel):
    # Bounded: they go into one query, and PostgreSQL takes 65,535 parameters at most.
    ids: list[str] | None = Field(default=None, max_length=1_000)
    conversation_id: str | None = Field(
        default=None, max_length=32, description="only this conversation's notifications"
    )
    up_to: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{32}$",
        description="the newest notification the caller has shown (its id): none newer is "
        "marked, so that one arrived since is not read unseen",
    )


class UnreadCount(BaseModel):
    unread: int = Field(description=f"counted up to {service.COUNT_CAP}")


@router.get("", response_model=NotificationPage)
def list_notifications(
    principal: CurrentMember,
    db: Db,
    unread: Annotated[bool, Query(description="only those not read yet")] = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
) -> NotificationPage:
    """The caller's notifications, newest first, a page at a time."""
    rows, nxt = service.for_user(
        db,
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        unread_only=unread,
        cursor=cursor,
        limit=limit,
    )
    return NotificationPage(
        items=[NotificationRead.model_validate(r) for r in rows], next_cursor=nxt
    )


@router.get("/unread-count", response_model=UnreadCount)
def unread_count(principal: CurrentMember, db: ReadDb) -> UnreadCount:
    """How many of the caller's notifications are unread (what the badge shows)."""
    return UnreadCount(
        unread=service.unread_count(
            db, workspace_id=principal.workspace_id, user_id=principal.user_id
        )
    )


@router.post("/read")
def mark_read(body: ReadIn, principal: CurrentMember, db: Db) -> dict[str, int]:
    """Mark the given notifications (or all of them, every page's, or a conversation's) read."""
    n = service.mark_read(
        db,
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        ids=body.ids,
        conversation_id=body.conversation_id,
        up_to=body.up_to,
    )
    return {"marked": n}
