"""``/api/v1/jobs``: a workspace's dead-lettered jobs, for its admins to see and retry.

Jobs of no workspace (the periodic ones) are seen and retried with ``rapport jobs``.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from rapport.auth.deps import CurrentAdmin, Db
from rapport.jobs import service
from rapport.jobs.schemas import JobPage, JobRead
from rapport.problems import NotFound

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.get("", response_model=JobPage)
def list_jobs(
    principal: CurrentAdmin,
    db: Db,
    state: Annotated[Literal["dead"], Query(description="Only dead-lettered jobs are listed.")],
    cursor: str | None = None,
    limit: int = Query(default=50, ge=1, le=100),
) -> JobPage:
    """The workspace's dead-lettered jobs, the latest to die first."""
    rows, nxt = service.list_dead(
        db, workspace_id=principal.workspace_id, cursor=cursor, limit=limit
    )
    return JobPage(items=[JobRead.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/{job_id}/retry", response_model=JobRead)
def retry_job(job_id: str, principal: CurrentAdmin, db: Db) -> JobRead:
    """Put a dead-lettered job back in the queue, with all its attempts again. One whose
    work can no longer be done stays dead, its `last_error` saying why (a reply outside
    its provider's reply window, as the agent's "send again" is told)."""
    row = service.retry_dead(db, job_id=job_id, workspace_id=principal.workspace_id)
    if row is None:
        raise NotFound("dead job")
    return JobRead.model_validate(row)
