"""Typed settings, read from ``RAPPORT_*`` environment variables and ``*_FILE`` secrets."""

import contextlib
import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people paste from examples; a deployment that keeps one has no secret at all.
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "test", "rapport", "xxx"}
_DEMO_SECRET = "demo-mode-secret-key-not-for-production-use"  # noqa: S105 - refused outside demo


class Settings(BaseSettings):
    """Everything Rapport reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="RAPPORT_", extra="ignore")

    outbound_private_ok: bool = Field(
        default=False,
        description="Let webhooks and bot integrations call private, loopback and link-local "
        "addresses (services on your own network); off, such URLs are refused.",
    )
    demo: bool = Field(default=False, description="Demo mode: allows the built-in secret key.")
    database_url: str = Field(default="sqlite:///var/rapport.db")
    redis_url: str | None = None
    secret_key: SecretStr = SecretStr("")
    public_url: str = "http://127.0.0.1:8000"
    attachments_dir: Path = Path("var/attachments")
    log_level: str = "INFO"
    log_json: bool = True
    # A conversation resolved less than this long ago is reopened by a new inbound message.
    reopen_window_hours: int = 168
    session_days: int = 14
    login_max_failures: int = 10
    login_lockout_minutes: int = 15
    job_lease_seconds: int = 300
    # A dead-lettered job nobody retried is deleted this long after it died.
    dead_job_retention_days: int = Field(default=30, ge=1)
    worker_in_process: bool = True
    ingest_batch_max: int = 64
    ingest_process: bool = Field(
        default=True,
        description="Store inbound messages in a writer process of its own (a second core "
        "for the hot path); off, on a thread of the server. Always a thread for an "
        "in-memory database.",
    )
    # When set, `rapport serve` also receives email for the email inboxes on this port.
    smtp_port: int | None = None
    smtp_host: str = "127.0.0.1"
    # The listener is the domain's mail server, reached straight from senders' servers: it
    # checks SPF, DKIM and DMARC itself (behind another mail server, trust that server's
    # results instead: an inbox's trusted_authserv_ids).
    smtp_check_senders: bool = False
    # Rapport's own mail (password resets), sent through this relay; unset: none is sent.
    mail_smtp_host: str | None = None
    mail_smtp_port: int = 587
    mail_smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    mail_smtp_username: str | None = None
    mail_smtp_password: SecretStr | None = None
    mail_from: str = "Rapport <no-reply@localhost>"
    password_reset_minutes: int = 30
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="The proxies `rapport serve` believes X-Forwarded-For and "
        "X-Forwarded-Proto from: a comma-separated list of addresses and networks "
        "(10.0.0.0/8,192.168.1.5), or * for any.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Read ``RAPPORT_X_FILE`` into ``x`` when ``RAPPORT_X`` itself is not given."""
        if not isinstance(data, dict):
            return data
        for name in (
            "secret_key",
            "database_url",
            "redis_url",
            "mail_smtp_password",
            "forwarded_allow_ips",
        ):
            path = os.environ.get(f"RAPPORT_{name.upper()}_FILE")
            if path and not data.get(name) and not os.environ.get(f"RAPPORT_{name.upper()}"):
                data[name] = Path(path).read_text().strip()
        # uvicorn's own name, which `rapport serve` read before this setting: a deployment
        # that set it keeps believing its proxies (falling back to 127.0.0.1 would make the
        # balancer every client's address, and one client's spent budget everyone's).
        plain = os.environ.get("FORWARDED_ALLOW_IPS")
        if plain and not data.get("forwarded_allow_ips"):
            data["forwarded_allow_ips"] = plain
        return data

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        """SQLite or PostgreSQL, as users write them; anything else is refused by name here
        rather than by a driver's import error later."""
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in (
            "sqlite",
            "sqlite+pysqlite",
            "postgresql",
            "postgres",
            "postgresql+psycopg",
        ):
            # Only the scheme is quoted: the rest may hold a password.
            shown = f"{scheme}://" if scheme else "a value without a scheme"
            raise ValueError(
                "RAPPORT_DATABASE_URL takes sqlite:///PATH or postgresql://USER@HOST/DB, "
                f"not {shown}"
            )
        return url

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        """Each entry an address or a network, or ``*`` alone: uvicorn takes anything else
        for a name no client ever has, and a mistyped proxy is silently not believed."""
        entries = [e.strip() for e in value.split(",") if e.strip()]
        if entries == ["*"]:
            return "*"
        for entry in entries:
            try:
                if "/" in entry:
                    ipaddress.ip_network(entry)
                else:
                    ipaddress.ip_address(entry)
            except ValueError:
                hint = ""
                with contextlib.suppress(ValueError):  # host bits set: the network meant
                    hint = f" (the network is {ipaddress.ip_network(entry, strict=False)})"
                shown = "* among others (it stands alone)" if entry == "*" else repr(entry)
                raise ValueError(
                    "RAPPORT_FORWARDED_ALLOW_IPS takes a comma-separated list of addresses "
                    f"and networks (10.0.0.0/8,192.168.1.5) or *, not {shown}{hint}"
                ) from None
        return ",".join(entries)

    @model_validator(mode="after")
    def _refuse_unsafe_secret(self) -> "Settings":
        secret = self.secret_key.get_secret_value()
        if self.demo and not secret:
            self.secret_key = SecretStr(_DEMO_SECRET)
            return self
        if secret.strip().lower() in _PLACEHOLDER_SECRETS or secret == _DEMO_SECRET:
            raise ValueError(
                "RAPPORT_SECRET_KEY is missing or a placeholder; set a random value of 32+ "
                "characters (or RAPPORT_SECRET_KEY_FILE), or run with RAPPORT_DEMO=1"
            )
        if len(secret) < 32:
            raise ValueError("RAPPORT_SECRET_KEY must be at least 32 characters long")
        return self

    @cached_property
    def secure_cookies(self) -> bool:
        """Cookies are marked Secure when the public URL is https."""
        return self.public_url.startswith("https://")


def sqlalchemy_url(url: str) -> str:
    """Turn the plain URL users write into one naming the driver Rapport uses."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+pysqlite://" + url.removeprefix("sqlite://")
    return url
