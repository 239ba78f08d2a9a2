"""Enqueue, claim and finish jobs. Claims are atomic: a second worker never gets the same job."""

import random
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, not_, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rapport import pagination
from rapport.db import new_id, on_commit, utcnow
from rapport.jobs import registry
from rapport.jobs.models import Job, JobState

# Set after a commit that enqueued work, so the in-process worker starts at once.
wakeup = threading.Event()


# Attempts before a job is dead-lettered, for a job whose ``@job`` names none.
DEFAULT_ATTEMPTS = 8


def enqueue(
    db: Session,
    *,
    name: str,
    args: dict[str, Any] | None = None,
    workspace_id: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Add a job to the caller's transaction: it runs only if that transaction commits.
    Its attempts: ``max_attempts``, else what its ``@job`` says, else ``DEFAULT_ATTEMPTS``."""
    spec = registry.get(name)
    row = Job(
        name=name,
        args=args or {},
        workspace_id=workspace_id,
        run_at=run_at or utcnow(),
        max_attempts=max_attempts or (spec and spec.max_attempts) or DEFAULT_ATTEMPTS,
    )
    db.add(row)
    on_commit(db, wakeup.set)
    return row


def enqueue_unique(db: Session, *, name: str, key: str, args: dict[str, Any] | None = None) -> bool:
    """Enqueue a job unless one with the same key was ever enqueued; True if this one was."""
    values = {
        "id": new_id(),
        "name": name,
        "unique_key": key,
        "args": args or {},
        "state": JobState.queued,
        "attempts": 0,
        "max_attempts": 3,
        "run_at": utcnow(),
        "created_at": utcnow(),
    }
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(Job)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["unique_key"])
        .returning(Job.id)
    )
    # RETURNING says whether a row went in; rowcount is not reliable across drivers here.
    created = db.execute(stmt).first() is not None
    if created:
        on_commit(db, wakeup.set)
    return created


def _claimable(now: datetime) -> Any:
    return or_(
        and_(Job.state == JobState.queued, Job.run_at <= now),
        # The worker holding it died or hung: its lease ran out.
        and_(Job.state == JobState.running, Job.locked_until < now),
    )


def claim(db: Session, *, worker_id: str, lease_seconds: int, limit: int = 1) -> list[Job]:
    """Claim up to ``limit`` due jobs for ``worker_id``; commit is the caller's."""
    now = utcnow()
    # SKIP LOCKED on PostgreSQL lets N workers claim side by side; SQLite ignores it and is
    # serialized by BEGIN IMMEDIATE instead. The UPDATE re-checks the condition either way.
    ids = list(
        db.scalars(
            select(Job.id)
            .where(_claimable(now))
            .order_by(Job.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    claimed = db.scalars(
        update(Job)
        .where(Job.id.in_(ids), _claimable(now))
        .values(
            state=JobState.running,
            locked_by=worker_id,
            locked_until=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
        )
        .returning(Job),
        execution_options={"synchronize_session": False},
    )
    return list(claimed)


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: about 2, 4, 8 ... seconds, at most an hour."""
    base: float = min(3600.0, 2.0**attempt)
    return base * (0.75 + random.random() / 2)  # noqa: S311 - jitter, not security


def extend(db: Session, *, job_id: str, worker_id: str, lease_seconds: int) -> bool:
    """Push a running job's lease forward while its worker is alive; False if it was lost."""
    result = db.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.state == JobState.running)
        .values(locked_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    return bool(getattr(result, "rowcount", 0))


def finish(db: Session, *, job_id: str, worker_id: str, keep: bool = True) -> bool:
    """Mark a job done (or, not ``keep``, delete it) if this worker still holds it. A done
    job keeps no error: an earlier attempt's (a provider refusing an address, quoted) is of
    no use once it succeeded, and would stay a week where an erasure does not look."""
    held = (Job.id == job_id, Job.locked_by == worker_id, Job.state == JobState.running)
    result = db.execute(
        update(Job)
        .where(*held)
        .values(state=JobState.done, finished_at=utcnow(), locked_until=None, last_error=None)
        if keep
        else delete(Job).where(*held)
    )
    return bool(getattr(result, "rowcount", 0))


def fail(
    db: Session, *, job: Job, worker_id: str, error: str, permanent: bool = False
) -> JobState | None:
    """Schedule a retry with backoff, or dead-letter the job when it is out of attempts;
    the state it is left in, or None if this worker no longer holds it (nothing changed)."""
    dead = permanent or job.attempts >= job.max_attempts
    state = JobState.dead if dead else JobState.queued
    values: dict[str, Any] = {"state": state, "last_error": error[:4000], "locked_until": None}
    if dead:
        values["finished_at"] = utcnow()
    else:
        values["run_at"] = utcnow() + timedelta(seconds=backoff_seconds(job.attempts))
    result = db.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == worker_id, Job.state == JobState.running)
        .values(**values)
    )
    return state if getattr(result, "rowcount", 0) else None


def postpone(db: Session, *, job_id: str, worker_id: str, run_at: datetime) -> bool:
    """Put a running job back in the queue until ``run_at``, this run not counted as one of
    its attempts (it waited for its turn; it did not fail); False if it was lost."""
    result = db.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id, Job.state == JobState.running)
        .values(state=JobState.queued, run_at=run_at, locked_until=None, attempts=Job.attempts - 1)
    )
    return bool(getattr(result, "rowcount", 0))


