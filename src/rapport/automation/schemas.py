"""Automation API shapes."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from rapport.db import JsonObject


class RuleIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    event: str
    conditions: list[JsonObject] = Field(default_factory=list, max_length=50)
    actions: list[JsonObject] = Field(min_length=1, max_length=20)
    position: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    stop_processing: bool = False
    enabled: bool = True


class RuleRead(RuleIn):
    model_config = ConfigDict(from_attributes=True)

    id: str
    position: int  # as stored: a rule saved before the input bound may lie beyond it
    last_error: str | None = Field(
        default=None,
        description="why its actions last failed to run, or which of them were skipped and why "
        "(what they name has gone: an agent removed, a team deleted); none once all ran",
    )
    last_error_at: datetime | None = None


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000)
    events: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Event types delivered as they happen (conversation.created, "
        "message.received, ...); empty: the webhook is only called by rules' send_webhook.",
    )


class WebhookUpdate(BaseModel):
    """What to change; fields left out stay as they are."""

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    events: list[str] | None = Field(default=None, max_length=20)
    enabled: bool | None = None


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime


class WebhookCreated(WebhookRead):
    secret: str


class DeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    event: str
    status: str
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    delivered_at: datetime | None
