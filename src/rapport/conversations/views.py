"""Conversation endpoints: list, read, reply, note, assign, status, priority, labels."""

from fastapi import APIRouter, Query, Request

from rapport.auth.deps import CurrentAgent, CurrentMember, Db
from rapport.auth.views import actor_of
from rapport.conversations import service
from rapport.conversations.models import Conversation, Status
from rapport.conversations.schemas import (
    AssignIn,
    ConversationDetail,
    ConversationPage,
    ConversationRead,
    LabelsIn,
    MessageRead,
    NoteIn,
    PriorityIn,
    ReplyIn,
    StatusIn,
)
from rapport.privacy.service import audit

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


def _read(conv: Conversation, labels: list[str]) -> ConversationRead:
    return ConversationRead(**_fields(conv), labels=labels)


def _fields(conv: Conversation) -> dict[str, object]:
    return ConversationRead.model_validate(conv).model_dump(exclude={"labels"})


@router.get("", response_model=ConversationPage)
def list_conversations(
    principal: CurrentMember,
    db: Db,
    status: Status | None = None,
    assignee: str | None = Query(default=None, description="a user id, `me` or `none`"),
    team_id: str | None = None,
    inbox_id: str | None = None,
    label: str | None = None,
    customer_id: str | None = None,
    cursor: str | None = None,
    limit: int = Query(default=25, ge=1, le=100),
) -> ConversationPage:
    """Conversations by status, assignee, team, inbox, label or customer; newest activity first."""
    assignee_id = principal.user_id if assignee == "me" else assignee
    rows, nxt = service.search(
        db,
        workspace_id=principal.workspace_id,
        status=status,
        assignee_id=None if assignee == "none" else assignee_id,
        unassigned=assignee == "none",
        team_id=team_id,
        inbox_id=inbox_id,
        label=label,
        customer_id=customer_id,
        cursor=cursor,
        limit=limit,
    )
    labels = service.labels_of(db, [r.id for r in rows])
    return ConversationPage(items=[_read(r, labels[r.id]) for r in rows], next_cursor=nxt)


@router.get("/{conversation_id}", response_model=ConversationDetail)
def get_conversation(conversation_id: str, principal: CurrentMember, db: Db) -> ConversationDetail:
    """A conversation with its messages (notes and activity included), oldest first."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    msgs = service.messages(db, conversation=conv)
    return ConversationDetail(
        **_fields(conv),
        labels=service.labels_of(db, [conv.id])[conv.id],
        messages=[MessageRead.model_validate(m) for m in msgs],
    )


@router.post("/{conversation_id}/messages", response_model=MessageRead, status_code=201)
def reply(conversation_id: str, body: ReplyIn, principal: CurrentAgent, db: Db) -> MessageRead:
    """Reply to the customer: stored now, delivered by the ``deliver`` job."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    msg = service.reply(
        db, conversation=conv, author_id=principal.user_id, text=body.text, html=body.html
    )
    return MessageRead.model_validate(msg)


@router.post("/{conversation_id}/notes", response_model=MessageRead, status_code=201)
def add_note(conversation_id: str, body: NoteIn, principal: CurrentAgent, db: Db) -> MessageRead:
    """A private note for colleagues; never sent to the customer."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    return MessageRead.model_validate(
        service.note(db, conversation=conv, author_id=principal.user_id, text=body.text)
    )


@router.post("/{conversation_id}/assign", response_model=ConversationRead)
def assign(
    conversation_id: str, body: AssignIn, principal: CurrentAgent, request: Request, db: Db
) -> ConversationRead:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    service.assign(
        db,
        conversation=conv,
        assignee_id=body.assignee_id,
        team_id=body.team_id,
        actor_id=principal.user_id,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="conversation.assign",
        target_type="conversation",
        target_id=conv.id,
        data={"assignee_id": body.assignee_id, "team_id": body.team_id},
    )
    return _read(conv, service.labels_of(db, [conv.id])[conv.id])


@router.post("/{conversation_id}/status", response_model=ConversationRead)
def set_status(
    conversation_id: str, body: StatusIn, principal: CurrentAgent, db: Db
) -> ConversationRead:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    service.set_status(
        db,
        conversation=conv,
        status=body.status,
        snoozed_until=body.snoozed_until,
        actor_id=principal.user_id,
    )
    return _read(conv, service.labels_of(db, [conv.id])[conv.id])


@router.post("/{conversation_id}/priority", response_model=ConversationRead)
def set_priority(
    conversation_id: str, body: PriorityIn, principal: CurrentAgent, db: Db
) -> ConversationRead:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    service.set_priority(db, conversation=conv, priority=body.priority)
    return _read(conv, service.labels_of(db, [conv.id])[conv.id])


@router.post("/{conversation_id}/labels", response_model=list[str])
def add_labels(conversation_id: str, body: LabelsIn, principal: CurrentAgent, db: Db) -> list[str]:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    return service.add_labels(db, conversation=conv, labels=body.labels)


@router.delete("/{conversation_id}/labels/{label}", response_model=list[str])
def remove_label(conversation_id: str, label: str, principal: CurrentAgent, db: Db) -> list[str]:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    return service.remove_label(db, conversation=conv, label=label)


@router.get("/{conversation_id}/messages/{message_id}", response_model=MessageRead)
def get_message(
    conversation_id: str, message_id: str, principal: CurrentMember, db: Db
) -> MessageRead:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    return MessageRead.model_validate(
        service.get_message(db, conversation=conv, message_id=message_id)
    )
