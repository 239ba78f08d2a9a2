"""Inbox administration and the API channel's inbound endpoint."""

import base64
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rapport import outbound
from rapport.auth.deps import (
    Box,
    CurrentAdmin,
    CurrentAgent,
    CurrentMember,
    Db,
    ReadDb,
    require_role,
)
from rapport.auth.models import Role
from rapport.auth.service import Principal
from rapport.auth.views import actor_of
from rapport.channels import base, service
from rapport.channels.schemas import (
    ChannelRead,
    InboundIn,
    InboundOut,
    InboxCreate,
    InboxHealthList,
    InboxHealthRead,
    InboxRead,
    InboxUpdate,
    SettingRead,
)
from rapport.conversations import files, reads
from rapport.conversations.models import Attachment
from rapport.customers.identity import InvalidHandle, handle
from rapport.customers.models import IdentityKind
from rapport.db import transient
from rapport.guard import route_path
from rapport.ingest import InboundAttachment, InboundMessage, IngestWriter
from rapport.privacy.service import audit
from rapport.problems import Invalid, Problem, busy_response, collided

router = APIRouter(prefix="/api/v1", tags=["inboxes"])
_agent = require_role(Role.agent)


@router.get("/channels", response_model=list[ChannelRead])
def list_channels(principal: CurrentMember) -> list[ChannelRead]:
    """Every channel an inbox can be, with the settings its inboxes take: what each is,
    its kind, whether the inbox needs it, whether it is a credential (never shown back)."""
    return [
        ChannelRead(
            name=name,
            settings=[SettingRead.model_validate(f) for f in channel.fields],
        )
        for name in base.names()
        if (channel := base.get(name)) is not None
    ]


@router.get("/inboxes", response_model=list[InboxRead])
def list_inboxes(principal: CurrentMember, db: Db, box: Box) -> list[InboxRead]:
    return [
        service.read(i, box) for i in service.list_inboxes(db, workspace_id=principal.workspace_id)
    ]


def _check_urls(channel: str, settings: dict[str, Any], request: Request) -> None:
    """Refuse URL settings (the API channel's reply webhook, a provider's API address set
    for a stand-in or a proxy) into our own network unless the installation allows them
    (as for webhooks); the address a name resolves to is checked again at each call."""
    found = base.get(channel)
    for field in found.fields if found else ():
        if (
            field.kind == "url"
            and isinstance(settings.get(field.name), str)
            and settings[field.name]
        ):
            outbound.check_saved(
                settings[field.name],
                allow_private=request.app.state.settings.outbound_private_ok,
                what=field.name,
            )


@router.post("/inboxes", response_model=InboxRead, status_code=201)
def create_inbox(
    body: InboxCreate, principal: CurrentAdmin, request: Request, db: Db, box: Box
) -> InboxRead:
    """Create an inbox (one channel instance); credentials in settings are stored encrypted."""
    _check_urls(body.channel, body.settings, request)
    inbox = service.create(db, workspace_id=principal.workspace_id, data=body, box=box)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="inbox.create",
        target_type="inbox",
        target_id=inbox.id,
        data={"channel": inbox.channel},
    )
    return service.read(inbox, box)


@router.get("/inboxes/health", response_model=InboxHealthList)
def inboxes_health(principal: CurrentAdmin, db: ReadDb, box: Box) -> InboxHealthList:
    """Whether each inbox of the workspace works: its status (`disabled`, `not_set_up`,
    `failing`, `warning`, `ok`) with the reasons, when a customer last wrote and a reply
    last went out, the replies that failed in the last 24 hours (the last one's reason,
    without addresses or numbers), its dead-lettered jobs, the webhook calls it could not
    read, and its mailbox's last poll. The same few statements however many inboxes."""
    return InboxHealthList(
        items=service.health_of(db, workspace_id=principal.workspace_id, box=box)
    )


@router.get("/inboxes/{inbox_id}/health", response_model=InboxHealthRead)
def inbox_health(inbox_id: str, principal: CurrentAdmin, db: ReadDb, box: Box) -> InboxHealthRead:
    """One inbox's health, as `GET /api/v1/inboxes/health` lists it."""
    inbox = service.get(db, workspace_id=principal.workspace_id, inbox_id=inbox_id)
    [found] = service.health_of(db, workspace_id=principal.workspace_id, box=box, inboxes=[inbox])
    return found


@router.get("/inboxes/{inbox_id}", response_model=InboxRead)
def get_inbox(inbox_id: str, principal: CurrentMember, db: Db, box: Box) -> InboxRead:
    return service.read(
        service.get(db, workspace_id=principal.workspace_id, inbox_id=inbox_id), box
    )


