"""Automation API shapes."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rapport.db import JsonObject, Name


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
    """What to change; fields left out (or null) stay as they are."""

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


# An action as a macro holds it, type and value, checked by the service against the
# workspace (as a rule's): ``actions[i].value`` names the one that is wrong.
MacroActions = list[JsonObject]
_ACTIONS_SAID = (
    "In order, each {type, value}: assign_agent (a member's user id, or `me`: whoever runs "
    "it), assign_team, add_label, remove_label, set_priority, set_status (open, pending, "
    "resolved), send_canned (a canned response's id), send_message (the text, a template), "
    "add_note (the text, a template)."
)


class MacroIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(max_length=120)
    actions: MacroActions = Field(min_length=1, max_length=20, description=_ACTIONS_SAID)
    visibility: Literal["workspace", "personal"] = Field(
        default="workspace",
        description="`workspace`: every member sees and runs it (admins and owners make "
        "these); `personal`: only its creator",
    )


class MacroUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = Field(default=None, max_length=120)
    actions: MacroActions | None = Field(
        default=None, min_length=1, max_length=20, description=_ACTIONS_SAID
    )
    visibility: Literal["workspace", "personal"] | None = None


class MacroRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    actions: list[JsonObject]
    visibility: Literal["workspace", "personal"]
    created_by: str | None = Field(
        description="its creator (a personal macro's owner); null once they were deleted"
    )
    created_at: datetime
    updated_at: datetime


class SkippedAction(BaseModel):
    """One of a macro's actions left out of a run: what it names has gone since it was
    saved (a team deleted, a member removed or made a viewer). Its other actions ran."""

    model_config = ConfigDict(from_attributes=True)

    index: int = Field(description="its position in the macro's actions, from 0")
    type: str
    reason: str
