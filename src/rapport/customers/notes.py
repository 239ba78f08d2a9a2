"""Notes about a customer: what an agent writes down for colleagues, never sent to them.

Any member who can act (an agent or above) writes one; its author or an admin changes or
deletes it. A person's notes are on the record their merges ended in: a merge moves the
merged record's there and an unmerge takes them back (``merge._OWNED``), and a note
written to a merged record (a page left open in another tab) goes there too. Erasing the
customer erases them (the foreign key), and the customer's export carries them.
"""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.auth.models import Role
from rapport.customers import merge
from rapport.customers.models import Customer, CustomerNote
from rapport.db import utcnow
from rapport.problems import Conflict, Forbidden, Invalid, NotFound
from rapport.realtime.service import emit

MAX_CHARS = 10_000


def _text(text: str) -> str:
    kept = text.strip()
    if not kept:
        raise Invalid("text: a note must say something")
    if len(kept) > MAX_CHARS:
        raise Invalid(f"text: a note is at most {MAX_CHARS:,} characters")
    return kept


def person(db: Session, customer: Customer) -> Customer:
    """The record a person's notes are on: the one this customer's merges ended in."""
    root, _ = merge.person(db, customer=customer)
    return root


def notes_of(db: Session, *, customer: Customer) -> list[CustomerNote]:
    """The customer's notes (of the person: see ``person``), newest first."""
    customer = person(db, customer)
    return list(
        db.scalars(
            select(CustomerNote)
            .where(
                CustomerNote.workspace_id == customer.workspace_id,
                CustomerNote.customer_id == customer.id,
            )
            .order_by(CustomerNote.created_at.desc(), CustomerNote.id.desc())
        )
    )


def get(db: Session, *, customer: Customer, note_id: str) -> CustomerNote:
    """One of the customer's notes; any other (another customer's, another workspace's)
    is not found."""
    customer = person(db, customer)
    note = db.scalar(
        select(CustomerNote).where(
            CustomerNote.id == note_id,
            CustomerNote.workspace_id == customer.workspace_id,
            CustomerNote.customer_id == customer.id,
        )
    )
    if note is None:
        raise NotFound("note")
    return note


def add(db: Session, *, customer: Customer, author_id: str, text: str) -> CustomerNote:
    """A new note about the customer (on the person's record: see ``person``)."""
    customer = person(db, customer)
    now = utcnow()  # one moment: a note whose two times differ reads as edited
    note = CustomerNote(
        workspace_id=customer.workspace_id,
        customer_id=customer.id,
        author_id=author_id,
        text=_text(text),
        created_at=now,
        updated_at=now,
    )
    db.add(note)
    db.flush()
    _told(db, note)
    return note


def _may_change(note: CustomerNote, *, user_id: str, role: Role) -> None:
    """Only its author or an admin changes a note."""
    if note.author_id != user_id and role.rank < Role.admin.rank:
        raise Forbidden("only its author or an admin can change or delete a note")


def update(
    db: Session,
    *,
    note: CustomerNote,
    user_id: str,
    role: Role,
    text: str,
    read_at: datetime | None = None,
) -> CustomerNote:
    """The note with a new text (its author's or an admin's doing only). ``read_at``: its
    ``updated_at`` as the editor read it; changed since (an author and an admin editing it
    at once), the change is refused, not made over the other's."""
    _may_change(note, user_id=user_id, role=role)
    if read_at is not None:
        # Read again, held (PostgreSQL's FOR UPDATE; SQLite's writer holds the database):
        # a save committing meanwhile is seen here, not written over after the check.
        db.refresh(note, with_for_update=True)
    if read_at is not None and note.updated_at != read_at:
        raise Conflict(
            "the note was changed since you opened it: read the new text, then save yours "
            "again to replace it"
        )
    note.text = _text(text)
    note.updated_at = utcnow()
    db.flush()
    _told(db, note)
    return note


def delete(db: Session, *, note: CustomerNote, user_id: str, role: Role) -> None:
    """Delete the note (its author's or an admin's doing only)."""
    _may_change(note, user_id=user_id, role=role)
    db.delete(note)
    db.flush()
    _told(db, note)


def _told(db: Session, note: CustomerNote) -> None:
    """Open pages of the customer show the change (their notes are drawn again)."""
    emit(
        db,
        workspace_id=note.workspace_id,
        type="customer.updated",
        payload={"id": note.customer_id, "notes": True},
    )
