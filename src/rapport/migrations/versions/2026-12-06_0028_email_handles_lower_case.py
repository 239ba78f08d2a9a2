"""Email handles are kept in lower case, the local part too

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 03:45:00

Email identities kept their local part as written, so ``Ana.Souza@example.com`` and
``ana.souza@example.com``, one mailbox at every mail service people use, were two handles
and, written from two devices, two customers. New handles are lower-cased whole; this
lower-cases the stored ones, each unless another identity of its workspace already holds
the lower-cased form (two customers then keep their handles apart: the duplicate scan
finds them, their emails equal but for letter case, and suggests the merge; one customer
holding both keeps both). A customer's shown email follows its handle. Nothing to undo:
the downgrade leaves the addresses in lower case, which the old code also accepts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Identities read a chunk at a time: a workspace may hold millions.
CHUNK = 5000
# The column's length: a value longer once lower-cased (a dotted capital I) stays as it is.
MAX_LENGTH = 320


def upgrade() -> None:
    conn = op.get_bind()
    identities = sa.table(
        "identities",
        sa.column("id"),
        sa.column("workspace_id"),
        sa.column("customer_id"),
        sa.column("kind"),
        sa.column("value"),
    )
    customers = sa.table("customers", sa.column("id"), sa.column("email"))
    # Every email handle is read and compared in Python, as new ones are lower-cased: the
    # databases' own lower() leaves non-ASCII letters alone (SQLite's always).
    last = ""
    while True:
        rows = conn.execute(
            sa.select(
                identities.c.id,
                identities.c.workspace_id,
                identities.c.customer_id,
                identities.c.value,
            )
            .where(identities.c.kind == "email", identities.c.id > last)
            .order_by(identities.c.id)
            .limit(CHUNK)
        ).all()
        for id_, workspace_id, customer_id, value in rows:
            lower = value.lower()
            if lower == value or len(lower) > MAX_LENGTH:
                continue
            taken = conn.execute(
                sa.select(identities.c.id).where(
                    identities.c.workspace_id == workspace_id,
                    identities.c.kind == "email",
                    identities.c.value == lower,
                )
            ).first()
            if taken is not None:
                continue
            conn.execute(identities.update().where(identities.c.id == id_).values(value=lower))
            # The email shown (a copy of one of the customer's handles) follows the handle.
            conn.execute(
                customers.update()
                .where(customers.c.id == customer_id, customers.c.email == value)
                .values(email=lower)
            )
        if len(rows) < CHUNK:
            return
        last = rows[-1][0]


def downgrade() -> None:
    pass  # the lower-cased addresses stay: the old code accepts them as they are
