"""Service levels: due times counted in business hours, warnings before, breaches after.

Clocks run only inside the workspace's opening hours, in its time zone, and stop on its
holidays: a first-response target of 4 hours set on Friday at 16:00 with a 9-17 week is
due on Monday at 12:00 (or Tuesday, when Monday is a holiday).

The resolution clock measures the time the customer waits on the team (Zendesk's
"requester wait time"): it runs only while the conversation is open, pauses while it is
pending (waiting on the customer) or snoozed, and stops at resolution. A resumed clock is
due when the open time it has left is used up, counted from the moment it resumes. The
response clocks run from the customer's message until a person answers, whatever the
status.

A conversation's ``state`` is live: it describes the clocks running now (``breached`` while
a missed target is still open, ``warning`` while one is close, ``ok`` otherwise, including
when no clock runs; ``none`` once its policy is deleted). A miss is history and stays on
record (``breached_at``, ``breaches``, ``announced``) when the target is met late, the
conversation is resolved, reopened with fresh clocks, or its policy is deleted.

A first response is owed once per conversation (Zendesk's first reply time): until a
person first answers, the customer's message starts the first-response clock; after, each
one starts a next-response clock (Zendesk's next reply time).

Reopened with fresh clocks: a conversation the customer writes to again after it was
resolved gets a response clock (first or next, as above) and a new resolution clock, with
the policy's whole target (unlike Zendesk's requester wait time, which adds up across a
solve and a reopen: the resolution target here is a promise about each resolution). The
time before it was resolved stays in the reports through its misses.
"""

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from rapport.cache import TtlCache
from rapport.conversations.models import (
    Conversation,
    ConversationLabel,
    ConversationSla,
    SlaPolicy,
    SlaState,
    Status,
)
from rapport.db import only_one, utcnow
from rapport.jobs.service import enqueue
from rapport.problems import Invalid
from rapport.realtime.service import emit
from rapport.scoped import get_scoped
from rapport.workspaces.models import BusinessCalendar

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TARGETS = ("first_response", "next_response", "resolution")
_TARGET_MINUTES = tuple(f"{target}_minutes" for target in TARGETS)
MIDNIGHT = time(0)
END_OF_DAY = ("24:00", "24:00:00")


