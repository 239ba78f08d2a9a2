"""Customers: create, update, find by handle, resolve handles at ingest, the timeline."""

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy import update as update_rows
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from rapport import money, pagination
from rapport import search as search_index
from rapport.automation import service as automation
from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, ConversationGuest, Message, MessageKind
from rapport.customers import identity as ident
from rapport.customers import profile
from rapport.customers.models import (
    AttributeType,
    Customer,
    CustomerMerge,
    CustomerTag,
    Event,
    Identity,
    IdentityKind,
)
from rapport.customers.schemas import CustomerCreate, CustomerUpdate, EventCreate, TimelineEntry
from rapport.db import hold, hold_many, lock_in_order, unindexed, utcnow
from rapport.events.models import Order
from rapport.problems import Conflict, Invalid, NotFound
from rapport.realtime.service import emit
from rapport.scoped import get_scoped
from rapport.workspaces.models import Workspace


def get(db: Session, *, workspace_id: str, customer_id: str) -> Customer:
    """The customer with this id in this workspace, or a 404 problem."""
    return get_scoped(db, Customer, customer_id, workspace_id=workspace_id, name="customer")


def identities(db: Session, *, customer: Customer) -> list[Identity]:
    """The customer's handles, oldest first."""
    return list(
        db.scalars(
            select(Identity)
            .where(Identity.customer_id == customer.id)
            .order_by(Identity.created_at, Identity.id)
        )
    )


def _handles_of(workspace: Workspace, data: CustomerCreate) -> list[ident.Handle]:
    region = workspace.default_region
    handles: list[ident.Handle] = []
    try:
        if data.email:
            handles.append(ident.handle(IdentityKind.email, data.email, region=region))
        if data.phone:
            handles.append(ident.handle(IdentityKind.phone, data.phone, region=region))
        for item in data.identities:
            handles.append(
                ident.handle(item.kind, item.value, verified=item.verified, region=region)
            )
    except ident.InvalidHandle as exc:
        raise Invalid(str(exc)) from exc
    return handles


def find_by_handle(db: Session, *, workspace_id: str, handle: ident.Handle) -> Identity | None:
    return db.scalar(
        select(Identity).where(
            Identity.workspace_id == workspace_id,
            Identity.kind == handle.kind,
            Identity.value == handle.value,
        )
    )


def create(db: Session, *, workspace: Workspace, data: CustomerCreate) -> Customer:
    """Create a customer with its handles; a handle owned by another customer is a conflict."""
    handles = _handles_of(workspace, data)
    for h in handles:
        if find_by_handle(db, workspace_id=workspace.id, handle=h) is not None:
            raise Conflict(f"{h.kind.value} {h.value} already belongs to another customer")
    attributes = profile.typed_attributes(db, workspace_id=workspace.id, changes=data.attributes)
    attributes = {k: v for k, v in attributes.items() if v is not None}
    customer = Customer(workspace_id=workspace.id, name=data.name, attributes=attributes)
    db.add(customer)
    db.flush()
    for h in _dedupe(handles):
        _attach(db, customer=customer, handle=h)
    emit(db, workspace_id=workspace.id, type="customer.created", payload={"id": customer.id})
    return customer


def held_root(db: Session, customer: Customer) -> Customer:
    """The record this customer's merges ended in (``root_of``), held as ``profile.held``
    holds one: a merge or undo committed while this waited is followed. The customer's row
    and the root's are taken together, in the order a merge takes its two, so that this
    never waits on a merge that waits on it; a root found on a later round (a merge
    committed meanwhile) that sorts before the row already held is taken only while free
    (``hold``: else this transaction fails, lock not available, to be run again; it never
    waits in a circle with an undo taking the two in order)."""
    for _ in range(MERGE_HOPS):
        root = root_of(db, customer)
        hold(db, Customer, *{customer.id, root.id})
        if root.merged_into_id is None and root_of(db, customer) is root:
            return root
    raise Conflict("this customer's merges changed while being followed: send it again")


