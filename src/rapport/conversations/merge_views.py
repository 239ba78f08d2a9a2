"""Endpoints around one conversation beyond its own data: the customer's parallel
conversations (see them, merge them), agents viewing the same conversation (collision
notice), and suggested answers."""

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from rapport.assistant import suggest
from rapport.auth.deps import CurrentAgent, CurrentMember, Db, ReadDb
from rapport.auth.models import User
from rapport.auth.views import actor_of
from rapport.conversations import merging, service
from rapport.conversations.schemas import ConversationRead
from rapport.realtime import presence

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


@router.post("/{conversation_id}/viewing", status_code=204)
def viewing(
    conversation_id: str, principal: CurrentMember, request: Request, db: ReadDb
) -> Response:
    """This agent has the conversation open (sent every few seconds while it is): the others
    who open it see a collision notice. Nothing is stored. (A page with a socket says so
    over it: this is for a page whose socket cannot open.) 429 past a member's budget."""
    presence.spend_request(request.app.state.presence_limiter, principal)
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    user = db.get(User, principal.user_id)
    presence.viewing(conversation=conv, user_id=principal.user_id, name=user.name if user else "")
    return Response(status_code=204)


@router.get("/{conversation_id}/suggestions")
def suggestions(
    conversation_id: str, principal: CurrentMember, request: Request, db: Db
) -> dict[str, Any]:
    """Help-center articles and colleagues' past answers for the customer's latest message."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    return suggest.for_conversation(
        db, conversation=conv, base_url=request.app.state.settings.public_url
    )


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
