"""Auth API shapes."""

import unicodedata
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from rapport.auth.models import Role

# Never in a name: control characters (a newline would forge a line in an email or a log),
# lone surrogates (PostgreSQL refuses them), line and paragraph separators, and the
# bidirectional overrides and isolates that make a name read as another.
_NOT_IN_NAMES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unreadable(ch: str) -> bool:
    return ch in _BIDI_CONTROLS or unicodedata.category(ch) in _NOT_IN_NAMES


def printable_name(name: str) -> str:
    """``name`` without what a name must not hold (above), for a name someone typed where
    nobody can be asked again (a chat visitor's): kept, less those characters."""
    return " ".join("".join(" " if _unreadable(ch) else ch for ch in name).split())


def _printable(name: str) -> str:
    for ch in name:
        if _unreadable(ch):
            raise ValueError("name must not contain control characters")
    return name


# A member's name as others see it: trimmed, 1 to 100 characters.
MemberName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_printable),
]


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


# A name that may be left for later (an invitation's, chosen on accepting): blank or null is
# none, any other follows MemberName's rule.
OptionalMemberName = Annotated[MemberName | None, BeforeValidator(_blank_is_none)]


class ResetRequestIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)


class ResetConfirmIn(BaseModel):
    token: str = Field(min_length=10, max_length=200)
    password: str = Field(max_length=1000)


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)
    workspace: str | None = None
    totp_code: str | None = Field(default=None, max_length=32)


class CodeIn(BaseModel):
    code: str = Field(min_length=6, max_length=32)


class TotpActivateIn(CodeIn):
    # The account's password, asked again: a browser left signed in (or a cookie stolen)
    # must not bind the account's sign-in to a key of someone else's.
    password: str = Field(max_length=1000)


class MeRead(BaseModel):
    user_id: str
    email: str
    name: str
    workspace_id: str
    role: Role
    via: str
    totp_enabled: bool
    mfa_passed: bool
    csrf_token: str | None


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: MemberName


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000)
    # Asked of an account with two-factor authentication, as its login asks.
    totp_code: str | None = Field(default=None, max_length=32)


class LoginOut(MeRead):
    mfa_required: bool


class TotpEnrollOut(BaseModel):
    secret: str
    otpauth_uri: str
    # The URI as a QR code (an SVG image as a data: URI) for the authenticator app to scan.
    qr_code: str


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class TokenCreate(BaseModel):
    name: str = Field(default="", max_length=200)
    role: Role = Role.agent


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str