def update(db: Session, *, customer: Customer, data: CustomerUpdate) -> Customer:
    """Change a customer's name or merge new values into its attributes (``profile.held``:
    a customer merged into another meanwhile is a 409 naming it)."""
    profile.held(db, customer)
    if data.name is not None:
        customer.name = data.name
    before = dict(customer.attributes)
    if data.attributes is not None:
        typed = profile.typed_attributes(
            db, workspace_id=customer.workspace_id, changes=data.attributes
        )
        merged = dict(customer.attributes)
        for key, value in typed.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        customer.attributes = merged
    customer.updated_at = utcnow()
    profile.changed(db, customer.workspace_id, customer.id)
    attributes_changed(db, customer=customer, before=before)
    return customer


def attributes_changed(db: Session, *, customer: Customer, before: dict[str, Any]) -> None:
    """Tell of the customer's attributes that differ from ``before`` (an agent's edit, a
    merge that took the other record's, its undo): the ``customer.attribute_changed``
    event, and the workspace's rules for it."""
    keys = sorted(
        k
        for k in set(before) | set(customer.attributes)
        if before.get(k) != customer.attributes.get(k)
    )
    if not keys:
        return
    emit(
        db,
        workspace_id=customer.workspace_id,
        type="customer.attribute_changed",
        payload={"id": customer.id, "keys": keys},
    )
    automation.trigger(
        db,
        workspace_id=customer.workspace_id,
        event="customer.attribute_changed",
        customer_id=customer.id,
    )


def add_identity(
    db: Session,
    *,
    workspace: Workspace,
    customer: Customer,
    kind: IdentityKind,
    value: str,
    verified: bool = False,
) -> Identity:
    """Give a customer one more handle; a handle owned by another customer is a conflict."""
    try:
        h = ident.handle(kind, value, verified=verified, region=workspace.default_region)
    except ident.InvalidHandle as exc:
        raise Invalid(str(exc)) from exc
    existing = find_by_handle(db, workspace_id=workspace.id, handle=h)
    if existing is not None:
        if existing.customer_id == customer.id:
            if verified and not existing.verified:  # theirs already, now proved
                existing.verified = True
                profile.changed(db, customer.workspace_id, customer.id)
            return existing
        raise Conflict(f"{h.kind.value} {h.value} already belongs to another customer")
    row = _attach(db, customer=customer, handle=h)
    profile.changed(db, customer.workspace_id, customer.id)
    return row


def remove_identity(db: Session, *, customer: Customer, identity_id: str) -> None:
    row = db.scalar(
        select(Identity).where(Identity.id == identity_id, Identity.customer_id == customer.id)
    )
    if row is None:
        raise NotFound("identity")
    db.delete(row)
    db.flush()
    settle_handles(db, [customer.id])
    profile.changed(db, customer.workspace_id, customer.id)


