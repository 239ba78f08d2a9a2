"""Routing: give each waiting conversation to an online agent with room for it.

An agent is eligible when they set themselves online, their browser was seen within the
presence timeout, and their open conversations are below their capacity. Conversations of
auto-assigning inboxes that find no one wait, the customer who has waited longest first
(``waiting_since``, not when the conversation started), and are handed out as soon as
someone frees up (a conversation resolved, an agent back online, a capacity raised).
"""

from datetime import datetime, timedelta

from sqlalchemy import func, literal, or_, select, tuple_, update
from sqlalchemy.orm import Session

from rapport.auth.models import Membership, Role, TeamMember
from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, Status
from rapport.db import lock_row, on_commit, utcnow
from rapport.jobs.models import Job
from rapport.jobs.service import enqueue
from rapport.problems import Invalid
from rapport.workspaces.models import Workspace

PRESENCE_TIMEOUT = timedelta(minutes=3)
AVAILABILITY = ("online", "busy", "offline")
# Pages of waiting conversations one pass reads before it leaves the rest to the next,
# which it queues: the pass holds the write transaction (SQLite's one writer) throughout.
PAGES_PER_PASS = 20


def set_presence(
    db: Session, *, workspace_id: str, user_id: str, availability: str | None
) -> Membership:
    """Record a heartbeat, and the agent's chosen availability when given. When what others
    see of them (``presence``) changes, the workspace hears ``member.updated``: not on
    every heartbeat, which a browser sends each minute."""
    member = db.scalar(
        select(Membership).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user_id
        )
    )
    assert member is not None
    if availability is not None and availability not in AVAILABILITY:
        raise Invalid(f"availability is one of {', '.join(AVAILABILITY)}")
    now = utcnow()
    before = presence(member, now)
    if availability is not None:
        member.availability = availability
    member.last_seen_at = now
    after = presence(member, now)
    # A change of this request's, or one nobody was told of (a page drew them offline by
    # time while the sweep had not run yet).
    if after != before or after != member.presence_shown:
        _announce(db, member, after)
        if after == "online":
            wake(db, workspace_id=workspace_id)
    return member


def _announce(db: Session, member: Membership, shown: str) -> None:
    from rapport.workspaces import service as workspaces  # which imports routing

    member.presence_shown = shown
    workspaces.announce_member(db, membership=member)


def presence(member: Membership, now: datetime) -> str:
    """What others see of the member: the availability they chose (online, busy, offline)
    while their browser is seen within ``PRESENCE_TIMEOUT``, else offline."""
    if member.last_seen_at is None or now - member.last_seen_at > PRESENCE_TIMEOUT:
        return "offline"
    return member.availability


def announce_timed_out(db: Session, *, now: datetime) -> int:
    """Announce (``member.updated``) the members last shown present whose browser has
    fallen silent past PRESENCE_TIMEOUT: they read offline now, and no request of theirs
    said so (a closed browser sends nothing). Each is told once, however late or seldom
    this runs; returns how many."""
    silent = db.scalars(
        select(Membership)
        .where(
            Membership.presence_shown != "offline",
            or_(
                Membership.last_seen_at.is_(None),
                Membership.last_seen_at < now - PRESENCE_TIMEOUT,
            ),
        )
        .with_for_update(skip_locked=True)
    ).all()
    for member in silent:
        _announce(db, member, "offline")
    return len(silent)


def is_online(member: Membership, now: datetime) -> bool:
    return presence(member, now) == "online"


def pick_agent(db: Session, *, workspace_id: str, team_id: str | None) -> str | None:
    """The online agent below capacity who has had a new conversation least recently.

    Round-robin by construction: whoever was given one last goes to the back of the line.
    The workspace's row is held until the transaction ends: two picks at once (two rules'
    round-robin, a rule beside a routing pass) both saw an agent's last free place and
    both filled it."""
    lock_row(db, Workspace, workspace_id)
    now = utcnow()
    eligible = (
        select(Membership.user_id, Membership.capacity)
        .where(
            Membership.workspace_id == workspace_id,
            Membership.role.in_((Role.agent, Role.admin, Role.owner)),
            Membership.availability == "online",
            Membership.last_seen_at >= now - PRESENCE_TIMEOUT,
        )
        .order_by(Membership.last_assigned_at.asc().nulls_first(), Membership.created_at)
    )
    if team_id:
        eligible = eligible.where(
            Membership.user_id.in_(select(TeamMember.user_id).where(TeamMember.team_id == team_id))
        )
    members = db.execute(eligible).all()
    if not members:
        return None
    # Only these agents' open and pending conversations are counted, in the index on
    # (workspace, assignee, status): never the rest of the workspace's history.
    load = dict(
        db.execute(
            select(Conversation.assignee_id, func.count())
            .where(
                Conversation.workspace_id == workspace_id,
                Conversation.assignee_id.in_([m.user_id for m in members]),
                Conversation.status.in_((Status.open, Status.pending)),
            )
            .group_by(Conversation.assignee_id)
        ).all()
    )
    return next((m.user_id for m in members if load.get(m.user_id, 0) < m.capacity), None)


