"""Background work of automation: evaluating rules, delivering webhooks."""

import time
from datetime import datetime

import httpx
from sqlalchemy import select

from rapport import outbound
from rapport.auth.models import Team, TeamMember, User
from rapport.automation import service
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.conversations.models import Conversation, Message
from rapport.crypto import box_for
from rapport.customers.models import Customer
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, PermanentError, job
from rapport.jobs.service import enqueue
from rapport.mail import send_mail


@job("automation")
def automation(
    ctx: JobContext,
    *,
    event: str,
    conversation_id: str | None = None,
    message_id: str | None = None,
    customer_id: str | None = None,
    caused_by: list[str] | None = None,
    at: str | None = None,
) -> None:
    """Run the workspace's rules for one event, all their actions in one transaction;
    ``at``: when the event happened (none in a job queued before it was said)."""
    assert ctx.workspace_id is not None
    box = box_for(ctx.settings.secret_key.get_secret_value())
    with ctx.database.session() as db:
        # A worker paused past its lease (a long GC, a stopped VM) and come back must not
        # run the rules again after the worker that reclaimed the job ran them: a rule's
        # reply would reach the customer twice. Held from here, the job is not reclaimed
        # until this transaction ends.
        if not ctx.holds(db):
            return
        service.run(
            db,
            workspace_id=ctx.workspace_id,
            event=event,
            conversation_id=conversation_id,
            message_id=message_id,
            customer_id=customer_id,
            caused_by=caused_by or [],
            box=box,
            at=datetime.fromisoformat(at) if at else None,
        )


@job("webhook_deliver")
def webhook_deliver(ctx: JobContext, *, delivery_id: str) -> None:
    """POST one delivery, signed; a failure raises so the job queue retries with backoff."""
    box = box_for(ctx.settings.secret_key.get_secret_value())
    with ctx.database.session(write=False) as db:
        delivery = db.get(WebhookDelivery, delivery_id)
        # Cancelled: what it named was erased (privacy.erasure), and its receiver must not
        # hear of it. A failed one is sent again when an admin retries its dead job.
        if delivery is None or delivery.status in ("delivered", "cancelled"):
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
    blocked = False
    try:
        resp = outbound.request(
            "POST",
            url,
            allow_private=ctx.settings.outbound_private_ok,
            content=body,
            headers=headers,
            timeout=10,
        )
        status = resp.status_code
        if status >= 300:
            error = f"answered {status}"
    except outbound.Blocked as exc:
        error, blocked = f"not sent: {exc}", True
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
            elif (
                blocked
                or ctx.attempt >= 10
                or (status is not None and 400 <= status < 500 and status not in (408, 429))
            ):
                row.status = "failed"
    if error is not None:
        if blocked or (status is not None and 400 <= status < 500 and status not in (408, 429)):
            raise PermanentError(error)
        raise RuntimeError(error)


@job("email_team")
def email_team(
    ctx: JobContext,
    *,
    team_id: str,
    conversation_id: str,
    message_id: str | None = None,
    event: str = "",
    to: str | None = None,
) -> None:
    """An automation rule's "email a team": each member gets the conversation's link and
    the message that set the rule off (through RAPPORT_MAIL_SMTP_*). A job per member
    (``to``): one the relay refuses for now is tried again alone, where a single job's
    retry mailed again everyone it had already reached."""
    if to is None:
        with ctx.database.session() as db:
            if not ctx.holds(db):  # its lease ran out, and another has fanned it out
                return
            if db.get(Team, team_id) is None or db.get(Conversation, conversation_id) is None:
                return
            for address in sorted(
                db.scalars(
                    select(User.email)
                    .join(TeamMember, TeamMember.user_id == User.id)
                    .where(TeamMember.team_id == team_id)
                )
            ):
                enqueue(
                    db,
                    name="email_team",
                    args={
                        "team_id": team_id,
                        "conversation_id": conversation_id,
                        "message_id": message_id,
                        "event": event,
                        "to": address,
                    },
                    workspace_id=ctx.workspace_id,
                )
        return
    with ctx.database.session(write=False) as db:
        team = db.get(Team, team_id)
        conversation = db.get(Conversation, conversation_id)
        if team is None or conversation is None:
            return
        message = db.get(Message, message_id) if message_id else None
        customer = db.get(Customer, conversation.customer_id)
        who = (customer.name or customer.email or "a customer") if customer else "a customer"
        excerpt = (message.text[:1000] if message else "").strip()
        team_name = team.name
    link = f"{ctx.settings.public_url.rstrip('/')}/app/conversations/{conversation_id}"
    send_mail(
        ctx.settings,
        to=to,
        subject=f"[{team_name}] {who}: {event.replace('.', ' ')}",
        text=f"A rule sent this to the {team_name} team.\n\n{who} wrote:\n\n"
        f"{excerpt}\n\nOpen the conversation: {link}\n",
    )
