"""Auth API shapes."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from rapport.auth.models import Role


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


class LoginOut(MeRead):
    mfa_required: bool


class TotpEnrollOut(BaseModel):
    secret: str
    otpauth_uri: str


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
