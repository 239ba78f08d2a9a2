"""Endpoints for conversations one customer opened at once: see them, merge them."""

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from rapport.auth.deps import CurrentAgent, CurrentMember, Db
from rapport.auth.views import actor_of
from rapport.conversations import merging, service
from rapport.conversations.schemas import ConversationRead

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


class ConversationMergeIn(BaseModel):
    merged_id: str = Field(min_length=1, max_length=32)


@router.get("/{conversation_id}/related", response_model=list[ConversationRead])
def related_conversations(
    conversation_id: str, principal: CurrentMember, db: Db
) -> list[ConversationRead]:
    """The customer's other live conversations on other channels, started close to this one."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    rows = merging.related(db, conversation=conv)
    labels = service.labels_of(db, [r.id for r in rows])
    return [
        ConversationRead.model_validate(r).model_copy(update={"labels": labels[r.id]}) for r in rows
    ]


@router.post("/{conversation_id}/merge", response_model=ConversationRead)
def merge_conversation(
    conversation_id: str,
    body: ConversationMergeIn,
    principal: CurrentAgent,
    request: Request,
    db: Db,
) -> ConversationRead:
    """Move another conversation of the same customer into this one, messages in order."""
    conv = merging.merge(
        db,
        workspace_id=principal.workspace_id,
        survivor_id=conversation_id,
        merged_id=body.merged_id,
        actor=actor_of(principal, request),
    )
    labels = service.labels_of(db, [conv.id])[conv.id]
    return ConversationRead.model_validate(conv).model_copy(update={"labels": labels})