@dataclass(frozen=True)
class Calendar:
    """Weekly opening intervals (local time) and holidays of one workspace."""

    tz: ZoneInfo
    hours: dict[int, list[tuple[time, time]]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()
    # No calendar configured: the clock never stops.
    always: bool = False
    # The stored calendar's version (``BusinessCalendar.version``, 0 for none) and when it
    # was set: clocks timed under an earlier version are timed anew (``set_calendar``).
    version: int = 0
    changed_at: datetime | None = None

    @classmethod
    def always_open(cls) -> "Calendar":
        return cls(ZoneInfo("UTC"), always=True)

    @classmethod
    def from_row(cls, row: BusinessCalendar | None) -> "Calendar":
        if row is None:
            return cls.always_open()
        cal = parse(row.timezone, row.hours, row.holidays) if row.hours else cls.always_open()
        return replace(cal, version=row.version or 0, changed_at=row.changed_at)

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The open intervals of one local day, as UTC datetimes."""
        if day in self.holidays:
            return []
        out = []
        for start, end in self.hours.get(day.weekday(), []):
            # An end at 00:00 is "24:00": the next midnight, where the next day's hours join.
            end_day = day + timedelta(days=1) if end == MIDNIGHT else day
            # In UTC: datetimes sharing one tzinfo subtract and compare as wall clocks, and a
            # night shift over a daylight-saving change lasts an hour more or less than that.
            out.append(
                (
                    datetime.combine(day, start, self.tz).astimezone(UTC),
                    datetime.combine(end_day, end, self.tz).astimezone(UTC),
                )
            )
        return out


_HOUR = re.compile(r"\d{2}:\d{2}", re.ASCII)


def parse(timezone: str, hours: dict[str, list[list[str]]], holidays: list[str]) -> Calendar:
    """A calendar from its stored form, with a clear error for anything malformed."""
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid(f"unknown time zone {timezone!r}") from exc
    week: dict[int, list[tuple[time, time]]] = {}
    for name, spans in hours.items():
        if name not in DAYS:
            raise Invalid(f"unknown day {name!r}; use {', '.join(DAYS)}")
        parsed = []
        for span in spans:
            try:
                # Two times of day as written on a sign (09:00), nothing more: a third
                # element or "09:00:00.5" were read and ignored in part.
                if len(span) != 2 or not all(_HOUR.fullmatch(str(t)) for t in span):
                    raise ValueError("not two times of day")
                start = time.fromisoformat(span[0])
                # "24:00" closes at the next midnight, kept as 00:00 (never a valid end else).
                to_midnight = span[1] in END_OF_DAY
                end = MIDNIGHT if to_midnight else time.fromisoformat(span[1])
                if start.tzinfo or end.tzinfo:  # the calendar's time zone is the one
                    raise ValueError("a time with its own offset")
            except (ValueError, IndexError, TypeError) as exc:
                raise Invalid(
                    f"opening hours of {name}: {_span_text(span)} is not an opening and a "
                    "closing time of day, as 09:00-17:00 (24:00 for midnight)"
                ) from exc
            if not to_midnight and end <= start:
                raise Invalid(
                    f"opening hours of {name}: {span[0]}-{span[1]} closes before it opens "
                    "(for hours past midnight, write two spans: 22:00-24:00 and 00:00-02:00)"
                )
            parsed.append((start, end))
        parsed.sort()
        for (_, end), (start, _) in zip(parsed, parsed[1:], strict=False):
            if end == MIDNIGHT or start < end:  # an hour open twice was counted twice
                raise Invalid(
                    f"opening hours of {name} overlap: write each hour once, "
                    "as 09:00-13:00 and 14:00-18:00"
                )
        week[DAYS.index(name)] = parsed
    try:
        days_off = frozenset(date.fromisoformat(d) for d in holidays)
    except ValueError as exc:
        raise Invalid("holidays must be ISO dates like 2026-12-25") from exc
    return Calendar(tz, week, days_off)


def _span_text(span: Any) -> str:
    """A span of opening hours as the settings page writes it, whatever was sent."""
    if isinstance(span, list | tuple) and all(isinstance(p, str) for p in span):
        return "-".join(span) or "(empty)"
    return repr(span)


def add_business_minutes(start: datetime, minutes: int, calendar: Calendar) -> datetime:
    """The instant ``minutes`` of open time after ``start``."""
    return add_business_time(start, timedelta(minutes=minutes), calendar)


def add_business_time(start: datetime, amount: timedelta, calendar: Calendar) -> datetime:
    """The instant ``amount`` of open time after ``start`` (to the second: a clock paused
    and resumed many times must not gain or lose a minute each time)."""
    if calendar.always:
        return start + amount
    remaining = amount
    at = start.astimezone(UTC)
    day = start.astimezone(calendar.tz).date()
    # Two years of closed days is a misconfiguration, not a due time.
    for _ in range(731):
        for open_at, close_at in calendar.intervals(day):
            begin = max(open_at, at)
            if begin >= close_at:
                continue
            available = close_at - begin
            if remaining <= available:
                return (begin + remaining).astimezone(start.tzinfo)
            remaining -= available
        day += timedelta(days=1)
    raise Invalid("the business calendar has no open hours within two years")


def business_minutes_between(start: datetime, end: datetime, calendar: Calendar) -> int:
    """Open minutes from ``start`` to ``end`` (0 when end is before start)."""
    return int(business_time_between(start, end, calendar).total_seconds() // 60)


def business_time_between(start: datetime, end: datetime, calendar: Calendar) -> timedelta:
    """Open time from ``start`` to ``end`` (none when end is before start)."""
    if end <= start:
        return timedelta()
    if calendar.always:
        return end - start
    total = timedelta()
    day = start.astimezone(calendar.tz).date()
    last = end.astimezone(calendar.tz).date()
    while day <= last:
        for open_at, close_at in calendar.intervals(day):
            lo, hi = max(open_at, start), min(close_at, end)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total


def calendar_for(db: Session, workspace_id: str) -> Calendar:
    return Calendar.from_row(db.get(BusinessCalendar, workspace_id))


def policies(db: Session, workspace_id: str) -> list[SlaPolicy]:
    return list(
        db.scalars(
            select(SlaPolicy)
            .where(SlaPolicy.workspace_id == workspace_id)
            .order_by(SlaPolicy.position, SlaPolicy.created_at)
        )
    )


def match(db: Session, conversation: Conversation, candidates: list[SlaPolicy]) -> SlaPolicy | None:
    """The first policy whose priority, inbox and label conditions all hold."""
    if not candidates:
        return None
    labels = set(
        db.scalars(
            select(ConversationLabel.label).where(
                ConversationLabel.conversation_id == conversation.id
            )
        )
    )
    for policy in candidates:
        if policy.priorities and conversation.priority.value not in policy.priorities:
            continue
        if policy.inbox_ids and conversation.inbox_id not in policy.inbox_ids:
            continue
        if policy.labels and not labels & set(policy.labels):
            continue
        return policy
    return None


def _key(target: str, kind: str, due: datetime) -> str:
    """How an announcement is kept in ``announced``: one per target, kind and due time."""
    return f"{target}:{kind}:{due.isoformat()}"


def _refresh_next_due(row: ConversationSla) -> None:
    """The earliest open due time, and the live state of the open targets: one already
    announced as missed makes it ``breached``, one announced as close ``warning``."""
    open_targets = [
        (target, due) for target in TARGETS if (due := getattr(row, f"{target}_due_at")) is not None
    ]
    row.next_due_at = min((due for _, due in open_targets), default=None)
    if row.policy_id is None:  # its policy was deleted: no clock runs, none will
        row.state = SlaState.none
        return
    announced = set(row.announced or [])
    state = SlaState.ok
    for target, due in open_targets:
        if _key(target, "breached", due) in announced:
            state = SlaState.breached
            break
        if _key(target, "warning", due) in announced:
            state = SlaState.warning
    row.state = state


_HAS_POLICIES: TtlCache[str, bool] = TtlCache(ttl=5.0, name="sla_has_policies")


def has_policies(db: Session, workspace_id: str) -> bool:
    """Whether the workspace has any SLA policy, remembered for a few seconds: the ingest
    path asks for every message, and most workspaces never change their answer."""

    def load() -> bool:
        found = db.scalar(
            select(SlaPolicy.id).where(SlaPolicy.workspace_id == workspace_id).limit(1)
        )
        return found is not None

    return _HAS_POLICIES.get(workspace_id, load)


def forget_policies(workspace_id: str) -> None:
    _HAS_POLICIES.forget(workspace_id)


def on_inbound(db: Session, *, conversation: Conversation, at: datetime) -> ConversationSla | None:
    """A customer wrote: start the first-response (no person answered yet) or
    next-response (after a person's reply) clock, and the resolution clock as the
    conversation's status has it (it is open again)."""
    if not has_policies(db, conversation.workspace_id):
        return None
    row = db.get(ConversationSla, conversation.id)
    if row is None or row.policy_id is None:
        # No policy applied yet, or the one that did was deleted: the first matching now
        # starts its clocks as for a new conversation; the deleted one's misses stay.
        policy = match(db, conversation, policies(db, conversation.workspace_id))
        if policy is None:
            return row
        cal = calendar_for(db, conversation.workspace_id)
        if row is None:
            row = ConversationSla(
                conversation_id=conversation.id, workspace_id=conversation.workspace_id
            )
            db.add(row)
        row.policy_id = policy.id
        row.calendar_version = cal.version  # every clock of it starts now, under this calendar
        if policy.first_response_minutes is not None:
            row.first_response_due_at = add_business_minutes(at, policy.first_response_minutes, cal)
        row.resolution_due_at, row.resolution_started_at = None, None
        row.resolution_used_seconds = 0
        _forget_paused_warning(row)
    elif row.first_response_due_at is None and row.next_response_due_at is None:
        # A first response is due once per conversation, as Zendesk's first reply time:
        # one nobody answered yet (resolved unanswered, or a bot's answer the customer
        # found helpful) is still owed its first response when they write again; once a
        # person answered, each message they wait on is a next response.
        policy = db.get(SlaPolicy, row.policy_id)
        target = "next_response" if conversation.first_response_at else "first_response"
        minutes = None if policy is None else getattr(policy, f"{target}_minutes")
        if minutes is not None:
            cal = calendar_for(db, conversation.workspace_id)
            setattr(row, f"{target}_due_at", add_business_minutes(at, minutes, cal))
    _follow_status(db, row, conversation, at=at)
    _refresh_next_due(row)
    return row


def on_changed(db: Session, *, conversation: Conversation) -> None:
    """Its priority or labels changed (by an agent or a rule, often right after the message
    that started its clocks): the first policy matching now applies. Its response targets
    are timed from when the customer started waiting; its resolution target from when its
    clock started (a reopened conversation's: when it reopened), less the open time it ran
    before a pause."""
    if conversation.status == Status.resolved or not has_policies(db, conversation.workspace_id):
        return
    row = db.get(ConversationSla, conversation.id)
    if row is None or row.policy_id is None:
        if conversation.waiting_since is not None:  # no clock yet: one may start now
            on_inbound(db, conversation=conversation, at=conversation.waiting_since)
        return
    policy = match(db, conversation, policies(db, conversation.workspace_id))
    if policy is None or policy.id == row.policy_id:
        return
    cal = calendar_for(db, conversation.workspace_id)
    now = utcnow()
    previous = db.get(SlaPolicy, row.policy_id)
    if previous is not None:
        _adopt(row, previous, at=now, cal=cal)
    _retime(db, row, conversation, policy, cal, now=now)


def _retime(
    db: Session,
    row: ConversationSla,
    conversation: Conversation,
    policy: SlaPolicy,
    cal: Calendar,
    *,
    now: datetime,
    anew: bool = True,
) -> None:
    """``_time_under``, keeping what the clocks missed before: a due time already passed is
    a miss, announced and counted now if the checker had not come round to it (timed anew
    to a later time, it was lost: the reports said "met"), and a target timed anew to
    another time also passed is still that one miss, announced once."""
    _missed_meanwhile(db, row, at=now, targets=TARGETS)
    before = {target: getattr(row, f"{target}_due_at") for target in TARGETS}
    _time_under(row, conversation, policy, cal, anew=anew)
    announced = set(row.announced or [])
    for target, due in before.items():
        new = getattr(row, f"{target}_due_at")
        missed = due is not None and _key(target, "breached", due) in announced
        if missed and new is not None and new <= now:
            setattr(row, f"{target}_due_at", due)  # the same miss, announced once
    _refresh_next_due(row)


def _time_under(
    row: ConversationSla,
    conversation: Conversation,
    policy: SlaPolicy,
    cal: Calendar,
    *,
    anew: bool = True,
) -> None:
    """Time the conversation's clocks anew under ``policy`` (see ``on_changed``); warned
    anew too unless not ``anew`` (its own policy changed, not which policy)."""

    def due(start: datetime | None, minutes: int | None) -> datetime | None:
        return (
            None if start is None or minutes is None else add_business_minutes(start, minutes, cal)
        )

    waiting, answered = conversation.waiting_since, conversation.first_response_at is not None
    row.first_response_due_at = None if answered else due(waiting, policy.first_response_minutes)
    row.next_response_due_at = due(waiting, policy.next_response_minutes) if answered else None
    row.policy_id = policy.id
    if anew:
        _forget_paused_warning(row)  # timed anew under another policy: warned anew too
    if row.resolution_started_at is not None:  # running: timed anew under this policy
        row.resolution_due_at = _resolution_due(row, policy, cal)
    elif row.resolution_due_at is not None and not _used_up(row, policy):
        row.resolution_due_at = None  # paused after a miss this policy does not count
    _refresh_next_due(row)


def on_agent_reply(db: Session, *, conversation: Conversation) -> None:
    """An agent answered (or the customer said a bot answer helped): the response clocks
    stop until the customer writes again. A bot answer alone does not stop them."""
    row = db.get(ConversationSla, conversation.id)
    if row is None:
        return
    _missed_meanwhile(db, row, at=utcnow(), targets=("first_response", "next_response"))
    row.first_response_due_at = None
    row.next_response_due_at = None
    _refresh_next_due(row)


def on_status(db: Session, *, conversation: Conversation, at: datetime | None = None) -> None:
    """Its status changed: resolved stops every clock; pending or snoozed pauses the
    resolution clock (the customer has the next move, or it was set aside); open runs it
    again with the open time it has left."""
    row = db.get(ConversationSla, conversation.id)
    if row is None:
        return
    _follow_status(db, row, conversation, at=at or utcnow())
    _refresh_next_due(row)


# The resolution clock. It runs only while the conversation is open, in open hours: a
# record keeps when the current run started (null while it does not run) and the open
# time used by the runs before, so that a pause (pending, snoozed) costs nothing and a
# resumed clock is due when the time left is used up. Resolving ends it; a reopened
# conversation starts a new one (fresh clocks, like its next-response clock).


def _follow_status(db: Session, row: ConversationSla, conv: Conversation, *, at: datetime) -> None:
    """Run, pause or stop the resolution clock as the conversation's status says at ``at``."""
    if conv.status == Status.resolved:
        _missed_meanwhile(db, row, at=at, targets=TARGETS)
        row.first_response_due_at = row.next_response_due_at = row.resolution_due_at = None
        row.resolution_started_at, row.resolution_used_seconds = None, 0
        _forget_paused_warning(row)
        return
    policy = db.get(SlaPolicy, row.policy_id) if row.policy_id is not None else None
    if policy is None:  # its policy was deleted: no clock runs
        return
    cal = calendar_for(db, conv.workspace_id)
    _adopt(row, policy, at=at, cal=cal)
    if conv.status == Status.open:
        if row.resolution_started_at is None:
            row.resolution_started_at = at
            row.resolution_due_at = _resolution_due(row, policy, cal)
            _resume_warning(row)
    elif row.resolution_started_at is not None:  # pending or snoozed: the clock pauses
        used = _used(row, at, cal)
        row.resolution_used_seconds = int(used.total_seconds())
        row.resolution_started_at = None
        if row.resolution_due_at is not None and row.resolution_due_at > at:
            _pause_warning(row, row.resolution_due_at)
            row.resolution_due_at = None
        # A target already missed keeps its due time: the miss stands until resolved.


# A warning is sent once per target per clock. A resolution clock warned about, paused and
# resumed is due at another time, and announcements are kept by due time: it would warn
# again. The pause keeps the warning on record without its due time, and the resumed clock
# takes it over under its new one (never further from its end than when warned: the time
# used only grows). A fresh clock (resolved, then reopened; another policy) is warned anew.
_PAUSED_WARNING = "resolution:warning:paused"


def _pause_warning(row: ConversationSla, due: datetime) -> None:
    """The clock pauses before ``due``: a warning given about it stays given."""
    if _key("resolution", "warning", due) in (row.announced or []):
        row.announced = [*row.announced, _PAUSED_WARNING]


def _resume_warning(row: ConversationSla) -> None:
    """The clock runs again: a warning given before the pause counts for its new due time."""
    if _PAUSED_WARNING not in (row.announced or []):
        return
    kept = [key for key in row.announced if key != _PAUSED_WARNING]
    if row.resolution_due_at is not None:
        kept.append(_key("resolution", "warning", row.resolution_due_at))
    row.announced = kept


def _forget_paused_warning(row: ConversationSla) -> None:
    """A fresh resolution clock: what was said about the one before does not carry over."""
    if _PAUSED_WARNING in (row.announced or []):
        row.announced = [key for key in row.announced if key != _PAUSED_WARNING]


def _used(row: ConversationSla, at: datetime, cal: Calendar) -> timedelta:
    """The open time the resolution clock has run, up to ``at``."""
    used = timedelta(seconds=row.resolution_used_seconds or 0)
    if row.resolution_started_at is not None:
        used += business_time_between(row.resolution_started_at, at, cal)
    return used


def _used_up(row: ConversationSla, policy: SlaPolicy) -> bool:
    """Whether the runs before the current one used up the policy's resolution target."""
    if policy.resolution_minutes is None:
        return False
    return row.resolution_used_seconds >= policy.resolution_minutes * 60


def _resolution_due(row: ConversationSla, policy: SlaPolicy, cal: Calendar) -> datetime | None:
    """When the running resolution clock runs out under ``policy``."""
    if policy.resolution_minutes is None or row.resolution_started_at is None:
        return None
    started = row.resolution_started_at
    left = timedelta(minutes=policy.resolution_minutes, seconds=-row.resolution_used_seconds)
    if left > timedelta():
        return add_business_time(started, left, cal)
    # Used up before this run began: missed already. A miss on record keeps its due time
    # (announced once); one not yet seen is due now.
    missed = row.resolution_due_at
    return missed if missed is not None and missed <= started else started


def _adopt(row: ConversationSla, policy: SlaPolicy, *, at: datetime, cal: Calendar) -> None:
    """A record from before the clock's runs were kept (migration 0020) has only a due
    time: while it is ahead, the clock is taken as running since ``at`` with what is left."""
    due = row.resolution_due_at
    if row.resolution_started_at is not None or due is None or due <= at:
        return
    if policy.resolution_minutes is None:
        return
    left = business_time_between(at, due, cal)
    used = timedelta(minutes=policy.resolution_minutes) - left
    row.resolution_used_seconds = max(0, int(used.total_seconds()))
    row.resolution_started_at = at


# How far ahead the checker looks for targets to warn about: the warning comes a number of
# open minutes before the due time, so calendar days before it when the business is closed in
# between (a weekend, a week of holidays). Longer closed stretches warn this far ahead.
WARN_LOOKAHEAD = timedelta(days=14)


class _WarnTimes:
    """For one run of the checker: the due times that are within their warning now."""

    def __init__(self, db: Session, now: datetime) -> None:
        self.db, self.now = db, now
        self.calendars: dict[str, Calendar] = {}
        self.until: dict[tuple[str, int], datetime] = {}

    def calendar(self, workspace_id: str) -> Calendar:
        if workspace_id not in self.calendars:
            self.calendars[workspace_id] = calendar_for(self.db, workspace_id)
        return self.calendars[workspace_id]

    def close(self, workspace_id: str, warn_before: int, due: datetime) -> bool:
        """Whether ``due`` is at most ``warn_before`` open minutes away."""
        key = (workspace_id, warn_before)
        if key not in self.until:
            try:
                # The first instant a whole minute more than the warning away: every due time
                # before it has at most ``warn_before`` (whole) open minutes left.
                self.until[key] = add_business_minutes(
                    self.now, warn_before + 1, self.calendar(workspace_id)
                )
            except Invalid:  # no open hours ahead: no open minute is left either
                self.until[key] = self.now + WARN_LOOKAHEAD
        return due < self.until[key]


def _announce(db: Session, row: ConversationSla, *, now: datetime, warn: _WarnTimes) -> int:
    """Emit what is due and not yet announced for one row; how many events that was."""
    if not _to_announce(db, row, now=now, warn=warn):
        return 0
    # Held and read again before anything is said: a reply or a resolution committing
    # meanwhile stopped the clock (announcing a miss it found), and the checker, waiting
    # for it, wrote its stale record over it: announced twice, and "breached" for good
    # with a due time nothing ran to any more. One held elsewhere waits for the next round.
    held = db.scalar(
        select(ConversationSla)
        .where(ConversationSla.conversation_id == row.conversation_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if held is None:
        return 0
    cal = warn.calendar(held.workspace_id)
    if held.calendar_version < cal.version:
        # Timed under the calendar before the last change, which the job timing them anew
        # (``sla_retime``) has not come round to: what its old due times say is not said.
        conversation = db.get(Conversation, held.conversation_id)
        policy = db.get(SlaPolicy, held.policy_id) if held.policy_id is not None else None
        if conversation is not None and policy is not None:
            _retime_to_calendar(held, conversation, policy, cal)
    due_now = _to_announce(db, held, now=now, warn=warn)
    for target, kind, due in due_now:
        _tell(db, held, target=target, kind=kind, due=due)
    _refresh_next_due(held)
    return len(due_now)


def _to_announce(
    db: Session, row: ConversationSla, *, now: datetime, warn: _WarnTimes
) -> list[tuple[str, str, datetime]]:
    """What of one row is due (a target, "warning" or "breached", its due time) and not
    yet announced."""
    if row.policy_id is None:  # cleared when its policy was deleted: never selected
        return []
    policy = db.get(SlaPolicy, row.policy_id)
    if policy is None:
        return []
    out = []
    for target in TARGETS:
        due = getattr(row, f"{target}_due_at")
        if due is None:
            continue
        kind = None
        if now >= due:
            kind = "breached"
        elif policy.warn_before_minutes > 0 and warn.close(
            row.workspace_id, policy.warn_before_minutes, due
        ):
            # 0 is a warning at the target itself, which is its breach: nothing before it
            # (read as "under a whole minute left", it came or not as the checker's round
            # fell in the last minute).
            kind = "warning"
        if kind is not None and _key(target, kind, due) not in row.announced:
            out.append((target, kind, due))
    return out


def _tell(db: Session, row: ConversationSla, *, target: str, kind: str, due: datetime) -> None:
    """Announce that a target is close or missed (a miss kept in the history too): the rules
    and webhooks, and open pages, hear of it. Once: the caller found it not announced."""
    from rapport.automation import service as automation  # automation builds on this module

    row.announced = [*(row.announced or []), _key(target, kind, due)]
    if kind == "breached":
        row.breaches = (row.breaches or 0) + 1
        row.breached_at = row.breached_at or due  # missed at its due time
    automation.trigger(
        db,
        workspace_id=row.workspace_id,
        event=f"sla.{kind}",
        conversation_id=row.conversation_id,
    )
    emit(
        db,
        workspace_id=row.workspace_id,
        type=f"sla.{kind}",
        payload={
            "conversation_id": row.conversation_id,
            "target": target,
            "due_at": due.isoformat(),
        },
    )


def _missed_meanwhile(
    db: Session, row: ConversationSla, *, at: datetime, targets: tuple[str, ...]
) -> None:
    """The clocks of ``targets`` stop at ``at`` (a reply, a resolution): one whose due time
    passed before it, which the checker had not come round to yet (it runs once a minute,
    later when the queue is busy), was missed all the same, and is announced now. Stopped
    without this, a reply seconds late left no miss on record: met, the reports said."""
    if row.policy_id is None:  # its policy was deleted: its clocks stopped then
        return
    for target in targets:
        due = getattr(row, f"{target}_due_at")
        missed = due is not None and due <= at
        if missed and _key(target, "breached", due) not in (row.announced or []):
            _tell(db, row, target=target, kind="breached", due=due)


def check(db: Session, *, now: datetime | None = None, limit: int = 1000) -> int:
    """Emit ``sla.warning`` and ``sla.breached`` once per target that is close or missed.

    One check at a time: two side by side (one that ran past its minute, a job run again
    after its worker died) each announced the same breach, and the rules ran twice."""
    if not only_one(db, "sla.check"):
        return 0
    now = now or utcnow()
    # Not a calendar day: a warning due in open minutes may come days before its due time.
    horizon = now + WARN_LOOKAHEAD
    emitted = 0
    warn = _WarnTimes(db, now)
    after: tuple[datetime | None, str] | None = None
    # Pages of ``limit`` rows, to the end: a target missed and announced keeps its due time
    # until it is met, so such rows come first in due order, and a single batch of them
    # left nothing else anywhere ever warned about or breached again.
    while True:
        page = (
            select(ConversationSla)
            .where(ConversationSla.next_due_at.is_not(None), ConversationSla.next_due_at <= horizon)
            .order_by(ConversationSla.next_due_at, ConversationSla.conversation_id)
            .limit(limit)
        )
        if after is not None:
            page = page.where(
                tuple_(ConversationSla.next_due_at, ConversationSla.conversation_id) > after
            )
        rows = list(db.scalars(page))
        # Where this page ends, read before its rows are announced: one timed anew to its
        # calendar on the way moves, and the next page would start after its new place.
        last = (rows[-1].next_due_at, rows[-1].conversation_id) if rows else None
        for row in rows:
            emitted += _announce(db, row, now=now, warn=warn)
        if len(rows) < limit:
            return emitted
        after = last


def create_policy(db: Session, *, workspace_id: str, data: dict[str, object]) -> SlaPolicy:
    """Add an SLA policy to the workspace; its labels cleaned as conversations keep them."""
    from rapport.conversations import labels  # labels builds on automation, automation on sla

    named = data.get("labels")
    if isinstance(named, list):
        data = {**data, "labels": sorted({labels.clean(str(name)) for name in named})}
    row = SlaPolicy(workspace_id=workspace_id, **data)
    db.add(row)
    db.flush()
    forget_policies(workspace_id)
    return row


def update_policy(
    db: Session, *, workspace_id: str, policy_id: str, data: dict[str, object]
) -> SlaPolicy:
    """Change what a policy says. When a target changes, its open conversations are timed
    anew under it at once (response targets from when the customer started waiting,
    resolution by the open time already used); a due time passed before it is a miss on
    record (``_retime``), a miss already announced stays the one miss while the new due
    time has passed too, and a paused clock already warned is not
    warned again. Which conversations it covers follows its conditions as each
    conversation next changes, as when a policy is added. Open inboxes hear of it
    (``sla.policy_updated``) to redraw those conversations' badges."""
    from rapport.conversations import labels  # labels builds on automation, automation on sla

    row = get_scoped(db, SlaPolicy, policy_id, workspace_id=workspace_id, name="SLA policy")
    named = data.get("labels")
    if isinstance(named, list):
        data = {**data, "labels": sorted({labels.clean(str(name)) for name in named})}
    retime = any(key in data and data[key] != getattr(row, key) for key in _TARGET_MINUTES)
    under = (
        db.execute(
            select(ConversationSla, Conversation)
            .join(Conversation, Conversation.id == ConversationSla.conversation_id)
            .where(
                ConversationSla.workspace_id == workspace_id,
                ConversationSla.policy_id == row.id,
                Conversation.status != Status.resolved,
            )
        ).all()
        if retime
        else []
    )
    cal = calendar_for(db, workspace_id)
    now = utcnow()
    for clock, _ in under:  # while the targets they were timed by still stand
        _adopt(clock, row, at=now, cal=cal)
    for key, value in data.items():
        setattr(row, key, value)
    for clock, conversation in under:
        _retime(db, clock, conversation, row, cal, now=now, anew=False)
    db.flush()
    forget_policies(workspace_id)
    emit(
        db,
        workspace_id=workspace_id,
        type="sla.policy_updated",
        payload={"policy_id": row.id, "conversations": len(under)},
    )
    return row


def delete_policy(db: Session, *, workspace_id: str, policy_id: str) -> None:
    """Delete a policy: its conversations' clocks stop, their misses stay on record, and
    open inboxes hear of it (``sla.policy_deleted``) to drop those conversations' badges."""
    row = get_scoped(db, SlaPolicy, policy_id, workspace_id=workspace_id, name="SLA policy")
    # The foreign key would only null policy_id (ON DELETE SET NULL): the due times must go
    # too, or the checker would go on warning and breaching under no policy.
    stopped = db.execute(
        update(ConversationSla)
        .where(ConversationSla.policy_id == row.id)
        .values(
            policy_id=None,
            first_response_due_at=None,
            next_response_due_at=None,
            resolution_due_at=None,
            next_due_at=None,
            state=SlaState.none,
        )
    )
    db.delete(row)
    forget_policies(workspace_id)
    # One event, not one per conversation: a policy may cover thousands, and what a page
    # showing any of them needs is to be drawn again.
    emit(
        db,
        workspace_id=workspace_id,
        type="sla.policy_deleted",
        payload={"policy_id": row.id, "conversations": getattr(stopped, "rowcount", 0)},
    )


def get_calendar_row(db: Session, *, workspace_id: str) -> BusinessCalendar:
    return db.get(BusinessCalendar, workspace_id) or BusinessCalendar(
        workspace_id=workspace_id, timezone="UTC", hours={}, holidays=[]
    )


def set_calendar(
    db: Session,
    *,
    workspace_id: str,
    timezone: str,
    hours: dict[str, list[list[str]]],
    holidays: list[str],
) -> BusinessCalendar:
    """Replace the workspace's opening hours and holidays (validated first). The clocks
    running on its open conversations are timed anew under them (``retime``): here as many
    as ``RETIME_CHUNK``, and the rest by a job (``sla_retime``), a chunk per transaction,
    so that a workspace with many open conversations never holds the write lock for long.
    Until the job has come round to a clock, it shows its old due time, and the checker,
    which times it anew before it announces anything of it, never warns or breaches by
    that; a clock now due sooner may be announced that much later."""
    calendar = parse(timezone, hours, holidays)
    if not any(calendar.hours.values()):
        # No open minute ever: every SLA clock started would fail to find its due time.
        raise Invalid("the calendar has no opening hours: give at least one day's hours")
    row = db.get(BusinessCalendar, workspace_id)
    if row is None:
        row = BusinessCalendar(workspace_id=workspace_id, version=0)
        db.add(row)
    stored = (timezone, dict(hours), sorted(set(holidays)))
    if (row.timezone, row.hours, row.holidays) == stored:
        return row  # the same calendar: every clock is timed under it already
    row.timezone, row.hours, row.holidays = stored
    row.version = (row.version or 0) + 1
    row.changed_at = utcnow()
    db.flush()
    if retime(db, workspace_id=workspace_id, limit=RETIME_CHUNK) is not None:
        enqueue(db, name="sla_retime", workspace_id=workspace_id)
    return row


# Records timed anew under a changed calendar in one transaction (their conversations read
# with them): a few milliseconds of due times each.
RETIME_CHUNK = 200
# How soon the job looks again at records another transaction held when it came round.
RETIME_AGAIN = timedelta(seconds=10)

Cursor = tuple[datetime, str]


def retime(
    db: Session, *, workspace_id: str, after: Cursor | None = None, limit: int = RETIME_CHUNK
) -> Cursor | None:
    """Time anew under the workspace's calendar up to ``limit`` records whose clocks run
    (they have a due time) and were timed under an earlier version of it, in due order
    from ``after``: where to go on from, in another transaction, or None when none was
    left past it. Records another transaction holds are passed over (``retime_left``)."""
    cal = calendar_for(db, workspace_id)
    stmt = (
        select(ConversationSla, Conversation)
        .join(Conversation, Conversation.id == ConversationSla.conversation_id)
        .where(
            ConversationSla.workspace_id == workspace_id,
            ConversationSla.next_due_at.is_not(None),
            ConversationSla.calendar_version < cal.version,
        )
        .order_by(ConversationSla.next_due_at, ConversationSla.conversation_id)
        .limit(limit)
        # Passed over, not waited for: a transaction holding one may hold the next chunk's
        # rows in another order (ingest's, a batch of messages), and each would wait on the
        # other. The checker holds them one at a time, and times anew what it holds.
        .with_for_update(of=ConversationSla, skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if after is not None:
        stmt = stmt.where(
            tuple_(ConversationSla.next_due_at, ConversationSla.conversation_id) > after
        )
    found = db.execute(stmt).all()
    if not found:
        return None
    # Where this chunk ends, before its due times move.
    last = found[-1][0]
    end = (last.next_due_at, last.conversation_id) if last.next_due_at is not None else None
    by_id = {p.id: p for p in policies(db, workspace_id)}
    for clock, conversation in found:
        policy = by_id.get(clock.policy_id or "")
        if policy is None:  # no policy, no clock: nothing to time
            clock.calendar_version = cal.version
            continue
        _retime_to_calendar(clock, conversation, policy, cal)
    # One event a chunk, not one a conversation: open inboxes draw their badges again.
    emit(
        db,
        workspace_id=workspace_id,
        type="sla.retimed",
        payload={"conversations": len(found)},
    )
    return end if len(found) == limit else None


def retime_left(db: Session, *, workspace_id: str) -> bool:
    """Whether records timed under an earlier calendar are left with running clocks (held
    by another transaction when ``retime`` came round): the job is queued again for them."""
    cal = calendar_for(db, workspace_id)
    left = db.scalar(
        select(ConversationSla.conversation_id)
        .where(
            ConversationSla.workspace_id == workspace_id,
            ConversationSla.next_due_at.is_not(None),
            ConversationSla.calendar_version < cal.version,
        )
        .limit(1)
    )
    if left is None:
        return False
    enqueue(db, name="sla_retime", workspace_id=workspace_id, run_at=utcnow() + RETIME_AGAIN)
    return True


def _retime_to_calendar(
    row: ConversationSla, conversation: Conversation, policy: SlaPolicy, cal: Calendar
) -> None:
    """Time the running clocks of one record anew under ``cal``, the workspace's calendar
    since it last changed, each from when it started: a response clock from when the
    customer started waiting, the resolution clock from its current run with the open
    time the runs before it used. A due time at or before the change was missed under the
    calendar of its time and stays, as does one already announced missed (the checker
    announces such a miss once, as ever); a paused clock has no due time to change."""
    announced = set(row.announced or [])

    def running(target: str) -> bool:
        due: datetime | None = getattr(row, f"{target}_due_at")
        if due is None or _key(target, "breached", due) in announced:
            return False
        return cal.changed_at is None or due > cal.changed_at

    waiting = conversation.waiting_since
    try:
        for target in ("first_response", "next_response"):
            minutes = getattr(policy, f"{target}_minutes")
            if running(target) and waiting is not None and minutes is not None:
                setattr(row, f"{target}_due_at", add_business_minutes(waiting, minutes, cal))
        # A record from before migration 0020 (a due time, no run) keeps the one it has.
        if running("resolution") and row.resolution_started_at is not None:
            row.resolution_due_at = _resolution_due(row, policy, cal)
    except Invalid:
        # No open hours for two years from its start: what is left keeps the due time it
        # had, a promise made, rather than none (which would be no target at all).
        pass
    row.calendar_version = cal.version
    _refresh_next_due(row)


def state_of(db: Session, *, conversation: Conversation) -> ConversationSla | None:
    return db.get(ConversationSla, conversation.id)


PAUSING = frozenset({Status.pending, Status.snoozed})


def paused(
    db: Session,
    conversations: list[Conversation],
    rows: dict[str, ConversationSla],
) -> dict[str, timedelta]:
    """The conversations whose resolution clock is paused (pending or snoozed, under a
    policy with a resolution target), each with the open time it has left (none once
    missed): a paused clock has no due time to show, and its last one would be stale."""
    held = [
        (conv, row, row.policy_id)
        for conv in conversations
        if conv.status in PAUSING
        and (row := rows.get(conv.id)) is not None
        and row.policy_id is not None
        and row.resolution_started_at is None
    ]
    if not held:
        return {}
    targets = {
        policy.id: policy.resolution_minutes
        for workspace_id in {conv.workspace_id for conv, _, _ in held}
        for policy in policies(db, workspace_id)
    }
    out = {}
    for conv, row, policy_id in held:
        minutes = targets.get(policy_id)
        if minutes is None:
            continue
        left = timedelta(minutes=minutes, seconds=-row.resolution_used_seconds)
        if row.resolution_due_at is not None and left > timedelta():
            # Paused with a due time is a miss (its time used up); with time left, it is
            # a record from before migration 0020, whose due time still runs.
            continue
        out[conv.id] = max(left, timedelta())
    return out


def states_of(db: Session, ids: list[str]) -> dict[str, ConversationSla]:
    """The SLA rows of many conversations in one query (absent where no policy ever applied)."""
    if not ids:
        return {}
    rows = db.scalars(select(ConversationSla).where(ConversationSla.conversation_id.in_(ids)))
    return {r.conversation_id: r for r in rows}
