"""Importing customers from CSV or JSONL, idempotently, in batched transactions.

A row matches an existing customer by any of its normalized handles (email, phone,
external id), so re-running an import updates those customers and never duplicates them;
the handles it brings are the workspace's word, proven. A handle another customer only
typed (a web chat visitor's email) is no match: the file's person takes it, and the two
are put to duplicate review.
A row that cannot be read (bad JSON or CSV, an invalid email or phone, no handle at all,
handles of two different customers, a value a JSON column cannot keep, an attribute that
does not fit its definition) is reported by its line number and skipped; the others go in.
Defined attributes are stored in their type, as the API stores them. A file that is not
UTF-8 text is refused whole.
"""

import csv
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from rapport.customers import duplicates, profile
from rapport.customers import identity as ident
from rapport.customers.models import AttributeDefinition, Customer, Identity, IdentityKind
from rapport.customers.service import MERGE_HOPS, settle_handles
from rapport.db import Database, hold_many, new_id, storable, transient, utcnow
from rapport.problems import Invalid
from rapport.workspaces.models import Workspace

# Fields a column can be mapped to; any other column becomes a custom attribute.
FIELDS = ("name", "email", "phone", "external_id")
MAX_NAME = 300  # as the customers table keeps it
_HANDLE_KINDS = {
    "email": IdentityKind.email,
    "phone": IdentityKind.phone,
    "external_id": IdentityKind.external,
}
BATCH = 500
# How often a batch runs before a transient database error or a handle stored by another
# meanwhile (see ``flush``) stops the import.
ATTEMPTS = 3
# What a CSV file's columns may be separated by; the header tells which.
DELIMITERS = (",", ";", "\t")


class UnreadableFile(ValueError):
    """A file that cannot be read at all (not UTF-8 text, no CSV header): nothing goes in."""


@dataclass
class RowError:
    line: int
    reason: str


@dataclass
class Report:
    rows: int = 0
    created: int = 0
    updated: int = 0
    # Rows given a handle another customer had only typed: the two are put to review.
    to_review: int = 0
    errors: list[RowError] = field(default_factory=list)


def parse_mapping(items: list[str]) -> dict[str, str]:
    """``["email=E-mail", "name=Full name"]`` -> {field: column}; unknown fields are refused."""
    mapping: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            target, sep, column = part.partition("=")
            target = target.strip()
            if not sep or target not in FIELDS or not column.strip():
                raise ValueError(f"bad mapping {part!r}: use FIELD=COLUMN with FIELD in {FIELDS}")
            mapping[target] = column.strip()
    return mapping


def _check_utf8(path: Path) -> None:
    # Before the first row: a decoding error met halfway would come after earlier batches
    # were committed. A newline byte is never inside a UTF-8 sequence, so lines decode alone.
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UnreadableFile(
                    f"the file is not UTF-8 text (line {number}): save it as UTF-8"
                ) from exc


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) per record; a row that cannot be parsed is its error message.

    Raises UnreadableFile, before the first row, for a file that is not UTF-8 text.
    """
    _check_utf8(path)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        # utf-8-sig: a BOM (Windows tools write one) made the first line no JSON, its row lost.
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, f"not JSON: {exc.msg}"
                    continue
                except RecursionError:
                    yield number, "not JSON: nested too deeply"
                    continue
                except ValueError as exc:  # a number of over 4,300 digits, say
                    yield number, f"not JSON: {exc}"
                    continue
                yield number, value if isinstance(value, dict) else "not a JSON object"
        return
    with path.open(encoding="utf-8-sig", newline="") as f:
        first = f.readline()
    fieldnames: list[str] = []
    delimiter = ","
    # The delimiter that splits the header into the most columns: spreadsheets in much of
    # Europe save "CSV" with semicolons, and some tools tabs; read with commas, every row
    # of such a file was one column, no handle found, and not one customer imported.
    for candidate in DELIMITERS:
        try:
            names = next(csv.reader([first], delimiter=candidate), [])
        except csv.Error as exc:
            raise UnreadableFile(f"the header row is not CSV: {exc}") from exc
        if len(names) > len(fieldnames):
            fieldnames, delimiter = [_from_text(name) for name in names], candidate
    start = 2  # the first line after the header
    while start:
        start = yield from _csv_rows(path, fieldnames, start, delimiter)


class _Taken:
    """Lines as csv reads them, keeping those of the record being read."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.taken: list[str] = []

    def __iter__(self) -> "_Taken":
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        return line

    def record(self) -> list[str]:
        taken, self.taken = self.taken, []
        return taken


