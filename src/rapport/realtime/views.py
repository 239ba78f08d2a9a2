"""``/api/v1/stream``: the websocket that carries a workspace's events to its agents."""

import asyncio
import contextlib
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rapport.auth.deps import CurrentMember, ReadDb, websocket_principal
from rapport.auth.service import Principal
from rapport.bus import Subscription, get_bus
from rapport.db import Database
from rapport.problems import Invalid
from rapport.realtime import presence, service

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])


class EventsPage(BaseModel):
    events: list[dict[str, Any]]
    cursor: int = Field(description="pass as `after` to the next poll")
    pending: list[int] = Field(
        default_factory=list,
        description="pass as `pending` (comma-separated) to the next poll: ids at or below "
        "`cursor` whose events may still commit",
    )
    more: bool = Field(description="a page was full: poll again at once")
    said: list[dict[str, Any]] = Field(
        default_factory=list,
        description="what was said lately and is not stored (who is viewing or typing in "
        "a conversation), after `said_after`",
    )
    said_at: float = Field(default=0.0, description="pass as `said_after` to the next poll")
    reset: bool = Field(
        default=False, description="the events after `after` were pruned: reload instead"
    )


# Ids as a page names them (``data-pending-event-ids``): up to PENDING_CAP, comma-separated.
_PENDING = r"^(\d{1,19}(,\d{1,19})*)?$"


@router.get("/api/v1/events", response_model=EventsPage)
def poll_events(
    principal: CurrentMember,
    db: ReadDb,
    after: Annotated[int | None, Query(ge=0, le=service.MAX_ID)] = None,
    pending: Annotated[
        str | None,
        Query(
            pattern=_PENDING,
            max_length=service.PENDING_CAP * 20,
            description="the ids the last poll (or the page, as it rendered) named pending",
        ),
    ] = None,
    said_after: Annotated[float, Query(ge=0, le=1e12, allow_inf_nan=False)] = 0.0,
    stragglers: Annotated[
        bool,
        Query(
            description="without `pending` (a page whose socket just closed): the recent "
            "events at or below `after` come again too, as to a socket that reconnects"
        ),
    ] = False,
) -> EventsPage:
    """The workspace's events after `after`, for a client that cannot hold the stream open
    (a proxy that drops WebSockets): the stored events the stream carries (not the passing
    ones, who is typing or viewing, are in `said`: what was said since `said_after`, or in
    the last few seconds). Without `after`, only the cursor to start from.

    Send `pending` as the last answer gave it (a page, as its `data-pending-event-ids`):
    the events of those ids that committed since come too (on PostgreSQL ids commit out
    of order); with `stragglers` instead, the recent events at or below `after` come again,
    as they do to a socket that reconnects. Recent events come again in the polls that
    follow too: handle each `id` once.
    """
    # Before any other read: the poll reads one snapshot (``service.poll``).
    service.one_snapshot(db)
    listed = pending.split(",") if pending else []
    if len(listed) > service.PENDING_CAP or any(service.client_id(i) is None for i in listed):
        raise Invalid(
            f"pending: at most {service.PENDING_CAP} event ids, each at most {service.MAX_ID}"
        )
    # Named, none (a client that knows of none: only what follows ``after``), or unknown.
    named = frozenset(int(i) for i in listed) if pending is not None or not stragglers else None
    if after is None:
        latest = service.latest_id(db, workspace_id=principal.workspace_id)
        return EventsPage(
            events=[],
            cursor=latest,
            pending=service.pending_ids(db, up_to_id=latest),
            more=False,
        )
    if service.pruned(db, after):
        return EventsPage(events=[], cursor=after, more=False, reset=True)
    page = service.poll(db, workspace_id=principal.workspace_id, after_id=after, pending=named)
    events = [service.as_dict(e) for e in page.events]
    said, said_at = get_bus().said(principal.workspace_id, heard_after=said_after)
    return EventsPage(
        events=[e for e in events if _for(e, principal.user_id)],
        cursor=page.cursor,
        pending=page.pending,
        more=page.more,
        said=[e for e in said if _for(e, principal.user_id)],
        said_at=said_at,
    )


_POLICY_VIOLATION = 1008


