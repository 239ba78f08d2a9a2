"""Provider webhooks: ``/webhooks/{channel}/{inbox_id}``. Verified first; nothing of a
forged call is stored; what cannot be parsed is kept raw and flagged."""

import hmac
import logging
from typing import Any, cast

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rapport.channels import base, deliver, media
from rapport.channels.models import Inbox, UnparsedPayload
from rapport.config import Settings
from rapport.crypto import SecretBox, same
from rapport.db import Database
from rapport.guard import route_path
from rapport.ingest import IngestWriter
from rapport.problems import Forbidden, NotFound, Problem, busy_response

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
log = logging.getLogger(__name__)
_META = ("whatsapp", "messenger", "instagram")


def _inbox(
    database: Database, box: SecretBox, channel: str, inbox_id: str
) -> tuple[Inbox, dict[str, Any]]:
    with database.session(write=False) as db:
        inbox = db.get(Inbox, inbox_id)
        if inbox is None or inbox.channel != channel or not inbox.enabled:
            raise NotFound("inbox")
        db.expunge(inbox)
    return inbox, box.decrypt_json(inbox.secrets_encrypted)


@router.get("/{channel}/{inbox_id}", response_class=PlainTextResponse)
async def verify(channel: str, inbox_id: str, request: Request) -> str:
    """The provider's subscription handshake (Meta: echo hub.challenge for our verify token)."""
    state = request.app.state
    _, secrets = await run_in_threadpool(_inbox, state.database, state.box, channel, inbox_id)
    q = request.query_params
    if channel in _META and q.get("hub.mode") == "subscribe":
        expected = base.secret(secrets, "verify_token")
        if expected is not None and same(q.get("hub.verify_token"), expected):
            return q.get("hub.challenge", "")
    raise Forbidden("verification failed")


@router.post("/{channel}/{inbox_id}")
async def receive(channel: str, inbox_id: str, request: Request) -> Response:
    """Provider events: messages go through the ingest path, statuses move our messages."""
    state = request.app.state
    database: Database = state.database
    settings: Settings = state.settings
    inbox, secrets = await run_in_threadpool(_inbox, database, state.box, channel, inbox_id)
    found = base.get(channel)
    if found is None or not hasattr(found, "verify"):
        raise NotFound("webhook")
    handler = cast(base.WebhookChannel, found)
    body = await request.body()
    pairs: list[tuple[str, str]] = []
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        pairs = [(k, str(v)) for k, v in (await request.form()).multi_items()]
    # Providers that sign the URL sign the one they were given: our public URL (which holds
    # the root path Rapport may run under, a proxy's prefix) and the route's path.
    url = settings.public_url.rstrip("/") + route_path(request.scope)
    if request.url.query:
        url += "?" + request.url.query
    call = base.WebhookRequest(
        body=body,
        headers={k.lower(): v for k, v in request.headers.items()},
        url=url,
        form=dict(pairs),
        pairs=pairs,
    )
    if not handler.verify(secrets=secrets, request=call):
        raise Problem(401, "bad-signature", "the webhook signature does not match this request")
    # A Meta app has one callback URL for all its pages (or numbers): a call to this inbox
    # may carry another's events, for the inboxes of the workspace on the same app.
    siblings = await run_in_threadpool(
        _siblings, database, state.box, handler, inbox, secrets, call
    )
    _left_out(handler, call, inbox, siblings)
    calls = [(box_inbox, _parse(handler, call, box_inbox)) for box_inbox in [inbox, *siblings]]
    writer: IngestWriter = state.ingest
    try:
        for box_inbox, events in calls:
            await _store(database, writer, channel, box_inbox, events)
    except IntegrityError as exc:
        # A conflict the writer met on its second try too (a race on a unique key) is no
        # fault of the provider's. A 409 it does not send again (the customer's message was
        # lost); a 503 it does, and what this call stored already is found, not doubled.
        return busy_response(
            exc,
            request.method,
            request.url.path,
            detail="not all of this call could be stored: send it again",
        )
    answer_for = getattr(handler, "answer_for", None)
    answer = answer_for(inbox, call) if answer_for else getattr(handler, "webhook_answer", None)
    if answer is not None:
        content, media_type = answer
        return Response(content, media_type=media_type)
    return Response(status_code=200)


def _parse(
    handler: base.WebhookChannel, call: base.WebhookRequest, inbox: Inbox
) -> base.WebhookEvents:
    try:
        return handler.parse(call, inbox=inbox)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        return base.WebhookEvents(unparsed=[(_text(call.body), f"{type(exc).__name__}: {exc}")])


