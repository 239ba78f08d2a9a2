"""One customer writing on two channels at once: seeing the conversations together, and
merging them into one.

Conversations are *related* when they belong to the same customer, are not resolved, come
through different inboxes and started within the workspace's ``simultaneous_contact_minutes``
of each other (30 by default). Computed when read, from the customer's own conversations,
so ingest pays nothing for it.

Merging moves every message (with its attachments) of one conversation into the other,
where they sort by time among the survivor's own; the emptied conversation is resolved and
points at the survivor, so the customer's next message on that channel continues there.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from rapport.channels.models import Inbox
from rapport.conversations import routing, service, sla
from rapport.conversations.models import (
    REOPENED,
    REOPENED_BY,
    Conversation,
    ConversationGuest,
    ConversationLabel,
    Direction,
    Message,
    MessageKind,
    Priority,
    Status,
)
from rapport.db import hold, utcnow
from rapport.privacy.models import AuditLog
from rapport.privacy.service import Actor, audit
from rapport.problems import Conflict, Invalid
from rapport.realtime.service import emit
from rapport.scoped import get_scoped
from rapport.workspaces.models import Workspace

DEFAULT_MINUTES = 30


def window(db: Session, workspace_id: str) -> timedelta:
    ws = db.get(Workspace, workspace_id)
    minutes = (ws.settings if ws else {}).get("simultaneous_contact_minutes", DEFAULT_MINUTES)
    return timedelta(minutes=int(minutes))


def related(db: Session, *, conversation: Conversation) -> list[Conversation]:
    """The customer's other live conversations on other inboxes, started close to this one."""
    span = window(db, conversation.workspace_id)
    if not span:
        return []
    return list(
        db.scalars(
            select(Conversation)
            .where(
                Conversation.workspace_id == conversation.workspace_id,
                Conversation.customer_id == conversation.customer_id,
                Conversation.id != conversation.id,
                Conversation.inbox_id != conversation.inbox_id,
                Conversation.merged_into_id.is_(None),
                Conversation.status != Status.resolved,
                Conversation.created_at >= conversation.created_at - span,
                Conversation.created_at <= conversation.created_at + span,
            )
            .order_by(Conversation.created_at)
        )
    )


# Merges can chain (A into B, then B into C); a longer chain than this is not followed.
MERGE_HOPS = 32


def where_merged(db: Session, conversation: Conversation | None) -> Conversation | None:
    """The conversation whose thread this one's goes on in: its merges followed to their
    end (itself if it was never merged); None if a merge leads out of its workspace or to
    a conversation that is gone."""
    for _ in range(MERGE_HOPS):
        if conversation is None or not conversation.merged_into_id:
            break
        target = db.get(Conversation, conversation.merged_into_id)
        if target is not None and target.workspace_id != conversation.workspace_id:
            return None
        conversation = target
    return conversation


def _get(db: Session, workspace_id: str, conversation_id: str) -> Conversation:
    return get_scoped(
        db, Conversation, conversation_id, workspace_id=workspace_id, name="conversation"
    )


def _channel(db: Session, inbox_id: str) -> str:
    inbox = db.get(Inbox, inbox_id)
    return inbox.name if inbox is not None else "another inbox"


