"""The ``@job`` registry: a name for each kind of background work and the function doing it."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rapport.config import Settings
from rapport.db import Database


class PermanentError(Exception):
    """Raised by a job that will never succeed: it is dead-lettered at once, not retried."""


@dataclass(frozen=True)
class JobContext:
    """What a handler gets besides its arguments.

    Handlers open their own short transactions (``ctx.database.session()``) so that slow
    work, such as a provider's HTTP call, never holds a database lock; they must be
    idempotent, since a job may run again after a crash (at-least-once).
    """

    database: Database
    settings: Settings
    job_id: str
    attempt: int
    workspace_id: str | None


Handler = Callable[..., None]


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: Handler
    max_attempts: int | None


_REGISTRY: dict[str, JobSpec] = {}

# Domain modules that define jobs; importing them registers their handlers.
HANDLER_MODULES = (
    "rapport.conversations.jobs",
    "rapport.channels.deliver",
    "rapport.jobs.periodic",
    "rapport.automation.jobs",
    "rapport.channels.email.imap",
    "rapport.customers.duplicates",
    "rapport.assistant.training",
    "rapport.kb.service",
    "rapport.bot.service",
    "rapport.channels.media",
    "rapport.auth.reset",
    "rapport.privacy.erasure",
)


def job(name: str, *, max_attempts: int | None = None) -> Callable[[Handler], Handler]:
    """Register ``fn(ctx, **args)`` as the handler of jobs called ``name``."""

    def register(fn: Handler) -> Handler:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise RuntimeError(f"job {name!r} is registered twice")
        _REGISTRY[name] = JobSpec(name=name, fn=fn, max_attempts=max_attempts)
        return fn

    return register


def get(name: str) -> JobSpec | None:
    return _REGISTRY.get(name)


def load_handlers(extra: tuple[str, ...] = ()) -> None:
    for module in (*HANDLER_MODULES, *extra):
        importlib.import_module(module)


def registered() -> dict[str, Any]:
    return dict(_REGISTRY)
