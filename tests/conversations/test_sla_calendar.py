"""A changed business calendar times the running SLA clocks anew."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.config import Settings
from rapport.conversations import sla
from rapport.conversations.models import Conversation, ConversationSla, Status
from rapport.db import Database
from rapport.jobs.models import Job
from rapport.jobs.worker import Worker
from rapport.realtime.models import StreamEvent
from tests.conftest import auth, postgresql_only
from tests.factories import World

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OFFICE = {"timezone": "UTC", "hours": {d: [["09:00", "17:00"]] for d in DAYS[:5]}}
ALWAYS = {"timezone": "UTC", "hours": {d: [["00:00", "24:00"]] for d in DAYS}}
MONDAY = datetime(2026, 12, 7, tzinfo=UTC)


def _hours(client: TestClient, world: World, body: dict[str, Any]) -> None:
    r = client.put("/api/v1/business-hours", json=body, headers=auth(world.alice))
    assert r.status_code == 200, r.text


def _conversation(client: TestClient, world: World, ext: str) -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": "help", "from": {"email": f"{ext}@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def _since(
    database: Database, conv: str, waiting: datetime, *, cal: sla.Calendar, first: int = 240
) -> None:
    """The customer has waited since ``waiting``, and the clocks ran from then under ``cal``
    (the service's own times are now): ``first`` open minutes to a first response, 10 hours
    to resolution."""
    with database.session() as db:
        c, row = db.get(Conversation, conv), db.get(ConversationSla, conv)
        assert c is not None and row is not None
        c.waiting_since = row.resolution_started_at = waiting
        row.first_response_due_at = sla.add_business_minutes(waiting, first, cal)
        row.resolution_due_at = sla.add_business_minutes(waiting, 600, cal)
        row.resolution_used_seconds = 0
        row.next_due_at = row.first_response_due_at


def _record(database: Database, conv: str) -> ConversationSla:
    with database.session(write=False) as db:
        row = db.get(ConversationSla, conv)
        assert row is not None
        db.expunge(row)
        return row


def _announced(database: Database) -> list[tuple[str, str, str, str]]:
    with database.session(write=False) as db:
        rows = db.execute(
            select(StreamEvent.type, StreamEvent.payload)
            .where(StreamEvent.type.in_(("sla.warning", "sla.breached")))
            .order_by(StreamEvent.id)
        ).all()
    return [(t, p["conversation_id"], p["target"], p["due_at"]) for t, p in rows]


def _retime_jobs(database: Database) -> int:
    with database.session(write=False) as db:
        return len(db.scalars(select(Job.id).where(Job.name == "sla_retime")).all())


def test_a_changed_calendar_times_the_running_clocks_anew_from_their_start(
    client: TestClient, world: World, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Opening hours changed and the clocks already running kept the due times counted under
    # the old ones: a breach warned about for the next morning came that evening, or never.
    office = sla.parse(OFFICE["timezone"], OFFICE["hours"], [])
    _hours(client, world, OFFICE)
    r = client.post(
        "/api/v1/sla-policies",
        json={
            "name": "Std",
            "first_response_minutes": 240,
            "resolution_minutes": 600,
            "warn_before_minutes": 0,
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    waiting, missed, paused = (_conversation(client, world, e) for e in ("w", "m", "p"))
    # Waiting since Monday 16:00: due Tuesday 12:00 (first response), Wednesday 10:00.
    _since(database, waiting, MONDAY.replace(hour=16), cal=office)
    assert _record(database, waiting).first_response_due_at == MONDAY + timedelta(days=1, hours=12)
    # Waiting since Monday 08:00: its first response was due at 13:00, before the change.
    _since(database, missed, MONDAY.replace(hour=8), cal=office)
    # Pending, its resolution clock paused with an hour used; answered.
    with database.session() as db:
        c, row = db.get(Conversation, paused), db.get(ConversationSla, paused)
        assert c is not None and row is not None
        c.status, c.first_response_at, c.waiting_since = Status.pending, MONDAY, None
        row.first_response_due_at = row.resolution_due_at = row.next_due_at = None
        row.resolution_started_at, row.resolution_used_seconds = None, 3600

    # Open round the clock from Monday 17:30 on.
    monkeypatch.setattr(sla, "utcnow", lambda: MONDAY.replace(hour=17, minute=30))
    _hours(client, world, ALWAYS)
    now = _record(database, waiting)
    assert now.first_response_due_at == MONDAY.replace(hour=20)  # 4 h from 16:00
    assert now.resolution_due_at == MONDAY + timedelta(days=1, hours=2)  # 10 h from 16:00
    assert now.next_due_at == MONDAY.replace(hour=20)
    kept = _record(database, missed)  # missed under the hours of its time: missed still
    assert kept.first_response_due_at == MONDAY.replace(hour=13)
    assert kept.resolution_due_at == MONDAY.replace(hour=18)  # still running: 10 h from 08:00
    held = _record(database, paused)
    assert (held.resolution_due_at, held.resolution_used_seconds) == (None, 3600)
    with database.session(write=False) as db:
        told = db.scalars(select(StreamEvent.payload).where(StreamEvent.type == "sla.retimed"))
        assert list(told) == [{"conversations": 2}]  # open inboxes draw their badges again
    assert _retime_jobs(database) == 0  # all in one chunk: no job left to do

    # The checker breaches at the new due time, never at the old one.
    with database.session() as db:
        assert sla.check(db, now=MONDAY.replace(hour=19, minute=59)) == 2  # ``missed``'s
        assert sla.check(db, now=MONDAY.replace(hour=20, minute=1)) == 1
        assert sla.check(db, now=MONDAY + timedelta(days=1, hours=2, minutes=1)) == 1
        assert sla.check(db, now=MONDAY + timedelta(days=1, hours=12, minutes=1)) == 0
    assert _announced(database) == [
        ("sla.breached", missed, "first_response", MONDAY.replace(hour=13).isoformat()),
        ("sla.breached", missed, "resolution", MONDAY.replace(hour=18).isoformat()),
        ("sla.breached", waiting, "first_response", MONDAY.replace(hour=20).isoformat()),
        ("sla.breached", waiting, "resolution", (MONDAY + timedelta(days=1, hours=2)).isoformat()),
    ]

    # The same calendar saved again changes nothing, and times nothing anew.
    with database.session(write=False) as db:
        version = db.get(sla.BusinessCalendar, world.acme.workspace.id).version  # type: ignore[union-attr]
    _hours(client, world, ALWAYS)
    with database.session(write=False) as db:
        again = db.get(sla.BusinessCalendar, world.acme.workspace.id)
        assert again is not None and again.version == version


def test_many_clocks_are_timed_anew_by_a_job_and_none_is_announced_by_its_old_time(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Timed anew in the request that changed the calendar, every open conversation of a
    # large workspace held the write lock that long: a chunk there, the rest by a job.
    always = sla.Calendar.always_open()
    r = client.post(
        "/api/v1/sla-policies",
        json={
            "name": "Hour",
            "first_response_minutes": 60,
            "resolution_minutes": 600,
            "warn_before_minutes": 0,
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    convs = [_conversation(client, world, f"c{n}") for n in range(5)]
    for n, conv in enumerate(convs):  # no calendar: due an hour after they wrote
        _since(database, conv, MONDAY.replace(hour=16, minute=30 + n), cal=always, first=60)
    monkeypatch.setattr(sla, "RETIME_CHUNK", 2)
    monkeypatch.setattr(sla, "utcnow", lambda: MONDAY.replace(hour=16, minute=45))
    _hours(client, world, OFFICE)  # Monday to Friday, 09:00-17:00
    assert _retime_jobs(database) == 1
    due = {c: _record(database, c).first_response_due_at for c in convs}
    # Two in the request's chunk, the earliest due: half an hour on Monday, half on Tuesday.
    assert due[convs[0]] == MONDAY + timedelta(days=1, hours=9, minutes=30)
    assert due[convs[2]] == MONDAY.replace(hour=17, minute=32)  # the rest as they were

    # Before the job has come round: past their old due time, nothing is announced.
    with database.session() as db:
        assert sla.check(db, now=MONDAY.replace(hour=17, minute=40)) == 0
    assert _announced(database) == []

    Worker(database, settings).run_until_idle()
    for n, conv in enumerate(convs):
        row = _record(database, conv)
        assert row.first_response_due_at == MONDAY + timedelta(days=1, hours=9, minutes=30 + n)
        assert row.calendar_version == 1
    with database.session() as db:
        assert sla.check(db, now=MONDAY + timedelta(days=1, hours=9, minutes=35)) == 5
    assert {(c, target) for _, c, target, _ in _announced(database)} == {
        (c, "first_response") for c in convs
    }
    # 30 min on Monday, 8 h on Tuesday, 1.5 h on Wednesday (not Tuesday 02:30).
    assert _record(database, convs[0]).resolution_due_at == MONDAY + timedelta(days=2, hours=10.5)


@postgresql_only
def test_a_clock_another_transaction_holds_is_timed_anew_by_the_job_queued_again(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Waited for, a record held by a transaction that then waited on the job's chunk (a
    # batch of messages, in another order) would deadlock both: passed over, and done later.
    r = client.post(
        "/api/v1/sla-policies",
        json={"name": "Hour", "first_response_minutes": 60},
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    convs = [_conversation(client, world, f"h{n}") for n in range(3)]
    for n, conv in enumerate(convs):
        at = MONDAY.replace(hour=16, minute=30 + n)
        _since(database, conv, at, cal=sla.Calendar.always_open(), first=60)
    monkeypatch.setattr(sla, "RETIME_CHUNK", 1)
    monkeypatch.setattr(sla, "utcnow", lambda: MONDAY.replace(hour=16, minute=45))
    with database.session() as holder:
        holder.scalar(
            select(ConversationSla)
            .where(ConversationSla.conversation_id == convs[1])
            .with_for_update()
        )
        _hours(client, world, OFFICE)  # the request does convs[0]
        Worker(database, settings).run_until_idle(max_jobs=1)  # the job passes convs[1] over
        assert _record(database, convs[1]).calendar_version == 0
        assert _record(database, convs[2]).calendar_version == 1
    with database.session() as db:  # queued again, a little later: due now
        for again in db.scalars(select(Job).where(Job.name == "sla_retime", Job.state == "queued")):
            again.run_at = datetime(2000, 1, 1, tzinfo=UTC)
    Worker(database, settings).run_until_idle()
    assert _record(database, convs[1]).calendar_version == 1
    tuesday = MONDAY + timedelta(days=1, hours=9, minutes=31)
    assert _record(database, convs[1]).first_response_due_at == tuesday