@router.patch("/inboxes/{inbox_id}", response_model=InboxRead)
def update_inbox(
    inbox_id: str, body: InboxUpdate, principal: CurrentAdmin, request: Request, db: Db, box: Box
) -> InboxRead:
    inbox = service.get(db, workspace_id=principal.workspace_id, inbox_id=inbox_id)
    _check_urls(inbox.channel, body.settings or {}, request)
    service.update(db, inbox=inbox, data=body, box=box)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="inbox.update",
        target_type="inbox",
        target_id=inbox.id,
        data={"fields": sorted(body.model_fields_set)},
    )
    return service.read(inbox, box)


INBOUND_PATH = "/api/v1/inboxes/{inbox_id}/messages"


@router.post(
    "/inboxes/{inbox_id}/messages",
    response_model=InboundOut,
    status_code=201,
    responses={200: {"description": "this external_id was posted before: the stored message"}},
)
async def post_inbound(
    inbox_id: str, body: InboundIn, request: Request, principal: CurrentAgent
) -> Response:
    """The API channel: an outside system posts a customer's message into an API inbox.

    Posting the same ``external_id`` again returns the stored message (200) and stores
    nothing: retries are safe.
    """
    status, payload = await ingest_inbound(request.app.state.ingest, inbox_id, body, principal)
    return Response(payload, status_code=status, media_type="application/json")


async def ingest_inbound(
    writer: IngestWriter, inbox_id: str, body: InboundIn, principal: Principal
) -> tuple[int, bytes]:
    """Store one API-channel message; its status (201 new, 200 a repeat) and JSON answer."""
    sender = body.sender
    try:
        handles = [
            handle(kind, raw, region=principal.region)
            for kind, raw in (
                (IdentityKind.external, sender.external_id),
                (IdentityKind.email, sender.email),
                (IdentityKind.phone, sender.phone),
            )
            if raw
        ]
    except InvalidHandle as exc:
        raise Invalid(str(exc)) from exc
    msg = InboundMessage(
        inbox_id=inbox_id,
        external_id=body.external_id,
        handles=handles,
        text=body.text,
        html=body.html,
        sender_name=sender.name,
        subject=body.subject,
        attachments=[
            InboundAttachment(a.filename, a.content_type, base64.b64decode(a.data_base64))
            for a in body.attachments
        ],
        conversation_hint=body.conversation_id,
        sent_at=body.sent_at,
        expect_workspace_id=principal.workspace_id,
        expect_channel="api",
    )
    result = await writer.submit(msg)
    stored = result.message
    attached: list[Attachment] = []
    if body.attachments or result.duplicate:
        # The message as the API reads it (``reads.message_read``), files included: they
        # were left out of the answer. Read only when it has some (or may, stored before):
        # a post of text alone, the most of them, asks nothing more of the database.
        attached = await run_in_threadpool(_files_of, writer, stored.id)
    read = reads.message_read(stored, attached, base_url=writer.settings.public_url)
    out = InboundOut(
        **read.model_dump(), customer_id=result.customer_id, duplicate=result.duplicate
    )
    return 200 if result.duplicate else 201, out.model_dump_json().encode()


def _files_of(writer: IngestWriter, message_id: str) -> list[Attachment]:
    with writer.database.session(write=False) as db:
        return files.of_messages(db, [message_id])[message_id]


class InboundFastPath:
    """ASGI middleware: the API channel's endpoint without the framework's per-request work.

    ``POST /api/v1/inboxes/{id}/messages`` is the hottest call Rapport answers, and routing
    through every router, solving dependencies and validating through the framework cost
    more than storing the message. A well-formed request from an agent is answered here by
    the same ``ingest_inbound`` the route uses; anything else (no or bad credentials, a body
    that does not validate, not JSON) goes on to the route, which answers it as usual.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = SimpleNamespace(path=INBOUND_PATH)  # what the metrics middleware names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        parts = path.split("/")  # "", "api", "v1", "inboxes", id, "messages"
        if (
            scope.get("method") != "POST"
            or len(parts) != 6
            or parts[1:4] != ["api", "v1", "inboxes"]
            or parts[5] != "messages"
            or not parts[4]
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)

        replayed = False

        async def replay() -> Message:  # the body read here, then whatever comes next
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, replay)
        try:
            principal = await _agent(request)
            data = InboundIn.model_validate_json(body)
        except (Problem, ValidationError, OperationalError):
            principal = None  # the route answers it as it answers every request
        if principal is None or "json" not in request.headers.get("content-type", "").lower():
            await self.app(scope, replay, send)
            return
        scope["route"] = self.route
        # Answered as the app's own handlers answer the route (problems.install).
        try:
            status, payload = await ingest_inbound(
                request.app.state.ingest, parts[4], data, principal
            )
        except Problem as exc:
            response: Response = exc.response(path)
        except OperationalError as exc:
            if not transient(exc):
                raise
            response = busy_response(exc, "POST", path)
        except IntegrityError as exc:  # a conflict met twice (the writer's _commit)
            response = collided(exc, "POST", path)
        else:
            response = Response(payload, status_code=status, media_type="application/json")
        await response(scope, replay, send)
