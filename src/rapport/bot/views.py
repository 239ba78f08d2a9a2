"""Bot endpoints: intents and their examples, integrations, settings per inbox, training,
and the questions it could not answer."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from rapport import outbound, templating
from rapport.auth.deps import CurrentAdmin, CurrentAgent, CurrentMember, Db
from rapport.auth.models import Team
from rapport.auth.views import actor_of
from rapport.bot import service
from rapport.bot.models import Integration, Intent, IntentExample, UnansweredQuestion
from rapport.channels.models import Inbox
from rapport.conversations.models import Message
from rapport.crypto import random_token
from rapport.db import Name, Omittable
from rapport.jobs.service import enqueue
from rapport.privacy.service import audit
from rapport.problems import Conflict, Invalid, NotFound
from rapport.scoped import get_scoped

router = APIRouter(prefix="/api/v1/bot", tags=["bot"])


class IntentIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    reply: str = Field(max_length=5000, description="what the bot answers: a template")
    integration_id: str | None = Field(default=None, max_length=32)
    examples: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=500
    )


class IntentUpdate(BaseModel):
    """What a PATCH changes: only the fields sent (an integration_id of null unlinks it)."""

    name: Omittable[str] = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_\-]*$"
    )
    reply: Omittable[str] = Field(default=None, max_length=5000)
    integration_id: str | None = Field(
        default=None, max_length=32, description="null clears it: the intent calls no integration"
    )


class IntentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    reply: str
    integration_id: str | None
    examples: list[str] = Field(default_factory=list)


class ExampleIn(BaseModel):
    text: str | None = Field(default=None, max_length=1000)
    # Label a customer's message of a conversation as an example of this intent.
    message_id: str | None = Field(default=None, max_length=32)


class IntegrationIn(BaseModel):
    name: Name = Field(max_length=100)
    url: str = Field(
        min_length=8, max_length=1000, examples=["https://shop.example/orders/{{ order_number }}"]
    )
    timeout_seconds: int = Field(default=5, ge=1, le=30)


class IntegrationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    url: str
    timeout_seconds: int
    secret: str | None = None  # shown once, when created


class BotSettings(BaseModel):
    enabled: bool = False
    answer_threshold: float = Field(default=0.55, ge=0, le=1)
    article_threshold: float = Field(default=0.6, ge=0, le=1)
    clarify_margin: float = Field(default=0.2, ge=0, le=1)
    example_support: float = Field(default=0.25, ge=0, le=1)
    handover_team_id: str | None = Field(
        default=None,
        max_length=32,
        description="the team a hand-over goes to; null clears it: the inbox's own queue",
    )
    handover_message: str = Field(
        default=service.DEFAULTS["handover_message"], min_length=1, max_length=1000
    )
    negative_sentiment: float = Field(default=-0.6, ge=-1, le=0)


class UnansweredRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    conversation_id: str
    text: str
    reason: str


def _intent(db: Db, workspace_id: str, intent_id: str) -> Intent:
    return get_scoped(db, Intent, intent_id, workspace_id=workspace_id, name="intent")


def _read(db: Db, intent: Intent) -> IntentRead:
    examples = db.scalars(select(IntentExample.text).where(IntentExample.intent_id == intent.id))
    return IntentRead.model_validate(intent).model_copy(update={"examples": sorted(examples)})


def _check_reply(reply: str) -> None:
    # A blank reply leaves the bot nothing to send, and the customer with no answer.
    if not reply.strip():
        raise Invalid("an intent needs a reply: what the bot answers with")
    templating.check(reply)


def _retrain(db: Db, workspace_id: str) -> None:
    enqueue(db, name="bot_train", args={"workspace_id": workspace_id}, workspace_id=workspace_id)


def _check_integration(db: Db, workspace_id: str, integration_id: str | None) -> None:
    if integration_id is not None and not db.scalar(
        select(Integration.id).where(
            Integration.id == integration_id, Integration.workspace_id == workspace_id
        )
    ):
        raise NotFound("integration")


def _check_intent_name(db: Db, workspace_id: str, name: str, intent_id: str = "") -> None:
    taken = select(Intent.id).where(
        Intent.workspace_id == workspace_id, Intent.name == name, Intent.id != intent_id
    )
    if db.scalar(taken):
        raise Conflict(f"an intent named {name!r} exists")


@router.get("/intents", response_model=list[IntentRead])
def list_intents(principal: CurrentMember, db: Db) -> list[IntentRead]:
    rows = db.scalars(
        select(Intent).where(Intent.workspace_id == principal.workspace_id).order_by(Intent.name)
    )
    return [_read(db, r) for r in rows]


@router.post("/intents", response_model=IntentRead, status_code=201)
def create_intent(body: IntentIn, principal: CurrentAdmin, request: Request, db: Db) -> IntentRead:
    """An intent with its reply (a sandboxed template) and example phrasings."""
    _check_reply(body.reply)
    _check_integration(db, principal.workspace_id, body.integration_id)
    _check_intent_name(db, principal.workspace_id, body.name)
    intent = Intent(
        workspace_id=principal.workspace_id,
        name=body.name,
        reply=body.reply,
        integration_id=body.integration_id,
    )
    db.add(intent)
    db.flush()
    for text in body.examples:
        if text.strip():
            db.add(
                IntentExample(
                    workspace_id=principal.workspace_id, intent_id=intent.id, text=text.strip()
                )
            )
    db.flush()
    _retrain(db, principal.workspace_id)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="bot.intent.create",
        target_type="intent",
        target_id=intent.id,
    )
    return _read(db, intent)


@router.patch("/intents/{intent_id}", response_model=IntentRead)
def update_intent(
    intent_id: str, body: IntentUpdate, principal: CurrentAdmin, db: Db
) -> IntentRead:
    """Change what is sent of an intent's name, reply and integration; the rest stays."""
    intent = _intent(db, principal.workspace_id, intent_id)
    sent = body.model_fields_set
    if "name" in sent:
        if body.name is None:
            raise Invalid("an intent needs a name")
        _check_intent_name(db, principal.workspace_id, body.name, intent_id=intent.id)
        intent.name = body.name
    if "reply" in sent:
        _check_reply(body.reply or "")
        intent.reply = body.reply or ""
    if "integration_id" in sent:
        _check_integration(db, principal.workspace_id, body.integration_id)
        intent.integration_id = body.integration_id
    _retrain(db, principal.workspace_id)
    return _read(db, intent)


