"""Customer API shapes."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rapport.customers.models import (
    AttributeType,
    ConsentChannel,
    IdentityKind,
    SuggestionStatus,
)
from rapport.db import JsonObject, UtcInstant


class IdentityIn(BaseModel):
    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320)
    verified: bool = False


class IdentityRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: IdentityKind
    value: str
    verified: bool
    # A Messenger or Instagram id's page: the inbox that issued it (None where unknown, and
    # for every other kind); replies reach it only through that inbox.
    inbox_id: str | None = None
    created_at: datetime


class CustomerCreate(BaseModel):
    name: str = Field(default="", max_length=300)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=64)
    attributes: JsonObject = Field(default_factory=dict)
    # A person has a handful of handles; each is looked up on its own.
    identities: list[IdentityIn] = Field(default_factory=list, max_length=100)


class CustomerUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    name: str | None = Field(default=None, max_length=300)
    attributes: JsonObject | None = Field(
        default=None,
        description="merged into the customer's; an attribute given as null is removed",
    )


class CustomerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    email: str | None
    phone: str | None
    attributes: dict[str, Any]
    merged_into_id: str | None = None
    first_seen_at: datetime
    last_seen_at: datetime
    created_at: datetime


class CustomerDetail(CustomerRead):
    identities: list[IdentityRead]


class CustomerPage(BaseModel):
    items: list[CustomerRead]
    next_cursor: str | None
    # The words matched more customers than a search pages through (1,000): refine them.
    truncated: bool = False


class TimelineEntry(BaseModel):
    kind: str  # message / event / order / merge
    id: str
    at: datetime
    channel: str | None = None
    conversation_id: str | None = None
    type: str
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class TimelinePage(BaseModel):
    items: list[TimelineEntry]
    next_cursor: str | None


class EventCreate(BaseModel):
    type: str = Field(min_length=1, max_length=200)
    properties: JsonObject = Field(default_factory=dict)
    occurred_at: UtcInstant | None = None
    source: str = Field(default="api", max_length=64)


class MergeIn(BaseModel):
    merged_id: str = Field(min_length=1, max_length=32)
    reason: str = Field(default="", max_length=500)
    take: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list,
        max_length=200,
        description="fields where the two hold different values (`GET .../merge-preview`) "
        "whose value comes from the merged customer: `name`, `email`, `phone`, "
        "`attributes.<key>`; every other field keeps the survivor's",
    )


class MergeConflict(BaseModel):
    field: str = Field(description="`name`, `email`, `phone` or `attributes.<key>`")
    survivor: Any
    merged: Any


class MergePreview(BaseModel):
    conflicts: list[MergeConflict] = Field(
        description="where both hold a value and they differ: a merge keeps the "
        "survivor's unless told to `take` the other's"
    )


class MergeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    survivor_id: str
    merged_id: str
    reason: str
    moved: dict[str, Any]
    created_at: datetime
    undone_at: datetime | None


class SuggestionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    left_id: str
    right_id: str
    probability: float
    reason: str
    status: SuggestionStatus
    merge_id: str | None
    created_at: datetime
    decided_at: datetime | None


class SuggestionAccept(BaseModel):
    # Which of the two customers survives; by default the one seen first.
    survivor_id: str | None = Field(default=None, max_length=32)
    take: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=200, description="as `take` in a merge"
    )


class ScanQueued(BaseModel):
    queued: bool


class AttributeDefinitionIn(BaseModel):
    key: str = Field(min_length=1, max_length=64)
    type: AttributeType
    label: str = Field(default="", max_length=200)
    options: list[str] = Field(default_factory=list, max_length=200)


class AttributeDefinitionChange(BaseModel):
    """What a definition's PATCH changes: the fields given (fields left out (or null) stay as
    they are). Its key and type are fixed once defined (values already stored were checked
    against them), so a body naming either is refused: define a new attribute instead."""

    # Any other field refused too: a misspelt one would otherwise change nothing, quietly.
    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=200)
    options: list[str] | None = Field(default=None, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _key_and_type_are_fixed(cls, data: Any) -> Any:
        fixed = sorted({"key", "type"} & set(data)) if isinstance(data, dict) else []
        if fixed:
            raise ValueError(
                f"an attribute's {' and '.join(fixed)} cannot change once defined: "
                "define a new attribute instead"
            )
        return data


class AttributeDefinitionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    key: str
    label: str
    type: AttributeType
    options: list[str]
    created_at: datetime


class TagsIn(BaseModel):
    tags: list[str] = Field(max_length=100)


class TagChanges(BaseModel):
    add: list[str] = Field(default_factory=list, max_length=100)
    remove: list[str] = Field(default_factory=list, max_length=100)


class BulkTagChanges(TagChanges):
    """The same tags added and removed on each of several customers (a page of them)."""

    customer_ids: list[str] = Field(min_length=1, max_length=100)


class ConsentIn(BaseModel):
    channel: ConsentChannel
    purpose: str = Field(min_length=1, max_length=64, examples=["marketing"])
    granted: bool
    source: str = Field(default="", max_length=200, examples=["web form /pricing"])


class ConsentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    channel: ConsentChannel
    purpose: str
    granted: bool
    source: str
    recorded_by_user_id: str | None
    recorded_at: datetime


class ConsentState(BaseModel):
    current: list[ConsentRead]
    history: list[ConsentRead]


class ProfileFigures(BaseModel):
    first_seen_at: datetime
    last_seen_at: datetime
    channels: list[str]
    conversations: int
    orders: int
    total_spend_minor: dict[str, int] = Field(
        description="Completed orders' totals per ISO 4217 currency, never summed across "
        "currencies, in the currency's minor units (its ISO 4217 decimals: 1500 JPY is "
        "1500, 12.34 EUR is 1234, 1.234 KWD is 1234), exact at any size."
    )
    # For JavaScript, whose JSON numbers round past 2**53.
    total_spend: dict[str, str] = Field(
        description="The same totals as exact decimal text in each currency's decimals: "
        '{"EUR": "1234.50", "JPY": "1500", "KWD": "1.234"}.'
    )
    average_csat: float | None


class CustomerProfile(CustomerDetail):
    tags: list[str]
    consents: list[ConsentRead]
    figures: ProfileFigures
    attribute_definitions: list[AttributeDefinitionRead]


class CustomerNoteIn(BaseModel):
    text: str = Field(max_length=20_000, description="plain text, at most 10,000 characters")


class CustomerNoteChange(CustomerNoteIn):
    updated_at: UtcInstant | None = Field(
        default=None,
        description="the note's updated_at as the editor read it: given, a change a colleague "
        "made since refuses this one (409) instead of losing theirs; null (or left out) skips "
        "that check",
    )


class CustomerNoteRead(BaseModel):
    """A note about the customer; ``author_name`` is empty once its author's account is gone."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    customer_id: str
    author_id: str | None
    author_name: str = ""
    text: str
    created_at: datetime
    updated_at: datetime
