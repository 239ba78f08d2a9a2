"""Background work of automation: evaluating rules, delivering webhooks."""

import time

import httpx

from rapport.automation import service
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.crypto import box_for
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, PermanentError, job


@job("automation")
def automation(
    ctx: JobContext,
    *,
    event: str,
    conversation_id: str | None = None,
    message_id: str | None = None,
    customer_id: str | None = None,
    caused_by: list[str] | None = None,
) -> None:
    """Run the workspace's rules for one event, all their actions in one transaction."""
    assert ctx.workspace_id is not None
    box = box_for(ctx.settings.secret_key.get_secret_value())
    with ctx.database.session() as db:
        service.run(
            db,
            workspace_id=ctx.workspace_id,
            event=event,
            conversation_id=conversation_id,
            message_id=message_id,
            customer_id=customer_id,
            caused_by=caused_by or [],
            box=box,
        )


@job("webhook_deliver")
def webhook_deliver(ctx: JobContext, *, delivery_id: str) -> None:
    """POST one delivery, signed; a failure raises so the job queue retries with backoff."""
    box = box_for(ctx.settings.secret_key.get_secret_value())
    with ctx.database.session(write=False) as db:
        delivery = db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status == "delivered":
            return
        hook = db.get(Webhook, delivery.webhook_id)
        if hook is None or not hook.enabled:
            return
        secret = box.decrypt(hook.secret_encrypted)
        url = hook.url
        body = service.body_of(delivery)
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Rapport-Webhooks",
        "X-Rapport-Event": delivery.event,
        "X-Rapport-Delivery": delivery.id,
        "X-Rapport-Timestamp": str(ts),
        "X-Rapport-Signature": service.sign(secret, ts, body),
    }
    status: int | None = None
    error: str | None = None
    try:
        resp = httpx.post(url, content=body, headers=headers, timeout=10)
        status = resp.status_code
        if status >= 300:
            error = f"answered {status}"
    except httpx.HTTPError as exc:
        error = f"unreachable: {type(exc).__name__}"
    with ctx.database.session() as db:
        row = db.get(WebhookDelivery, delivery_id)
        if row is not None:
            row.attempts += 1
            row.response_status = status
            row.error = error
            if error is None:
                row.status, row.delivered_at = "delivered", utcnow()
            elif ctx.attempt >= 10 or (
                status is not None and 400 <= status < 500 and status not in (408, 429)
            ):
                row.status = "failed"
    if error is not None:
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            raise PermanentError(error)
        raise RuntimeError(error)
