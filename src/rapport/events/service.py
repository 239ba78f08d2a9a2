"""The Segment-compatible events API: identify, track, page, screen, alias, group, batch.

A site already instrumented for Segment sends to Rapport by changing its endpoint: the
same payloads, the write key as the Basic-auth user name. ``userId`` is the customer's id
in the sender's system (an ``external`` handle), ``anonymousId`` a device's; traits fill
the profile (those the workspace defined in their type, as the customers API stores them);
e-commerce events feed the purchase history. A batch is checked whole before anything is
stored (one bad event refuses it all: a trait that does not fit its definition too), then
stored ``CHUNK`` events per transaction, so that a large one never holds the database's
write lock for seconds; a ``messageId`` seen before from the same source is skipped.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport import money
from rapport.crypto import random_token, sha256_hex
from rapport.customers import duplicates, profile
from rapport.customers import service as customers
from rapport.customers.identity import Handle, InvalidHandle, handle, normalize
from rapport.customers.merge import merge
from rapport.customers.models import AttributeDefinition, Customer, Event, Identity, IdentityKind
from rapport.customers.schemas import EventCreate
from rapport.db import utcnow
from rapport.events.models import EventSource, Order
from rapport.privacy.service import SYSTEM
from rapport.problems import Conflict, Invalid, Problem
from rapport.workspaces.models import Workspace

TYPES = ("identify", "track", "page", "screen", "alias", "group")
MAX_BATCH_BYTES = 500 * 1024
# Events stored per transaction: a 500 KB batch of new people (about 2,400 events, a
# millisecond or two each) held SQLite's one write lock for 2.4-4.8 s in one transaction.
CHUNK = 100
# An alias naming two people both known otherwise: likely one person, for an agent to say.
ALIAS_PROBABILITY = 0.9
_NAME_TRAITS = {"name", "firstName", "first_name", "lastName", "last_name", "email", "phone"}
# The workspace's attribute definitions by key, read once per request.
Defined = dict[str, AttributeDefinition]


def create_source(db: Session, *, workspace_id: str, name: str) -> tuple[EventSource, str]:
    """A new source; its write key is returned once and stored only as a hash."""
    key = random_token("wk_", 24)
    row = EventSource(
        workspace_id=workspace_id, name=name, write_key_hash=sha256_hex(key), prefix=key[:7]
    )
    db.add(row)
    db.flush()
    return row, key


def source_for_key(db: Session, write_key: str) -> EventSource:
    row = db.scalar(select(EventSource).where(EventSource.write_key_hash == sha256_hex(write_key)))
    if row is None:
        raise Problem(401, "unauthorized", "unknown write key")
    return row


def definitions(db: Session, *, source: EventSource) -> Defined:
    """The attribute definitions of the source's workspace, by key."""
    return {d.key: d for d in profile.definitions(db, workspace_id=source.workspace_id)}


def _traits(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event.get("traits") or (event.get("context") or {}).get("traits") or {})


def _group_id(event: dict[str, Any]) -> str:
    """A group call's ``groupId`` (Segment requires one): text or a number."""
    value = event.get("groupId")
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int | float)
        or not str(value).strip()
    ):
        raise Invalid("a group call needs its groupId (text or a number)")
    return str(value)


def _attributes(kind: str, event: dict[str, Any], defined: Defined) -> dict[str, Any]:
    """The custom attributes the event sets (an identify's traits but those of the name and
    handles, a group's id), the defined ones in their type; Invalid for one that does not
    fit its definition."""
    if kind == "identify":
        changes = {k: v for k, v in _traits(event).items() if k not in _NAME_TRAITS}
    elif kind == "group":
        changes = {"group_id": _group_id(event)}
    else:
        return {}
    return {
        k: profile.coerce(defined[k], v) if k in defined else v
        for k, v in changes.items()
        if v is not None
    }


