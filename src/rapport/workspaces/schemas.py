"""Workspace, member and team shapes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rapport.auth.models import Role
from rapport.auth.schemas import OptionalMemberName
from rapport.db import JsonObject, Name


class WorkspaceRead(BaseModel):
    id: str
    name: str
    settings: dict[str, Any]
    created_at: datetime


class WorkspaceUpdate(BaseModel):
    settings: JsonObject


class MemberRead(BaseModel):
    user_id: str
    email: str
    name: str
    role: Role
    capacity: int
    totp_enabled: bool
    availability: str
    online: bool
    # What others see: the availability while the member's browser is seen, else offline.
    presence: str


class PresenceIn(BaseModel):
    """A heartbeat; fields left out (or null) stay as they are."""

    availability: str | None = Field(default=None, description="online / busy / offline")


class MemberCreate(BaseModel):
    """An invitation: the person joins once they accept the emailed link, choosing their own
    password (no ``password`` here: an admin never sets or learns it)."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    # As a member's own name is: printable, at most 100 characters.
    name: OptionalMemberName = None
    role: Role = Role.agent


class InvitationRead(BaseModel):
    id: str
    email: str
    name: str
    role: Role
    invited_by_id: str | None
    created_at: datetime
    expires_at: datetime
    expired: bool


class InvitationToken(BaseModel):
    token: str = Field(min_length=1, max_length=200)


class InvitationPreview(BaseModel):
    workspace: str
    email: str
    role: Role
    expires_at: datetime
    # Whether the address has an account: told only to whoever holds the emailed link.
    account_exists: bool


class InvitationAccept(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)
    # For a new account; the invitation's name when blank.
    name: OptionalMemberName = None


class InvitationAccepted(BaseModel):
    workspace_id: str
    workspace: str
    email: str
    role: Role
    account_created: bool


class MemberUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    role: Role | None = None
    capacity: int | None = Field(default=None, ge=0, le=1000)


class TeamCreate(BaseModel):
    name: Name = Field(max_length=200)
    # Bounded: they go into one query, and PostgreSQL takes 65,535 parameters at most.
    member_ids: list[str] = Field(default_factory=list, max_length=1_000)


class TeamUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    name: Name | None = Field(default=None, max_length=200)
    member_ids: list[str] | None = Field(default=None, max_length=1_000)


class TeamRead(BaseModel):
    id: str
    name: str
    member_ids: list[str]


# The pages that have saved views (saved_views.KEYS).
SavedViewPage = Literal["inbox", "customers"]
_QUERY_SAID = (
    'The page\'s query string, with or without its "?" (`view=all&status=pending`), at '
    "most 2,000 characters. Stored in canonical form: the page's filters in its order, "
    "values trimmed, blanks and defaults (the inbox's `status=open`, `sort=newest`) left "
    "out. An unknown or repeated filter, `cursor`, or a value the page does not take is a "
    "422 problem naming it; an `inbox_id` or `team_id` not of this workspace, a 404. The "
    "inbox takes view, status, inbox_id, team_id, label, channel, priority, sla_state, "
    "active_from, active_until, sort; the customers list q, tag, and attr with value."
)


class SavedViewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: SavedViewPage
    name: Name = Field(max_length=80)
    query: str = Field(max_length=2_000, description=_QUERY_SAID)
    shared: bool = Field(
        default=False,
        description="`true`: every member of the workspace sees it (admins and owners share "
        "views); `false`: yours alone",
    )
    position: int = Field(
        default=0, ge=-1_000_000, le=1_000_000, description="order in the sidebar, then name"
    )


class SavedViewUpdate(BaseModel):
    """What to change; fields left out (or null) stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = Field(default=None, max_length=80)
    query: str | None = Field(default=None, max_length=2_000, description=_QUERY_SAID)
    position: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)


class SavedViewCounts(BaseModel):
    counts: dict[str, int | None] = Field(
        description="each inbox view you see, by id: how many conversations it lists for you "
        "(Mine is yours), up to ``limit``; null where counting would read too many rows (a "
        "view whose filters few conversations meet together). Up to 5 seconds old"
    )
    limit: int = Field(
        description="where counting stops: a count equal to it means that many or more"
    )


class SavedViewRead(BaseModel):
    id: str
    page: SavedViewPage
    name: str
    query: str = Field(description='canonical, without "?"; empty: the page as it opens')
    shared: bool = Field(description="seen by every member of the workspace")
    position: int
    mine: bool = Field(
        description="whether you may change or delete it: your own, or a shared one and you "
        "are an admin or owner"
    )
    created_at: datetime
    updated_at: datetime


class TotpResetIn(BaseModel):
    # The acting owner's or admin's own password, asked again: a browser left signed in
    # (or a stolen cookie) must not open another member's account to a password alone.
    password: str = Field(max_length=1000)
