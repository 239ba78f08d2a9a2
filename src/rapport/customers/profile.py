"""A customer's profile: typed custom attributes, tags, consent, and figures derived from
everything the customer did.

Attributes a workspace has defined are checked and stored in their type (a number stays a
number, a date is ``YYYY-MM-DD``); keys nobody defined are kept as given, so an import or
an API client never loses data for want of a definition.
"""

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from rapport import money
from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation
from rapport.customers.models import (
    AttributeDefinition,
    AttributeType,
    Consent,
    ConsentChannel,
    Customer,
    CustomerTag,
)
from rapport.db import hold
from rapport.events.models import Order
from rapport.problems import Conflict, Invalid, NotFound, Problem, Unsendable
from rapport.realtime.service import emit

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TAG = re.compile(r"^[\w][\w .:/-]{0,63}$", re.UNICODE)
_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}
# The integers orjson writes (and reads back as integers): int64's least to uint64's most.
_INTEGERS = (-(2**63), 2**64 - 1)
# The longest text attribute value kept. A longer one is refused, never cut: whoever sent
# it (an API client, an import, the events API) must learn that it was not stored whole.
MAX_TEXT = 2000


def definitions(db: Session, *, workspace_id: str) -> list[AttributeDefinition]:
    return list(
        db.scalars(
            select(AttributeDefinition)
            .where(AttributeDefinition.workspace_id == workspace_id)
            .order_by(AttributeDefinition.created_at, AttributeDefinition.id)
        )
    )


def define(
    db: Session,
    *,
    workspace_id: str,
    key: str,
    type: AttributeType,
    label: str = "",
    options: list[str] | None = None,
) -> AttributeDefinition:
    """Define a custom attribute; its key and type are fixed once defined (``redefine``
    changes its label and a list's allowed values)."""
    if not _KEY.match(key):
        raise Invalid("an attribute key is lower-case letters, digits and _, from a letter")
    exists = db.scalar(
        select(AttributeDefinition.id).where(
            AttributeDefinition.workspace_id == workspace_id, AttributeDefinition.key == key
        )
    )
    if exists:
        raise Conflict(f"attribute {key!r} is already defined")
    row = AttributeDefinition(
        workspace_id=workspace_id,
        key=key,
        type=type,
        label=_label(key, label),
        options=_options(type, options),
    )
    db.add(row)
    db.flush()
    return row


def _label(key: str, label: str) -> str:
    """The label as kept; none given is made from the key (``renews_on``: Renews on)."""
    return label.strip() or key.replace("_", " ").capitalize()


def _options(type: AttributeType, options: list[str] | None) -> list[str]:
    """A list's allowed values as kept, for a definition and for a change of one: each
    trimmed and once, in the order given. A value is checked trimmed (``coerce``), so one
    kept with spaces around could never be chosen. Other types have none."""
    if type != AttributeType.list:
        return []
    kept = (str(o).strip() for o in options or [])
    return list(dict.fromkeys(o for o in kept if o))


def _definition(db: Session, *, workspace_id: str, definition_id: str) -> AttributeDefinition:
    row = db.scalar(
        select(AttributeDefinition).where(
            AttributeDefinition.id == definition_id,
            AttributeDefinition.workspace_id == workspace_id,
        )
    )
    if row is None:
        raise NotFound("attribute definition")
    return row


def redefine(
    db: Session,
    *,
    workspace_id: str,
    definition_id: str,
    label: str | None = None,
    options: list[str] | None = None,
) -> tuple[AttributeDefinition, dict[str, Any]]:
    """Change a definition's label and a list's allowed values (None: left as is); the
    definition and what changed, each as ``{"from": ..., "to": ...}``.

    The key and type stay: values already stored were checked against them. A value taken
    out of a list stays on the customers who hold it (the panel shows it as not an allowed
    value); only a new value set is checked against the new list."""
    row = _definition(db, workspace_id=workspace_id, definition_id=definition_id)
    if options and row.type != AttributeType.list:
        # define drops them quietly; here a 200 would tell the caller they were set.
        raise Invalid(f"{row.key} is a {row.type.value} attribute: only a list has allowed values")
    changes: dict[str, Any] = {}
    if label is not None and (new := _label(row.key, label)) != row.label:
        changes["label"] = {"from": row.label, "to": new}
        row.label = new
    if options is not None and (values := _options(row.type, options)) != row.options:
        changes["options"] = {"from": list(row.options), "to": values}
        row.options = values  # a new list, so that the JSON column is written
    db.flush()
    return row, changes