def _when(event: dict[str, Any]) -> datetime:
    """When the event happened: its ``timestamp`` (else ``originalTimestamp``, ``sentAt``),
    now for none that can be read, and now for one still to come. A device whose clock is
    ahead (or a bug writing the year 2999) sent times to come: kept, such an event stayed
    first in the customer's history, and the customer first in the list (last seen then),
    above everyone who wrote since."""
    now = utcnow()
    for key in ("timestamp", "originalTimestamp", "sentAt"):
        value = event.get(key)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                # Converted here, not by the column: 0001-01-01T00:00+01:00 has no UTC
                # equivalent, and an unusable time falls back to now like an unreadable one.
                at = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            except (ValueError, OverflowError):
                continue
            return min(at, now)
    return now


def _order_id(props: dict[str, Any]) -> str | None:
    """An order event's id (``order_id``, or ``orderId``), None without one; Invalid for one
    longer than the column holds. Read by ``check`` too, so that a batch with such an id
    is refused before any of its chunks is stored."""
    order_id = props.get("order_id") or props.get("orderId")
    if not order_id:
        return None
    if len(str(order_id)) > 200:
        raise Invalid("properties.order_id is at most 200 characters")
    return str(order_id)


def _total(props: dict[str, Any]) -> tuple[int, str]:
    """An order's ``total`` (else ``revenue``) in its currency's minor units, and that
    currency: 59.9 EUR -> 5990, 1500 JPY -> 1500; 0 for none (absent or null). Invalid for
    any amount that would not be recorded as sent: one with more decimals than its
    currency has (19.999 EUR, which rounding would record as paid), one that is no amount
    ("abc", "NaN", "Infinity"), one too large for the BIGINT column ("1e999999"), and one
    in a code ISO 4217 gives no minor unit (XXX, which is also what a currency that is no
    code is read as; XAU)."""
    currency = _currency(props.get("currency"))
    key = "total" if "total" in props else "revenue"
    sent = props.get(key)
    if currency == "XXX" and str(props.get("currency")).strip().upper() != "XXX":
        # Read as XXX, which takes no amount: said as what was sent, not as XXX.
        raise Invalid(
            f"properties.currency: {money.shown(props.get('currency'))} is not an ISO 4217 code "
            "(three letters, such as EUR)"
        )
    try:
        minor = money.to_minor(0 if sent is None else sent, currency)
        if abs(minor) >= 2**63:
            raise ValueError("more than the 19 digits of minor units an order holds")
    except ValueError as exc:
        raise Invalid(
            f"properties.{key}: {exc}; send the amount as the decimal text it was paid in"
        ) from exc
    return minor, currency


def _currency(value: Any) -> str:
    """An ISO 4217 code, upper-cased ("eur" -> "EUR"); USD, Segment's default, when none is
    given, and XXX, the code for no currency, for what is not a code (an amount in unknown
    money must not add to a known one's total)."""
    if value is None:
        return "USD"
    # Checked before upper-casing: "ß".upper() is "SS", beyond the column's 3 characters.
    code = value.strip() if isinstance(value, str) else ""
    return code.upper() if re.fullmatch(r"[A-Za-z]{3}", code) else "XXX"


