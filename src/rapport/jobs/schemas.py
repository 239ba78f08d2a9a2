"""Jobs API shapes: what an admin sees of a job (its arguments stay private)."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from rapport.jobs.models import JobState


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    state: JobState
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    run_at: datetime
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobRead]
    next_cursor: str | None
