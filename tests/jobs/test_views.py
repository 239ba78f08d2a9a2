"""A workspace's admins see its dead-lettered jobs and queue them again; nobody else does."""

from fastapi.testclient import TestClient

from rapport.db import Database
from rapport.jobs import service
from rapport.jobs.models import Job, JobState
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