class _Batch:
    """Resolution state shared by the events of one batch (one transaction)."""

    def __init__(self, db: Session, source: EventSource, defined: Defined) -> None:
        self.db = db
        self.source = source
        self.defined = defined
        ws = db.get(Workspace, source.workspace_id)
        self.region = ws.default_region if ws else "US"
        self.customers: dict[tuple[str | None, str | None], Customer] = {}
        # The records this transaction holds (``held``): no merge or undo of one can run
        # until it ends, so its events need not be followed again.
        self.holding: set[str] = set()
        # SQLite's write transaction holds the database's one write lock from its start:
        # no merge or undo commits between what it reads and what it writes.
        self.one_writer = db.get_bind().dialect.name == "sqlite"

    def handles(self, event: dict[str, Any], traits: dict[str, Any]) -> list[Handle]:
        out = _ids(event)
        for kind, key in ((IdentityKind.email, "email"), (IdentityKind.phone, "phone")):
            if traits.get(key):
                try:
                    out.append(handle(kind, str(traits[key]), verified=False, region=self.region))
                except InvalidHandle:
                    pass
        return out

    def customer(self, event: dict[str, Any], traits: dict[str, Any]) -> Customer:
        key = (event.get("userId"), event.get("anonymousId"))
        # Not one an alias in this batch merged away since: its events go to the survivor.
        if key in self.customers and not traits and not self.customers[key].merged_into_id:
            return self.customers[key]
        handles = self.handles(event, traits)
        name = str(
            traits.get("name")
            or " ".join(str(traits[k]) for k in ("firstName", "lastName") if traits.get(k))
        )[:300]
        customer, _ = customers.resolve(
            self.db,
            workspace_id=self.source.workspace_id,
            handles=handles,
            name=name,
            seen_at=_when(event),
        )
        self.customers[key] = customer
        return customer

    def held(self, event: dict[str, Any], customer: Customer) -> Customer:
        """The person's record to write the event on (its attributes, its timeline, its
        order), held (``customers.held_root``): a merge or undo committing meanwhile
        rewrote it, and the attributes read before were written back over theirs, or the
        event went onto a record merged away (a merge moves the events it reads: one
        written after was lost to the survivor's timeline). The sender's id is read again
        once it is held: an undo committed meanwhile gave it back to the record it
        restored, whose event this is."""
        if customer.merged_into_id is None and (customer.id in self.holding or self.one_writer):
            return customer
        for _ in range(customers.MERGE_HOPS):
            customer = customers.held_root(self.db, customer)
            owner = self._owner(event)
            if owner is None or customers.root_of(self.db, owner) is customer:
                break
            customer = owner
        self.holding.add(customer.id)
        self.customers[(event.get("userId"), event.get("anonymousId"))] = customer
        return customer

    def _owner(self, event: dict[str, Any]) -> Customer | None:
        """The customer holding the event's first known id now (as ``resolve`` finds it),
        read again from the database."""
        values = [h.value for h in _ids(event)]
        rows = self.db.scalars(
            select(Identity)
            .where(
                Identity.workspace_id == self.source.workspace_id,
                Identity.kind == IdentityKind.external,
                Identity.value.in_(values),
                Identity.verified.is_(True),
            )
            .execution_options(populate_existing=True)
        )
        found = {row.value: row.customer_id for row in rows}
        first = next((found[v] for v in values if v in found), None)
        return None if first is None else self.db.get(Customer, first)


def _ids(event: dict[str, Any]) -> list[Handle]:
    """The sender's ids for the person (``userId``, ``anonymousId``): at least one."""
    out: list[Handle] = []
    for key, prefix in (("userId", ""), ("anonymousId", "anon:")):
        if event.get(key):
            value = str(event[key])
            # Blank is no id: every blank anonymousId would otherwise be one visitor.
            if not value.strip():
                raise Invalid(f"{key} is blank")
            try:
                out.append(handle(IdentityKind.external, prefix + value))
            except InvalidHandle as exc:
                raise Invalid(f"{key}: {exc}") from exc
    if not out:
        raise Invalid("an event needs a userId or an anonymousId")
    return out


def _previous_id(event: dict[str, Any]) -> str:
    """An alias's ``previousId``, as an external handle's value (it needs a ``userId``)."""
    previous = str(event.get("previousId") or "")
    if not previous or not event.get("userId"):
        raise Invalid("alias needs previousId and userId")
    try:
        return normalize(IdentityKind.external, previous)
    except InvalidHandle as exc:
        raise Invalid(f"previousId: {exc}") from exc


@contextmanager
def _at(index: int, batch: bool) -> Iterator[None]:
    """In a batch, a problem names the event by its position."""
    try:
        yield
    except Problem as exc:
        if not batch:
            raise
        detail = f"batch[{index}]: {exc.detail}"
        raise Problem(exc.status, exc.slug, detail, **exc.extra, index=index) from exc


