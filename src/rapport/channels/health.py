"""Inbox health: whether each inbox works, said to its admins as Zendesk and Chatwoot say a
channel is disconnected or failing (``GET /api/v1/inboxes/health``, the settings page).

Every figure is read where it is cheap at ten million messages, and none is written on the
way a message comes in (``ingest.receive_batch``):

- what the failure paths record (``InboxHealth``, one row an inbox): a reply that failed at
  its send or by the provider's later report (why, without addresses or numbers), the last
  reply the provider took (written at most once a minute), a mailbox's poll;
- rows kept anyway: the webhook calls that could not be read, by their (inbox, time) index;
  the dead-lettered jobs of the inbox's messages, from the dead end of the jobs' claim index;
- when a customer last wrote, from the conversations' (workspace, inbox, last activity)
  index: read newest first, a conversation's last customer message is never later than its
  last activity, so the first few are enough.

A status, the first of these that holds, with every reason that holds said in words:

- ``disabled``: the inbox is switched off;
- ``not_set_up``: a setting it needs is not set;
- ``failing``: its last ``FAILING_IN_ROW`` replies were refused at their send and none went
  out since; or the provider refused the inbox's own credentials at the last one; or its
  mailbox refuses the login, or has not been reached for ``POLL_FAILING_AFTER``;
- ``warning``: a reply failed in the last 24 hours (at its send, or reported failed by the
  provider later); a job of the inbox was dead-lettered in the last 24 hours; a webhook
  call of the last 24 hours could not be read; the last poll of its mailbox failed, or none
  has run for ``POLL_STALE``; nothing came in for ``QUIET_AFTER`` and for ``QUIET_FACTOR``
  times the inbox's usual wait between conversations;
- ``ok``.
"""

import imaplib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, tuple_, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rapport.channels.models import Inbox, InboxHealth, UnparsedPayload
from rapport.channels.schemas import (
    ConnectionHealth,
    HealthReason,
    HealthStatus,
    InboxHealthRead,
    LastFailure,
)
from rapport.conversations.models import Conversation, Message
from rapport.db import Database, utcnow
from rapport.jobs.models import Job, JobState

# Replies refused at their send, one after another with none going out between, that make
# an inbox failing: one alone may be the customer's (a number that is no longer one).
FAILING_IN_ROW = 3
# What "recent" is for failures, dead jobs and unreadable calls.
DAY = timedelta(hours=24)
# A mailbox whose polls have failed this long (every minute, a worker's) is failing; a
# shorter run of failures is a warning (a server's restart, a network's hiccup).
POLL_FAILING_AFTER = timedelta(minutes=5)
# A mailbox not polled this long: no worker runs the periodic polls.
POLL_STALE = timedelta(minutes=15)
# A working mailbox's poll is written down at most this often (it runs every minute).
POLL_NOTED_EVERY = timedelta(minutes=5)
# The last reply the provider took is written down at most this often.
SENT_NOTED_EVERY = timedelta(minutes=1)
# Nothing received for this long, and for QUIET_FACTOR times the inbox's usual wait between
# conversations (over the QUIET_BASIS before its last message): a long weekend is not yet a
# warning for an inbox of the working week; a week is, for one of a conversation a day.
QUIET_AFTER = timedelta(days=3)
QUIET_FACTOR = 4
QUIET_BASIS = timedelta(days=28)
# An inbox with fewer conversations than this in QUIET_BASIS is never said to be quiet.
QUIET_FEWEST = 4
# Conversations read, newest activity first, to find when a customer last wrote: enough
# for QUIET's estimate (at this many the usual wait is far under QUIET_AFTER), and, while
# they do not prove the answer, this many more once.
RECENT = (50, 2000)
# Dead jobs read at most for one workspace's inboxes (their messages' inboxes looked up):
# an outage that killed more is said well enough by this many.
DEAD_READ = 5000
# Jobs that belong to one inbox through their message.
_MESSAGE_JOBS = ("deliver", "fetch_media")
# The longest error kept.
ERROR_MAX = 300

_EMAIL = re.compile(r"[^\s<>()\[\]{}'\",;:]+@[^\s<>()\[\]{}'\",;:]+")
# Seven digits and more (a separator between any two): a phone number, a chat's or a page-
# scoped id of a person. Meta's and Twilio's error codes have six at most.
_NUMBER = re.compile(r"\+?\d(?:[\s().-]{0,2}\d){6,}")