def _csv_rows(
    path: Path, fieldnames: list[str], start: int, delimiter: str = ","
) -> Generator[tuple[int, dict[str, Any] | str], None, int]:
    """The rows from physical line ``start`` on. Returns 0 at the end of the file, or the
    line to go on from after a quote that was opened and never closed: read as one field,
    it swallowed the lines after it (to the end, to csv's 128 KiB limit, or to some later
    quote), and those lines are rows of their own."""
    width = len(fieldnames)
    first = start
    with path.open(encoding="utf-8-sig", newline="") as f:
        lines = _Taken(itertools.islice(f, start - 1, None))
        reader = csv.DictReader(lines, fieldnames=fieldnames, delimiter=delimiter)
        while True:
            error = None
            try:
                row = next(reader)
            except StopIteration:
                return 0
            except csv.Error as exc:
                error = f"not CSV: {exc}"
            raw = lines.record()
            here, first = first, first + len(raw)
            # A row with more or fewer cells than the header has a stray delimiter or quote.
            if error is None and (None in row or sum(v is not None for v in row.values()) != width):
                error = f"expected {width} columns"
            # A record over several lines is a quoted field with line breaks in it; unless
            # it is broken, or its quotes do not pair up: then a quote was never closed.
            if len(raw) > 1 and (error or sum(line.count('"') for line in raw) % 2):
                yield here, "a quote opened on this line is never closed"
                return here + 1
            yield here, error or {key: _from_text(value) for key, value in row.items()}


