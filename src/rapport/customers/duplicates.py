"""Duplicate customers in a workspace: scan, suggest, merge on a human's word or above a bar.

A scan reads every live customer of the workspace, runs ``dedupe.find_duplicates`` outside
any transaction, then records each pair as a merge suggestion (with its probability and a
reason an agent can read). Pairs at or above the workspace's ``auto_merge_threshold`` are
merged at once by the system, and can be undone like any merge. A suggestion once decided
(merged or dismissed) stays decided: later scans do not bring it back.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from rapport.customers import merge
from rapport.customers.dedupe import DuplicatePair, PersonRecord, find_duplicates
from rapport.customers.models import Customer, CustomerMerge, MergeSuggestion, SuggestionStatus
from rapport.db import Database, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.privacy.service import SYSTEM, Actor
from rapport.problems import Conflict, Invalid, NotFound
from rapport.scoped import get_scoped
from rapport.workspaces.models import Workspace

# Pairs below this probability are not worth an agent's time.
SUGGEST_THRESHOLD = 0.8

# Where the profile keeps what detection compares, by the names imports commonly use.
_ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "given_name": ("first_name", "given_name", "firstname"),
    "surname": ("last_name", "surname", "family_name", "lastname"),
    "street": ("address", "street", "address_1", "address_line1", "street_address"),
    "street2": ("address_2", "address_line2"),
    "locality": ("city", "town", "suburb", "locality"),
    "postcode": ("postcode", "postal_code", "zip", "zip_code"),
    "region": ("state", "region", "county", "province"),
    "birth_date": ("birth_date", "date_of_birth", "dob", "birthday"),
    "id_number": ("customer_number", "account_number", "id_number", "member_number"),
}


def record_of(
    customer_id: str,
    name: str,
    email: str | None,
    phone: str | None,
    attributes: Mapping[str, Any],
) -> PersonRecord:
    """What duplicate detection compares of one customer."""
    fields: dict[str, str] = {}
    for field_name, keys in _ATTRIBUTE_NAMES.items():
        for key in keys:
            value = attributes.get(key)
            if value not in (None, ""):
                fields[field_name] = str(value)
                break
    words = name.split()
    if words and "given_name" not in fields and "surname" not in fields:
        fields["given_name"] = words[0]
        fields["surname"] = " ".join(words[1:])
    return PersonRecord(id=customer_id, email=email or "", phone=phone or "", **fields)


@dataclass(frozen=True)
class ScanSummary:
    customers: int
    suggested: int
    merged: int


def _records(db: Session, workspace_id: str) -> list[PersonRecord]:
    rows = db.execute(
        select(Customer.id, Customer.name, Customer.email, Customer.phone, Customer.attributes)
        .where(Customer.workspace_id == workspace_id, Customer.merged_into_id.is_(None))
        .order_by(Customer.id)
    )
    return [record_of(*row) for row in rows]


# Pairs recorded (and merged) per transaction.
RECORD_CHUNK = 200


def scan(
    database: Database, *, workspace_id: str, threshold: float = SUGGEST_THRESHOLD
) -> ScanSummary:
    """Find the workspace's duplicate customers; suggest them, or merge above the bar."""
    with database.session(write=False) as db:
        records = _records(db, workspace_id)
    pairs = sorted(
        find_duplicates(records, threshold=threshold).pairs, key=lambda p: -p.probability
    )
    survivors: dict[str, str] = {}  # merged in this scan -> where it went
    suggested = merged = 0
    # A transaction per chunk of pairs: after an import, thousands of suggestions and
    # merges in one would hold SQLite's one writer (ingest included) for many seconds.
    for start in range(0, len(pairs), RECORD_CHUNK):
        with database.session() as db:
            ws = db.get(Workspace, workspace_id)
            if ws is None:
                raise NotFound("workspace")
            bar = ws.settings.get("auto_merge_threshold")
            chunk = pairs[start : start + RECORD_CHUNK]
            done = _record(db, ws, chunk, float(bar) if bar is not None else None, survivors)
        suggested, merged = suggested + done[0], merged + done[1]
    return ScanSummary(customers=len(records), suggested=suggested, merged=merged)


