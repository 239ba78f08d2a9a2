"""Automation rules and webhooks, for admins."""

from fastapi import APIRouter, Response
from sqlalchemy import select

from rapport.auth.deps import Box, CurrentAdmin, CurrentSettings, Db
from rapport.automation import service
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.automation.schemas import (
    DeliveryRead,
    RuleIn,
    RuleRead,
    WebhookCreated,
    WebhookIn,
    WebhookRead,
    WebhookUpdate,
)

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
