"""Inbox administration and the API channel's inbound endpoint."""

import base64
from types import SimpleNamespace

from fastapi import APIRouter, Request, Response

from rapport.auth.deps import Box, CurrentAdmin, CurrentAgent, CurrentMember, Db
from rapport.auth.views import actor_of
from rapport.channels import service
from rapport.channels.schemas import InboundIn, InboundOut, InboxCreate, InboxRead, InboxUpdate
from rapport.customers.identity import InvalidHandle, handle
from rapport.customers.models import IdentityKind
from rapport.ingest import InboundAttachment, InboundMessage, IngestWriter
from rapport.privacy.service import audit
from rapport.problems import Invalid

router = APIRouter(prefix="/api/v1", tags=["inboxes"])


@router.get("/inboxes", response_model=list[InboxRead])
def list_inboxes(principal: CurrentMember, db: Db, box: Box) -> list[InboxRead]:
    return [
        service.read(i, box) for i in service.list_inboxes(db, workspace_id=principal.workspace_id)
    ]


@router.post("/inboxes", response_model=InboxRead, status_code=201)
def create_inbox(
    body: InboxCreate, principal: CurrentAdmin, request: Request, db: Db, box: Box
) -> InboxRead:
    """Create an inbox (one channel instance); credentials in settings are stored encrypted."""
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


@router.post(
    "/inboxes/{inbox_id}/messages",
    response_model=InboundOut,
    status_code=201,
    responses={200: {"description": "this external_id was posted before: the stored message"}},
)
async def post_inbound(
    inbox_id: str, body: InboundIn, request: Request, response: Response, principal: CurrentAgent
) -> Response:
    """The API channel: an outside system posts a customer's message into an API inbox.

    Posting the same ``external_id`` again returns the stored message (200) and stores
    nothing: retries are safe.
    """
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
    writer: IngestWriter = request.app.state.ingest
    result = await writer.submit(msg)
    out = InboundOut.model_validate(
        SimpleNamespace(
            **vars(result.message), customer_id=result.customer_id, duplicate=result.duplicate
        )
    )
    # Serialized once, here: this is the hottest endpoint; response_model documents it.
    return Response(
        out.model_dump_json(),
        status_code=200 if result.duplicate else 201,
        media_type="application/json",
    )
