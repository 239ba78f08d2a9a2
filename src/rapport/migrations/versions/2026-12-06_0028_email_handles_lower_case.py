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


def upgrade() -> None:
    conn = op.get_bind()
    identities = sa.table(
        "identities",
        sa.column("id"),
        sa.column("workspace_id"),
        sa.column("kind"),
        sa.column("value"),
        sa.column("created_at"),
    )
    mixed = (
        sa.select(identities.c.id, identities.c.workspace_id, identities.c.value)
        .where(
            identities.c.kind == "email", identities.c.value != sa.func.lower(identities.c.value)
        )
        .order_by(identities.c.created_at, identities.c.id)
    )
    last: tuple[object, str] | None = None
    while True:
        stmt = mixed.limit(CHUNK)
        if last is not None:
            stmt = stmt.where(
                sa.tuple_(identities.c.created_at, identities.c.id) > sa.tuple_(*last)
            )
        rows = conn.execute(stmt.add_columns(identities.c.created_at)).all()
        for id_, workspace_id, value, _ in rows:
            lower = value.lower()
            taken = conn.execute(
                sa.select(identities.c.id).where(
                    identities.c.workspace_id == workspace_id,
                    identities.c.kind == "email",
                    identities.c.value == lower,
                )
            ).first()
            if taken is None:
                conn.execute(identities.update().where(identities.c.id == id_).values(value=lower))
        if len(rows) < CHUNK:
            break
        last = (rows[-1][3], rows[-1][0])
    # The email shown (a copy of one of the customer's handles) follows the handle.
    conn.execute(
        sa.text(
            "UPDATE customers SET email = lower(email) WHERE email <> lower(email) AND EXISTS ("
            "SELECT 1 FROM identities i WHERE i.customer_id = customers.id AND i.kind = 'email' "
            "AND i.value = lower(customers.email))"
        )
    )


def downgrade() -> None:
    pass  # the lower-cased addresses stay: the old code accepts them as they are
