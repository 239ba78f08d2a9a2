"""Trained models are signed: those stored unsigned are retrained

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:00:00

A model is a pickle, and unpickling runs code, so Rapport now loads only models it signed
with a key derived from RAPPORT_SECRET_KEY. The migration cannot sign what it did not see
trained: it deletes every stored model (all unsigned until now) and queues a training of
each workspace that had one, which stores it signed. Until that job runs, the workspace
triages without its own categories and its bot answers without intents.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MODELS = {
    sa.table("triage_models", sa.column("workspace_id", sa.String)): "train_triage",
    sa.table("bot_intent_models", sa.column("workspace_id", sa.String)): "bot_train",
}

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("workspace_id", sa.String),
    sa.column("args", rapport.db.JSONType),
    sa.column("state", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("max_attempts", sa.Integer),
    sa.column("run_at", rapport.db.UTCDateTime()),
    sa.column("created_at", rapport.db.UTCDateTime()),
)


def upgrade() -> None:
    retrain()


def downgrade() -> None:
    retrain()  # the code before this revision cannot read signed models either


def retrain() -> None:
    conn = op.get_bind()
    now = rapport.db.utcnow()
    for table, job in _MODELS.items():
        workspaces = conn.execute(sa.select(table.c.workspace_id).distinct()).scalars()
        rows = [
            {
                "id": rapport.db.new_id(),
                "name": job,
                "workspace_id": workspace_id,
                "args": {"workspace_id": workspace_id},
                "state": "queued",
                "attempts": 0,
                "max_attempts": 3,
                "run_at": now,
                "created_at": now,
            }
            for workspace_id in workspaces
        ]
        conn.execute(sa.delete(table))
        if rows:
            conn.execute(sa.insert(_jobs), rows)