def _fields(row: dict[str, Any], mapping: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    # A column is found as named, else whatever its case and spaces: a header "Email" or
    # " phone" (as spreadsheets and mailing tools write them) was no handle, every row an
    # error, and the handle kept as an attribute.
    loose: dict[str, str] = {}
    for key in row:
        if isinstance(key, str):
            loose.setdefault(key.strip().casefold(), key)
    columns = {}
    for target in FIELDS:
        wanted = mapping.get(target, target)
        columns[target] = wanted if wanted in row else loose.get(wanted.strip().casefold(), wanted)
    used = set(columns.values())
    values = {t: str(row.get(c) or "").strip() for t, c in columns.items()}
    attributes = {k: v for k, v in row.items() if k not in used and v not in (None, "")}
    return values, attributes


_Parsed = list[tuple[int, dict[str, str], dict[str, Any], list[ident.Handle]]]


def _parse(
    batch: list[tuple[int, dict[str, Any]]],
    mapping: dict[str, str],
    region: str,
    defined: dict[str, AttributeDefinition],
    report: Report,
) -> _Parsed:
    """The batch's rows as values, attributes (the ``defined`` ones in their type) and
    normalized handles; a row that has none, whose attribute does not fit its definition,
    or that the database could not keep, is its line's error."""
    parsed: _Parsed = []
    for line, row in batch:
        values, attributes = _fields(row, mapping)
        try:
            attributes = {
                k: profile.coerce(defined[k], v) if k in defined else v
                for k, v in attributes.items()
            }
        except Invalid as exc:
            report.errors.append(RowError(line, exc.detail))
            continue
        try:
            # JSON text carries what the database refuses (an integer beyond 64 bits in the
            # JSON column, a lone surrogate in any text): found here, it is this row's error
            # rather than the failure of its whole batch.
            storable([values, attributes])
        except ValueError as exc:
            report.errors.append(RowError(line, str(exc)))
            continue
        if len(values["name"]) > MAX_NAME:
            report.errors.append(RowError(line, f"a name is at most {MAX_NAME} characters"))
            continue
        try:
            handles = [
                ident.handle(kind, values[name], verified=False, region=region)
                for name, kind in _HANDLE_KINDS.items()
                if values[name]
            ]
        except ident.InvalidHandle as exc:
            report.errors.append(RowError(line, str(exc)))
            continue
        if not handles:
            report.errors.append(RowError(line, "no email, phone or external_id to match on"))
            continue
        parsed.append((line, values, attributes, handles))
    return parsed


def _holders(
    db: Session, workspace_id: str, parsed: _Parsed
) -> dict[tuple[IdentityKind, str], Identity]:
    """The identities of the rows' handles, by kind and value, as they are now: one lookup
    per kind for the whole batch."""
    found: dict[tuple[IdentityKind, str], Identity] = {}
    for kind in set(_HANDLE_KINDS.values()):
        wanted = {h.value for p in parsed for h in p[3] if h.kind == kind}
        if wanted:
            for held in db.scalars(
                select(Identity)
                .where(
                    Identity.workspace_id == workspace_id,
                    Identity.kind == kind,
                    Identity.value.in_(wanted),
                )
                .execution_options(populate_existing=True)
            ):
                found[(held.kind, held.value)] = held
    return found


def _apply(db: Session, workspace_id: str, parsed: _Parsed, report: Report, *, write: bool) -> None:
    """Match the parsed rows to customers and add or update them in ``db``; flushed only
    when ``write`` (a dry run leaves the session to be rolled back, having written none)."""
    found = _holders(db, workspace_id, parsed)
    known_ids = {i.customer_id for i in found.values()}
    if write:
        # Their rows held, in the order a merge takes its two, and the handles read again
        # until their holders are held: a merge or undo committing meanwhile moved them
        # and rewrote the records, and the attributes read before were written back over
        # what it had changed (PostgreSQL; SQLite has one writer). A holder found so,
        # sorting before one held, is taken only while free (``hold``): a merge or undo
        # may hold it and wait for ours. Else the batch gives way, and is tried again.
        hold_many(db, Customer, known_ids)
        for _ in range(MERGE_HOPS):
            found = _holders(db, workspace_id, parsed)
            if not (moved := {i.customer_id for i in found.values()} - known_ids):
                break
            known_ids |= moved
            hold_many(db, Customer, moved)
    customers: dict[str, Customer] = {
        c.id: c
        for c in (
            db.scalars(
                select(Customer)
                .where(Customer.id.in_(known_ids))
                .execution_options(populate_existing=True)
            )
            if known_ids
            else []
        )
    }
    # A handle someone only typed (a web chat visitor's email, a trait sent to the events
    # API: each came beside a handle its sender proved) is no proof that the row is them:
    # matched on it, the file's name and attributes went onto whoever typed the address.
    # A holder who proved nothing is a record only the workspace's own data made (an
    # earlier import, when imported handles were kept as typed; an agent's): the file
    # speaks for it as well as they did.
    proving: set[str] = set()
    if known_ids:
        proving = set(
            db.scalars(
                select(Identity.customer_id)
                .where(Identity.customer_id.in_(known_ids), Identity.verified.is_(True))
                .distinct()
            )
        )
    now = utcnow()
    claimed_from: set[str] = set()
    review: set[tuple[str, str]] = set()
    for line, values, attributes, handles in parsed:
        rows = [found[(h.kind, h.value)] for h in handles if (h.kind, h.value) in found]
        matches = {i.customer_id for i in rows if i.verified or i.customer_id not in proving}
        if len(matches) > 1:
            report.errors.append(RowError(line, "its handles belong to different customers"))
            continue
        if matches:
            customer = customers[matches.pop()]
            if values["name"]:
                customer.name = values["name"]
            if attributes:
                customer.attributes = {**customer.attributes, **attributes}
            customer.updated_at = now
            report.updated += 1
        else:
            customer = Customer(
                id=new_id(),
                workspace_id=workspace_id,
                name=values["name"],
                attributes=attributes,
                first_seen_at=now,
                last_seen_at=now,
                created_at=now,
                updated_at=now,
            )
            db.add(customer)
            customers[customer.id] = customer
            report.created += 1
        taken = False
        for h in handles:
            row = found.get((h.kind, h.value))
            if row is None:
                # The workspace's own record of the person, as an admin's customer made
                # through the API: proven, so that their first message finds them (kept
                # as typed, it made a second customer, who took the handle from them).
                row = Identity(
                    workspace_id=workspace_id,
                    customer_id=customer.id,
                    kind=h.kind,
                    value=h.value,
                    verified=True,
                )
                db.add(row)
                found[(h.kind, h.value)] = row
            elif row.customer_id != customer.id:
                # Only typed by another: the file's person has it, as one who proves a
                # typed handle claims it, and the typist may be them: duplicate review.
                claimed_from.add(row.customer_id)
                review.add((customer.id, row.customer_id))
                row.customer_id = customer.id
                taken = True
            row.verified = True  # theirs already and only typed: the file confirms it
            if h.kind == IdentityKind.email and not customer.email:
                customer.email = h.value
            if h.kind == IdentityKind.phone and not customer.phone:
                customer.phone = h.value
        report.to_review += taken
    if write:
        db.flush()
        if claimed_from:
            settle_handles(db, claimed_from | {c for c, _ in review})
        for a, b in sorted(review):
            duplicates.suggest(
                db,
                workspace_id=workspace_id,
                a=a,
                b=b,
                probability=duplicates.TYPED_HANDLE_PROBABILITY,
                reason="an imported record has a handle the other had only typed",
            )


def import_customers(
    database: Database,
    *,
    workspace_id: str,
    path: Path,
    mapping: dict[str, str],
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Import the file, one transaction per batch; a dry run checks every row, writes none.

    Each batch's rows are parsed (handles normalized, values checked) before its
    transaction, which only matches and writes: SQLite has one writer, and every inbound
    message waits while it is held. A dry run reads in a read transaction."""
    report = Report()
    batch: list[tuple[int, dict[str, Any]]] = []
    with database.session(write=False) as db:
        workspace = db.get(Workspace, workspace_id)
        if workspace is None:
            raise ValueError("no such workspace")
        region = workspace.default_region
        # Read once: a definition made during the import applies to the next one.
        defined = {d.key: d for d in profile.definitions(db, workspace_id=workspace_id)}

    def flush() -> None:
        parsed = _parse(batch, mapping, region, defined, report)
        counts = (report.created, report.updated, report.to_review, len(report.errors))
        attempt = 1
        while True:
            try:
                with database.session(write=not dry_run) as db:
                    _apply(db, workspace_id, parsed, report, write=not dry_run)
                    if dry_run:
                        db.rollback()
                break
            except (IntegrityError, OperationalError) as exc:
                # The batch gave way to a merge or undo holding a customer it reached out
                # of order (or met a deadlock, a lock not had in time), or another import
                # or an inbound message stored one of its handles between its read and its
                # write (PostgreSQL; the unique handle refused the second): nothing of it
                # was written, so it runs again, reading what the other committed, counted
                # again, not the import stopped midway.
                if attempt == ATTEMPTS or not (isinstance(exc, IntegrityError) or transient(exc)):
                    raise
                attempt += 1
                report.created, report.updated, report.to_review = counts[:3]
                del report.errors[counts[3] :]
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for line, row in read_rows(path):
        report.rows += 1
        if isinstance(row, str):
            report.errors.append(RowError(line, row))
            if progress is not None:
                progress(1)
            continue
        batch.append((line, row))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    report.errors.sort(key=lambda e: e.line)
    return report


def import_upload(
    database: Database,
    *,
    workspace_id: str,
    data: bytes,
    format_: str,
    mapping: dict[str, str],
    dry_run: bool = False,
) -> Report:
    """Import an uploaded file's bytes, as ``import_customers`` imports a file: by way of a
    temporary copy, which the reader goes through more than once (the UTF-8 check, the
    header, the rows). Blocking from the copy to its removal: call it off the event loop."""
    with tempfile.TemporaryDirectory(prefix="rapport-import-") as tmp:
        path = Path(tmp) / f"upload.{format_}"
        path.write_bytes(data)
        return import_customers(
            database, workspace_id=workspace_id, path=path, mapping=mapping, dry_run=dry_run
        )


def export_rows(database: Database, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's customers (merged records left out), one flat dict each."""
    with database.session(write=False) as db:
        customers = db.scalars(
            select(Customer)
            .where(Customer.workspace_id == workspace_id, Customer.merged_into_id.is_(None))
            .order_by(Customer.created_at, Customer.id)
        ).all()
        external: dict[str, str] = dict(
            db.execute(
                select(Identity.customer_id, Identity.value).where(
                    Identity.workspace_id == workspace_id,
                    Identity.kind == IdentityKind.external,
                )
            ).all()
        )
        return [
            {
                "id": c.id,
                "name": c.name,
                "email": c.email or "",
                "phone": c.phone or "",
                "external_id": external.get(c.id, ""),
                **c.attributes,
            }
            for c in customers
        ]


# What makes a spreadsheet read a cell as a formula. A customer's name or attribute comes
# from whoever wrote in ("=HYPERLINK(...)" as the display name of a mail): opened in a
# spreadsheet, the admin's export ran it (CWE-1236). Such a cell is written after a quote
# (the spreadsheets' own mark for text), which the import takes off again.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9][0-9.]*")  # a phone number, an amount: shown as is


def _as_text(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet reads as a formula."""
    if (
        isinstance(value, str)
        and value.startswith(_FORMULA_STARTS)
        and not _PLAIN_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def _from_text(value: Any) -> Any:
    """A cell as ``_as_text`` wrote it, back as it was."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(_FORMULA_STARTS):
        return value[1:]
    return value


def write_rows(out: TextIO, rows: list[dict[str, Any]], format_: str) -> None:
    """Write rows as JSONL or CSV (columns: the union of every row's keys; no cell that a
    spreadsheet would run as a formula)."""
    if format_ == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["id", *FIELDS]
    writer = csv.writer(out)
    writer.writerow([_as_text(column) for column in columns])
    writer.writerows([_as_text(row.get(column, "")) for column in columns] for row in rows)
