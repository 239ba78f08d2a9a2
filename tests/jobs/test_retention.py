"""Retention of finished jobs: dead-lettered ones go after RAPPORT_DEAD_JOB_RETENTION_DAYS."""

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rapport.automation import service as automation
from rapport.automation.models import Webhook, WebhookDelivery
from rapport.config import Settings
from rapport.db import Database, utcnow
from rapport.jobs import periodic
from rapport.jobs.models import Job, JobState
from rapport.jobs.service import enqueue
from rapport.jobs.worker import Worker
from tests.conftest import auth
from tests.factories import World, dead_job

DAY = 86400


def prune(database: Database, settings: Settings) -> None:
    """Run the daily prune as the worker would, and the delivery log's after it."""
    for name in ("prune_dead_jobs", "prune_webhook_deliveries"):
        with database.session() as db:
            enqueue(db, name=name)
        Worker(database, settings).run_until_idle(max_jobs=10)


def jobs_left(database: Database) -> set[str]:
    with database.session(write=False) as db:
        return set(db.scalars(select(Job.id)))


def test_dead_jobs_are_deleted_once_kept_the_retention_days(
    world: World, database: Database, settings: Settings
) -> None:
    # Dead-lettered jobs were never deleted but by an erasure: the table grew for ever,
    # each holding its arguments and a provider's error.
    assert settings.dead_job_retention_days == 30
    acme, globex = world.acme.workspace.id, world.globex.workspace.id
    kept = {
        dead_job(database, workspace_id=acme, seconds_ago=29 * DAY),
        dead_job(database, workspace_id=globex, seconds_ago=60),
    }
    gone = {
        dead_job(database, workspace_id=acme, seconds_ago=31 * DAY),
        dead_job(database, workspace_id=globex, seconds_ago=90 * DAY),
        dead_job(database, workspace_id=None, name="sla_check", seconds_ago=40 * DAY),
    }
    with database.session() as db:  # a job running, however long ago it was due, is not
        running = enqueue(db, name="deliver", args={}, workspace_id=acme)
        running.state, running.locked_by = JobState.running, "elsewhere"
        running.run_at = utcnow() - timedelta(days=40)
        running.locked_until = utcnow() + timedelta(hours=1)
        kept.add(running.id)
    # One that died with no finished_at recorded goes by its run_at.
    undated = dead_job(database, workspace_id=acme, seconds_ago=31 * DAY)
    with database.session() as db:
        db.execute(update(Job).where(Job.id == undated).values(finished_at=None))
    gone.add(undated)
    prune(database, settings)
    left = jobs_left(database)
    assert kept <= left and not gone & left
    assert "prune_dead_jobs" in periodic.SCHEDULE


def test_the_retention_of_dead_jobs_is_a_setting(
    world: World, database: Database, settings: Settings
) -> None:
    acme = world.acme.workspace.id
    week = settings.model_copy(update={"dead_job_retention_days": 7})
    kept = dead_job(database, workspace_id=acme, seconds_ago=6 * DAY)
    gone = dead_job(database, workspace_id=acme, seconds_ago=8 * DAY)
    prune(database, week)
    left = jobs_left(database)
    assert kept in left and gone not in left


def test_a_dead_webhook_call_stays_retryable_while_its_delivery_is_logged(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # A dead webhook_deliver job holds its delivery in the log for an admin to retry; the
    # two go together once the delivery is past the log's own 30 days, the job first.
    r = client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=auth(world.alice)
    )
    assert r.status_code == 201, r.text
    week = settings.model_copy(update={"dead_job_retention_days": 7})

    with database.session() as db:
        hook = db.scalars(
            select(Webhook).where(Webhook.workspace_id == world.acme.workspace.id)
        ).one()

        def call(*, made_days_ago: int, died_days_ago: int) -> tuple[str, str]:
            """A call logged ``made_days_ago`` whose job died ``died_days_ago``."""
            row = automation.queue_delivery(
                db, webhook=hook, event="conversation.created", payload={}
            )
            row.created_at = utcnow() - timedelta(days=made_days_ago)
            job = db.scalars(select(Job).where(Job.args["delivery_id"].as_string() == row.id)).one()
            job.state = JobState.dead
            job.run_at = job.finished_at = utcnow() - timedelta(days=died_days_ago)
            return row.id, job.id

        logged = call(made_days_ago=12, died_days_ago=10)
        expired = call(made_days_ago=31, died_days_ago=8)
        lost = call(made_days_ago=12, died_days_ago=10)
        db.delete(db.get(WebhookDelivery, lost[0]))  # nothing left to retry
    prune(database, week)
    with database.session(write=False) as db:
        deliveries = set(db.scalars(select(WebhookDelivery.id)))
    left = jobs_left(database)
    assert logged[0] in deliveries and logged[1] in left
    assert expired[0] not in deliveries and expired[1] not in left
    assert lost[1] not in left
