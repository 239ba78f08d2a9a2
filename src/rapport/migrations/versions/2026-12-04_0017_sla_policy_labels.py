"""SLA policies name their labels as conversations keep them

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 09:00:00

Conversations keep their labels trimmed and lower-cased; a policy kept the labels it was
given as typed, so one naming "VIP" never applied to a conversation labelled "VIP" (kept
"vip"), and deleting or renaming the label missed it. Policies are now given cleaned
labels; the ones stored before are cleaned here. A label left empty stays in its list, so
that a policy that matched nothing does not start matching everything.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rapport.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_policies = sa.table(
    "sla_policies", sa.column("id", sa.String), sa.column("labels", rapport.db.JSONType)
)


def upgrade() -> None:
    conn = op.get_bind()
    for policy_id, labels in conn.execute(sa.select(_policies.c.id, _policies.c.labels)).all():
        # As rapport.conversations.labels.clean, which refuses an empty name instead.
        clean = sorted({str(name).strip().lower()[:100] for name in labels or []})
        if clean != (labels or []):
            conn.execute(
                sa.update(_policies).where(_policies.c.id == policy_id).values(labels=clean)
            )


def downgrade() -> None:
    pass  # the labels as typed are not kept; cleaned ones read the same to older code
