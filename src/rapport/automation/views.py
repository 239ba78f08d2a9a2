"""Automation rules and webhooks, for admins; macros, for every member."""

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from rapport.auth.deps import Box, CurrentAdmin, CurrentAgent, CurrentMember, CurrentSettings, Db
from rapport.auth.models import Role
from rapport.auth.views import actor_of
from rapport.automation import service
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.automation.schemas import (
    DeliveryRead,
    MacroIn,
    MacroRead,
    MacroUpdate,
    RuleIn,
    RuleRead,
    WebhookCreated,
    WebhookIn,
    WebhookRead,
    WebhookUpdate,
)
from rapport.privacy.service import audit

router = APIRouter(prefix="/api/v1", tags=["automation"])


@router.get("/automation-rules", response_model=list[RuleRead])
def list_rules(principal: CurrentAdmin, db: Db) -> list[RuleRead]:
    return [
        RuleRead.model_validate(r) for r in service.rules(db, workspace_id=principal.workspace_id)
    ]


@router.post("/automation-rules", response_model=RuleRead, status_code=201)
def create_rule(body: RuleIn, principal: CurrentAdmin, db: Db) -> RuleRead:
    """A rule: when ``event`` happens and every condition holds, run ``actions`` in order.

    Each condition's field, op and value and each action's value are checked against this
    workspace (a member who takes conversations, a team, a canned response, a webhook, a
    status...); a 422 problem names the part, such as ``actions[0].value``."""
    row = service.create_rule(db, workspace_id=principal.workspace_id, data=body.model_dump())
    return RuleRead.model_validate(row)


@router.put("/automation-rules/{rule_id}", response_model=RuleRead)
def update_rule(rule_id: str, body: RuleIn, principal: CurrentAdmin, db: Db) -> RuleRead:
    """Edit a rule: its definition, its position, enabled, stop processing."""
    rule = service.get_rule(db, workspace_id=principal.workspace_id, rule_id=rule_id)
    return RuleRead.model_validate(service.update_rule(db, rule=rule, data=body.model_dump()))


@router.delete("/automation-rules/{rule_id}", status_code=204)
def delete_rule(rule_id: str, principal: CurrentAdmin, db: Db) -> Response:
    service.delete_rule(
        db, rule=service.get_rule(db, workspace_id=principal.workspace_id, rule_id=rule_id)
    )
    return Response(status_code=204)


@router.get("/webhooks", response_model=list[WebhookRead])
def list_webhooks(principal: CurrentAdmin, db: Db) -> list[WebhookRead]:
    rows = db.scalars(select(Webhook).where(Webhook.workspace_id == principal.workspace_id))
    return [WebhookRead.model_validate(r) for r in rows]


@router.post("/webhooks", response_model=WebhookCreated, status_code=201)
def create_webhook(
    body: WebhookIn, principal: CurrentAdmin, db: Db, box: Box, settings: CurrentSettings
) -> WebhookCreated:
    """A webhook; the signing secret is in this answer only."""
    row, secret = service.create_webhook(
        db,
        workspace_id=principal.workspace_id,
        url=body.url,
        events=body.events,
        box=box,
        allow_private=settings.outbound_private_ok,
    )
    return WebhookCreated(**WebhookRead.model_validate(row).model_dump(), secret=secret)


@router.patch("/webhooks/{webhook_id}", response_model=WebhookRead)
def update_webhook(
    webhook_id: str,
    body: WebhookUpdate,
    principal: CurrentAdmin,
    db: Db,
    settings: CurrentSettings,
) -> WebhookRead:
    """Change a webhook's URL or events, or switch it off and on (its secret stays)."""
    hook = service.get_webhook(db, workspace_id=principal.workspace_id, webhook_id=webhook_id)
    return WebhookRead.model_validate(
        service.update_webhook(
            db,
            webhook=hook,
            url=body.url,
            events=body.events,
            enabled=body.enabled,
            allow_private=settings.outbound_private_ok,
        )
    )


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    responses={409: {"description": "an automation rule still sends to it"}},
)
def delete_webhook(webhook_id: str, principal: CurrentAdmin, db: Db) -> Response:
    """Delete a webhook with its delivery log (refused while a rule sends to it)."""
    service.delete_webhook(
        db,
        webhook=service.get_webhook(db, workspace_id=principal.workspace_id, webhook_id=webhook_id),
    )
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryRead])
def list_deliveries(webhook_id: str, principal: CurrentAdmin, db: Db) -> list[DeliveryRead]:
    """The delivery log, newest first."""
    hook = service.get_webhook(db, workspace_id=principal.workspace_id, webhook_id=webhook_id)
    rows = db.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == hook.id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(100)
    )
    return [DeliveryRead.model_validate(r) for r in rows]