def undefine(db: Session, *, workspace_id: str, definition_id: str) -> None:
    """Forget a definition; customers' values stay, untyped."""
    db.delete(_definition(db, workspace_id=workspace_id, definition_id=definition_id))


def _shown(value: Any) -> str:
    """A value as an error names it: its start, whatever was sent."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def coerce(definition: AttributeDefinition, value: Any) -> Any:
    """The value in the definition's type, or Invalid saying what was expected."""
    key, kind = definition.key, definition.type
    if kind == AttributeType.text:
        if isinstance(value, dict | list):
            raise Invalid(f"{key} is text")
        text = str(value)
        if len(text) > MAX_TEXT:
            raise Invalid(f"{key} is text of at most {MAX_TEXT} characters, not {len(text)}")
        return text
    if kind == AttributeType.number:
        if isinstance(value, bool):
            raise Invalid(f"{key} is a number")
        if isinstance(value, float):
            if not math.isfinite(value):  # NaN and Infinity in a JSON body
                raise Invalid(f"{key} is a number, not {_shown(value)}")
            return value
        try:
            number = Decimal(value if isinstance(value, int) else str(value).strip())
        except InvalidOperation as exc:
            raise Invalid(f"{key} is a number, not {_shown(value)}") from exc
        if not number.is_finite():
            raise Invalid(f"{key} is a number, not {_shown(value)}")
        # An integer the JSON column can keep stays exact; beyond, it is a float, as a
        # fraction already is, and beyond a float's range it is refused.
        if _INTEGERS[0] <= number <= _INTEGERS[1] and number == number.to_integral_value():
            return int(number)
        if not math.isfinite(as_float := float(number)):
            raise Invalid(f"{key} is a number too large to store, not {_shown(value)}")
        return as_float
    if kind == AttributeType.boolean:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise Invalid(f"{key} is true or false, not {_shown(value)}")
    if kind == AttributeType.date:
        text = str(value).strip()
        try:
            return (
                datetime.fromisoformat(text).date().isoformat()
                if "T" in text
                else date.fromisoformat(text).isoformat()
            )
        except ValueError as exc:
            raise Invalid(f"{key} is a date (YYYY-MM-DD), not {_shown(value)}") from exc
    items = value if isinstance(value, list) else str(value).split(",")
    values = [str(v).strip() for v in items if str(v).strip()]
    unknown = [v for v in values if definition.options and v not in definition.options]
    if unknown:
        raise Invalid(
            f"{key} takes {', '.join(definition.options)}; not {_shown(', '.join(unknown))}"
        )
    return values


