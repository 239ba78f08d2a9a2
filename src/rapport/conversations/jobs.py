"""Background work on conversations: routing a new conversation to an agent, SLA clocks."""

from datetime import datetime

from sqlalchemy.orm import Session

from rapport.automation import service as automation
from rapport.conversations import routing, sla
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
    opened: bool = False,
    bot: bool = False,
    reclaim: str | None = None,
) -> None:
    """Ingest's follow-ups by id: SLA clocks, automation and routing, each only when the
    workspace uses it (the checks are cached), so the common case costs no query.

    Routing is one pass over the workspace's queue per transaction (routing.wake), however
    many conversations of the batch joined it: the pass takes them all, oldest first.
    ``reclaim``: the member a resolved conversation it reopened is assigned to, who may have
    left or become a viewer since (``routing.reclaim``). ``opened``: the message opened the
    conversation again (it was resolved, pending or snoozed), a change of status."""
    if reclaim is not None:
        routing.reclaim(db, conversation_id=conversation_id, user_id=reclaim)
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
    if opened:
        automation.trigger(
            db,
            workspace_id=workspace_id,
            event="conversation.status_changed",
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
        routing.wake(db, workspace_id=workspace_id)


@job("route")
def route(ctx: JobContext, *, conversation_id: str) -> None:
    """A conversation joined the queue: run the queue's pass (routing.assign_waiting, the
    one rule), which hands out the waiting conversations oldest first, this one among them
    if its turn comes. Given the free agent at once, it would take them from a conversation
    that has waited longer.

    Nothing queues this job any more (ingest and the bot's hand-over wake routing, one
    pass per workspace per transaction); it stays for those queued before that changed."""
    with ctx.database.session() as db:
        conv = db.get(Conversation, conversation_id)
        if conv is None or conv.assignee_id is not None or conv.status != Status.open:
            return  # given out by a pass already, or no longer waiting
        routing.assign_waiting(db, workspace_id=conv.workspace_id)


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


@job("sla_retime")
def sla_retime(ctx: JobContext) -> None:
    """Time anew the running SLA clocks of a workspace whose business calendar changed
    (``sla.set_calendar`` did the first chunk): a chunk per transaction, so that no other
    writer waits long, in due order; queued again for those another transaction held."""
    assert ctx.workspace_id is not None
    after: sla.Cursor | None = None
    while True:
        with ctx.database.session() as db:
            after = sla.retime(
                db, workspace_id=ctx.workspace_id, after=after, limit=sla.RETIME_CHUNK
            )
        if after is None:
            break
    with ctx.database.session() as db:
        sla.retime_left(db, workspace_id=ctx.workspace_id)