def merge(
    db: Session, *, workspace_id: str, survivor_id: str, merged_id: str, actor: Actor
) -> Conversation:
    """Move ``merged_id``'s messages into ``survivor_id``; returns the survivor."""
    if survivor_id == merged_id:
        raise Invalid("a conversation cannot be merged into itself")
    survivor = _get(db, workspace_id, survivor_id)
    merged = _get(db, workspace_id, merged_id)
    # Both held, as a write to either is (``service.get_writable``): a reply committed
    # meanwhile is among the messages moved, and one after it is refused.
    hold(db, Conversation, survivor.id, merged.id)
    if survivor.merged_into_id or merged.merged_into_id:
        raise Conflict("one of these conversations was already merged into another")
    if survivor.customer_id != merged.customer_id:
        raise Invalid("the conversations belong to different customers: merge the customers first")
    moved = list(db.scalars(select(Message.id).where(Message.conversation_id == merged.id)))
    db.execute(update(Message).where(Message.id.in_(moved)).values(conversation_id=survivor.id))
    # Those the customer's mail copied who wrote there are the survivor's guests now.
    db.execute(
        update(ConversationGuest)
        .where(ConversationGuest.conversation_id == merged.id)
        .values(conversation_id=survivor.id)
    )
    labels = set(
        db.scalars(
            select(ConversationLabel.label).where(ConversationLabel.conversation_id == merged.id)
        )
    ) - set(
        db.scalars(
            select(ConversationLabel.label).where(ConversationLabel.conversation_id == survivor.id)
        )
    )
    db.execute(delete(ConversationLabel).where(ConversationLabel.conversation_id == merged.id))
    for label in sorted(labels):
        db.add(
            ConversationLabel(conversation_id=survivor.id, label=label, workspace_id=workspace_id)
        )
    took_wait = survivor.waiting_since is None and merged.waiting_since is not None
    _absorb(survivor, merged)
    sla.on_status(db, conversation=survivor)  # its status may have changed: so may its clock
    if took_wait and survivor.waiting_since is not None:
        # The customer's unanswered message came through the merged conversation: the
        # survivor's response clock starts from it, as if it had arrived there.
        sla.on_inbound(db, conversation=survivor, at=survivor.waiting_since)
    merged.merged_into_id = survivor.id
    merged.messages_count = 0
    # Resolved as any resolution is: nobody waits on it, its SLA clocks stop, its events.
    service.set_status(db, conversation=merged, status=Status.resolved, actor_id=actor.user_id)
    _recount(db, survivor)
    _said(
        db,
        (survivor, f"Merged with the conversation from {_channel(db, merged.inbox_id)}"),
        (merged, f"Merged into the conversation from {_channel(db, survivor.inbox_id)}"),
    )
    data: dict[str, Any] = {"merged_id": merged.id, "messages": moved}
    audit(
        db,
        workspace_id=workspace_id,
        actor=actor,
        action="conversation.merge",
        target_type="conversation",
        target_id=survivor.id,
        data=data,
    )
    emit(
        db,
        workspace_id=workspace_id,
        type="conversation.merged",
        payload={"id": survivor.id, "merged_id": merged.id},
    )
    return survivor


def part(db: Session, *, conversation: Conversation, actor: Actor) -> bool:
    """A conversation merged into another customer's (their customers' merge undone since)
    takes back the messages the merge moved, and is open again: they stayed in the other
    person's thread, her export held them, and the reply to them went to her. Which moved
    is the merge's audit record; where that is gone, what its customer wrote there.
    Whether it did."""
    target = db.get(Conversation, conversation.merged_into_id or "")
    if target is None or target.customer_id == conversation.customer_id:
        return False
    ws = conversation.workspace_id
    records = db.scalars(
        select(AuditLog.data)
        .where(
            AuditLog.workspace_id == ws,
            AuditLog.action == "conversation.merge",
            AuditLog.target_id == target.id,
        )
        .order_by(AuditLog.created_at.desc())
    )
    record = next((r for r in records if r.get("merged_id") == conversation.id), None)
    moved = (
        [str(m) for m in record.get("messages", [])]
        if record is not None
        else list(
            db.scalars(
                select(Message.id).where(
                    Message.conversation_id == target.id,
                    Message.sender_id == conversation.customer_id,
                )
            )
        )
    )
    # Those still there (another undo or hand-over may have taken some since): the event
    # names them, for the open thread they leave.
    back = list(
        db.scalars(
            update(Message)
            .where(Message.id.in_(moved), Message.conversation_id == target.id)
            .values(conversation_id=conversation.id)
            .returning(Message.id)
        )
    )
    conversation.merged_into_id = None
    _recount(db, conversation)  # as a merge counts them: before its activity lines
    _recount(db, target)
    _said(
        db,
        (conversation, "Parted from the other conversation: their customers' merge was undone"),
        (target, "The merged-in conversation's messages went back to it: the merge was undone"),
    )
    service.set_status(db, conversation=conversation, status=Status.open, actor_id=actor.user_id)
    _parted(db, actor, conversation, source=target, messages=back)
    return True


def give_whole(db: Session, *, conversation: Conversation, customer_id: str, actor: Actor) -> None:
    """A conversation started while two customers' records were merged, by messages only
    one of them wrote, goes whole to that one's record (their merge undone): theirs to
    read, export and erase, and the reply to it goes to them."""
    was = conversation.customer_id
    conversation.customer_id = customer_id
    db.execute(
        update(Message)
        .where(
            Message.conversation_id == conversation.id,
            Message.sender_type == "customer",
            Message.sender_id == was,
        )
        .values(sender_id=customer_id)
    )
    _said(db, (conversation, "Back with the customer who wrote it: their merge was undone"))
    audit(
        db,
        workspace_id=conversation.workspace_id,
        actor=actor,
        action="conversation.part",
        target_type="conversation",
        target_id=conversation.id,
        data={"from_customer_id": was, "customer_id": customer_id},
    )
    emit(
        db,
        workspace_id=conversation.workspace_id,
        type="conversation.updated",
        payload=service.conversation_payload(conversation),
    )


