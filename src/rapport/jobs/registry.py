"""The ``@job`` registry: a name for each kind of background work and the function doing it."""

import enum
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.config import Settings
from rapport.db import Database, lock_row
from rapport.jobs.models import Job, JobState


class PermanentError(Exception):
    """Raised by a job that will never succeed: it is dead-lettered at once, not retried."""


class Later(enum.StrEnum):
    """Why a job's turn has not come, as the worker logs it at INFO: Rapport's own words
    from this list, never a text a provider or a customer wrote."""

    sending_rate = "the inbox's sending rate reached"


class RetryLater(Exception):
    """Raised by a job whose turn has not come (a provider's sending rate): it runs again
    after ``seconds``, and the run that raised it is not counted as one of its attempts."""

    def __init__(self, reason: Later, *, seconds: float) -> None:
        self.reason = Later(reason)  # any other text is refused here, not logged
        super().__init__(self.reason.value)
        self.seconds = seconds


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
    # This job's own limit (``enqueue``'s), after which a failure dead-letters it.
    max_attempts: int
    # The worker running this attempt ("" when a handler is called by hand).
    worker_id: str = ""

    def holds(self, db: Session) -> bool:
        """Whether this attempt still holds its job, asked with the job's row held until
        ``db``'s transaction ends. A handler writes what came of its work only if so: a
        worker paused past its lease (a long GC, a stopped VM) and come back must not undo
        what the worker that reclaimed the job has done meanwhile."""
        if not self.worker_id:
            return True
        lock_row(db, Job, self.job_id)
        held = db.execute(
            select(Job.id).where(
                Job.id == self.job_id,
                Job.locked_by == self.worker_id,
                Job.state == JobState.running,
            )
        ).first()
        return held is not None


Handler = Callable[..., None]
# Called with the worker's session, in the transaction that dead-letters the job (its last
# attempt failed, or its lease ran out on every one), with the job as claimed and why.
DeadHook = Callable[[Session, Job, str], None]
# Called in the transaction that puts a dead-lettered job back in the queue (an admin's
# retry), with the job: it undoes what ``on_dead`` settled, so the job has work to do again.
RetryHook = Callable[[Session, Job], None]


@dataclass(frozen=True)
class JobSpec:
    name: str
    fn: Handler
    max_attempts: int | None
    on_dead: DeadHook | None = None
    on_retry: RetryHook | None = None
    # False for a job whose arguments quote what a provider sent (a report on a message):
    # its row goes once it has run, instead of a week kept done, out of an erasure's reach.
    keep_done: bool = True


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
    "rapport.auth.service",
    "rapport.auth.account",
    "rapport.workspaces.invitations",
    "rapport.privacy.erasure",
)


def job(
    name: str,
    *,
    max_attempts: int | None = None,
    on_dead: DeadHook | None = None,
    on_retry: RetryHook | None = None,
    keep_done: bool = True,
) -> Callable[[Handler], Handler]:
    """Register ``fn(ctx, **args)`` as the handler of jobs called ``name``; ``on_dead``
    settles what such a job leaves behind if it is dead-lettered, however that comes, and
    ``on_retry`` undoes that when it is retried; without ``keep_done`` its row is deleted
    once it has run, not kept as done."""

    def register(fn: Handler) -> Handler:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise RuntimeError(f"job {name!r} is registered twice")
        _REGISTRY[name] = JobSpec(
            name=name,
            fn=fn,
            max_attempts=max_attempts,
            on_dead=on_dead,
            on_retry=on_retry,
            keep_done=keep_done,
        )
        return fn

    return register


def get(name: str) -> JobSpec | None:
    return _REGISTRY.get(name)


def load_handlers(extra: tuple[str, ...] = ()) -> None:
    for module in (*HANDLER_MODULES, *extra):
        importlib.import_module(module)


def registered() -> dict[str, Any]:
    return dict(_REGISTRY)