def assign_waiting(db: Session, *, workspace_id: str, limit: int = 200) -> int:
    """Hand waiting conversations to eligible agents, the customer who has waited longest
    first; returns how many.

    The queue is the open conversations nobody has: first those whose customer waits on an
    answer, by ``waiting_since`` (a conversation started weeks ago and reopened today waits
    behind a customer who wrote an hour ago), then those nobody waits on (answered, then
    back in the queue: their agent left, or was unassigned), oldest first. It is read
    ``limit`` at a time, leaving out those the bot still holds and those of teams found
    full in this pass: a head of the queue nobody can take never hides the conversations
    behind it from an agent with room."""
    from rapport.bot import service as bot  # the bot hands over through routing
    from rapport.bot.models import BotConversation
    from rapport.conversations import service  # service calls back into routing

    # One pass of a workspace at a time (PostgreSQL; SQLite has one writer anyway): two
    # side by side each read the other's conversations as waiting and its agents' room as
    # free, and both gave them out, one over the other. The second waits, then reads the
    # queue as the first left it.
    lock_row(db, Workspace, workspace_id)
    team = func.coalesce(Conversation.team_id, Inbox.team_id)
    waiting = (
        select(Conversation, team)
        .join(Inbox, Inbox.id == Conversation.inbox_id)
        .where(
            Conversation.workspace_id == workspace_id,
            Conversation.assignee_id.is_(None),
            # Written into the statement, not bound: ix_conversations_queue holds the open
            # ones alone, and PostgreSQL uses a partial index only where the query's text
            # proves its WHERE (the generic plan of a statement the driver has prepared
            # after a few runs knows no parameter's value).
            Conversation.status
            == literal(Status.open, Conversation.status.type, literal_execute=True),
            Inbox.auto_assign.is_(True),
        )
        # In the index's whole order for the part nobody waits on too (NULL is one value
        # of it): PostgreSQL takes no IS NULL as an equality that would leave ``id``
        # alone to sort by, and sorts every row of that part before the first page.
        .order_by(Conversation.waiting_since, Conversation.id)
        .limit(limit)
    )
    with_bots = [
        inbox.id
        for inbox in db.scalars(
            select(Inbox).where(Inbox.workspace_id == workspace_id, Inbox.auto_assign.is_(True))
        )
        if bot.enabled(inbox)
    ]
    if with_bots:  # the bot answers first; it hands over through routing when needed
        handed_over = (
            select(BotConversation.conversation_id)
            .where(
                BotConversation.conversation_id == Conversation.id,
                BotConversation.handed_over_at.is_not(None),
            )
            .exists()
        )
        waiting = waiting.where(or_(Conversation.inbox_id.not_in(with_bots), handed_over))
    given = 0
    busy = False  # a conversation another transaction held was passed over
    full: set[str] = set()  # teams with no one who has room, for the rest of this pass
    # Those waited on, then the others: two reads, not one ORDER BY, since SQLite sorts
    # NULL first and PostgreSQL last; each reads a range of the index in its order.
    waited_on = True
    after: tuple[datetime | None, str] | None = None
    for _ in range(PAGES_PER_PASS):
        if waited_on:
            page = waiting.where(Conversation.waiting_since.is_not(None))
            if after is not None:
                page = page.where(tuple_(Conversation.waiting_since, Conversation.id) > after)
        else:
            page = waiting.where(Conversation.waiting_since.is_(None))
            if after is not None:
                page = page.where(Conversation.id > after[1])
        if full:
            page = page.where(or_(team.is_(None), team.not_in(full)))
        rows = db.execute(page).all()
        # Taken now: each is read again below, and an answer given meanwhile ends its wait.
        last = (rows[-1][0].waiting_since, rows[-1][0].id) if rows else None
        for conv, team_id in rows:
            if team_id in full:
                continue  # asked already: nobody frees up inside this transaction
            agent = pick_agent(db, workspace_id=workspace_id, team_id=team_id)
            if agent is None:
                if team_id is None:
                    return given  # nobody in the workspace has room
                full.add(team_id)  # a conversation of another team may still fit
                continue
            # Held, and read again: a member who took it meanwhile (their own assign holds
            # no workspace lock) keeps it, where this pass gave it to someone else. One
            # held by another transaction right now is left to a later pass, not waited
            # for: that one may be a rule's, waiting in turn for the workspace this pass
            # holds (its round-robin), and the two would deadlock.
            held = db.execute(
                select(Conversation.id)
                .where(Conversation.id == conv.id)
                .with_for_update(key_share=True, skip_locked=True)
            ).first()
            if held is None:
                busy = True
                continue
            db.refresh(conv)
            if conv.assignee_id is not None or conv.status != Status.open:
                continue
            service.assign(
                db,
                conversation=conv,
                assignee_id=agent,
                team_id=team_id,
                actor_id=None,
                via="auto-assignment",
            )
            db.flush()
            given += 1
        if len(rows) == limit:
            after = last
        elif waited_on:
            waited_on, after = False, None  # on to those nobody waits on
        else:
            break
    else:
        busy = busy or given > 0  # more may fit: the next pass, in a transaction of its own
    if busy:  # and those passed over while held elsewhere
        wake(db, workspace_id=workspace_id)
    return given