def hand_over(
    db: Session,
    *,
    source: Conversation,
    message_ids: list[str],
    customer_id: str,
    actor: Actor,
    into: Conversation | None = None,
) -> Conversation | None:
    """Messages one person wrote in another customer's conversation while their records
    were merged (it continued her thread) go to a conversation of the writer's own:
    ``into`` (one of theirs on the same inbox), else a new one. Those of them nobody had
    answered yet wait there; the source waits only on what is left. Returns the
    conversation they went to (none if none of them was still in ``source``)."""
    moved = list(
        db.scalars(
            select(Message)
            .where(Message.id.in_(message_ids), Message.conversation_id == source.id)
            .order_by(Message.created_at, Message.id)
        )
    )
    if not moved:
        return None
    ws = source.workspace_id
    inbound = [m.created_at for m in moved if m.direction == Direction.inbound]
    # Unanswered in the source: written at or after the first message it waits on.
    waited = source.waiting_since
    waits = min(
        (
            m.created_at
            for m in moved
            if waited is not None
            and m.direction == Direction.inbound
            and m.kind == MessageKind.message
            and m.created_at >= waited
        ),
        default=None,
    )
    new = into is None
    starts = waits is not None and (into is None or into.waiting_since is None)
    if into is None:
        into = Conversation(
            workspace_id=ws,
            customer_id=customer_id,
            inbox_id=moved[0].inbox_id,
            subject=source.subject,
            status=Status.open if waits is not None else Status.resolved,
            resolved_at=None if waits is not None else utcnow(),
            created_at=moved[0].created_at,
            last_activity_at=moved[-1].created_at,
            last_inbound_at=max(inbound) if inbound else None,
            waiting_since=waits,
            messages_count=0,
        )
        db.add(into)
        db.flush()
    else:
        into.last_activity_at = max(into.last_activity_at, moved[-1].created_at)
        if inbound:
            into.last_inbound_at = max([t for t in (into.last_inbound_at, *inbound) if t])
        if waits is not None:
            into.waiting_since = min(t for t in (into.waiting_since, waits) if t)
    ids = [m.id for m in moved]
    db.execute(
        update(Message)
        .where(Message.id.in_(ids), Message.conversation_id == source.id)
        .values(conversation_id=into.id, sender_id=customer_id)
    )
    if waited is not None:
        # The first of the customer's messages left that came at or after it, if any.
        source.waiting_since = db.scalar(
            select(func.min(Message.created_at)).where(
                Message.conversation_id == source.id,
                Message.direction == Direction.inbound,
                Message.kind == MessageKind.message,
                Message.created_at >= waited,
            )
        )
        if source.waiting_since is None:
            sla.on_agent_reply(db, conversation=source)  # nobody is left waiting on it
    source.last_inbound_at = db.scalar(
        select(func.max(Message.created_at)).where(
            Message.conversation_id == source.id, Message.direction == Direction.inbound
        )
    )
    resolved = _resolved_again(db, source, moved)
    # Its latest activity is what is left's (their messages were its last, say).
    if source.last_activity_at <= moved[-1].created_at:
        source.last_activity_at = db.scalar(
            select(func.max(Message.created_at)).where(
                Message.conversation_id == source.id, Message.kind != MessageKind.note
            )
        ) or min(source.created_at, source.last_activity_at)
    _recount(db, source)  # as a merge counts them: before its activity lines
    _recount(db, into)
    _said(
        db,
        (source, "Messages went to their writer's own conversation: their merge was undone"),
        (into, "Parted from another customer's conversation: their customers' merge was undone"),
    )
    if starts and into.waiting_since is not None:
        # Their response clock starts from the first of them nobody answered (one already
        # running, in a conversation of theirs that waited, runs on).
        sla.on_inbound(db, conversation=into, at=into.waiting_since)
        if new and into.assignee_id is None:
            routing.wake(db, workspace_id=ws)  # a new open conversation: offered to agents
    if new:
        emit(
            db,
            workspace_id=ws,
            type="conversation.created",
            payload=service.conversation_payload(into),
        )
    if resolved:
        emit(
            db,
            workspace_id=ws,
            type="conversation.updated",
            payload=service.conversation_payload(source),
        )
    _parted(db, actor, into, source=source, messages=ids)
    return into


def _parted(
    db: Session,
    actor: Actor,
    conversation: Conversation,
    *,
    source: Conversation,
    messages: list[str],
) -> None:
    """Audited and told: ``messages`` went from ``source`` to ``conversation``. The event
    names them (ids alone): an open page of ``source`` drops them, one of ``conversation``
    draws them (both showed the thread as it was until a reload)."""
    audit(
        db,
        workspace_id=conversation.workspace_id,
        actor=actor,
        action="conversation.part",
        target_type="conversation",
        target_id=conversation.id,
        data={"from_id": source.id, "messages": messages},
    )
    emit(
        db,
        workspace_id=conversation.workspace_id,
        type="conversation.parted",
        payload={"id": conversation.id, "from_id": source.id, "message_ids": messages},
    )