@router.delete("/intents/{intent_id}", status_code=204)
def delete_intent(intent_id: str, principal: CurrentAdmin, db: Db) -> Response:
    db.delete(_intent(db, principal.workspace_id, intent_id))
    _retrain(db, principal.workspace_id)
    return Response(status_code=204)


@router.post("/intents/{intent_id}/examples", response_model=IntentRead, status_code=201)
def add_example(intent_id: str, body: ExampleIn, principal: CurrentAgent, db: Db) -> IntentRead:
    """Add a phrasing, typed or taken from a customer's message (agents label from real
    conversations)."""
    intent = _intent(db, principal.workspace_id, intent_id)
    text = (body.text or "").strip()
    if body.message_id:
        message = db.scalar(
            select(Message).where(
                Message.id == body.message_id, Message.workspace_id == principal.workspace_id
            )
        )
        if message is None:
            raise NotFound("message")
        text = message.text.strip()[:1000]
    if not text:
        raise Invalid("give the example's text or a message_id")
    db.add(
        IntentExample(
            workspace_id=principal.workspace_id,
            intent_id=intent.id,
            text=text,
            message_id=body.message_id,
        )
    )
    db.flush()
    _retrain(db, principal.workspace_id)
    return _read(db, intent)


@router.post("/train", status_code=200)
def train_now(principal: CurrentAdmin, request: Request) -> dict[str, int]:
    """Retrain the intent classifier now (it also retrains after every change)."""
    database, box = request.app.state.database, request.app.state.box
    return {"examples": service.train(database, workspace_id=principal.workspace_id, box=box)}


