"""A workspace's admins see its dead-lettered jobs and queue them again; nobody else does."""

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

import tests.jobs.handlers  # noqa: F401  (registers the test jobs)
from rapport.config import Settings
from rapport.db import Database, utcnow
from rapport.jobs import service
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from tests.conftest import auth
from tests.factories import World, dead_job


def test_an_admin_pages_through_the_workspaces_dead_jobs_and_queues_one_again(
    client: TestClient, world: World, database: Database
) -> None:
    # Dead-lettered jobs could be neither seen nor retried: retry_dead() had no caller.
    acme, globex = world.acme.workspace.id, world.globex.workspace.id
    newest, middle, oldest = (
        dead_job(database, workspace_id=acme, seconds_ago=s) for s in (10, 20, 30)
    )
    theirs = dead_job(database, workspace_id=globex)
    system = dead_job(database, workspace_id=None, name="sla_check")
    with database.session() as db:
        service.enqueue(db, name="deliver", workspace_id=acme)  # queued, not dead
    first = client.get("/api/v1/jobs?state=dead&limit=2", headers=auth(world.alice)).json()
    assert [j["id"] for j in first["items"]] == [newest, middle]
    assert first["items"][0]["last_error"] == "DeliveryError: provider 503"
    assert "args" not in first["items"][0]  # a job's arguments are not shown
    rest = client.get(
        "/api/v1/jobs",
        params={"state": "dead", "limit": 2, "cursor": first["next_cursor"]},
        headers=auth(world.alice),
    ).json()
    assert [j["id"] for j in rest["items"]] == [oldest] and rest["next_cursor"] is None
    r = client.post(f"/api/v1/jobs/{middle}/retry", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "queued" and r.json()["attempts"] == 0
    with database.session(write=False) as db:
        row = db.get(Job, middle)
        assert row is not None and row.state == JobState.queued and row.finished_at is None
    # Not dead any more, another workspace's, or a system job: not there to retry.
    for job_id in (middle, theirs, system, "0" * 32):
        r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth(world.alice))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    mine = client.get("/api/v1/jobs?state=dead", headers=auth(world.mallory)).json()
    assert [j["id"] for j in mine["items"]] == [theirs]
    assert client.get("/api/v1/jobs", headers=auth(world.alice)).status_code == 422
    assert client.get("/api/v1/jobs?state=done", headers=auth(world.alice)).status_code == 422


def test_agents_and_viewers_can_neither_see_nor_retry_dead_jobs(
    client: TestClient, world: World, database: Database
) -> None:
    # Dead jobs carry providers' errors and are an admin's to retry.
    job_id = dead_job(database, workspace_id=world.acme.workspace.id)
    for token in (world.bob, world.victor):
        assert client.get("/api/v1/jobs?state=dead", headers=auth(token)).status_code == 403
        r = client.post(f"/api/v1/jobs/{job_id}/retry", headers=auth(token))
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    with database.session(write=False) as db:
        row = db.get(Job, job_id)
        assert row is not None and row.state == JobState.dead


def test_a_failed_job_logs_its_error_class_and_only_admins_see_what_it_said(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The worker logged each failure's text at WARNING: a mail server's refusal quoting
    # the customer's address went to the logs, which README says never hold one.
    address = "zoe.quist@example.com"
    with database.session() as db:
        job_id = service.enqueue(
            db,
            name="test.refused",
            args={"address": address},
            workspace_id=world.acme.workspace.id,
            max_attempts=2,
        ).id
    with caplog.at_level(logging.INFO, logger="rapport.jobs.worker"):
        for _ in range(2):  # a retry, then the death
            with database.session() as db:
                db.execute(update(Job).where(Job.id == job_id).values(run_at=utcnow()))
            Worker(database, settings).run_until_idle()
    failures = [r for r in caplog.records if r.name == "rapport.jobs.worker" and r.levelno >= 30]
    assert [(r.__dict__["event"], r.__dict__["job_id"]) for r in failures] == [
        ("job.retry", job_id),
        ("job.dead", job_id),
    ]
    assert {r.__dict__["error"] for r in failures} == {"SMTPRecipientsRefused"}
    logged = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    assert logged and not [line for line in logged if address in line]
    # The job row keeps what the server said, for the workspace's admins.
    [dead] = client.get("/api/v1/jobs?state=dead", headers=auth(world.alice)).json()["items"]
    assert dead["id"] == job_id and address in dead["last_error"]
