"""Background work on conversations: routing a new conversation to an agent."""

from datetime import datetime

from sqlalchemy.orm import Session

from rapport.automation import service as automation
from rapport.channels.models import Inbox
from rapport.conversations import routing, service, sla
from rapport.conversations.models import Conversation, Status
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue


def after_inbound_ids(
    db: Session,
    *,
    workspace_id: str,
    conversation_id: str,
    message_id: str,
    new: bool,
    route: bool,
    at: datetime,
    bot: bool = False,
) -> None:
    """Ingest's follow-ups by id: SLA clocks, automation and routing, each only when the
    workspace uses it (the checks are cached), so the common case costs no query."""
    if sla.has_policies(db, workspace_id):
        conv = db.get(Conversation, conversation_id, populate_existing=True)
        if conv is not None:
            sla.on_inbound(db, conversation=conv, at=at)
    if new:
        automation.trigger(
            db,
            workspace_id=workspace_id,
            event="conversation.created",
            conversation_id=conversation_id,
        )
    automation.trigger(
        db,
        workspace_id=workspace_id,
        event="message.received",
        conversation_id=conversation_id,
        message_id=message_id,
    )
    if bot:  # the bot answers first; it hands over to routing when a person is needed
        enqueue(db, name="bot_reply", args={"message_id": message_id}, workspace_id=workspace_id)
    elif route:
        enqueue(
            db, name="route", args={"conversation_id": conversation_id}, workspace_id=workspace_id
        )


@job("route")
def route(ctx: JobContext, *, conversation_id: str) -> None:
    """Assign an unassigned open conversation of an auto-assigning inbox to the agent with
    the most room (the inbox may have stopped auto-assigning since the job was queued)."""
    with ctx.database.session() as db:
        conv = db.get(Conversation, conversation_id)
        if conv is None or conv.assignee_id is not None or conv.status == Status.resolved:
            return
        inbox = db.get(Inbox, conv.inbox_id)
        if inbox is None or not inbox.auto_assigns:
            return
        team_id = conv.team_id or inbox.team_id
        agent = routing.pick_agent(db, workspace_id=conv.workspace_id, team_id=team_id)
        if agent is not None:
            service.assign(db, conversation=conv, assignee_id=agent, team_id=team_id, actor_id=None)
        # Otherwise it waits: route_waiting hands it out when someone frees up.


@job("route_waiting")
def route_waiting(ctx: JobContext) -> None:
    """Give waiting conversations of a workspace to agents who have room now."""
    assert ctx.workspace_id is not None
    with ctx.database.session() as db:
        routing.assign_waiting(db, workspace_id=ctx.workspace_id)


@job("sla_check")
def sla_check(ctx: JobContext) -> None:
    """Announce SLA warnings and breaches (run every minute by the periodic schedule)."""
    with ctx.database.session() as db:
        sla.check(db)