@router.websocket("/api/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Workspace events as JSON, each with an increasing ``id``.

    Reconnect with ``?last_event_id=N`` (or the ``Last-Event-ID`` header) to get every
    event after N first, then the live ones: nothing committed is missed across a drop.
    A page opens its first socket with the newest event id when it was rendered,
    ``from_page=1`` and ``pending=`` the ids below it no row held then: what committed
    between its render and its socket is sent first, those pending ones included (on
    PostgreSQL ids commit out of order); what the page shows is not sent again.

    The client says who is on a conversation: ``{"type": "viewing", "conversation_id": ...}``
    (a page every few seconds while it shows it) and ``{"type": "typing", ...}`` (agents and
    above). Told to the workspace's other agents on that conversation, in every process,
    and stored nowhere; ``agent.left`` once the socket closes. Once a socket has said which
    conversation it views, it is sent what is said of that one alone.
    """
    principal = await websocket_principal(ws)
    if principal is None:
        await ws.close(code=_POLICY_VIOLATION, reason="not authenticated")
        return
    await ws.accept()
    database: Database = ws.app.state.database
    last = service.client_id(
        ws.query_params.get("last_event_id") or ws.headers.get("last-event-id")
    )
    # A page's first socket: the page shows every event up to ``last`` but those whose ids
    # were still pending as it rendered (``pending``, PostgreSQL's stragglers to come).
    from_page = ws.query_params.get("from_page") == "1"
    pending = service.client_ids(ws.query_params.get("pending", "")) if from_page else None
    me = principal.user_id
    # Subscribe before reading the outbox, so an event committed in between is not lost.
    with get_bus().subscribe(principal.workspace_id) as sub:
        seen, begin = await service.opening(database, principal.workspace_id, last)
        try:
            if begin == "reset":  # the page reloads; this socket goes on from now
                await ws.send_json({"type": "reset"})
            if begin == "replay":
                if pending is not None:
                    seen.from_page(seen.highest, pending)
                await _catch_up(ws, database, principal.workspace_id, seen, me, pending=pending)
            else:
                await ws.send_json({"type": "hello", "last_event_id": seen.highest})
        except WebSocketDisconnect:
            return  # gone before its first word (a page left at once), not an error
        here = presence.Presence(principal)
        receiver = asyncio.create_task(_hear_client(ws, database, here))
        watcher = asyncio.create_task(_while_allowed(ws, principal, receiver))
        try:
            await _forward(ws, sub, database, principal.workspace_id, seen, receiver, here)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            receiver.cancel()
            revoked = watcher.done() and not watcher.cancelled() and watcher.result()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
            with contextlib.suppress(Exception):  # said on the bus, which may be away
                await run_in_threadpool(here.leave)
        if revoked:
            with contextlib.suppress(Exception):
                await ws.close(code=_POLICY_VIOLATION, reason="signed out")


# How often an open socket asks again whether its caller may still listen: signed out
# everywhere, its token revoked, removed from the workspace, it closes (1008) within this.
RECHECK_SECONDS = 30.0


async def _while_allowed(
    ws: WebSocket, principal: Principal, receiver: "asyncio.Task[None]"
) -> bool:
    """Wait while the caller may listen; True (and the socket's end) once they may not."""
    while not receiver.done():
        await asyncio.sleep(RECHECK_SECONDS)
        again = await websocket_principal(ws)
        if again is None or again.workspace_id != principal.workspace_id:
            receiver.cancel()
            return True
    return False


# Events about one member's notifications (one created, some read), carried to them alone.
_PERSONAL = {"notification.created", "notifications.read"}


def _for(event: dict[str, Any], me: str) -> bool:
    """Whether this member's socket carries the event: a notification's only to its own,
    and never the word meant for visitors' sockets."""
    if event["type"] == service.VISITORS_ERASED:
        return False
    return event["type"] not in _PERSONAL or bool(event["payload"].get("user_id") == me)


async def _catch_up(
    ws: WebSocket,
    database: Database,
    workspace_id: str,
    seen: service.Seen,
    me: str,
    *,
    pending: frozenset[int] | None = None,
) -> None:
    """Send what was committed since the client's last event: the events of the ``pending``
    ids its page names, or else the recent stragglers; never what its page shows (``Seen``):
    an old change would undo a newer one the page drew."""
    async for event in service.missed(database, workspace_id, seen.highest, pending=pending):
        if seen.add(event["id"]) and _for(event, me):
            await ws.send_json(event)


async def _forward(
    ws: WebSocket,
    sub: Subscription,
    database: Database,
    workspace_id: str,
    seen: service.Seen,
    receiver: "asyncio.Task[None]",
    here: presence.Presence,
) -> None:
    me = here.principal.user_id
    async for event in sub.listen(receiver, quiet=get_bus().quiet):
        if event is None or sub.overflowed:  # quiet, or the client fell behind: the outbox
            sub.overflowed = False
            await _catch_up(ws, database, workspace_id, seen, me)
            continue
        # Passing events (typing, viewing) have no id and are never replayed; those of one
        # conversation go to the sockets of the pages that show it.
        if not event["id"]:
            if here.wants(event) and _for(event, me):
                await ws.send_json(event)
        elif seen.add(event["id"], live=True) and _for(event, me):  # not sent by a catch-up
            await ws.send_json(event)


async def _hear_client(ws: WebSocket, database: Database, here: presence.Presence) -> None:
    """Read what the client says (who is viewing or typing: ``presence``) until it closes;
    what is not JSON text is ignored."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            said = await ws.receive()
            if said["type"] == "websocket.disconnect":
                return
            try:
                message = orjson.loads(said.get("text") or b"")
            except orjson.JSONDecodeError:
                continue
            try:
                await run_in_threadpool(here.hear, database, message)
            except Exception:  # the database or the bus away a moment: said again soon
                log.warning("presence not said", extra={"event": "presence.failed"})