@router.get("/integrations", response_model=list[IntegrationRead])
def list_integrations(principal: CurrentAdmin, db: Db) -> list[IntegrationRead]:
    rows = db.scalars(select(Integration).where(Integration.workspace_id == principal.workspace_id))
    return [IntegrationRead.model_validate(r) for r in rows]


@router.post("/integrations", response_model=IntegrationRead, status_code=201)
def create_integration(
    body: IntegrationIn, principal: CurrentAdmin, request: Request, db: Db
) -> IntegrationRead:
    """An HTTP lookup an intent can answer from; requests carry
    ``X-Rapport-Signature: v1=HMAC-SHA256(secret, "timestamp.url")``."""
    templating.check(body.url)
    # The host as typed; what a template puts in it is checked before each call.
    outbound.check_saved(body.url, allow_private=request.app.state.settings.outbound_private_ok)
    taken = select(Integration.id).where(
        Integration.workspace_id == principal.workspace_id, Integration.name == body.name
    )
    if db.scalar(taken):
        raise Conflict(f"an integration named {body.name!r} exists")
    secret = random_token("whsec_", 24)
    row = Integration(
        workspace_id=principal.workspace_id,
        name=body.name,
        url=body.url,
        timeout_seconds=body.timeout_seconds,
        secret_encrypted=request.app.state.box.encrypt(secret),
    )
    db.add(row)
    db.flush()
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="bot.integration.create",
        target_type="integration",
        target_id=row.id,
    )
    return IntegrationRead.model_validate(row).model_copy(update={"secret": secret})


@router.delete("/integrations/{integration_id}", status_code=204)
def delete_integration(integration_id: str, principal: CurrentAdmin, db: Db) -> Response:
    row = db.scalar(
        select(Integration).where(
            Integration.id == integration_id, Integration.workspace_id == principal.workspace_id
        )
    )
    if row is None:
        raise NotFound("integration")
    db.delete(row)
    return Response(status_code=204)


@router.put("/inboxes/{inbox_id}", response_model=BotSettings)
def configure_inbox(
    inbox_id: str, body: BotSettings, principal: CurrentAdmin, request: Request, db: Db
) -> BotSettings:
    """Put the bot in front of an inbox (or take it away)."""
    inbox = db.scalar(
        select(Inbox).where(Inbox.id == inbox_id, Inbox.workspace_id == principal.workspace_id)
    )
    if inbox is None:
        raise NotFound("inbox")
    if body.handover_team_id is not None:
        get_scoped(
            db, Team, body.handover_team_id, workspace_id=principal.workspace_id, name="team"
        )
    was_on = service.enabled(inbox)
    settings: dict[str, Any] = dict(inbox.settings or {})
    settings["bot"] = body.model_dump()
    inbox.settings = settings
    if body.enabled and not was_on:
        service.switched_on(db, inbox=inbox)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="bot.configure",
        target_type="inbox",
        target_id=inbox.id,
        data={"enabled": body.enabled},
    )
    return body


@router.get("/inboxes/{inbox_id}", response_model=BotSettings)
def inbox_settings(inbox_id: str, principal: CurrentMember, db: Db) -> BotSettings:
    inbox = db.scalar(
        select(Inbox).where(Inbox.id == inbox_id, Inbox.workspace_id == principal.workspace_id)
    )
    if inbox is None:
        raise NotFound("inbox")
    return BotSettings(**service.settings_of(inbox))


@router.get("/unanswered", response_model=list[UnansweredRead])
def unanswered(
    principal: CurrentMember, db: Db, limit: int = Query(default=50, ge=1, le=200)
) -> list[UnansweredRead]:
    """Questions the bot handed over for want of an answer: what the knowledge base lacks."""
    rows = db.scalars(
        select(UnansweredQuestion)
        .where(UnansweredQuestion.workspace_id == principal.workspace_id)
        .order_by(UnansweredQuestion.created_at.desc())
        .limit(limit)
    )
    return [UnansweredRead.model_validate(r) for r in rows]