def plain(text: str) -> str:
    """An error as health keeps and shows it: without email addresses or numbers that may
    be a person's (a refused recipient quoted by a mail server, a provider naming the
    number), on one line, cut to ERROR_MAX. It is read by every admin, on every page."""
    text = _NUMBER.sub("[number]", _EMAIL.sub("[address]", text))
    text = " ".join(text.split())
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"


def _hour(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H")


def _last_day(failures: Mapping[str, Any], now: datetime) -> dict[str, int]:
    """The hourly counts of the last 24 hours (the hour now and the 23 before it)."""
    oldest = _hour(now - DAY + timedelta(hours=1))
    return {h: int(n) for h, n in failures.items() if h >= oldest}


def _row(db: Session, *, inbox_id: str, workspace_id: str) -> InboxHealth:
    """The inbox's row, made if it has none, held until the transaction ends (PostgreSQL:
    two failures recorded at once both count)."""
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.execute(
        insert(InboxHealth)
        .values(inbox_id=inbox_id, workspace_id=workspace_id, failures={})
        .on_conflict_do_nothing(index_elements=["inbox_id"])
    )
    row = db.get(InboxHealth, inbox_id, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def record_sent(db: Session, *, inbox_id: str, workspace_id: str) -> None:
    """A reply through the inbox went out: its sends work again. Written at most once a
    minute while nothing failed (one read by key otherwise), in the sending transaction."""
    now = utcnow()
    row = db.get(InboxHealth, inbox_id)
    if (
        row is not None
        and not row.failures_in_row
        and not row.account_refused
        and row.sent_at is not None
        and row.sent_at > now - SENT_NOTED_EVERY
    ):
        return
    if row is None:
        row = _row(db, inbox_id=inbox_id, workspace_id=workspace_id)
    db.execute(
        update(InboxHealth)
        .where(InboxHealth.inbox_id == inbox_id)
        .values(sent_at=now, failures_in_row=0, account_refused=False)
        .execution_options(synchronize_session=False)
    )


def record_failure(
    db: Session,
    *,
    inbox_id: str,
    workspace_id: str,
    error: str,
    at_send: bool,
    account: bool = False,
) -> None:
    """A reply through the inbox failed for good: refused at its send (``at_send``: one
    more in a row; ``account``: its credentials refused), or reported failed later by the
    provider (counted, and its reason kept, but not in a row: it went out first)."""
    now = utcnow()
    row = _row(db, inbox_id=inbox_id, workspace_id=workspace_id)
    counts = _last_day(row.failures or {}, now)
    counts[_hour(now)] = counts.get(_hour(now), 0) + 1
    row.failures = counts
    row.failed_at = now
    row.failure = plain(error) or "failed"
    if at_send:
        row.failures_in_row = (row.failures_in_row or 0) + 1
        row.account_refused = account


def reset_sends(db: Session, *, inbox_id: str) -> None:
    """An admin changed the inbox's settings (a new token, another server): its sends are
    no longer said to be failing before the next one tells. Its failures of the day stay."""
    db.execute(
        update(InboxHealth)
        .where(InboxHealth.inbox_id == inbox_id)
        .values(failures_in_row=0, account_refused=False)
        .execution_options(synchronize_session=False)
    )


def record_poll(
    database: Database,
    *,
    inbox_id: str,
    workspace_id: str,
    error: str | None = None,
    login_refused: bool = False,
) -> None:
    """A poll of the inbox's mailbox worked (``error`` None: written down at most every
    POLL_NOTED_EVERY, and at once after failures), or failed, saying why."""
    now = utcnow()
    if error is None:
        with database.session(write=False) as db:
            row = db.get(InboxHealth, inbox_id)
            if (
                row is not None
                and row.poll_failing_since is None
                and row.polled_at is not None
                and row.polled_at > now - POLL_NOTED_EVERY
            ):
                return
    with database.session() as db:
        row = _row(db, inbox_id=inbox_id, workspace_id=workspace_id)
        if error is None:
            row.polled_at = now
            row.poll_failing_since = None
            row.login_refused = False
        else:
            row.poll_failed_at = now
            row.poll_error = plain(error) or "failed"
            row.poll_failing_since = row.poll_failing_since or now
            row.login_refused = login_refused


def imap_error(exc: BaseException) -> str:
    """What an IMAP poll's failure says (imaplib's errors carry the server's bytes)."""
    if isinstance(exc, imaplib.IMAP4.error) and exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", errors="replace")
    said = str(exc)
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


# --- reading --------------------------------------------------------------------------


@dataclass
class _Received:
    """When a customer last wrote through an inbox, as its conversations say."""

    last: datetime | None = None
    # Whether ``last`` is proven the latest (else it is the latest of those read).
    proven: bool = False
    # The times of the conversations read: last customer message (or None), last activity.
    rows: list[tuple[datetime | None, datetime]] = field(default_factory=list)


def _received(db: Session, workspace_id: str, inbox_ids: Sequence[str]) -> dict[str, _Received]:
    """For each inbox, when a customer last wrote: its conversations read newest activity
    first through ``ix_conversations_ws_inbox``, in one statement for all the inboxes, and
    again further back for those the first read did not prove."""
    found = {i: _Received() for i in inbox_ids}
    after: dict[str, tuple[datetime, str] | None] = dict.fromkeys(inbox_ids)
    pending = list(inbox_ids)
    for limit in RECENT:
        if not pending:
            break
        parts = []
        for inbox_id in pending:
            query = select(
                Conversation.last_inbound_at, Conversation.last_activity_at, Conversation.id
            ).where(Conversation.workspace_id == workspace_id, Conversation.inbox_id == inbox_id)
            mark = after[inbox_id]
            if mark is not None:
                query = query.where(tuple_(Conversation.last_activity_at, Conversation.id) < mark)
            inner = (
                query.order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
                .limit(limit)
                .subquery()
            )
            parts.append(
                select(
                    literal(inbox_id).label("inbox_id"),
                    inner.c.last_inbound_at,
                    inner.c.last_activity_at,
                    inner.c.id,
                )
            )
        rows = db.execute(union_all(*parts) if len(parts) > 1 else parts[0]).all()
        seen: dict[str, list[tuple[datetime | None, datetime, str]]] = {i: [] for i in pending}
        for inbox_id, inbound, activity, conv_id in rows:
            seen[inbox_id].append((inbound, activity, conv_id))
        still = []
        for inbox_id in pending:
            got = sorted(seen[inbox_id], key=lambda r: (r[1], r[2]), reverse=True)
            mine = found[inbox_id]
            mine.rows += [(inbound, activity) for inbound, activity, _ in got]
            times = [inbound for inbound, _, _ in got if inbound is not None]
            if times and (mine.last is None or max(times) > mine.last):
                mine.last = max(times)
            # Every conversation not read was last active before the last one read, so
            # none of them had a customer's message after that.
            if len(got) < limit or (mine.last is not None and got[-1][1] <= mine.last):
                mine.proven = True
            else:
                after[inbox_id] = (got[-1][1], got[-1][2])
                still.append(inbox_id)
        pending = still
    return found


def _usual_wait(received: _Received) -> timedelta | None:
    """The inbox's usual wait between conversations its customers wrote in, over the
    QUIET_BASIS before its last message; None when it had too few to say (or they were not
    all read: then the inbox is busier than this can tell, and its silence is no news)."""
    if received.last is None or not received.proven:
        return None
    since = received.last - QUIET_BASIS
    wrote = sum(1 for inbound, _ in received.rows if inbound is not None and inbound >= since)
    if wrote < QUIET_FEWEST:
        return None
    return QUIET_BASIS / wrote


def _unparsed(
    db: Session, workspace_id: str, inbox_ids: Sequence[str], now: datetime
) -> dict[str, int]:
    """The webhook calls of the last day each inbox could not read."""
    rows = db.execute(
        select(UnparsedPayload.inbox_id, func.count())
        .where(
            UnparsedPayload.inbox_id.in_(inbox_ids),
            UnparsedPayload.created_at >= now - DAY,
            UnparsedPayload.workspace_id == workspace_id,
        )
        .group_by(UnparsedPayload.inbox_id)
    ).all()
    return {str(i): int(n) for i, n in rows}


def _dead(
    db: Session, workspace_id: str, inbox_ids: Sequence[str], now: datetime
) -> dict[str, tuple[int, int]]:
    """Each inbox's dead-lettered jobs (of its messages: their deliveries and fetched
    files), in all and in the last day: the workspace's latest DEAD_READ, read from the
    dead end of the claim index (``state``), each joined to its message by key."""
    dead = (
        select(Job.args["message_id"].as_string().label("message_id"), Job.finished_at)
        .where(
            Job.state == JobState.dead,
            # ``+ ""``: SQLite's planner, without statistics, would otherwise walk the
            # workspace's every job (done ones are kept a week) for its few dead ones.
            (Job.workspace_id + "") == workspace_id,
            Job.name.in_(_MESSAGE_JOBS),
        )
        # The latest to die first (the index's own order): past DEAD_READ, the oldest are
        # not counted.
        .order_by(Job.run_at.desc())
        .limit(DEAD_READ)
        .subquery()
    )
    rows = db.execute(
        select(
            Message.inbox_id,
            func.count(),
            func.count().filter(dead.c.finished_at >= now - DAY),
        )
        .select_from(dead)
        .join(Message, Message.id == dead.c.message_id)
        .where(Message.workspace_id == workspace_id, Message.inbox_id.in_(inbox_ids))
        .group_by(Message.inbox_id)
    ).all()
    counts = dict.fromkeys(inbox_ids, (0, 0))
    counts.update({str(i): (int(total), int(recent)) for i, total, recent in rows})
    return counts


def _ago(span: timedelta) -> str:
    """A span as a reader says it: 12 minutes, 5 hours, 3 days."""
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours"
    return f"{hours // 24} days"


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _polled(inbox: Inbox) -> bool:
    """Whether the inbox reads a mailbox by polling it (an email inbox with an IMAP server)."""
    return inbox.channel == "email" and bool((inbox.settings or {}).get("imap_host"))


def assess(
    db: Session,
    *,
    workspace_id: str,
    inboxes: Sequence[Inbox],
    missing: Mapping[str, list[str]],
) -> list[InboxHealthRead]:
    """The health of these inboxes of the workspace (``missing``: each one's needed
    settings not set, ``channels.service.missing``), in one statement a figure whatever
    their number."""
    now = utcnow()
    ids = [i.id for i in inboxes]
    if not ids:
        return []
    rows = {
        r.inbox_id: r
        for r in db.scalars(
            select(InboxHealth).where(
                InboxHealth.inbox_id.in_(ids), InboxHealth.workspace_id == workspace_id
            )
        )
    }
    received = _received(db, workspace_id, ids)
    unparsed = _unparsed(db, workspace_id, ids, now)
    dead = _dead(db, workspace_id, ids, now)
    return [
        _judge(
            inbox,
            row=rows.get(inbox.id),
            received=received[inbox.id],
            unparsed=unparsed.get(inbox.id, 0),
            dead=dead[inbox.id],
            missing=missing.get(inbox.id, []),
            now=now,
        )
        for inbox in inboxes
    ]


def _judge(
    inbox: Inbox,
    *,
    row: InboxHealth | None,
    received: _Received,
    unparsed: int,
    dead: tuple[int, int],
    missing: list[str],
    now: datetime,
) -> InboxHealthRead:
    """One inbox's figures and what they say (the module's rules)."""
    reasons: list[HealthReason] = []

    def say(code: str, level: HealthStatus, detail: str) -> None:
        reasons.append(HealthReason(code=code, level=level, detail=detail))

    if not inbox.enabled:
        say(
            "disabled",
            HealthStatus.disabled,
            "Switched off: it takes in nothing (its webhooks and widget are refused) and "
            "sends nothing.",
        )
    if missing:
        say(
            "not_set_up",
            HealthStatus.not_set_up,
            f"It needs {', '.join(missing)} before it can take in or send messages.",
        )
    failures = sum(_last_day(row.failures or {}, now).values()) if row else 0
    in_row = row.failures_in_row if row else 0
    if row is not None and row.account_refused and in_row:
        say(
            "account_refused",
            HealthStatus.failing,
            f"Its last reply was refused for the inbox itself, not for that reply "
            f"({row.failure}): nothing can go out through it until its credentials or "
            "settings are put right.",
        )
    elif in_row >= FAILING_IN_ROW:
        say(
            "sends_failing",
            HealthStatus.failing,
            f"Its last {in_row} replies failed at their send and none has gone out since "
            f"(the last: {row.failure if row else ''}).",
        )
    connection = None
    if _polled(inbox) or (row is not None and (row.polled_at or row.poll_failed_at)):
        connection = ConnectionHealth(
            kind="imap",
            reached_at=row.polled_at if row else None,
            failed_at=row.poll_failed_at if row else None,
            failing_since=row.poll_failing_since if row else None,
            error=row.poll_error if row else None,
            login_refused=row.login_refused if row else False,
        )
    if _polled(inbox) and inbox.enabled:
        _judge_mailbox(inbox, row, now, say)
    total_dead, recent_dead = dead
    waiting = (
        f"{_n(total_dead, 'job', 'jobs')} of its messages wait in the dead-letter list "
        "(GET /api/v1/jobs?state=dead) to be retried"
    )
    if failures:
        # A reply that failed at its send is a dead job too: said once, here.
        say(
            "send_failures",
            HealthStatus.warning,
            f"{_n(failures, 'reply', 'replies')} failed in the last 24 hours (the last: "
            f"{row.failure if row else ''})" + (f"; {waiting}." if total_dead else "."),
        )
    elif recent_dead:
        say(
            "dead_jobs",
            HealthStatus.warning,
            f"{_n(recent_dead, 'job', 'jobs')} of its messages died in the last 24 hours: "
            f"{waiting}.",
        )
    if unparsed:
        say(
            "unparsed",
            HealthStatus.warning,
            f"{_n(unparsed, 'webhook call', 'webhook calls')} of the last 24 hours could not be "
            "read (each kept 30 days for a developer to look into): what they carried is "
            "missing from the inbox.",
        )
    wait = _usual_wait(received)
    if inbox.enabled and wait is not None and received.last is not None:
        silent = now - received.last
        if silent >= QUIET_AFTER and silent >= wait * QUIET_FACTOR:
            say(
                "quiet",
                HealthStatus.warning,
                f"Nothing has come in for {_ago(silent)}, where a customer wrote every "
                f"{_ago(wait)} or so before: check that the provider still sends to it.",
            )
    order = [
        HealthStatus.disabled,
        HealthStatus.not_set_up,
        HealthStatus.failing,
        HealthStatus.warning,
    ]
    status = next((s for s in order if any(r.level == s for r in reasons)), HealthStatus.ok)
    return InboxHealthRead(
        inbox_id=inbox.id,
        name=inbox.name,
        channel=inbox.channel,
        enabled=inbox.enabled,
        status=status,
        reasons=reasons,
        last_received_at=received.last,
        last_sent_at=row.sent_at if row else None,
        failures_24h=failures,
        failures_in_row=in_row,
        last_failure=(
            LastFailure(at=row.failed_at, error=row.failure or "")
            if row is not None and row.failed_at is not None
            else None
        ),
        dead_jobs=total_dead,
        dead_jobs_24h=recent_dead,
        unparsed_24h=unparsed,
        connection=connection,
        checked_at=now,
    )


# How a rule says a reason: its code, the status it gives, the words.
Say = Callable[[str, HealthStatus, str], None]


def _judge_mailbox(inbox: Inbox, row: InboxHealth | None, now: datetime, say: Say) -> None:
    """What the polls of an inbox's mailbox say: refused logins and long failures are
    failing, a short run of failures and polls that stopped a warning."""
    since = row.poll_failing_since if row else None
    if row is not None and since is not None:
        error = row.poll_error or "failed"
        if row.login_refused:
            say(
                "login_refused",
                HealthStatus.failing,
                f"The mailbox refuses the login ({error}): no mail is read until the IMAP "
                "username or password is set anew.",
            )
        elif now - since >= POLL_FAILING_AFTER:
            say(
                "mailbox_unreachable",
                HealthStatus.failing,
                f"The mailbox has not been read for {_ago(now - since)}: every poll fails "
                f"({error}).",
            )
        else:
            say(
                "mailbox_error",
                HealthStatus.warning,
                f"The last poll of the mailbox failed ({error}); it is tried every minute.",
            )
        return
    last = max((t for t in (row.polled_at, row.poll_failed_at) if t), default=None) if row else None
    if (last or inbox.created_at) < now - POLL_STALE:
        said = f"for {_ago(now - last)}" if last else "yet"
        say(
            "mailbox_not_polled",
            HealthStatus.warning,
            f"The mailbox has not been polled {said}: is a worker running "
            "(rapport serve, or rapport worker)?",
        )