def _record(
    db: Session,
    ws: Workspace,
    pairs: list[DuplicatePair],
    bar: float | None,
    survivors: dict[str, str],
) -> tuple[int, int]:
    existing = {
        (row.left_id, row.right_id): row
        for row in db.scalars(
            select(MergeSuggestion).where(
                MergeSuggestion.workspace_id == ws.id,
                MergeSuggestion.left_id.in_({p.key[0] for p in pairs}),
            )
        )
    }
    suggested = merged = 0
    for pair in pairs:
        left, right = pair.key
        row = existing.get((left, right))
        if row is not None and row.status != SuggestionStatus.pending:
            continue
        if row is None:
            row = MergeSuggestion(workspace_id=ws.id, left_id=left, right_id=right)
            db.add(row)
            suggested += 1
        _evidence(row, round(pair.probability, 6), pair.reason)
        if bar is None or pair.probability < bar:
            continue
        a, b = survivors.get(left, left), survivors.get(right, right)
        if a == b:  # already one customer through another pair of this scan
            row.status, row.decided_at = SuggestionStatus.merged, utcnow()
            continue
        db.flush()
        done = _merge(db, ws.id, row, a, b, SYSTEM, f"duplicate detection: {pair.reason}")
        survivors[done.merged_id] = done.survivor_id
        for key, value in list(survivors.items()):
            if value == done.merged_id:
                survivors[key] = done.survivor_id
        merged += 1
    return suggested, merged


def _merge(
    db: Session,
    workspace_id: str,
    row: MergeSuggestion,
    a: str,
    b: str,
    actor: Actor,
    reason: str,
    survivor_id: str | None = None,
    take: Sequence[str] = (),
) -> CustomerMerge:
    """Merge the pair; the customer seen first survives unless one is named."""
    if survivor_id is None:
        first = db.scalars(
            select(Customer)
            .where(Customer.id.in_([a, b]))
            .order_by(Customer.first_seen_at, Customer.id)
        ).first()
        survivor_id = first.id if first is not None else a
    other = b if survivor_id == a else a
    done = merge.merge(
        db,
        workspace_id=workspace_id,
        survivor_id=survivor_id,
        merged_id=other,
        actor=actor,
        reason=reason,
        take=take,
    )
    row.status = SuggestionStatus.merged
    row.merge_id = done.id
    row.decided_at = utcnow()
    row.decided_by_user_id = actor.user_id
    return done


# How likely a customer holding the number another one moved to (WhatsApp says so) is
# that same person: very, not surely (a number goes to someone else after a while).
NUMBER_CHANGE_PROBABILITY = 0.95
# One inbound message carried a proved handle of each (an email of one, a phone of the
# other): the same person, unless the sender shares a phone or a mailbox.
ONE_SENDER_PROBABILITY = 0.9
# A customer who typed a handle (into web chat, say) that an imported record has: likely
# that person (people type their own address), not surely (anyone can type any).
TYPED_HANDLE_PROBABILITY = 0.9


def suggest(
    db: Session, *, workspace_id: str, a: str, b: str, probability: float, reason: str
) -> MergeSuggestion:
    """Put two customers to duplicate review on other evidence than a scan's (a channel's
    word): a pair already suggested keeps its row, and a decided one stays decided."""
    left, right = sorted((a, b))
    row = db.scalar(
        select(MergeSuggestion).where(
            MergeSuggestion.workspace_id == workspace_id,
            MergeSuggestion.left_id == left,
            MergeSuggestion.right_id == right,
        )
    )
    if row is None:
        row = MergeSuggestion(workspace_id=workspace_id, left_id=left, right_id=right)
        db.add(row)
        _evidence(row, probability, reason)
    elif row.status == SuggestionStatus.pending:
        _evidence(row, probability, reason)
    return row