_MACRO_404: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such macro in your workspace, or another's personal one"}
}
_MACRO_422: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "The body is not valid, or an action cannot run: the problem names it "
        "(``actions[2].value``: no team of this workspace has the id ...)",
    }
}


@router.get("/macros", response_model=list[MacroRead])
def list_macros(principal: CurrentMember, db: Db) -> list[MacroRead]:
    """The macros the caller may run: the workspace's and their own personal ones, by name."""
    rows = service.macros(db, workspace_id=principal.workspace_id, user_id=principal.user_id)
    return [MacroRead.model_validate(r) for r in rows]


@router.post(
    "/macros",
    response_model=MacroRead,
    status_code=201,
    responses={
        403: {"description": "A viewer; or a workspace macro by an agent (admins and owners)"},
        409: {"description": "A macro of the workspace (or of yours) has this name"},
        **_MACRO_422,
    },
)
def create_macro(body: MacroIn, principal: CurrentAgent, request: Request, db: Db) -> MacroRead:
    """A macro: a named list of actions an agent runs by hand on a conversation
    (``POST /api/v1/conversations/{id}/macros/{macro_id}``) or many (bulk ``macro``). Each
    action's value is checked against this workspace, as a rule's is."""
    row = service.create_macro(
        db,
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        admin=principal.has(Role.admin),
        name=body.name,
        actions=body.actions,
        visibility=body.visibility,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="macro.create",
        target_type="macro",
        target_id=row.id,
        data={"name": row.name, "visibility": row.visibility, "actions": row.actions},
    )
    return MacroRead.model_validate(row)


@router.get("/macros/{macro_id}", response_model=MacroRead, responses=_MACRO_404)
def get_macro(macro_id: str, principal: CurrentMember, db: Db) -> MacroRead:
    return MacroRead.model_validate(
        service.get_macro(
            db, workspace_id=principal.workspace_id, macro_id=macro_id, user_id=principal.user_id
        )
    )


@router.patch(
    "/macros/{macro_id}",
    response_model=MacroRead,
    responses={
        403: {
            "description": "A viewer; or an agent changing a workspace macro, or making one "
            "of theirs the workspace's"
        },
        409: {"description": "A macro of the workspace (or of yours) has this name"},
        **_MACRO_404,
        **_MACRO_422,
    },
)
def update_macro(
    macro_id: str, body: MacroUpdate, principal: CurrentAgent, request: Request, db: Db
) -> MacroRead:
    """Change a macro's name, actions or visibility (fields left out are kept): the
    workspace's by admins and owners, a personal one by its owner. A workspace macro made
    personal becomes the caller's."""
    row = service.get_macro(
        db, workspace_id=principal.workspace_id, macro_id=macro_id, user_id=principal.user_id
    )
    changed = service.update_macro(
        db,
        macro=row,
        user_id=principal.user_id,
        admin=principal.has(Role.admin),
        name=body.name,
        actions=body.actions,
        visibility=body.visibility,
    )
    if changed:
        audit(
            db,
            workspace_id=principal.workspace_id,
            actor=actor_of(principal, request),
            action="macro.change",
            target_type="macro",
            target_id=row.id,
            data=changed,
        )
    return MacroRead.model_validate(row)


@router.delete(
    "/macros/{macro_id}",
    status_code=204,
    responses={
        403: {"description": "A viewer; or an agent deleting a workspace macro"},
        **_MACRO_404,
    },
)
def delete_macro(macro_id: str, principal: CurrentAgent, request: Request, db: Db) -> Response:
    """Delete a macro: the workspace's by admins and owners, a personal one by its owner."""
    row = service.get_macro(
        db, workspace_id=principal.workspace_id, macro_id=macro_id, user_id=principal.user_id
    )
    service.delete_macro(db, macro=row, user_id=principal.user_id, admin=principal.has(Role.admin))
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="macro.delete",
        target_type="macro",
        target_id=macro_id,
        data={"name": row.name, "visibility": row.visibility},
    )
    return Response(status_code=204)
