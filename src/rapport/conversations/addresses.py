"""Which mails list which address: ``MessageAddress`` rows, kept as the lists are written.

A mail keeps address lists in its ``meta`` (``listed``): whom it came from, went to and
copied, and the copies that bounced or were refused. A reply's Cc is offered from them
(``copies.reply_all``), so an erased person's address leaves every mail of the workspace
that lists it, in the erasure's own transaction (``privacy.erasure``). That erasure used to
find those mails by reading the text of every mail the workspace keeps: at a million
mails, SQLite's one write lock was held for seconds and every workspace's ingest waited
behind it. It finds them here, by a digest of the address (``key``) and an index; its work
is what the person's own mails are, not what the workspace's are.

Why an index, not a job that scrubs later while reads leave the erased addresses out:
those lists are read in many places (the reply's Cc, the copies shown on every message
the API and the realtime events return, a reply queued meanwhile that would mail them, the
threading of a mail that answers), each of which would have to know who was erased until
the job ends; and its reads would still go through every mail of the workspace. Rows are
written only for messages whose ``meta`` lists addresses (mails), never for another
channel's messages.
"""

import hashlib
from typing import Any

from sqlalchemy import delete, event, insert, inspect
from sqlalchemy.orm import Session

from rapport.conversations.models import Message, MessageAddress
from rapport.customers.identity import InvalidHandle, normalize
from rapport.customers.models import IdentityKind

# The address lists of a mail (``meta.email``): whom it went to, copied and copied blind,
# and the copies that bounced. Besides them: whom it came from (``meta.email.from``), and
# the copies a send found refused (``meta.delivery.refused_copies``).
LISTS = ("to", "cc", "bcc", "bounced")


def written(raw: object) -> str:
    """An address as identities hold it; one that is none, lower-cased (it is compared)."""
    try:
        return normalize(IdentityKind.email, str(raw))
    except InvalidHandle:
        return str(raw).strip().lower()


def key(address: str) -> int:
    """The index's key of an address as ``written`` gives it: a signed 64-bit digest (the
    rows hold no address in the clear, and are a third the size)."""
    digest = hashlib.blake2b(address.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _raw(meta: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of ``meta`` that list addresses, as stored: compared before and after a
    change, so that a change of anything else (triage, a delivery receipt) costs nothing."""
    mail = meta.get("email")
    delivery = meta.get("delivery")
    return (
        tuple(mail.get(k) for k in (*LISTS, "from")) if isinstance(mail, dict) else None,
        delivery.get("refused_copies") if isinstance(delivery, dict) else None,
    )


_NOTHING = (None, None)


def listed(meta: dict[str, Any]) -> set[str]:
    """Every address ``meta``'s lists hold, as ``written`` gives it."""
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
    return {written(a) for a in found} - {""}


def without(meta: dict[str, Any], addresses: set[str]) -> dict[str, Any]:
    """``meta`` without these addresses (as ``written`` gives them) in its lists: those
    ``listed`` reads, and no other."""

    def kept(values: Any) -> Any:
        if not isinstance(values, list):
            return values
        return [a for a in values if written(a) not in addresses]

    out = dict(meta)
    if isinstance(mail := meta.get("email"), dict):
        out["email"] = {k: kept(v) if k in LISTS else v for k, v in mail.items()}
        if isinstance(mail.get("from"), str) and written(mail["from"]) in addresses:
            out["email"]["from"] = None
    if isinstance(delivery := meta.get("delivery"), dict) and "refused_copies" in delivery:
        out["delivery"] = {**delivery, "refused_copies": kept(delivery["refused_copies"])}
    return out


def rows(*, message_id: str, workspace_id: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The index's rows of a message (none when it lists no address)."""
    if _raw(meta) == _NOTHING:
        return []  # most messages: no mail, nothing to normalize
    keys = {key(a) for a in listed(meta)}
    return [
        {"message_id": message_id, "address_key": k, "workspace_id": workspace_id}
        for k in sorted(keys)
    ]


@event.listens_for(Session, "after_flush")
def _follow_lists(session: Session, _context: object) -> None:
    # Every message the ORM stores, and every change of its lists (an agent's reply that
    # copies someone, a bounce, a colleague's mail proved, an erasure), is indexed in the
    # same flush; ingest's own insert writes its rows itself (``rows``). After the flush:
    # the message is stored (its rows refer to it), and the flush's new and changed objects
    # and their history are still there to read.
    fresh = [m for m in session.new if isinstance(m, Message) and _raw(m.meta or {}) != _NOTHING]
    changed = []
    for m in session.dirty:
        if not isinstance(m, Message):
            continue
        history = inspect(m).attrs.meta.history
        if not history.added:
            continue  # ``meta`` not assigned
        if history.deleted and _raw(history.deleted[0] or {}) == _raw(m.meta or {}):
            continue  # something else in it changed (triage, a receipt): the lists stand
        changed.append(m)  # its lists changed, or what they were is not known (not read)
    if not fresh and not changed:
        return
    conn = session.connection()
    if changed:
        conn.execute(
            delete(MessageAddress).where(MessageAddress.message_id.in_([m.id for m in changed]))
        )
    written_rows = [
        row
        for m in (*fresh, *changed)
        for row in rows(message_id=m.id, workspace_id=m.workspace_id, meta=m.meta or {})
    ]
    if written_rows:
        conn.execute(insert(MessageAddress), written_rows)
