"""Background work on conversations: routing a new conversation to an agent."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rapport.auth.models import Membership, Role, TeamMember
from rapport.automation import service as automation
from rapport.channels.models import Inbox
from rapport.conversations import service, sla
from rapport.conversations.models import Conversation, Status
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue


def after_inbound(
    db: Session, *, inbox: Inbox, conversation: Conversation, message_id: str | None = None
) -> None:
    """Called by ingest in its transaction: start SLA clocks, queue routing when the inbox
    assigns automatically."""
    sla.on_inbound(db, conversation=conversation, at=conversation.last_activity_at)
    if conversation.messages_count == 1:
        automation.trigger(
            db,
            workspace_id=conversation.workspace_id,
            event="conversation.created",
            conversation_id=conversation.id,
        )
    automation.trigger(
        db,
        workspace_id=conversation.workspace_id,
        event="message.received",
        conversation_id=conversation.id,
        message_id=message_id,
    )
    if inbox.auto_assign and conversation.assignee_id is None:
        enqueue(
            db,
            name="route",
            args={"conversation_id": conversation.id},
            workspace_id=conversation.workspace_id,
        )


def pick_agent(db: Session, *, workspace_id: str, team_id: str | None) -> str | None:
    """The eligible agent with the most free capacity; ties go to who waited longest.

    Eligible: agent role or above, in the team when there is one, below capacity.
    """
    open_load = (
        select(Conversation.assignee_id, func.count().label("n"))
        .where(
            Conversation.workspace_id == workspace_id,
            Conversation.status.in_((Status.open, Status.pending)),
            Conversation.assignee_id.is_not(None),
        )
        .group_by(Conversation.assignee_id)
        .subquery()
    )
    last_given = (
        select(Conversation.assignee_id, func.max(Conversation.created_at).label("at"))
        .where(Conversation.workspace_id == workspace_id, Conversation.assignee_id.is_not(None))
        .group_by(Conversation.assignee_id)
        .subquery()
    )
    load = func.coalesce(open_load.c.n, 0)
    stmt = (
        select(Membership.user_id)
        .outerjoin(open_load, open_load.c.assignee_id == Membership.user_id)
        .outerjoin(last_given, last_given.c.assignee_id == Membership.user_id)
        .where(
            Membership.workspace_id == workspace_id,
            Membership.role.in_((Role.agent, Role.admin, Role.owner)),
            load < Membership.capacity,
        )
        .order_by((Membership.capacity - load).desc(), last_given.c.at.asc().nulls_first())
        .limit(1)
    )
    if team_id:
        stmt = stmt.where(
            Membership.user_id.in_(select(TeamMember.user_id).where(TeamMember.team_id == team_id))
        )
    return db.scalar(stmt)


@job("route")
def route(ctx: JobContext, *, conversation_id: str) -> None:
    """Assign an unassigned open conversation to the agent with the most room."""
    with ctx.database.session() as db:
        conv = db.get(Conversation, conversation_id)
        if conv is None or conv.assignee_id is not None or conv.status == Status.resolved:
            return
        inbox = db.get(Inbox, conv.inbox_id)
        team_id = conv.team_id or (inbox.team_id if inbox else None)
        agent = pick_agent(db, workspace_id=conv.workspace_id, team_id=team_id)
        if agent is not None:
            service.assign(db, conversation=conv, assignee_id=agent, team_id=team_id, actor_id=None)


@job("sla_check")
def sla_check(ctx: JobContext) -> None:
    """Announce SLA warnings and breaches (run every minute by the periodic schedule)."""
    with ctx.database.session() as db:
        sla.check(db)