def check(events: list[dict[str, Any]], *, defined: Defined, batch: bool = False) -> None:
    """Refuse the request for any event that could not be stored, before anything is: the
    events are then stored a chunk per transaction, and one bad event must not leave part
    of its batch stored. A trait that does not fit its definition (``defined``) is bad."""
    for index, event in enumerate(events):
        with _at(index, batch):
            kind = str(event.get("type", ""))
            if kind not in TYPES:
                raise Invalid(f"unknown event type {kind!r}")
            if kind == "alias":
                _previous_id(event)
                _ids({"userId": event["userId"]})
            else:
                _ids(event)
            _attributes(kind, event, defined)
            if kind == "track" and event.get("event") in ("Order Completed", "Order Refunded"):
                props = event.get("properties") or {}
                if _order_id(props) and event.get("event") == "Order Completed":
                    _total(props)


def chunks(events: list[dict[str, Any]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """The events ``CHUNK`` at a time, each with the position of its first."""
    for start in range(0, len(events), CHUNK):
        yield start, events[start : start + CHUNK]


def ingest(
    db: Session,
    *,
    source: EventSource,
    events: list[dict[str, Any]],
    defined: Defined,
    batch: bool = False,
    first: int = 0,
) -> dict[str, int]:
    """Store events (``check``ed with the same ``defined``) in the caller's transaction;
    returns counts. In a batch, a problem names the event by its position (``first`` is the
    first one's)."""
    ids = [str(e["messageId"]) for e in events if e.get("messageId")]
    seen: set[str] = set()
    if ids:
        seen = set(
            db.scalars(
                select(Event.message_id).where(
                    Event.source_id == source.id, Event.message_id.in_(ids)
                )
            )
        )
    state = _Batch(db, source, defined)
    stored = skipped = 0
    for index, event in enumerate(events, start=first):
        with _at(index, batch):
            kind = str(event.get("type", ""))
            if kind not in TYPES:
                raise Invalid(f"unknown event type {kind!r}")
            message_id = str(event["messageId"]) if event.get("messageId") else None
            if message_id and message_id in seen:
                skipped += 1
                continue
            if message_id:
                seen.add(message_id)
            _one(state, kind, event, message_id)
            stored += 1
    return {"stored": stored, "duplicates": skipped}


def _record(
    batch: _Batch,
    customer: Customer,
    name: str,
    props: dict[str, Any],
    event: dict[str, Any],
    message_id: str | None,
) -> None:
    batch.db.add(
        Event(
            workspace_id=customer.workspace_id,
            customer_id=customer.id,
            type=name[:200],
            properties=props,
            occurred_at=_when(event),
            source=f"segment:{batch.source.name}"[:64],
            source_id=batch.source.id,
            message_id=message_id,
        )
    )


def _one(batch: _Batch, kind: str, event: dict[str, Any], message_id: str | None) -> None:
    traits = _traits(event)
    props = dict(event.get("properties") or {})
    if kind == "identify":
        customer = batch.held(event, batch.customer(event, traits))
        extra = _attributes(kind, event, batch.defined)
        if extra:
            customer.attributes = {**customer.attributes, **extra}
        _record(batch, customer, "Identify", traits, event, message_id)
    elif kind == "track":
        customer = batch.held(event, batch.customer(event, {}))
        name = str(event.get("event") or "Event")
        _record(batch, customer, name, props, event, message_id)
        _commerce(batch, customer, name, props, event)
    elif kind in ("page", "screen"):
        customer = batch.held(event, batch.customer(event, {}))
        label = "Page Viewed" if kind == "page" else "Screen Viewed"
        _record(batch, customer, label, {"name": event.get("name"), **props}, event, message_id)
    elif kind == "group":
        customer = batch.held(event, batch.customer(event, {}))
        group = _group_id(event)
        extra = _attributes(kind, event, batch.defined)
        if extra:
            customer.attributes = {**customer.attributes, **extra}
        _record(batch, customer, "Group", {"group_id": group, **traits}, event, message_id)
    elif kind == "alias":
        _alias(batch, event, message_id)


def _alias(batch: _Batch, event: dict[str, Any], message_id: str | None) -> None:
    """``previousId`` and ``userId`` are one person: link, merging two known records."""
    previous = _previous_id(event)
    alias = {"userId": event["userId"]}
    customer = batch.held(alias, batch.customer(alias, {}))
    ws = batch.source.workspace_id
    other = None
    for value in (previous, f"anon:{previous}"):
        row = batch.db.scalar(
            select(Identity).where(
                Identity.workspace_id == ws,
                Identity.kind == IdentityKind.external,
                Identity.value == value,
            )
        )
        if row is not None:
            other = row
            break
    if other is None:
        batch.db.add(
            Identity(
                workspace_id=ws,
                customer_id=customer.id,
                kind=IdentityKind.external,
                value=previous,
                verified=True,
            )
        )
    elif other.customer_id != customer.id and _known(batch.db, other.customer_id):
        # Someone known by more than a device's id (a user id of the site, an address
        # they wrote from): a write key is public in the site's pages, and anyone holding
        # it could have joined two people's histories. An agent decides.
        duplicates.suggest(
            batch.db,
            workspace_id=ws,
            a=customer.id,
            b=other.customer_id,
            probability=ALIAS_PROBABILITY,
            reason=f"Segment alias of {previous[:200]} to {str(event['userId'])[:200]}",
        )
    elif other.customer_id != customer.id:
        batch.db.flush()
        merge(
            batch.db,
            workspace_id=ws,
            survivor_id=customer.id,
            merged_id=other.customer_id,
            actor=SYSTEM,
            reason="Segment alias",
        )
    _record(batch, customer, "Alias", {"previous_id": previous}, event, message_id)


def _known(db: Session, customer_id: str) -> bool:
    """Whether the customer holds a proven handle other than a device's anonymous id."""
    return (
        db.scalar(
            select(Identity.id)
            .where(
                Identity.customer_id == customer_id,
                Identity.verified.is_(True),
                ~(
                    (Identity.kind == IdentityKind.external)
                    & Identity.value.startswith("anon:", autoescape=True)
                ),
            )
            .limit(1)
        )
        is not None
    )


def _commerce(
    batch: _Batch, customer: Customer, name: str, props: dict[str, Any], event: dict[str, Any]
) -> None:
    record_order(batch.db, customer=customer, name=name, props=props, at=_when(event))


def record_order(
    db: Session,
    *,
    customer: Customer,
    name: str,
    props: dict[str, Any],
    at: datetime,
    theirs_only: bool = False,
) -> None:
    """Segment's e-commerce spec: completed and refunded orders (with an ``order_id``) make
    the purchase history, whichever way the event came (a source's call, or one added to
    the customer through the API); other events are not orders. With ``theirs_only`` an
    order of another customer is refused (Conflict), not rewritten or refunded."""
    order_id = _order_id(props) if name in ("Order Completed", "Order Refunded") else None
    if not order_id:
        return
    ws = customer.workspace_id
    row = db.scalar(select(Order).where(Order.workspace_id == ws, Order.order_id == order_id))
    if theirs_only and row is not None and row.customer_id != customer.id:
        raise Conflict(f"order {order_id} is another customer's; add its events to them")
    if name == "Order Completed":
        if row is None:
            row = Order(workspace_id=ws, customer_id=customer.id, order_id=order_id)
            db.add(row)
        row.total_minor, row.currency = _total(props)
        row.status = "completed"
        row.properties = props
        row.occurred_at = at
    elif row is not None:
        row.status = "refunded"


def add_event(db: Session, *, customer: Customer, data: EventCreate) -> Event:
    """An event added to the customer's timeline by an agent, the API or the demo; an
    order's also enters their purchase history (it did not: only a source's did). On the
    person's record, held (``customers.held_root``): one merged into another, before or
    while this runs, is followed to it, as the events API's are (written on the record
    merged away, it was on no timeline)."""
    customer = customers.held_root(db, customer)
    row = customers.add_event(db, customer=customer, data=data)
    record_order(
        db,
        customer=customer,
        name=data.type,
        props=data.properties,
        at=row.occurred_at,
        theirs_only=True,  # an agent's event names one customer: not another's order
    )
    return row


def orders(db: Session, *, customer: Customer) -> list[Order]:
    return list(
        db.scalars(
            select(Order).where(Order.customer_id == customer.id).order_by(Order.occurred_at.desc())
        )
    )