def _evidence(row: MergeSuggestion, probability: float, reason: str) -> None:
    """A pending suggestion keeps the strongest evidence found for it, the highest
    probability with its reason, whoever found it (a scan, a channel's word): a later scan
    must not lower a channel's 0.95 to its own guess or put its reason in its place."""
    if row.probability is None or probability > row.probability:
        row.probability, row.reason = probability, reason[:500]


def _suggestion(db: Session, workspace_id: str, suggestion_id: str) -> MergeSuggestion:
    return get_scoped(
        db, MergeSuggestion, suggestion_id, workspace_id=workspace_id, name="merge suggestion"
    )


def pending(
    db: Session, *, workspace_id: str, customer_id: str | None = None, limit: int = 50
) -> list[MergeSuggestion]:
    """Undecided suggestions between two live customers, likeliest first."""
    left, right = aliased(Customer), aliased(Customer)
    query = (
        select(MergeSuggestion)
        .join(left, left.id == MergeSuggestion.left_id)
        .join(right, right.id == MergeSuggestion.right_id)
        .where(
            MergeSuggestion.workspace_id == workspace_id,
            MergeSuggestion.status == SuggestionStatus.pending,
            left.merged_into_id.is_(None),
            right.merged_into_id.is_(None),
        )
        .order_by(MergeSuggestion.probability.desc(), MergeSuggestion.id)
        .limit(limit)
    )
    if customer_id is not None:
        query = query.where(
            (MergeSuggestion.left_id == customer_id) | (MergeSuggestion.right_id == customer_id)
        )
    return list(db.scalars(query))


def accept(
    db: Session,
    *,
    workspace_id: str,
    suggestion_id: str,
    actor: Actor,
    survivor_id: str | None = None,
    take: Sequence[str] = (),
) -> MergeSuggestion:
    """Merge the suggested pair (into ``survivor_id`` when given; ``take``: as a merge)."""
    row = _suggestion(db, workspace_id, suggestion_id)
    if row.status != SuggestionStatus.pending:
        raise Conflict(f"this suggestion was already {row.status.value}")
    if survivor_id is not None and survivor_id not in (row.left_id, row.right_id):
        raise Invalid("survivor_id must be one of the two suggested customers")
    _merge(
        db,
        workspace_id,
        row,
        row.left_id,
        row.right_id,
        actor,
        f"merge suggestion accepted: {row.reason}",
        survivor_id,
        take,
    )
    return row


def dismiss(db: Session, *, workspace_id: str, suggestion_id: str, actor: Actor) -> MergeSuggestion:
    """Not the same person: later scans will not suggest this pair again."""
    row = _suggestion(db, workspace_id, suggestion_id)
    if row.status != SuggestionStatus.pending:
        raise Conflict(f"this suggestion was already {row.status.value}")
    row.status = SuggestionStatus.dismissed
    row.decided_at = utcnow()
    row.decided_by_user_id = actor.user_id
    return row


def request_scan(db: Session, *, workspace_id: str) -> bool:
    """Queue a scan of the workspace, unless one is already waiting; True if queued."""
    waiting = db.scalar(
        select(Job.id).where(
            Job.name == "find_duplicates",
            Job.workspace_id == workspace_id,
            Job.state == JobState.queued,
        )
    )
    if waiting is not None:
        return False
    _enqueue_scan(db, workspace_id)
    return True


def _enqueue_scan(db: Session, workspace_id: str) -> None:
    enqueue(
        db,
        name="find_duplicates",
        args={"workspace_id": workspace_id},
        workspace_id=workspace_id,
        max_attempts=3,
    )


@job("find_duplicates", max_attempts=3)
def find_duplicates_job(ctx: JobContext, workspace_id: str) -> None:
    scan(ctx.database, workspace_id=workspace_id)


@job("find_duplicates_all")
def find_duplicates_all(ctx: JobContext) -> None:
    """The nightly pass: one scan per workspace."""
    with ctx.database.session() as db:
        for workspace_id in db.scalars(select(Workspace.id)):
            _enqueue_scan(db, workspace_id)