def _resolved_again(db: Session, source: Conversation, moved: list[Message]) -> bool:
    """The resolved conversation the first of ``moved`` reopened (``REOPENED``), all of
    them gone from it now, is resolved again as it was, when nothing else happened there
    since: nothing left waits, nobody wrote, replied, noted or assigned it, its status is
    as that message left it (open). An agent who touched it keeps it open. Its "Reopened"
    line goes with the reopening. Whether it did."""
    first = next((m for m in moved if m.meta.get(REOPENED)), None)
    if first is None or source.status != Status.open or source.waiting_since is not None:
        return False
    if source.assigned_at is not None and source.assigned_at >= first.created_at:
        return False
    since = db.scalar(
        select(func.count())
        .select_from(Message)
        .where(Message.conversation_id == source.id, Message.created_at >= first.created_at)
    )
    if since:
        return False
    lines = db.scalars(
        delete(Message)
        .where(
            Message.conversation_id == source.id,
            Message.kind == MessageKind.activity,
            Message.meta[REOPENED_BY].as_string() == first.id,
        )
        .returning(Message.id)
    ).all()
    # An open thread showed the line until a reload, saying it was reopened.
    service.messages_deleted(
        db, workspace_id=source.workspace_id, conversation_id=source.id, message_ids=lines
    )
    source.status = Status.resolved
    source.resolved_at = datetime.fromisoformat(str(first.meta[REOPENED]))
    source.snoozed_until = None
    sla.on_status(db, conversation=source)  # nobody waits on it: its clocks stop
    if source.assignee_id is not None:
        routing.wake(db, workspace_id=source.workspace_id)  # its agent has room again
    return True


def _said(db: Session, *lines: tuple[Conversation, str]) -> None:
    """An activity line in each conversation, as the system's, told as every message
    stored is (``message.created``, once this commits): open threads showed none of them
    until a reload. Not ``service.add_message``: a merge counts its conversations' messages
    and sets their last activity itself, and its lines move neither."""
    said = [
        Message(
            workspace_id=conv.workspace_id,
            conversation_id=conv.id,
            inbox_id=conv.inbox_id,
            direction=Direction.outbound,
            kind=MessageKind.activity,
            sender_type="system",
            text=text,
        )
        for conv, text in lines
    ]
    db.add_all(said)
    db.flush()
    for msg in said:
        emit(
            db,
            workspace_id=msg.workspace_id,
            type="message.created",
            payload=service.message_payload(msg),
        )


def _recount(db: Session, conversation: Conversation) -> None:
    """The conversation's ``messages_count``, counted again after messages moved."""
    counted = select(func.count()).select_from(Message)
    conversation.messages_count = int(
        db.scalar(counted.where(Message.conversation_id == conversation.id)) or 0
    )


def _absorb(survivor: Conversation, merged: Conversation) -> None:
    """The survivor's dates and state now cover both conversations."""
    survivor.last_activity_at = max(survivor.last_activity_at, merged.last_activity_at)
    inbound = [t for t in (survivor.last_inbound_at, merged.last_inbound_at) if t]
    survivor.last_inbound_at = max(inbound) if inbound else None
    responses = [t for t in (survivor.first_response_at, merged.first_response_at) if t]
    survivor.first_response_at = min(responses) if responses else None
    # The customer has waited since their first unanswered message in either.
    waiting = [t for t in (survivor.waiting_since, merged.waiting_since) if t]
    survivor.waiting_since = min(waiting) if waiting else None
    survivor.created_at = min(survivor.created_at, merged.created_at)
    # The livelier state of the two: open, pending, snoozed (to the earlier wake), resolved.
    states = {survivor.status, merged.status}
    wakes = [c.snoozed_until for c in (survivor, merged) if c.status == Status.snoozed]
    if Status.open in states:
        survivor.status = Status.open
    elif Status.pending in states:
        survivor.status = Status.pending
    elif Status.snoozed in states:
        survivor.status = Status.snoozed
        survivor.snoozed_until = min(w for w in wakes if w is not None) if any(wakes) else None
    if survivor.status != Status.snoozed:
        survivor.snoozed_until = None
    if survivor.status != Status.resolved:
        survivor.resolved_at = None
    survivor.assignee_id = survivor.assignee_id or merged.assignee_id
    survivor.team_id = survivor.team_id or merged.team_id
    ranks = list(Priority)
    survivor.priority = max(survivor.priority, merged.priority, key=ranks.index)