def typed_attributes(db: Session, *, workspace_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with the defined keys checked and converted (``None`` removes a key)."""
    defined = {d.key: d for d in definitions(db, workspace_id=workspace_id)}
    out: dict[str, Any] = {}
    for key, value in changes.items():
        definition = defined.get(key)
        out[key] = value if value is None or definition is None else coerce(definition, value)
    return out


def tags_of(db: Session, *, customer_id: str) -> list[str]:
    return list(
        db.scalars(
            select(CustomerTag.tag)
            .where(CustomerTag.customer_id == customer_id)
            .order_by(CustomerTag.tag)
        )
    )


def _clean_tags(tags: list[str]) -> set[str]:
    """Tags as kept: trimmed, lower-cased, each once; one that is not a tag is refused."""
    clean = {t.strip().lower() for t in tags if t.strip()}
    bad = sorted(t for t in clean if not _TAG.match(t))
    if bad:
        raise Invalid(f"not a tag: {bad[0]!r} (letters, digits, space . : / - up to 64)")
    return clean


class MergedAway(Problem):
    """A change to a customer merged into another: the person is that one now (the merged
    record is kept only so that the merge can be undone, shown nowhere)."""

    def __init__(self, customer: Customer) -> None:
        super().__init__(
            409,
            "customer-merged",
            f"this customer was merged into {customer.merged_into_id}: nothing was changed; "
            "change that one",
            merged_into_id=customer.merged_into_id,
        )


def held(db: Session, customer: Customer) -> Customer:
    """The customer, its row held until the transaction ends and read as it is then, to
    change: a merge and its undo hold both records and rewrite them, and a change that
    read one before they committed wrote back what they had changed. A ``MergedAway``
    problem when it was merged into another meanwhile (it was written on the record kept
    for the undo, lost to the person); one merged already as read can still be changed,
    as before (an undo gives it back so)."""
    merged_before = customer.merged_into_id
    hold(db, Customer, customer.id)
    if merged_before is None and customer.merged_into_id is not None:
        raise MergedAway(customer)
    return customer


def set_tags(db: Session, *, customer: Customer, tags: list[str]) -> list[str]:
    """Replace the customer's tags (trimmed, lower-cased, each once)."""
    return change_tags(db, customer=customer, add=tags, remove=None)


def change_tags(
    db: Session, *, customer: Customer, add: list[str], remove: list[str] | None
) -> list[str]:
    """Add and remove tags (``remove=None``: every tag not added goes), leaving the others
    as they are, so that two agents tagging at once both keep their tag; the tags after.
    A customer merged into another meanwhile is a 409 naming it (``held``)."""
    adding = _clean_tags(add)
    held(db, customer)  # two changes at once: one after the other
    going = delete(CustomerTag).where(CustomerTag.customer_id == customer.id)
    if remove is not None:
        going = going.where(CustomerTag.tag.in_({t.strip().lower() for t in remove} - adding))
    db.execute(going)
    kept = set(tags_of(db, customer_id=customer.id))
    for tag in sorted(adding - kept):
        db.add(CustomerTag(customer_id=customer.id, workspace_id=customer.workspace_id, tag=tag))
    db.flush()
    changed(db, customer.workspace_id, customer.id)
    return sorted(kept | adding)


def record_consent(
    db: Session,
    *,
    customer: Customer,
    channel: ConsentChannel,
    purpose: str,
    granted: bool,
    source: str,
    user_id: str | None,
) -> Consent:
    purpose = purpose.strip().lower()
    if not _KEY.match(purpose):
        raise Invalid("a consent purpose is a short key such as marketing or surveys")
    if granted and purpose == EVERY_PURPOSE:
        every = _newest(db, customer.id, channel, EVERY_PURPOSE)
        if (
            every is not None
            and not every.granted
            and every.source.startswith(keyword_source(channel, ""))
        ):
            # The provider itself blocks the number until the customer texts START: a yes
            # recorded here would let Rapport send what the provider refuses.
            name = _CHANNEL_NAMES.get(channel, channel.value)
            raise Invalid(
                f"{why_not(every)}; the provider refuses every {name} message to them until "
                "they send START, which Rapport records itself. A grant of a single purpose "
                "can still be recorded."
            )
    row = Consent(
        workspace_id=customer.workspace_id,
        customer_id=customer.id,
        channel=channel,
        purpose=purpose,
        granted=granted,
        source=source.strip()[:200],
        recorded_by_user_id=user_id,
    )
    db.add(row)
    db.flush()
    changed(db, customer.workspace_id, customer.id)
    return row


def changed(db: Session, workspace_id: str, customer_id: str) -> None:
    """Tell open customer panels to read the customer again, once this commits."""
    emit(db, workspace_id=workspace_id, type="customer.updated", payload={"id": customer_id})


def consents(db: Session, *, customer_id: str) -> tuple[list[Consent], list[Consent]]:
    """(the decision in force per channel and purpose, the whole history newest first)."""
    history = list(
        db.scalars(
            select(Consent)
            .where(Consent.customer_id == customer_id)
            .order_by(Consent.recorded_at.desc(), Consent.id.desc())
        )
    )
    current: dict[tuple[str, str], Consent] = {}
    for row in history:
        current.setdefault((row.channel.value, row.purpose), row)
    return sorted(current.values(), key=lambda c: (c.channel.value, c.purpose)), history


# The purpose a provider-level opt-out stands for: after STOP, Twilio refuses every
# message from the number, whatever it is for; each purpose the customer had granted on
# the channel is withdrawn too, so a check for any one of them reads the refusal.
EVERY_PURPOSE = "all"


def keyword_source(channel: ConsentChannel, keyword: str) -> str:
    """The consent source of an opt-out or opt-in keyword: ``SMS keyword STOP``."""
    return f"{channel.value.upper()} keyword {keyword.strip().upper()[:40]}"


def record_keyword(
    db: Session,
    *,
    workspace_id: str,
    customer_id: str,
    channel: ConsentChannel,
    keyword: str,
    granted: bool,
    source: str | None = None,
) -> list[Consent]:
    """Record an opt-out (``granted=False``) or opt-in keyword the provider acted on for
    every message of the channel: an opt-out withdraws ``all`` and each purpose granted
    there; an opt-in grants ``all`` again and only the purposes a keyword had withdrawn
    (not one the customer refused elsewhere, nor one never asked for). ``source`` tells
    more than the keyword alone (it must start as ``keyword_source`` does, so that a later
    opt-in keyword undoes it)."""
    current, _ = consents(db, customer_id=customer_id)
    prefix = keyword_source(channel, "")
    purposes = {EVERY_PURPOSE} | {
        c.purpose
        for c in current
        if c.channel == channel
        and c.purpose != EVERY_PURPOSE
        and (not c.granted and c.source.startswith(prefix) if granted else c.granted)
    }
    prefix_source = keyword_source(channel, keyword)
    source = source if source and source.startswith(prefix) else prefix_source
    rows = [
        Consent(
            workspace_id=workspace_id,
            customer_id=customer_id,
            channel=channel,
            purpose=purpose,
            granted=granted,
            source=source,
        )
        for purpose in sorted(purposes)
    ]
    db.add_all(rows)
    db.flush()
    changed(db, workspace_id, customer_id)
    return rows


# What a reply to the customer is sent for: an agent's answer, the bot's, a rule's canned
# message. It needs no consent given beforehand (the customer wrote first), only none
# withdrawn: a withdrawal of this purpose or of ``all`` on the channel forbids it.
SERVICE = "transactional"

_CHANNEL_NAMES = {
    ConsentChannel.email: "email",
    ConsentChannel.sms: "SMS",
    ConsentChannel.whatsapp: "WhatsApp",
    ConsentChannel.phone: "phone calls",
    ConsentChannel.push: "push notifications",
}


def _newest(db: Session, customer_id: str, channel: ConsentChannel, purpose: str) -> Consent | None:
    return db.scalar(
        select(Consent)
        .where(
            Consent.customer_id == customer_id,
            Consent.channel == channel,
            Consent.purpose == purpose,
        )
        .order_by(Consent.recorded_at.desc(), Consent.id.desc())
        .limit(1)
    )


def in_force(
    db: Session, *, customer_id: str, channel: ConsentChannel, purpose: str
) -> Consent | None:
    """The decision that governs messages for ``purpose`` on ``channel`` (None: the
    customer never decided). A withdrawal of ``all`` governs every purpose until ``all`` is
    granted again, even one granted since: after an SMS STOP the provider refuses every
    message until START. Otherwise the purpose's own newest decision governs, and only
    without one a grant of ``all``: a yes to everything does not undo a no to marketing
    (as START gives back only what a keyword took)."""
    every = _newest(db, customer_id, channel, EVERY_PURPOSE)
    if purpose == EVERY_PURPOSE or (every is not None and not every.granted):
        return every
    return _newest(db, customer_id, channel, purpose) or every


def may_contact(db: Session, *, customer_id: str, channel: ConsentChannel, purpose: str) -> bool:
    """Whether the customer said yes to messages for this purpose on this channel (see
    ``in_force``); never asked is no, as marketing needs a yes given beforehand."""
    decision = in_force(db, customer_id=customer_id, channel=channel, purpose=purpose)
    return decision is not None and decision.granted


def withdrawn(
    db: Session, *, customer_id: str, channel: ConsentChannel, purpose: str = SERVICE
) -> Consent | None:
    """The withdrawal in force that forbids a message for ``purpose`` on ``channel``; None
    when nothing forbids it (for a reply, never asked is fine: the customer wrote first)."""
    decision = in_force(db, customer_id=customer_id, channel=channel, purpose=purpose)
    return decision if decision is not None and not decision.granted else None


def why_not(withdrawal: Consent) -> str:
    """A withdrawal as an agent reads it: ``the customer opted out of SMS on 2026-11-22
    14:03 UTC (SMS keyword STOP)``."""
    channel = _CHANNEL_NAMES.get(withdrawal.channel, withdrawal.channel.value)
    what = channel if withdrawal.purpose == EVERY_PURPOSE else f"{withdrawal.purpose} {channel}"
    when = withdrawal.recorded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = f" ({withdrawal.source})" if withdrawal.source else ""
    return f"the customer opted out of {what} on {when}{source}"


class NoConsent(Unsendable):
    """A message the customer's consent forbids: refused before anything is stored."""

    def __init__(self, withdrawal: Consent) -> None:
        self.withdrawal = withdrawal
        self.why = why_not(withdrawal)
        channel = _CHANNEL_NAMES.get(withdrawal.channel, withdrawal.channel.value)
        if withdrawal.source.startswith(keyword_source(withdrawal.channel, "")):
            how = f"{channel} reaches them again once they send START"
        else:
            how = (
                f"once they agree to {channel} again, record it under Consent in the customer "
                f"panel (purpose {withdrawal.purpose})"
            )
        super().__init__(
            409,
            "no-consent",
            f"Not sent: {why_not(withdrawal)}. {how[0].upper()}{how[1:]}; until then, "
            "reply through another channel.",
            channel=withdrawal.channel.value,
            purpose=withdrawal.purpose,
            opted_out_at=withdrawal.recorded_at.astimezone(UTC).isoformat(),
            source=withdrawal.source,
        )


def figures(db: Session, *, customer: Customer) -> dict[str, Any]:
    """What the customer's history adds up to, computed when asked (never stale)."""
    channels = sorted(
        db.scalars(
            select(Inbox.channel)
            .join(Conversation, Conversation.inbox_id == Inbox.id)
            .where(Conversation.customer_id == customer.id)
            .distinct()
        )
    )
    conversations = db.scalar(
        select(func.count())
        .select_from(Conversation)
        .where(Conversation.customer_id == customer.id)
    )
    # Summed in two halves, exactly: SQLite's SUM fails past 2**63, which orders each below
    # it can add up to. Both databases truncate / and take %'s sign from the dividend, so
    # high * 2**32 + low is the total_minor of every row, negative ones too.
    high, low = Order.total_minor // 2**32, Order.total_minor % 2**32
    spend = {
        currency: int(highs or 0) * 2**32 + int(lows or 0)
        for currency, highs, lows in db.execute(
            select(Order.currency, func.sum(high), func.sum(low))
            .where(Order.customer_id == customer.id, Order.status == "completed")
            .group_by(Order.currency)
        )
    }
    orders = db.scalar(
        select(func.count()).select_from(Order).where(Order.customer_id == customer.id)
    )
    return {
        "first_seen_at": customer.first_seen_at,
        "last_seen_at": customer.last_seen_at,
        "channels": channels,
        "conversations": int(conversations or 0),
        "orders": int(orders or 0),
        # Per currency, in minor units: sums of different currencies mean nothing.
        "total_spend_minor": spend,
        # The same as decimal text in each currency's decimals ("1500" JPY, "35.00" EUR),
        # for clients whose JSON numbers are doubles (a browser's JSON.parse rounds an
        # integer past 2**53, a large total's last cents).
        "total_spend": {
            currency: money.to_text(minor, currency) for currency, minor in spend.items()
        },
        # Surveys are not built yet: null, not zero, until there is a rating.
        "average_csat": None,
    }
