"""Inbox and API-channel shapes."""

import base64
import binascii
import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rapport.conversations.files import MAX_UPLOAD_BYTES
from rapport.conversations.schemas import MessageRead
from rapport.db import JsonObject, Name


class InboxCreate(BaseModel):
    name: Name = Field(max_length=200)
    channel: str = Field(min_length=1, max_length=32)
    settings: JsonObject = Field(default_factory=dict)
    team_id: str | None = None
    auto_assign: bool = False


class InboxUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    name: Name | None = Field(default=None, max_length=200)
    settings: JsonObject | None = Field(
        default=None, description="merged into the inbox's; a setting given as null is removed"
    )
    team_id: str | None = Field(
        default=None, description="null clears it: the inbox's conversations go to no team"
    )
    auto_assign: bool | None = None
    enabled: bool | None = None


class SettingRead(BaseModel):
    """One setting a channel's inboxes take (see ``channels.base.Setting``)."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    label: str
    kind: str
    help: str
    needed: bool
    secret: bool
    choices: list[str]
    default: str | int | bool | None
    low: int | None
    high: int | None


class ChannelRead(BaseModel):
    name: str
    settings: list[SettingRead]


class InboxRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    channel: str
    settings: dict[str, Any]
    # Names of the credentials that are set; their values are never sent back.
    secrets_set: list[str] = Field(default_factory=list)
    # Settings it cannot take in or send messages without that are not set.
    missing: list[str] = Field(default_factory=list)
    public_token: str
    team_id: str | None
    auto_assign: bool
    enabled: bool
    created_at: datetime


class Sender(BaseModel):
    name: str = Field(default="", max_length=300)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=300)

    @model_validator(mode="after")
    def _one_handle(self) -> "Sender":
        if not (self.email or self.phone or self.external_id):
            raise ValueError("from needs at least one of email, phone or external_id")
        return self


class AttachmentIn(BaseModel):
    filename: str = Field(min_length=1, max_length=500)
    content_type: str = Field(default="application/octet-stream", max_length=200)
    data_base64: str

    @field_validator("data_base64")
    @classmethod
    def _decodes(cls, v: str) -> str:
        try:
            data = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("data_base64 is not valid base64") from exc
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValueError(f"a file is at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        return v


class InboundIn(BaseModel):
    """A message posted by an outside system into an API inbox."""

    external_id: str | None = Field(default=None, max_length=300)
    text: str = Field(default="", max_length=100_000)
    html: str | None = Field(default=None, max_length=500_000)
    subject: str = Field(default="", max_length=500)
    sender: Sender = Field(alias="from")
    conversation_id: str | None = Field(default=None, max_length=32)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=20)
    sent_at: datetime | None = None

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _has_content(self) -> "InboundIn":
        if not (self.text or self.html or self.attachments):
            raise ValueError("a message needs text, html or an attachment")
        return self


class InboundOut(MessageRead):
    customer_id: str
    duplicate: bool


class HealthStatus(enum.StrEnum):
    """How an inbox is (``channels.health``), the worst first: switched off, missing a
    setting it needs, failing (nothing goes out, or nothing can come in), something to look
    at, or working."""

    disabled = "disabled"
    not_set_up = "not_set_up"
    failing = "failing"
    warning = "warning"
    ok = "ok"


class HealthReason(BaseModel):
    """One thing that makes an inbox less than ok, in words an admin acts on."""

    code: str = Field(
        description="stable: disabled, not_set_up, account_refused, sends_failing, "
        "login_refused, mailbox_unreachable, mailbox_error, mailbox_not_polled, "
        "send_failures, dead_jobs, unparsed, quiet"
    )
    level: HealthStatus = Field(description="the status this reason alone would give")
    detail: str


class LastFailure(BaseModel):
    at: datetime
    error: str = Field(description="why, without addresses or numbers (no message text)")


class ConnectionHealth(BaseModel):
    """A mailbox the inbox polls (IMAP): when it was last read, when and why it failed."""

    kind: Literal["imap"]
    reached_at: datetime | None = Field(description="the last poll that worked (to 5 minutes)")
    failed_at: datetime | None
    failing_since: datetime | None = Field(description="null while the polls work")
    error: str | None
    login_refused: bool


class InboxHealthRead(BaseModel):
    inbox_id: str
    name: str
    channel: str
    enabled: bool
    status: HealthStatus
    reasons: list[HealthReason]
    last_received_at: datetime | None = Field(
        description="a customer's last message, by its conversations' times"
    )
    last_sent_at: datetime | None = Field(
        description="the last reply the provider took, to the minute"
    )
    failures_24h: int = Field(description="replies that failed in the last 24 hours")
    failures_in_row: int = Field(
        description="replies refused at their send since the last that went out"
    )
    last_failure: LastFailure | None
    dead_jobs: int = Field(description="dead-lettered jobs of its messages, waiting for a retry")
    dead_jobs_24h: int
    unparsed_24h: int = Field(description="webhook calls of the last 24 hours not read")
    connection: ConnectionHealth | None
    checked_at: datetime


class InboxHealthList(BaseModel):
    items: list[InboxHealthRead]