def reclaim(db: Session, *, conversation_id: str, user_id: str) -> None:
    """A resolved conversation reopened by its customer, assigned to a member who has left
    or become a viewer since (``release`` leaves resolved ones to who handled them): back
    to the queue, where it sat assigned to nobody who could answer, in no one's view."""
    from rapport.conversations import service  # service calls back into routing

    conv = db.get(Conversation, conversation_id, populate_existing=True)
    if conv is None or conv.assignee_id != user_id:
        return
    role = db.scalar(
        select(Membership.role).where(
            Membership.workspace_id == conv.workspace_id, Membership.user_id == user_id
        )
    )
    if role is not None and role != Role.viewer:
        return
    service.assign(
        db,
        conversation=conv,
        assignee_id=None,
        team_id=conv.team_id,
        actor_id=None,
        via="reopening (its agent has left)",
    )


def release(db: Session, *, workspace_id: str, user_id: str, actor_id: str | None) -> int:
    """Unassign a member's unresolved conversations, the member removed or made a viewer,
    and queue a pass to offer them to others; returns how many.

    Resolved ones keep their assignee: that is who handled them, for reports and history."""
    from rapport.conversations import service  # service calls back into routing

    # One UPDATE for however many they held (thousands for a long-serving agent); each
    # is then recorded as any unassignment is: an activity line, an event, the rules.
    released = list(
        db.scalars(
            update(Conversation)
            .where(
                Conversation.workspace_id == workspace_id,
                Conversation.assignee_id == user_id,
                Conversation.status.in_((Status.open, Status.pending, Status.snoozed)),
            )
            .values(assignee_id=None)
            .returning(Conversation)
        )
    )
    for conv in released:
        service.record_assignment(
            db, conversation=conv, before=(user_id, conv.team_id), actor_id=actor_id
        )
    if released:
        wake(db, workspace_id=workspace_id)
    return len(released)


def wake(db: Session, *, workspace_id: str) -> None:
    """Someone may have room now, or a conversation came back to the queue: queue a pass
    over the waiting conversations (one per workspace per transaction is enough)."""
    woken: dict[str, Job] | None = db.info.get(_WOKEN)
    if woken is None:
        woken = db.info[_WOKEN] = {}
        on_commit(db, lambda: db.info.pop(_WOKEN, None))
    queued = woken.get(workspace_id)
    if queued is not None and queued in db:
        return  # this transaction queued one already (and no rollback took it back)
    woken[workspace_id] = enqueue(db, name="route_waiting", args={}, workspace_id=workspace_id)


_WOKEN = "routing_woken"  # workspace id -> the pass this transaction queued
