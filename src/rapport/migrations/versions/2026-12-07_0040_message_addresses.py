"""Which mails list which address: the index an erasure finds others' mails by

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-07 11:00:00

An erasure takes the person's email addresses out of the address lists the workspace's
other mails keep (``meta.email``'s from, to, cc, bcc and bounced, ``meta.delivery``'s
refused copies). It found those mails by reading the text of every mail of the workspace in
its own transaction: at a million mails, SQLite's one write lock was held for seconds, and
every workspace's ingest waited. ``message_addresses`` holds a row for each address a
mail's lists hold (a 64-bit digest of it as identities write it), found by the index on
(workspace, digest); it is filled here for the mails already stored, those of the email
inboxes, a page at a time. The downgrade drops it (the old code reads the mails' text).
"""

import hashlib
import unicodedata
from collections.abc import Sequence
from typing import Any

import idna
import sqlalchemy as sa
from alembic import op

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000
MAX_LENGTH = 320
LISTS = ("to", "cc", "bcc", "bounced")

messages = sa.table(
    "messages",
    sa.column("id"),
    sa.column("workspace_id"),
    sa.column("inbox_id"),
    sa.column("meta", sa.JSON()),
)
inboxes = sa.table("inboxes", sa.column("id"), sa.column("channel"))
message_addresses = sa.table(
    "message_addresses",
    sa.column("message_id"),
    sa.column("address_key", sa.BigInteger()),
    sa.column("workspace_id"),
)


def _email(raw: str) -> str | None:
    """The address as ``identity.normalize`` keeps it on this revision's day (copied here:
    a migration keeps the rule of its day), or None when it is none."""
    value = unicodedata.normalize("NFC", raw.replace("\x00", "\ufffd").strip().strip("<>").strip())
    local, sep, domain = value.rpartition("@")
    domain = domain.strip(".")
    labels = domain.split(".")
    if not sep or not local or " " in value or len(labels) < 2 or not all(labels):
        return None
    try:
        if not domain.isascii():
            domain = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        out = []
        for label in domain.strip(".").split("."):
            if label.isascii():
                if not 0 < len(label) < 64:
                    return None
                out.append(label.lower())
            else:
                out.append(idna.alabel(label).decode("ascii"))
    except idna.IDNAError:
        return None
    if len(out) < 2:
        return None
    address = f"{local.lower()}@{'.'.join(out)}"
    return address if len(address) <= MAX_LENGTH else None


def _written(raw: object) -> str:
    """``addresses.written``: the address normalized, or else lower-cased."""
    return _email(str(raw)) or str(raw).strip().lower()


def _key(address: str) -> int:
    """``addresses.key``."""
    digest = hashlib.blake2b(address.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _listed(meta: Any) -> set[str]:
    """``addresses.listed``."""
    if not isinstance(meta, dict):
        return set()
    found: list[Any] = []
    if isinstance(mail := meta.get("email"), dict):
        for name in LISTS:
            if isinstance(values := mail.get(name), list):
                found.extend(values)
        if isinstance(mail.get("from"), str):
            found.append(mail["from"])
    if isinstance(delivery := meta.get("delivery"), dict):
        if isinstance(refused := delivery.get("refused_copies"), list):
            found.extend(refused)
    return {_written(a) for a in found} - {""}


def upgrade() -> None:
    op.create_table(
        "message_addresses",
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("address_key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_addresses_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_message_addresses_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "address_key", name=op.f("pk_message_addresses")),
    )
    conn = op.get_bind()
    after = ""
    while True:
        page = conn.execute(
            sa.select(messages.c.id, messages.c.workspace_id, messages.c.meta)
            .join(inboxes, inboxes.c.id == messages.c.inbox_id)
            .where(inboxes.c.channel == "email", messages.c.id > after)
            .order_by(messages.c.id)
            .limit(CHUNK)
        ).all()
        if not page:
            break
        after = page[-1].id
        rows = [
            {"message_id": row.id, "address_key": key, "workspace_id": row.workspace_id}
            for row in page
            for key in sorted({_key(a) for a in _listed(row.meta)})
        ]
        if rows:
            conn.execute(message_addresses.insert(), rows)
    # Built once filled (faster than kept up row by row); nothing else writes the new table.
    op.create_index(
        "ix_message_addresses_key", "message_addresses", ["workspace_id", "address_key"]
    )


def downgrade() -> None:
    op.drop_index("ix_message_addresses_key", table_name="message_addresses")
    op.drop_table("message_addresses")
