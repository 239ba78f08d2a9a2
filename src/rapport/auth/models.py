"""Users, memberships, teams, API tokens and browser sessions."""

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Role(enum.StrEnum):
    viewer = "viewer"
    agent = "agent"
    admin = "admin"
    owner = "owner"

    @property
    def rank(self) -> int:
        return ROLE_RANK[self]


ROLE_RANK = {Role.viewer: 0, Role.agent: 1, Role.admin: 2, Role.owner: 3}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    # Encrypted with the settings' key; set at enrolment, trusted once totp_enabled.
    totp_secret: Mapped[str | None] = mapped_column(String(400), default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The 30-second step of the last code accepted: that one and earlier ones never again.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # argon2 hashes of unused one-time recovery codes.
    recovery_codes: Mapped[list[str]] = mapped_column(default=list)
    # Wrong passwords and codes since the last sign-in, forgotten once none came for the
    # lock-out's length (``last_failed_at``: a count older is no guess in progress).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    # Sessions created before this instant are void: "sign out everywhere".
    sessions_valid_after: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    # How many open conversations routing may give this agent.
    capacity: Mapped[int] = mapped_column(Integer, default=20)
    # online / busy / offline, as the agent set it; "online" also needs a recent heartbeat.
    availability: Mapped[str] = mapped_column(String(16), default="offline")
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)
    # The presence last announced to the workspace (member.updated): a change the member's
    # requests did not announce (a closed browser timing out) is found against it.
    presence_shown: Mapped[str] = mapped_column(
        String(16), default="offline", server_default="offline"
    )
    # When this member was last given a conversation: routing's round-robin order (kept
    # here, so picking an agent reads the members, not every conversation ever assigned).
    last_assigned_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamMember(Base):
    __tablename__ = "team_members"

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    # SHA-256 of the token: tokens are long random strings, so a fast hash is enough.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # A token acts with at most this role (and never above its member's current role).
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuthSession(Base):
    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    # False between password and second factor: such a session can only finish the login.
    mfa_passed: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Invitation(Base):
    """An emailed invitation to join a workspace with a role. Only the link token's hash is
    kept; the membership exists only once the invitee accepts, and the row goes with it."""

    __tablename__ = "invitations"
    __table_args__ = (UniqueConstraint("workspace_id", "email"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    # The name the admin knows them by, offered when they create their account.
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PasswordReset(Base):
    """A single-use password reset link: only the token's hash is kept, and it expires."""

    __tablename__ = "password_resets"
    __table_args__ = (Index("ix_password_resets_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    """Wrong passwords sent for an address that has no account, counted and locked exactly
    as an account's are (``User.failed_logins``, ``User.locked_until``), so that the
    lock-out never tells which addresses have an account. Keyed by a hash of the address:
    which addresses were guessed at is not kept in the clear. A row whose count has
    lapsed and whose lock has ended is deleted (``service.prune_login_failures``)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_last_failed_at", "last_failed_at"),)

    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime | None] = mapped_column(default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