async def _store(
    database: Database, writer: IngestWriter, channel: str, inbox: Inbox, events: base.WebhookEvents
) -> None:
    """One inbox's events of a call: messages through the ingest path, the rest after."""
    for msg in events.messages:
        msg.fetch_media = media.queue_if_any(channel, msg.meta)
        await writer.submit(msg)
    if events.echoes:  # before the statuses: the same call may report on them
        await run_in_threadpool(_apply_echoes, database, inbox, events.echoes)
    if events.activities:
        await run_in_threadpool(_apply_activities, database, inbox, events.activities)
    if events.statuses:
        await run_in_threadpool(_apply_statuses, database, inbox, events.statuses)
    if events.unparsed:
        # Kept raw and flagged; acknowledged all the same: the provider must not retry
        # forever what will never parse. Last: it is the one write here that the call
        # sent again would make twice (messages are found by their id, statuses only move).
        await run_in_threadpool(_keep_unparsed, database, inbox, events.unparsed)


def _siblings(
    database: Database,
    box: SecretBox,
    handler: Any,
    inbox: Inbox,
    secrets: dict[str, Any],
    call: base.WebhookRequest,
) -> list[Inbox]:
    """The other enabled inboxes of ``inbox``'s workspace and channel whose page, account
    or number (``account_key``) this call names, and that check their webhooks with the
    same app secret: the call's signature is theirs too. Meta subscribes an app, not a
    page, so a second page or number of the same app has no callback URL of its own; its
    events were left out as another page's, and never stored anywhere. None when this
    inbox names no page of its own (it takes every entry itself)."""
    key: str = getattr(handler, "account_key", "")
    if not key:
        return []
    ours, app_secret = str(inbox.settings.get(key) or ""), base.secret(secrets, "app_secret")
    others = set(handler.accounts(call)) - {ours}
    if not ours or not others or app_secret is None:
        return []
    with database.session(write=False) as db:
        candidates = db.scalars(
            select(Inbox).where(
                Inbox.workspace_id == inbox.workspace_id,
                Inbox.channel == inbox.channel,
                Inbox.enabled.is_(True),
                Inbox.id != inbox.id,
            )
        ).all()
        found = []
        for other in candidates:
            if str(other.settings.get(key) or "") not in others:
                continue
            theirs = base.secret(box.decrypt_json(other.secrets_encrypted), "app_secret")
            if theirs is not None and hmac.compare_digest(theirs, app_secret):
                db.expunge(other)
                found.append(other)
    return found


def _left_out(handler: Any, call: base.WebhookRequest, inbox: Inbox, took: list[Inbox]) -> None:
    """Say which pages or numbers of the call no inbox took (another app's, another
    workspace's, one with no inbox): each parse leaves out what is not its own, and said
    there, every inbox warned of what its siblings had taken."""
    key: str = getattr(handler, "account_key", "")
    ours = str(inbox.settings.get(key) or "") if key else ""
    if not ours:  # an inbox that names no page takes every entry
        return
    left = set(handler.accounts(call)) - {ours} - {str(o.settings.get(key)) for o in took}
    if left:
        log.warning(
            "a Meta event for a page or number no inbox takes was left out",
            extra={
                "event": "webhook.other_account",
                "inbox_id": inbox.id,
                "channel": inbox.channel,
                "accounts": sorted(left),
            },
        )


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _keep_unparsed(database: Database, inbox: Inbox, unparsed: list[tuple[str, str]]) -> None:
    with database.session() as db:
        for raw, error in unparsed:
            db.add(
                UnparsedPayload(
                    workspace_id=inbox.workspace_id,
                    inbox_id=inbox.id,
                    body=raw,
                    error=error[:1000],
                )
            )
    log.warning(
        "webhook payload not parsed",
        extra={"event": "webhook.unparsed", "inbox_id": inbox.id, "items": len(unparsed)},
    )


def _apply_statuses(database: Database, inbox: Inbox, statuses: list[dict[str, Any]]) -> None:
    with database.session() as db:
        for report in statuses:
            deliver.apply_report(
                db, inbox_id=inbox.id, workspace_id=inbox.workspace_id, report=report
            )


def _apply_echoes(database: Database, inbox: Inbox, echoes: list[dict[str, Any]]) -> None:
    with database.session() as db:
        for echo in echoes:
            deliver.apply_echo(db, inbox_id=inbox.id, workspace_id=inbox.workspace_id, echo=echo)


def _apply_activities(database: Database, inbox: Inbox, activities: list[dict[str, Any]]) -> None:
    with database.session() as db:
        for activity in activities:
            deliver.apply_activity(
                db, inbox_id=inbox.id, workspace_id=inbox.workspace_id, activity=activity
            )