def settle_handles(db: Session | Connection, customer_ids: Iterable[str]) -> None:
    """Make each customer's email and phone (the copies shown, searched and written to)
    one of their own handles of that kind: the one they had while it is still theirs,
    else the oldest left (as the first one attached became it), else none. For after a
    handle left a customer: removed, claimed by the customer who proved it, or merged.

    The customers are held first, ids ascending, as a merge and ingest's last-seen update
    take them: the updates below lock the rows they change in the order they scan them
    (the table's, or an index's), one statement for emails and another for phones, and a
    merge holding one of them could wait for a row this held while this waited for its."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    if isinstance(db, Session):
        hold_many(db, Customer, ids)
    else:
        lock_in_order(db, Customer, ids)
    for kind, column in (
        (IdentityKind.email, Customer.email),
        (IdentityKind.phone, Customer.phone),
    ):
        theirs = select(Identity.value).where(
            Identity.customer_id == Customer.id, Identity.kind == kind
        )
        oldest = theirs.order_by(Identity.created_at, Identity.id).limit(1).scalar_subquery()
        db.execute(
            update_rows(Customer)
            .where(Customer.id.in_(ids), or_(column.is_(None), column.not_in(theirs)))
            .values({column: oldest}),
            execution_options={"synchronize_session": "fetch"} if isinstance(db, Session) else {},
        )


def dedupe_handles(handles: list[ident.Handle]) -> list[ident.Handle]:
    """One handle per (kind, value), the verified copy winning."""
    return _dedupe(handles)


def _dedupe(handles: list[ident.Handle]) -> list[ident.Handle]:
    seen: dict[tuple[IdentityKind, str], ident.Handle] = {}
    for h in handles:
        key = (h.kind, h.value)
        if key not in seen or (h.verified and not seen[key].verified):
            seen[key] = h
    return list(seen.values())


def _attach(db: Session, *, customer: Customer, handle: ident.Handle) -> Identity:
    row = Identity(
        workspace_id=customer.workspace_id,
        customer_id=customer.id,
        kind=handle.kind,
        value=handle.value,
        verified=handle.verified,
    )
    db.add(row)
    if handle.kind == IdentityKind.email and not customer.email:
        customer.email = handle.value
    if handle.kind == IdentityKind.phone and not customer.phone:
        customer.phone = handle.value
    return row


def resolve(
    db: Session,
    *,
    workspace_id: str,
    handles: list[ident.Handle],
    name: str = "",
    seen_at: datetime | None = None,
) -> tuple[Customer, bool]:
    """The customer these handles belong to, created if none; True when it is new.

    Only verified handles find an existing customer: a handle merely typed into a form
    never joins a stranger's history to a known customer. A verified handle that someone
    earlier only typed is claimed by the customer who proved it.
    """
    handles = _dedupe(handles)
    verified = [h for h in handles if h.verified]
    found: dict[tuple[IdentityKind, str], Identity] = {}
    if handles:
        rows = db.scalars(
            select(Identity).where(
                Identity.workspace_id == workspace_id,
                tuple_(Identity.kind, Identity.value).in_([(h.kind, h.value) for h in handles]),
            )
        )
        found = {(row.kind, row.value): row for row in rows}
    customer: Customer | None = None
    for h in verified:  # channel handles come first: the order the channel gave them
        row = found.get((h.kind, h.value))
        if row is not None and row.verified:
            customer = db.get(Customer, row.customer_id)
            break
    created = customer is None
    now = seen_at or utcnow()
    if customer is None:
        customer = Customer(
            workspace_id=workspace_id, name=name, first_seen_at=now, last_seen_at=now
        )
        db.add(customer)
        db.flush()
    claimed_from: set[str] = set()
    for h in handles:
        row = found.get((h.kind, h.value))
        if row is None:
            _attach(db, customer=customer, handle=h)
        elif h.verified and not row.verified:
            claimed_from.add(row.customer_id)
            row.customer_id = customer.id
            row.verified = True
    if claimed_from:
        db.flush()
        settle_handles(db, claimed_from | {customer.id})
    if name and not customer.name:
        customer.name = name
    if now > customer.last_seen_at:
        customer.last_seen_at = now
    return customer, created


def change_number(
    db: Session,
    *,
    workspace_id: str,
    customer_id: str,
    old: list[ident.Handle],
    new: list[ident.Handle],
    source: str,
    at: datetime,
) -> list[str]:
    """The customer moved from the ``old`` handles to the ``new`` ones, as their channel
    says (WhatsApp's notice of a new number): each new handle becomes theirs, proven; the
    old ones stay theirs too (their history was written from them); the customer's phone
    (shown, searched, texted) follows if it was the old number; the timeline says so.

    A new handle another customer proved is not taken from them (a number may have been
    someone else's): the ids of such customers are returned, for duplicate review."""
    customer = get(db, workspace_id=workspace_id, customer_id=customer_id)
    handles = _dedupe(new)
    found = {
        (row.kind, row.value): row
        for row in db.scalars(
            select(Identity).where(
                Identity.workspace_id == workspace_id,
                tuple_(Identity.kind, Identity.value).in_([(h.kind, h.value) for h in handles]),
            )
        )
    }
    held: set[str] = set()
    claimed_from: set[str] = set()
    theirs: list[ident.Handle] = []
    for h in handles:
        row = found.get((h.kind, h.value))
        if row is None:
            _attach(db, customer=customer, handle=h)
        elif row.customer_id == customer.id:
            row.verified = True
        elif not row.verified:  # only typed into a form: the customer who proved it has it
            claimed_from.add(row.customer_id)
            row.customer_id, row.verified = customer.id, True
        else:
            held.add(row.customer_id)
            continue
        theirs.append(h)
    old_phones = {h.value for h in old if h.kind == IdentityKind.phone}
    new_phone = next((h.value for h in theirs if h.kind == IdentityKind.phone), None)
    if new_phone is not None and (customer.phone is None or customer.phone in old_phones):
        customer.phone = new_phone
    if claimed_from:
        db.flush()
        settle_handles(db, claimed_from)
    db.add(
        Event(
            workspace_id=workspace_id,
            customer_id=customer.id,
            type="number_changed",
            # The channel's own handles (its first), and who keeps the new one if not them.
            properties={
                "from": old[0].value if old else None,
                "to": handles[0].value if handles else None,
                "held_by": sorted(held),
            },
            occurred_at=at,
            source=source,
        )
    )
    profile.changed(db, workspace_id, customer.id)
    emit(
        db,
        workspace_id=workspace_id,
        type="customer.event",
        payload={"customer_id": customer.id, "type": "number_changed"},
    )
    return sorted(held)


# Customers a full-text search can page through: the most recently added matches (handles
# typed whole always match). Past it the answer says so, as Zendesk's search does at 1,000.
SEARCH_CAP = 1000


@dataclass(frozen=True)
class Found:
    customers: list[Customer]
    next_cursor: str | None
    # The words matched more customers than SEARCH_CAP: the rest cannot be paged to.
    truncated: bool = False


def search(
    db: Session,
    *,
    workspace_id: str,
    q: str | None,
    cursor: str | None,
    limit: int,
    tag: str | None = None,
    attributes: Sequence[tuple[str, str]] = (),
) -> Found:
    """Customers matching ``q`` (name, email, phone or any handle), carrying ``tag`` and
    each ``(key, value)`` of ``attributes`` (``attribute_is``), newest activity first."""
    limit = pagination.clamp(limit)
    truncated = False
    stmt = select(Customer).where(
        Customer.workspace_id == workspace_id, Customer.merged_into_id.is_(None)
    )
    for key, value in attributes:
        stmt = stmt.where(attribute_is(db, workspace_id=workspace_id, key=key, value=value))
    if tag:
        stmt = stmt.where(
            Customer.id.in_(
                select(CustomerTag.customer_id).where(
                    CustomerTag.workspace_id == workspace_id,
                    CustomerTag.tag == tag.strip().lower(),
                )
            )
        )
    if q:
        term = q.strip()
        values = {term}
        for kind in (IdentityKind.email, IdentityKind.phone):
            try:
                values.add(ident.normalize(kind, term))
            except ident.InvalidHandle:
                pass
        # Words of the name, email or phone through the full-text index; handles exactly.
        # The candidates are gathered first, so the page query never walks the table.
        matches = search_index.customer_ids(
            db, workspace_id=workspace_id, q=term, limit=SEARCH_CAP + 1
        )
        truncated = len(matches) > SEARCH_CAP
        candidates = set(matches[:SEARCH_CAP])
        candidates |= set(
            db.scalars(
                select(Identity.customer_id).where(
                    Identity.workspace_id == workspace_id, Identity.value.in_(values)
                )
            )
        )
        digits = "".join(ch for ch in term if ch.isdigit())
        if len(digits) >= 6 and not term.lstrip().startswith("+"):
            # A national number without its country code: match the end of known phones.
            candidates |= set(
                db.scalars(
                    select(Identity.customer_id).where(
                        Identity.workspace_id == workspace_id,
                        Identity.kind == IdentityKind.phone,
                        Identity.value.like(f"%{digits}"),
                    )
                )
            )
        if not candidates:
            return Found([], None)
        stmt = stmt.where(Customer.id.in_(candidates))
    after = pagination.decode(cursor)
    if after:
        stmt = stmt.where(tuple_(Customer.last_seen_at, Customer.id) < after)
    rows = list(
        db.scalars(stmt.order_by(Customer.last_seen_at.desc(), Customer.id.desc()).limit(limit + 1))
    )
    page, nxt = pagination.page_of(rows, limit, lambda c: (c.last_seen_at, c.id))
    return Found(page, nxt, truncated)


_TRUE_FALSE = {"true": True, "false": False}
# A number as JSON writes one (Python's float() also reads "1_000", "nan" and "inf").
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
MAX_ATTRIBUTE_VALUE = 500
_INT64 = (-(2**63), 2**63 - 1)  # what both databases bind as an integer


def _bindable(value: Any) -> Any:
    """A number both databases take as a parameter: an integer beyond 64 bits as the float
    JSON compares it with (SQLite and orjson refused it: a 500 for ``x:1e20``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64[0] <= value <= _INT64[1] else float(value)
    return value


def attribute_is(db: Session, *, workspace_id: str, key: str, value: str) -> ColumnElement[bool]:
    """Customers whose attribute ``key`` is ``value``, or a list holding it ("plan is Pro"
    finds ``["Pro", "Legacy"]``). A defined key reads the value in its type (``10`` is the
    number for a number attribute, ``yes`` true for a boolean; a value outside its type is
    refused as a change would be), but a list's values are looked for whether or not it
    still allows them (one taken out stays on the customers who hold it: they must be
    found); any other key as written, or as the number or true/false it spells. An object
    is never a match. On PostgreSQL a value few customers hold is found in the GIN index of
    the attributes (``ix_customers_attributes``, containment as written below); elsewhere,
    and for a common value, the newest customers are walked until a page is found."""
    key, value = key.strip(), value.strip()
    if not key or len(key) > 64 or '"' in key or "\\" in key:
        raise Invalid(f"not an attribute name: {key[:70]!r}")
    if len(value) > MAX_ATTRIBUTE_VALUE:
        raise Invalid(f"a value to look for is at most {MAX_ATTRIBUTE_VALUE} characters")
    defined = {d.key: d for d in profile.definitions(db, workspace_id=workspace_id)}
    wanted: list[Any]
    definition = defined.get(key)
    if definition is not None and definition.type == AttributeType.list:
        wanted = [v.strip() for v in value.split(",") if v.strip()]
    elif definition is not None:
        wanted = [profile.coerce(definition, value)]
    else:
        wanted = [value]
        if value.lower() in _TRUE_FALSE:
            wanted.append(_TRUE_FALSE[value.lower()])
        if _NUMBER.fullmatch(value) and math.isfinite(number := float(value)):
            wanted.append(int(number) if number.is_integer() else number)
    wanted = [_bindable(w) for w in wanted]
    if not wanted:
        raise Invalid(f"say what {key} is")
    if db.get_bind().dialect.name == "postgresql":
        # JSONB containment: the value itself, or a list holding it.
        document = type_coerce(Customer.attributes, JSONB)
        return or_(
            *(document.contains({key: w}) for w in wanted),
            *(document.contains({key: [w]}) for w in wanted),
        )
    # SQLite: json_each walks a list's items, or yields a lone value as one row (and an
    # object's members: not walked). A JSON true is the integer 1 there: told apart by its
    # JSON type.
    path = f'$."{key}"'
    each = func.json_each(Customer.attributes, path).table_valued("value", "type")
    held = [
        each.c.type == ("true" if w else "false")
        if isinstance(w, bool)
        else and_(each.c.value == w, each.c.type.not_in(("true", "false")))
        for w in wanted
    ]
    return and_(
        func.json_type(Customer.attributes, path) != "object",
        exists(select(literal(1)).select_from(each).where(or_(*held))),
    )


def add_event(db: Session, *, customer: Customer, data: EventCreate) -> Event:
    """Add an entry to the customer's timeline."""
    row = Event(
        workspace_id=customer.workspace_id,
        customer_id=customer.id,
        type=data.type,
        properties=data.properties,
        occurred_at=data.occurred_at or utcnow(),
        source=data.source,
    )
    db.add(row)
    emit(
        db,
        workspace_id=customer.workspace_id,
        type="customer.event",
        payload={"customer_id": customer.id, "type": data.type},
    )
    return row


# Merges can chain (A into B, then B into C); a longer chain than this is not followed.
MERGE_HOPS = 32


def root_of(db: Session, customer: Customer) -> Customer:
    """The record this customer's merges ended in (itself if never merged)."""
    root = customer
    for _ in range(MERGE_HOPS):
        if not root.merged_into_id:
            break
        parent = db.get(Customer, root.merged_into_id)
        if parent is None or parent.workspace_id != customer.workspace_id:
            break
        root = parent
    return root


def person_ids(db: Session, root: Customer) -> list[str]:
    """The ids of this record and of every record merged into it (kept so that a merge
    can be undone: the same person), this one first."""
    ids = [root.id]
    frontier = [root.id]
    while frontier:
        merged = db.scalars(
            select(Customer.id)
            .where(
                # By the index of the records merged, not the workspace's customers.
                unindexed(Customer.workspace_id) == root.workspace_id,
                Customer.merged_into_id.in_(frontier),
            )
            .order_by(Customer.created_at, Customer.id)
        )
        frontier = [c for c in merged if c not in ids]
        ids += frontier
    return ids


def guest_conversations(workspace_id: str, person: Sequence[str]) -> Select[str]:
    """The ids of the conversations this person (a customer and the records merged into
    them) wrote in as a guest, copied on another customer's mail (``ConversationGuest``)."""
    return select(ConversationGuest.conversation_id).where(
        ConversationGuest.workspace_id == workspace_id,
        ConversationGuest.customer_id.in_(person),
    )


def others_named(
    db: Session, *, workspace_id: str, besides: str, sender_ids: set[str]
) -> dict[str, str]:
    """The name (or address) of each customer among ``sender_ids`` who is not the person
    ``besides`` (a record merged into them is them), by the id given: a message keeps the
    record that wrote it, merged since or not, and is named by the one its merges ended in."""
    names: dict[str, str] = {}
    for sender in sender_ids - {besides}:
        found = db.get(Customer, sender)
        if found is None or found.workspace_id != workspace_id:
            continue
        root = root_of(db, found)
        if root.id != besides:
            names[sender] = root.name or root.email or root.phone or "Customer"
    return names


def timeline(
    db: Session,
    *,
    customer: Customer,
    kinds: set[str] | None,
    channel: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[TimelineEntry], str | None]:
    """One chronological history (newest first): messages (calls and voicemail included),
    events, orders, and the merges that joined or split this customer.

    Messages are what passed between the customer and us (theirs, our replies, the bot's):
    a private note or an activity line (assigned, resolved) is the team's, not theirs, and
    read in their history it passed for an email to them. One that another wrote in their
    conversation (someone their mail copied) says who (``data.by``); what they wrote in
    others' conversations is theirs too."""
    limit = pagination.clamp(limit)
    after = pagination.decode(cursor)
    parts: list[Any] = []
    if not kinds or "message" in kinds:
        msg = (
            select(
                literal("message").label("kind"),
                Message.id.label("id"),
                Message.created_at.label("at"),
            )
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Conversation.customer_id == customer.id,
                Message.kind.in_([MessageKind.message, MessageKind.bot]),
            )
        )
        # What they wrote in others' conversations (copied on their mail): theirs too.
        person = person_ids(db, customer)
        guest_of = guest_conversations(customer.workspace_id, person)
        written = None
        if db.scalar(guest_of.limit(1)) is not None:
            written = (
                select(
                    literal("message").label("kind"),
                    Message.id.label("id"),
                    Message.created_at.label("at"),
                )
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(
                    Conversation.id.in_(guest_of),
                    Conversation.customer_id != customer.id,
                    Message.sender_type == "customer",
                    Message.sender_id.in_(person),
                    Message.kind == MessageKind.message,
                )
            )
        for part in (msg, written):
            if part is not None and channel:
                part = part.join(Inbox, Inbox.id == Message.inbox_id).where(
                    Inbox.channel == channel
                )
            if part is not None:
                parts.append(part)
    if (not kinds or "event" in kinds) and not channel:
        parts.append(
            select(
                literal("event").label("kind"), Event.id.label("id"), Event.occurred_at.label("at")
            ).where(Event.customer_id == customer.id)
        )
    if (not kinds or "order" in kinds) and not channel:
        parts.append(
            select(
                literal("order").label("kind"), Order.id.label("id"), Order.occurred_at.label("at")
            ).where(Order.customer_id == customer.id)
        )
    if (not kinds or "merge" in kinds) and not channel:
        involved = (CustomerMerge.survivor_id == customer.id) | (
            CustomerMerge.merged_id == customer.id
        )
        parts.append(
            select(
                literal("merge").label("kind"),
                CustomerMerge.id.label("id"),
                CustomerMerge.created_at.label("at"),
            ).where(involved)
        )
    if not parts:
        return [], None
    u = union_all(*parts).subquery()
    stmt = select(u.c.kind, u.c.id, u.c.at)
    if after:
        stmt = stmt.where(or_(u.c.at < after[0], and_(u.c.at == after[0], u.c.id < after[1])))
    keys = list(db.execute(stmt.order_by(u.c.at.desc(), u.c.id.desc()).limit(limit + 1)))
    page, next_cursor = pagination.page_of(keys, limit, lambda r: (_aware(r.at), r.id))
    msg_ids = [r.id for r in page if r.kind == "message"]
    ev_ids = [r.id for r in page if r.kind == "event"]
    messages = (
        {
            m.id: (m, ch)
            for m, ch in db.execute(
                select(Message, Inbox.channel)
                .join(Inbox, Inbox.id == Message.inbox_id)
                .where(Message.id.in_(msg_ids))
            )
        }
        if msg_ids
        else {}
    )
    events = (
        {e.id: e for e in db.scalars(select(Event).where(Event.id.in_(ev_ids)))} if ev_ids else {}
    )
    order_ids = [r.id for r in page if r.kind == "order"]
    orders = {o.id: o for o in db.scalars(select(Order).where(Order.id.in_(order_ids)))}
    merge_ids = [r.id for r in page if r.kind == "merge"]
    merges = {
        m.id: m for m in db.scalars(select(CustomerMerge).where(CustomerMerge.id.in_(merge_ids)))
    }
    # Who else wrote in their conversations (someone their mail copied), by name.
    others = others_named(
        db,
        workspace_id=customer.workspace_id,
        besides=root_of(db, customer).id,
        sender_ids={
            m.sender_id for m, _ in messages.values() if m.sender_type == "customer" and m.sender_id
        },
    )
    entries: list[TimelineEntry] = []
    for r in page:
        if r.kind == "message":
            m, ch = messages[r.id]
            data = {"direction": m.direction.value, "kind": m.kind.value}
            if m.sender_id in others and m.sender_type == "customer":
                data["by"] = others[m.sender_id]
            entries.append(
                TimelineEntry(
                    kind="message",
                    id=m.id,
                    at=m.created_at,
                    channel=ch,
                    conversation_id=m.conversation_id,
                    type=f"message.{m.direction.value}",
                    summary=m.text[:200] or "(files only)",
                    data=data,
                )
            )
        elif r.kind == "order":
            o = orders[r.id]
            total = money.to_text(o.total_minor, o.currency)
            entries.append(
                TimelineEntry(
                    kind="order",
                    id=o.id,
                    at=o.occurred_at,
                    type=f"order.{o.status}",
                    summary=f"Order {o.order_id}: {total} {o.currency}",
                    data={
                        "order_id": o.order_id,
                        "total_minor": o.total_minor,
                        "currency": o.currency,
                        "status": o.status,
                    },
                )
            )
        elif r.kind == "merge":
            mg = merges[r.id]
            joined = mg.survivor_id == customer.id
            entries.append(
                TimelineEntry(
                    kind="merge",
                    id=mg.id,
                    at=mg.created_at,
                    type="customer.merged" if mg.undone_at is None else "customer.merge_undone",
                    summary=(
                        "Another record of this customer was merged in"
                        if joined
                        else "This record was merged into another"
                    )
                    + (" (undone)" if mg.undone_at else "")
                    + (f": {mg.reason}" if mg.reason else ""),
                    data={
                        "survivor_id": mg.survivor_id,
                        "merged_id": mg.merged_id,
                        "undone_at": mg.undone_at.isoformat() if mg.undone_at else None,
                    },
                )
            )
        else:
            e = events[r.id]
            entries.append(
                TimelineEntry(
                    kind="event",
                    id=e.id,
                    at=e.occurred_at,
                    type=e.type,
                    summary=e.type,
                    data={"properties": e.properties, "source": e.source},
                )
            )
    return entries, next_cursor


def _aware(value: Any) -> datetime:
    # A UNION loses the column type on SQLite: the value may come back as naive or as text.
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
