"""Periodic work: each run is a job whose unique key is its time slot, so that any number
of workers together enqueue it once per period."""

import time
from functools import partial

from sqlalchemy import select

from rapport.auth import service as auth
from rapport.automation import service as automation
from rapport.automation.models import Webhook
from rapport.channels import service as channels
from rapport.conversations import files, routing
from rapport.conversations import service as conversations
from rapport.db import Database, drain, utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue_unique, prune_dead, prune_finished
from rapport.realtime import service as realtime
from rapport.realtime.service import PRUNE_CHUNK
from rapport.storage import LocalStorage

# name -> period in seconds
SCHEDULE = {
    "unsnooze": 60,
    "prune_stream_events": 3600,
    "prune_uploads": 3600,
    "prune_login_failures": 3600,
    "sweep_storage": 86400,
    "prune_unparsed": 86400,
    "prune_webhook_deliveries": 86400,
    "prune_dead_jobs": 86400,
    "sla_check": 60,
    "presence_sweep": 60,
    "imap_poll_all": 60,
    "find_duplicates_all": 86400,
    "train_triage_all": 86400,
}


def tick(database: Database, *, now: float | None = None) -> int:
    """Enqueue the periodic jobs whose current slot has not been enqueued yet."""
    now = time.time() if now is None else now
    created = 0
    with database.session() as db:
        for name, period in SCHEDULE.items():
            slot = int(now // period)
            created += enqueue_unique(db, name=name, key=f"{name}:{slot}")
    return created


@job("presence_sweep")
def presence_sweep(ctx: JobContext) -> None:
    """Tell open pages about agents who went offline by closing their browser."""
    with ctx.database.session() as db:
        routing.announce_timed_out(db, now=utcnow())


@job("unsnooze")
def unsnooze(ctx: JobContext) -> None:
    """Reopen snoozed conversations whose time has come."""
    with ctx.database.session() as db:
        conversations.unsnooze_due(db)


@job("prune_stream_events")
def prune_stream_events(ctx: JobContext) -> None:
    """Drop realtime events older than a reconnecting client could still ask for, and
    finished jobs as old: a chunk per transaction, so no other writer waits long."""
    realtime.expire(ctx.database)
    drain(
        ctx.database,
        partial(prune_finished, older_than_days=realtime.KEPT_DAYS, limit=PRUNE_CHUNK),
        chunk=PRUNE_CHUNK,
    )


@job("prune_unparsed")
def prune_unparsed(ctx: JobContext) -> None:
    """Drop the provider calls we could not read once kept UNPARSED_KEPT_DAYS: a chunk per
    transaction, so no other writer waits long."""
    drain(ctx.database, partial(channels.prune_unparsed, limit=PRUNE_CHUNK), chunk=PRUNE_CHUNK)


@job("prune_webhook_deliveries")
def prune_webhook_deliveries(ctx: JobContext) -> None:
    """Drop each webhook's deliveries once kept DELIVERIES_KEPT_DAYS (but for those a job
    still holds): webhook by webhook, through its log's (webhook, time) index, a chunk
    per transaction, so no other writer waits long."""
    with ctx.database.session(write=False) as db:
        hooks = list(db.scalars(select(Webhook.id)))
    for hook in hooks:
        step = partial(automation.prune_deliveries, webhook_id=hook, limit=PRUNE_CHUNK)
        drain(ctx.database, step, chunk=PRUNE_CHUNK)


@job("prune_dead_jobs")
def prune_dead_jobs(ctx: JobContext) -> None:
    """Drop jobs dead-lettered RAPPORT_DEAD_JOB_RETENTION_DAYS ago that nobody retried (but
    for those the webhook delivery log still shows): a chunk per transaction, so no other
    writer waits long."""
    step = partial(
        prune_dead,
        older_than_days=ctx.settings.dead_job_retention_days,
        spare=automation.dead_jobs_kept(),
        limit=PRUNE_CHUNK,
    )
    drain(ctx.database, step, chunk=PRUNE_CHUNK)


@job("prune_login_failures")
def prune_login_failures(ctx: JobContext) -> None:
    """Forget the wrong passwords counted for addresses with no account once their count
    has lapsed and any lock has ended, as an account's count lapses: a chunk per
    transaction, so no other writer waits long."""
    step = partial(
        auth.prune_login_failures,
        lockout_minutes=ctx.settings.login_lockout_minutes,
        limit=PRUNE_CHUNK,
    )
    drain(ctx.database, step, chunk=PRUNE_CHUNK)


@job("prune_uploads")
def prune_uploads(ctx: JobContext) -> None:
    """Forget files agents uploaded but never sent, and their bytes once nothing uses them."""
    with ctx.database.session() as db:
        keys = files.prune_uploads(db)
    files.forget_unused(ctx.database, LocalStorage(ctx.settings.attachments_dir), keys)


@job("sweep_storage")
def sweep_storage(ctx: JobContext) -> None:
    """Forget stored files no row refers to and nobody stored or reused for a day: the
    bytes of a transaction that rolled back after storing them, or of a message an erasure
    could not see (committed while it ran)."""
    storage = LocalStorage(ctx.settings.attachments_dir)
    batch: list[str] = []
    for key in storage.keys(untouched_for=86400):
        batch.append(key)
        if len(batch) == 500:
            files.forget_unused(ctx.database, storage, batch)
            batch = []
    files.forget_unused(ctx.database, storage, batch)