def list_dead(
    db: Session, *, workspace_id: str | None = None, cursor: str | None = None, limit: int = 50
) -> tuple[list[Job], str | None]:
    """Dead-lettered jobs, the latest to die first: a workspace's, or with none named every
    workspace's and those of no workspace; a page and the cursor of the next."""
    limit = pagination.clamp(limit, maximum=1000)
    # fail() alone dead-letters a job, and it sets finished_at.
    query = select(Job).where(Job.state == JobState.dead)
    if workspace_id is not None:
        query = query.where(Job.workspace_id == workspace_id)
    after = pagination.decode(cursor)
    if after:
        query = query.where(tuple_(Job.finished_at, Job.id) < after)
    rows = list(db.scalars(query.order_by(Job.finished_at.desc(), Job.id.desc()).limit(limit + 1)))
    return pagination.page_of(rows, limit, lambda j: (j.finished_at, j.id))


_REQUEUED = {"state": JobState.queued, "attempts": 0, "finished_at": None, "locked_until": None}


def _requeue_dead(workspace_id: str | None) -> Any:
    """The UPDATE that puts dead jobs (of ``workspace_id``, if named) back in the queue."""
    query = update(Job).where(Job.state == JobState.dead)
    if workspace_id is not None:
        query = query.where(Job.workspace_id == workspace_id)
    return query.values(**_REQUEUED, run_at=utcnow())


def retry_dead(db: Session, *, job_id: str, workspace_id: str | None = None) -> Job | None:
    """Put a dead-lettered job (of ``workspace_id``, if named) back in the queue with fresh
    attempts; the job, or None if there is no such dead job."""
    row = db.scalars(
        _requeue_dead(workspace_id).where(Job.id == job_id).returning(Job),
        execution_options={"synchronize_session": False},
    ).one_or_none()
    if row is not None:
        _retried(db, [row])
    return row


def retry_all_dead(db: Session, *, workspace_id: str | None = None) -> int:
    """Put every dead-lettered job (of ``workspace_id``, if named) back in the queue with
    fresh attempts; how many (not those that stay dead, their work no longer possible: a
    reply outside its provider's window)."""
    rows = db.scalars(
        _requeue_dead(workspace_id).returning(Job),
        execution_options={"synchronize_session": False},
    ).all()
    _retried(db, rows)
    return sum(row.state != JobState.dead for row in rows)


def _retried(db: Session, jobs: Sequence[Job]) -> None:
    """Dead jobs back in the queue: each kind undoes what its dead-lettering settled (a
    reply marked failed is queued again), and the worker is woken after commit."""
    registry.load_handlers()  # a command line's retry has not loaded them
    for row in jobs:
        spec = registry.get(row.name)
        if spec is not None and spec.on_retry is not None:
            spec.on_retry(db, row)
    if jobs:
        on_commit(db, wakeup.set)


def prune_finished(db: Session, *, older_than_days: int, limit: int = 5000) -> int:
    """Delete up to ``limit`` done jobs, oldest first (dead ones stay until someone looks
    at them); returns how many, for the caller to repeat in a new transaction."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    chunk = (
        select(Job.id)
        # run_at bounds the walk of the (state, run_at) index: a job is done after it is due.
        .where(Job.state == JobState.done, Job.run_at < cutoff, Job.finished_at < cutoff)
        .order_by(Job.run_at)
        .limit(limit)
    )
    result = db.execute(delete(Job).where(Job.id.in_(chunk)))
    return int(getattr(result, "rowcount", 0) or 0)


def prune_dead(
    db: Session, *, older_than_days: int, spare: ColumnElement[bool], limit: int = 5000
) -> int:
    """Delete up to ``limit`` jobs dead-lettered more than ``older_than_days`` ago, oldest
    first, but those ``spare`` holds; returns how many, for the caller to repeat in a new
    transaction while a whole chunk went."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    chunk = (
        select(Job.id)
        # run_at bounds the walk of the claim index (state, run_at), as for done jobs: fail()
        # alone dead-letters a job, and it was due before it ran, so run_at <= finished_at.
        # One that died with no finished_at recorded is dated by its run_at alone.
        .where(
            Job.state == JobState.dead,
            Job.run_at < cutoff,
            or_(Job.finished_at < cutoff, Job.finished_at.is_(None)),
            not_(spare),
        )
        .order_by(Job.run_at)
        .limit(limit)
    )
    result = db.execute(
        delete(Job).where(Job.id.in_(chunk)), execution_options={"synchronize_session": False}
    )
    return int(getattr(result, "rowcount", 0) or 0)
