"""SLA due times in business hours, warnings and breaches."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from rapport.config import Settings
from rapport.conversations import sla
from rapport.conversations.models import Conversation
from rapport.db import Database, utcnow
from rapport.jobs.worker import Worker
from rapport.problems import Invalid
from rapport.realtime.models import StreamEvent
from tests.conftest import auth, postgresql_only, sqlite_only, sqlite_plans
from tests.factories import World

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = {d: [["09:00", "12:00"], ["13:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


def paris(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/Paris"))


def test_a_due_time_skips_the_weekend_a_holiday_and_the_lunch_break() -> None:
    cal = sla.parse("Europe/Paris", WEEK, ["2026-12-28"])  # the Monday after Christmas
    # Friday 2026-12-25 is a plain Friday here; 16:00 leaves one open hour that day.
    start = paris(2026, 12, 25, 16, 0).astimezone(UTC)
    due = sla.add_business_minutes(start, 4 * 60, cal)
    # 1 h Friday, nothing on Sat, Sun or the Monday holiday, then Tuesday 09-12 (3 h).
    assert due == paris(2026, 12, 29, 12, 0)
    assert due.tzinfo == UTC
    assert sla.business_minutes_between(start, due, cal) == 240


def test_a_due_time_crosses_a_daylight_saving_change_in_local_hours() -> None:
    cal = sla.parse("Europe/Paris", WEEK, [])
    start = paris(2026, 3, 27, 16, 30)  # Friday before the clocks go forward on Sunday
    assert sla.add_business_minutes(start, 60, cal) == paris(2026, 3, 30, 9, 30)


def test_open_hours_spanning_a_daylight_saving_change_count_the_real_minutes() -> None:
    # Durations inside one local day were wall-clock arithmetic: the night the clocks go
    # forward, 00:00-06:00 was counted 6 h by add_business_minutes and 5 h by
    # business_minutes_between, so a due time was an hour late and the two disagreed.
    nights = {d: [["00:00", "06:00"]] for d in DAYS}
    cal = sla.parse("Europe/Paris", nights, [])
    spring = paris(2026, 3, 29, 0, 0).astimezone(UTC)  # 02:00 -> 03:00: 5 open hours
    assert sla.add_business_minutes(spring, 300, cal) == paris(2026, 3, 29, 6, 0)
    assert sla.business_minutes_between(spring, paris(2026, 3, 29, 6, 0), cal) == 300
    autumn = paris(2026, 10, 25, 0, 0).astimezone(UTC)  # 03:00 -> 02:00: 7 open hours
    assert sla.add_business_minutes(autumn, 420, cal) == paris(2026, 10, 25, 6, 0)
    assert sla.business_minutes_between(autumn, paris(2026, 10, 25, 6, 0), cal) == 420


def test_a_day_open_until_midnight_joins_the_next_without_a_gap() -> None:
    # "24:00" was refused, and the nearest allowed end (23:59) lost a minute every night.
    cal = sla.parse("Europe/Paris", {d: [["00:00", "24:00"]] for d in DAYS}, [])
    start = paris(2026, 12, 7, 23, 30).astimezone(UTC)
    assert sla.add_business_minutes(start, 60, cal) == paris(2026, 12, 8, 0, 30)
    assert sla.business_minutes_between(start, paris(2026, 12, 9, 23, 30), cal) == 2 * 24 * 60
    evenings = sla.parse("UTC", {"mon": [["18:00", "24:00"]], "tue": [["00:00", "02:00"]]}, [])
    monday = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
    assert sla.add_business_minutes(monday, 120, evenings) == datetime(2026, 12, 8, 1, tzinfo=UTC)
    with pytest.raises(Invalid, match="before"):
        sla.parse("UTC", {"mon": [["09:00", "00:00"]]}, [])


def test_malformed_calendars_are_clear_errors() -> None:
    with pytest.raises(Invalid, match="time zone"):
        sla.parse("Mars/Olympus", WEEK, [])
    with pytest.raises(Invalid, match="before"):
        sla.parse("UTC", {"mon": [["17:00", "09:00"]]}, [])
    with pytest.raises(Invalid, match="day"):
        sla.parse("UTC", {"funday": [["09:00", "17:00"]]}, [])


def test_first_response_due_then_met_by_a_reply(client: TestClient, world: World) -> None:
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Standard", "first_response_minutes": 60, "resolution_minutes": 480},
        headers=auth(world.alice),
    )
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "sla-1", "text": "help", "from": {"email": "sla@example.com"}},
        headers=auth(world.bob),
    ).json()
    conv = r["conversation_id"]
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state["first_response_due_at"] and state["state"] == "ok"
    client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "hi"}, headers=auth(world.bob)
    )
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state["first_response_due_at"] is None and state["resolution_due_at"]


def test_a_missed_target_is_announced_once(
    client: TestClient, world: World, database: Database
) -> None:
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Fast", "first_response_minutes": 5, "warn_before_minutes": 2},
        headers=auth(world.alice),
    )
    conv = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "sla-2", "text": "help", "from": {"email": "late@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]
    due = datetime.fromisoformat(
        client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()[
            "first_response_due_at"
        ]
    )
    from datetime import timedelta

    with database.session() as db:
        assert sla.check(db, now=due - timedelta(minutes=1)) == 1
        assert sla.check(db, now=due - timedelta(seconds=30)) == 0
        assert sla.check(db, now=due + timedelta(minutes=1)) == 1
        assert sla.check(db, now=due + timedelta(minutes=2)) == 0
    with database.session(write=False) as db:
        types = list(db.scalars(select(StreamEvent.type).where(StreamEvent.type.like("sla.%"))))
    assert types == ["sla.warning", "sla.breached"]
    assert (
        client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()["state"]
        == "breached"
    )


def test_business_hours_are_validated_and_stored(client: TestClient, world: World) -> None:
    bad = client.put(
        "/api/v1/business-hours",
        json={"timezone": "Nowhere/Land", "hours": WEEK},
        headers=auth(world.alice),
    )
    assert bad.status_code == 422
    # Said as the settings page writes hours (it said "must be pairs like ['09:00', ...]").
    for span, said in (
        (["25:00", "26:00"], "mon: 25:00-26:00 is not an opening and a closing time of day"),
        (["17:00", "09:00"], "mon: 17:00-09:00 closes before it opens"),
    ):
        bad = client.put(
            "/api/v1/business-hours",
            json={"timezone": "UTC", "hours": {"mon": [span]}},
            headers=auth(world.alice),
        )
        assert bad.status_code == 422 and said in bad.json()["detail"], bad.text
    ok = client.put(
        "/api/v1/business-hours",
        json={"timezone": "Europe/Paris", "hours": WEEK, "holidays": ["2026-12-25"]},
        headers=auth(world.alice),
    )
    assert ok.status_code == 200
    assert client.get("/api/v1/business-hours", headers=auth(world.bob)).json()["holidays"] == [
        "2026-12-25"
    ]
    assert (
        client.put(
            "/api/v1/business-hours", json={"timezone": "UTC"}, headers=auth(world.bob)
        ).status_code
        == 403
    )


def test_a_breach_is_history_the_live_state_follows_the_current_clock(
    client: TestClient, world: World, database: Database
) -> None:
    from datetime import timedelta

    client.post(
        "/api/v1/sla-policies",
        json={
            "name": "Fast",
            "first_response_minutes": 5,
            "next_response_minutes": 10,
            "resolution_minutes": 600,
            "warn_before_minutes": 1,
        },
        headers=auth(world.alice),
    ).raise_for_status()

    def write(ext: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": "help", "from": {"email": "again@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    def sla_of(conv: str) -> dict:  # type: ignore[type-arg]
        return client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()  # type: ignore[no-any-return]

    def breached_list() -> list[str]:
        r = client.get(
            "/api/v1/conversations", params={"sla_state": "breached"}, headers=auth(world.bob)
        )
        return [c["id"] for c in r.json()["items"]]

    conv = write("br-1")
    due = datetime.fromisoformat(sla_of(conv)["first_response_due_at"])
    with database.session() as db:
        sla.check(db, now=due + timedelta(minutes=1))
    missed = sla_of(conv)
    assert missed["state"] == "breached" and missed["breaches"] == 1
    assert missed["breached_at"] is not None
    assert breached_list() == [conv]

    # Resolved: no clock runs, so nothing is breached now; the miss stays on record.
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    done = sla_of(conv)
    assert done["state"] == "ok" and done["next_due_at"] is None
    assert (done["breaches"], done["breached_at"]) == (1, missed["breached_at"])
    assert breached_list() == []

    # The customer writes again: reopened, with fresh clocks of its own (nobody answered
    # yet: the first response is still owed).
    assert write("br-2") == conv
    again = sla_of(conv)
    assert again["state"] == "ok" and again["first_response_due_at"] is not None
    assert again["resolution_due_at"] is not None
    assert again["breaches"] == 1
    assert breached_list() == []
    due = datetime.fromisoformat(again["first_response_due_at"])
    with database.session() as db:
        sla.check(db, now=due + timedelta(minutes=1))
    late = sla_of(conv)
    assert late["state"] == "breached" and late["breaches"] == 2
    assert late["breached_at"] == missed["breached_at"]  # the first miss

    # A late answer meets the missed target: what remains (resolution) is on time.
    client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "sorry"}, headers=auth(world.bob)
    ).raise_for_status()
    answered = sla_of(conv)
    assert answered["state"] == "ok" and answered["resolution_due_at"] is not None
    assert answered["breaches"] == 2


def test_a_policy_names_labels_as_conversations_keep_them(client: TestClient, world: World) -> None:
    # A policy kept its labels as typed ("VIP") and conversations keep them lower-cased
    # ("vip"): it never applied, and the label it named could be deleted from under it.
    policy = client.post(
        "/api/v1/sla-policies",
        json={"name": "VIP", "labels": ["VIP", " Gold ", "vip"], "first_response_minutes": 15},
        headers=auth(world.alice),
    )
    assert policy.status_code == 201, policy.text
    assert policy.json()["labels"] == ["gold", "vip"]

    def write(ext: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": "help", "from": {"email": "vip@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    conv = write("vip-1")
    client.post(
        f"/api/v1/conversations/{conv}/labels", json={"labels": ["VIP"]}, headers=auth(world.bob)
    ).raise_for_status()
    assert write("vip-2") == conv
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state is not None and state["policy_id"] == policy.json()["id"]
    assert state["first_response_due_at"] is not None

    label = client.post("/api/v1/labels", json={"name": "VIP"}, headers=auth(world.alice)).json()
    gone = client.delete(f"/api/v1/labels/{label['id']}", headers=auth(world.alice))
    assert gone.status_code == 409 and "'VIP'" in gone.json()["detail"]
    blank = client.post(
        "/api/v1/sla-policies",
        json={"name": "Blank", "labels": [" "], "first_response_minutes": 15},
        headers=auth(world.alice),
    )
    assert blank.status_code == 422


def test_missed_targets_already_announced_do_not_hold_up_the_others(
    client: TestClient, world: World, database: Database
) -> None:
    # The checker read one batch, earliest due first, across every workspace: a missed and
    # announced target keeps its due time until it is met, so once a batch of them existed
    # anywhere, nothing else was ever warned about or breached.
    from datetime import timedelta

    def write(token: str, inbox: str, ext: str) -> tuple[str, datetime, datetime]:
        conv = client.post(
            f"/api/v1/inboxes/{inbox}/messages",
            json={"external_id": ext, "text": "help", "from": {"email": f"{ext}@example.com"}},
            headers=auth(token),
        ).json()["conversation_id"]
        state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(token)).json()
        return (
            conv,
            datetime.fromisoformat(state["first_response_due_at"]),
            datetime.fromisoformat(state["resolution_due_at"]),
        )

    policy = {"first_response_minutes": 5, "resolution_minutes": 30, "warn_before_minutes": 0}
    for token in (world.alice, world.mallory):
        client.post(
            "/api/v1/sla-policies", json={"name": "Fast", **policy}, headers=auth(token)
        ).raise_for_status()
    acme_inbox = world.acme.inbox.id  # type: ignore[union-attr]
    globex_inbox = world.globex.inbox.id  # type: ignore[union-attr]
    stale, stale_due, stale_resolution = write(world.bob, acme_inbox, "old")
    with database.session() as db:
        assert sla.check(db, now=stale_due + timedelta(minutes=1), limit=1) == 1
    fresh, fresh_due, _ = write(world.mallory, globex_inbox, "new")
    with database.session() as db:
        assert sla.check(db, now=fresh_due + timedelta(minutes=1), limit=1) == 1
    state = client.get(f"/api/v1/conversations/{fresh}/sla", headers=auth(world.mallory)).json()
    assert state["state"] == "breached"
    # A row's next target, still to come after its missed first response, is found in time.
    with database.session() as db:
        assert sla.check(db, now=stale_resolution + timedelta(minutes=1), limit=1) == 2
    with database.session(write=False) as db:
        payloads = list(
            db.scalars(select(StreamEvent.payload).where(StreamEvent.type == "sla.breached"))
        )
    assert [(p["conversation_id"], p["target"]) for p in payloads] == [
        (stale, "first_response"),
        (fresh, "first_response"),
        (stale, "resolution"),
        (fresh, "resolution"),
    ]


def test_a_warning_before_a_weekend_comes_in_open_minutes_not_calendar_days(
    client: TestClient, world: World, database: Database
) -> None:
    # The checker only looked at targets due within a calendar day: one due Monday at 10:00
    # with a 2 h warning has 2 open hours left on Friday at 16:00, and was warned on Sunday.
    from rapport.conversations.models import ConversationSla

    client.put(
        "/api/v1/business-hours",
        json={"timezone": "UTC", "hours": {d: [["09:00", "17:00"]] for d in DAYS[:5]}},
        headers=auth(world.alice),
    ).raise_for_status()
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "first_response_minutes": 240, "warn_before_minutes": 120},
        headers=auth(world.alice),
    ).raise_for_status()
    conv = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "wk-1", "text": "help", "from": {"email": "wk@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]
    monday = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    with database.session() as db:
        row = db.get(ConversationSla, conv)
        assert row is not None
        row.first_response_due_at = row.next_due_at = monday
    with database.session() as db:
        assert sla.check(db, now=datetime(2026, 12, 4, 14, 0, tzinfo=UTC)) == 0  # 3 h left
        assert sla.check(db, now=datetime(2026, 12, 4, 16, 0, tzinfo=UTC)) == 1  # 2 h left
    with database.session(write=False) as db:
        warned = list(
            db.scalars(select(StreamEvent.payload).where(StreamEvent.type == "sla.warning"))
        )
    assert [(p["conversation_id"], p["due_at"]) for p in warned] == [(conv, monday.isoformat())]


def test_a_deleted_policy_leaves_its_misses_on_record_and_its_clocks_stopped(
    client: TestClient, world: World, database: Database
) -> None:
    # Deleting a policy deleted every conversation's SLA record under it (ON DELETE
    # CASCADE): the misses kept on record were gone, and the API said no SLA ever applied.
    from datetime import timedelta

    policy = _policy(
        client, world, {"name": "Fast", "first_response_minutes": 5, "resolution_minutes": 60}
    )
    conv = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "del-1", "text": "help", "from": {"email": "del@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]

    def sla_of() -> dict:  # type: ignore[type-arg]
        return client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()  # type: ignore[no-any-return]

    started = sla_of()
    due = datetime.fromisoformat(started["first_response_due_at"])
    resolution = datetime.fromisoformat(started["resolution_due_at"])
    with database.session() as db:
        assert sla.check(db, now=due + timedelta(minutes=1)) == 1
    missed = sla_of()
    assert missed["state"] == "breached" and missed["breaches"] == 1

    gone = client.delete(f"/api/v1/sla-policies/{policy['id']}", headers=auth(world.alice))
    assert gone.status_code == 204
    kept = sla_of()
    assert kept is not None and kept["policy_id"] is None
    assert (kept["breaches"], kept["breached_at"]) == (1, missed["breached_at"])
    assert kept["state"] == "none" and kept["next_due_at"] is None
    assert kept["first_response_due_at"] is None and kept["resolution_due_at"] is None
    breached = client.get(
        "/api/v1/conversations", params={"sla_state": "breached"}, headers=auth(world.bob)
    ).json()["items"]
    assert breached == []

    with database.session() as db:  # the resolution target would have been missed by now
        assert sla.check(db, now=resolution + timedelta(days=1)) == 0
    with database.session(write=False) as db:
        types = list(db.scalars(select(StreamEvent.type).where(StreamEvent.type.like("sla.%"))))
    assert types == ["sla.breached", "sla.policy_deleted"]  # no warning or breach after it
    assert sla_of() == kept

    # The customer writes again: a policy still there applies afresh, the old miss stays.
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Slow", "first_response_minutes": 600},
        headers=auth(world.alice),
    ).raise_for_status()
    client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "del-2", "text": "again", "from": {"email": "del@example.com"}},
        headers=auth(world.bob),
    ).raise_for_status()
    again = sla_of()
    assert again["policy_id"] is not None and again["policy_id"] != policy["id"]
    assert again["state"] == "ok" and again["first_response_due_at"] is not None
    assert (again["breaches"], again["breached_at"]) == (1, missed["breached_at"])


def test_a_rule_making_a_conversation_urgent_puts_it_under_the_urgent_policy(
    client: TestClient, world: World, database: Database, settings: Settings
) -> None:
    # The policy was matched once, when the message arrived, before the rules ran: one
    # applying to urgent conversations never applied to those a rule (or an agent) made
    # urgent, which kept the default's 8 hours instead of 15 minutes.
    admin = auth(world.alice)
    for name, body in (
        ("Urgent", {"priorities": ["urgent"], "first_response_minutes": 15, "position": 0}),
        ("Default", {"first_response_minutes": 480, "resolution_minutes": 2880, "position": 1}),
    ):
        r = client.post("/api/v1/sla-policies", json={"name": name, **body}, headers=admin)
        assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/automation-rules",
        json={
            "name": "outage",
            "event": "message.received",
            "conditions": [{"field": "message.text", "op": "contains", "value": "down"}],
            "actions": [{"type": "set_priority", "value": "urgent"}],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text

    def arrived(ext: str, text: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": text, "from": {"email": f"{ext}@example.com"}},
            headers=auth(world.bob),
        )
        return str(r.json()["conversation_id"])

    down, calm = arrived("u1", "the site is down"), arrived("u2", "a question")
    Worker(database, settings).run_until_idle()
    with database.session(write=False) as db:
        started = {c: db.get(Conversation, c).waiting_since for c in (down, calm)}  # type: ignore[union-attr]

    def first_due(conv: str) -> datetime:
        r = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob))
        return datetime.fromisoformat(r.json()["first_response_due_at"])

    assert first_due(down) == started[down] + timedelta(minutes=15)
    assert first_due(calm) == started[calm] + timedelta(minutes=480)
    # An agent lowering it again puts it back under the default.
    r = client.post(
        f"/api/v1/conversations/{down}/priority", json={"priority": "low"}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    assert first_due(down) == started[down] + timedelta(minutes=480)


@sqlite_only
def test_deleting_a_policy_finds_its_conversations_records_without_walking_them_all(
    client: TestClient, world: World, database: Database
) -> None:
    # The records of a policy's conversations were found by walking every SLA record of
    # every workspace, twice: once to stop their clocks, once for the foreign key's SET NULL.
    policy = _policy(client, world, {"name": "Fast", "first_response_minutes": 5})
    client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "ix-1", "text": "help", "from": {"email": "ix@example.com"}},
        headers=auth(world.bob),
    ).raise_for_status()
    with sqlite_plans(database, "conversation_slas", "DELETE FROM sla_policies") as plans:
        gone = client.delete(f"/api/v1/sla-policies/{policy['id']}", headers=auth(world.alice))
    assert gone.status_code == 204
    assert any(s.startswith("DELETE FROM sla_policies") for s, _ in plans)
    for _, plan in plans:
        assert "SCAN conversation_slas" not in plan, plan


def test_the_list_filters_conversations_no_policy_applies_to(
    client: TestClient, world: World
) -> None:
    # `sla_state=none` found only records whose policy was deleted: a conversation no
    # policy ever applied to has no record, and no filter could list it.
    def write(ext: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": "help", "from": {"email": f"{ext}@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    def listed(state: str) -> set[str]:
        r = client.get(
            "/api/v1/conversations", params={"sla_state": state}, headers=auth(world.bob)
        )
        assert r.status_code == 200, r.text
        return {c["id"] for c in r.json()["items"]}

    first = world.acme.opened.conversation.id
    before = write("none-1")  # no policy yet: no SLA record
    for name, body in (
        ("VIP", {"labels": ["vip"], "first_response_minutes": 15, "position": 0}),
        ("Default", {"first_response_minutes": 480, "position": 1}),
    ):
        r = client.post(
            "/api/v1/sla-policies", json={"name": name, **body}, headers=auth(world.alice)
        )
        assert r.status_code == 201, r.text
        if name == "VIP":
            vip = r.json()["id"]
    timed, orphan = write("none-2"), write("none-3")
    client.post(
        f"/api/v1/conversations/{orphan}/labels", json={"labels": ["vip"]}, headers=auth(world.bob)
    ).raise_for_status()
    assert (
        client.delete(f"/api/v1/sla-policies/{vip}", headers=auth(world.alice)).status_code == 204
    )

    assert listed("none") == {first, before, orphan}
    assert listed("ok") == {timed}
    r = client.get(
        "/api/v1/conversations",
        params={"sla_state": "none", "sort": "sla_due"},
        headers=auth(world.bob),
    )
    assert r.json()["items"] == []  # no SLA, so no due time

    from tests.web.test_pages import sign_in

    sign_in(client, "bob@acme.test")
    page = client.get("/app/inbox", params={"view": "all", "sla_state": "none"}).text
    assert before in page and orphan in page and timed not in page
    assert '<option value="none" selected>No SLA</option>' in page


def test_deleting_a_policy_tells_open_inboxes_once(
    client: TestClient, world: World, database: Database
) -> None:
    # Deleting a policy changed the badge of every conversation under it and said nothing:
    # open inbox pages went on showing "SLA ok" or "SLA breached" until reloaded.
    policy = _policy(client, world, {"name": "Fast", "first_response_minutes": 5})
    for n in range(2):
        client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": f"tell-{n}", "text": "help", "from": {"email": f"t{n}@x.io"}},
            headers=auth(world.bob),
        ).raise_for_status()
    gone = client.delete(f"/api/v1/sla-policies/{policy['id']}", headers=auth(world.alice))
    assert gone.status_code == 204
    with database.session(write=False) as db:
        events = list(
            db.execute(
                select(StreamEvent.workspace_id, StreamEvent.payload).where(
                    StreamEvent.type == "sla.policy_deleted"
                )
            )
        )
    assert [tuple(e) for e in events] == [
        (world.acme.workspace.id, {"policy_id": policy["id"], "conversations": 2})
    ]


def _record(database: Database, conv: str) -> Any:
    from rapport.conversations.models import ConversationSla

    with database.session(write=False) as db:
        row = db.get(ConversationSla, conv)
        assert row is not None
        db.expunge(row)
        return row


def _move(database: Database, conv: str, status: str, at: datetime) -> None:
    """The conversation's status changed at ``at`` (the service's own times are now)."""
    from rapport.conversations.models import Status

    with database.session() as db:
        row = db.get(Conversation, conv)
        assert row is not None
        row.status = Status(status)
        sla.on_status(db, conversation=row, at=at)


def _paused_unused(database: Database, conv: str) -> None:
    """Pending, its resolution clock not run at all: the tests then move it at chosen times."""
    from rapport.conversations.models import Status

    with database.session() as db:
        row, record = db.get(Conversation, conv), db.get(sla.ConversationSla, conv)
        assert row is not None and record is not None
        row.status = Status.pending
        record.resolution_started_at = record.resolution_due_at = None
        record.resolution_used_seconds = 0


def test_the_resolution_clock_pauses_while_pending_or_snoozed(
    client: TestClient, world: World, database: Database
) -> None:
    # The resolution target ran while the conversation waited on the customer (pending) or
    # was snoozed: agents breached it for the time the customer took to answer.
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "resolution_minutes": 600, "warn_before_minutes": 0},
        headers=auth(world.alice),
    ).raise_for_status()
    conv = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "pause-1", "text": "help", "from": {"email": "pause@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]
    start = _record(database, conv)
    assert start.resolution_started_at is not None and start.resolution_used_seconds == 0
    t0 = start.resolution_started_at
    assert start.resolution_due_at == t0 + timedelta(minutes=600)

    # Through the API: pending stops the due time; open again gives one back.
    r = client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "pending"}, headers=auth(world.bob)
    )
    assert r.status_code == 200, r.text
    paused = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert paused["resolution_due_at"] is None and paused["next_due_at"] is None
    assert paused["state"] == "ok"
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "open"}, headers=auth(world.bob)
    ).raise_for_status()
    assert client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()[
        "resolution_due_at"
    ]

    # At chosen times: open 1 h, pending 5 h, open 2 h, snoozed 10 h, then open again.
    _paused_unused(database, conv)
    _move(database, conv, "open", t0)
    _move(database, conv, "pending", t0 + timedelta(hours=1))
    waiting = _record(database, conv)
    assert (waiting.resolution_used_seconds, waiting.resolution_due_at) == (3600, None)
    with database.session() as db:  # 11 h after it started: 10 h would have been missed
        assert sla.check(db, now=t0 + timedelta(hours=11)) == 0
    _move(database, conv, "open", t0 + timedelta(hours=6))
    back = _record(database, conv)
    assert back.resolution_due_at == t0 + timedelta(hours=6 + 9)  # 9 of its 10 h left
    _move(database, conv, "snoozed", t0 + timedelta(hours=8))
    assert _record(database, conv).resolution_used_seconds == 3 * 3600
    _move(database, conv, "open", t0 + timedelta(hours=18))
    due = _record(database, conv).resolution_due_at
    assert due == t0 + timedelta(hours=18 + 7)
    with database.session() as db:
        assert sla.check(db, now=due - timedelta(minutes=1)) == 0
        assert sla.check(db, now=due + timedelta(minutes=1)) == 1  # breached at last

    # Missed, then pending: the miss stands (it is not undone by waiting on the customer).
    _move(database, conv, "pending", due + timedelta(hours=1))
    missed = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert missed["state"] == "breached" and missed["breaches"] == 1
    assert datetime.fromisoformat(missed["resolution_due_at"]) == due
    _move(database, conv, "open", due + timedelta(hours=2))
    assert _record(database, conv).resolution_due_at == due  # announced once, not again
    with database.session() as db:
        assert sla.check(db, now=due + timedelta(hours=3)) == 0


def test_the_resolution_clock_resumes_in_business_hours(
    client: TestClient, world: World, database: Database
) -> None:
    client.put(
        "/api/v1/business-hours",
        json={"timezone": "UTC", "hours": {d: [["09:00", "17:00"]] for d in DAYS[:5]}},
        headers=auth(world.alice),
    ).raise_for_status()
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Half day", "resolution_minutes": 240},
        headers=auth(world.alice),
    ).raise_for_status()
    conv = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "bh-1", "text": "help", "from": {"email": "bh@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    _paused_unused(database, conv)
    _move(database, conv, "open", monday)
    assert _record(database, conv).resolution_due_at == monday + timedelta(hours=4)
    _move(database, conv, "pending", monday + timedelta(hours=1))  # 3 open hours left
    # Back on Friday at 16:30: half an hour on Friday, then 2.5 h on the next Monday.
    _move(database, conv, "open", datetime(2026, 12, 11, 16, 30, tzinfo=UTC))
    assert _record(database, conv).resolution_due_at == datetime(2026, 12, 14, 11, 30, tzinfo=UTC)


def test_a_resolution_clock_from_before_its_runs_were_kept_pauses_with_what_it_had_left(
    client: TestClient, world: World, database: Database
) -> None:
    # Records from before migration 0020 have a running due time and nothing else.
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "resolution_minutes": 600},
        headers=auth(world.alice),
    ).raise_for_status()
    conv = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "old-1", "text": "help", "from": {"email": "old@example.com"}},
        headers=auth(world.bob),
    ).json()["conversation_id"]
    now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    with database.session() as db:
        row = db.get(sla.ConversationSla, conv)
        assert row is not None
        row.resolution_due_at = now + timedelta(hours=4)  # 6 of its 10 hours used
        row.resolution_started_at, row.resolution_used_seconds = None, 0
    _move(database, conv, "pending", now)
    paused = _record(database, conv)
    assert (paused.resolution_used_seconds, paused.resolution_due_at) == (6 * 3600, None)
    _move(database, conv, "open", now + timedelta(days=1))
    assert _record(database, conv).resolution_due_at == now + timedelta(days=1, hours=4)


def test_a_reopened_conversation_matched_to_another_policy_is_timed_anew_from_its_reopening(
    client: TestClient, world: World, database: Database
) -> None:
    # Matched again after an answer (always so for a reopened conversation), the
    # resolution due time of the old policy was kept: nothing said when its clock started.
    for name, body in (
        ("VIP", {"labels": ["vip"], "resolution_minutes": 60, "position": 0}),
        ("Default", {"resolution_minutes": 2880, "position": 1}),
    ):
        r = client.post(
            "/api/v1/sla-policies", json={"name": name, **body}, headers=auth(world.alice)
        )
        assert r.status_code == 201, r.text

    def write(ext: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": "help", "from": {"email": "re@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    def call(path: str, body: dict[str, Any]) -> None:
        r = client.post(f"/api/v1/conversations/{conv}/{path}", json=body, headers=auth(world.bob))
        assert r.status_code in (200, 201), r.text

    conv = write("re-1")
    call("messages", {"text": "on it"})
    call("status", {"status": "resolved"})
    assert write("re-2") == conv  # reopened: a fresh resolution clock, the whole target
    fresh = _record(database, conv)
    assert fresh.resolution_used_seconds == 0
    started = fresh.resolution_started_at
    assert fresh.resolution_due_at == started + timedelta(minutes=2880)

    call("labels", {"labels": ["vip"]})
    assert _record(database, conv).resolution_due_at == started + timedelta(minutes=60)

    # Paused after half an hour open, matched again while paused, then open again.
    _paused_unused(database, conv)
    t = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    _move(database, conv, "open", t)
    _move(database, conv, "pending", t + timedelta(minutes=30))
    r = client.delete(f"/api/v1/conversations/{conv}/labels/vip", headers=auth(world.bob))
    assert r.status_code in (200, 204), r.text
    assert _record(database, conv).resolution_due_at is None  # still paused
    _move(database, conv, "open", t + timedelta(hours=2))
    assert _record(database, conv).resolution_due_at == t + timedelta(hours=2, minutes=2850)
    call("labels", {"labels": ["vip"]})
    assert _record(database, conv).resolution_due_at == t + timedelta(hours=2, minutes=30)


def _policy(client: TestClient, world: World, body: dict[str, Any]) -> dict[str, Any]:
    """A policy added by an admin, as the API answers it."""
    r = client.post("/api/v1/sla-policies", json=body, headers=auth(world.alice))
    return r.json()  # type: ignore[no-any-return]


def _resolution_policy(client: TestClient, world: World, *, warn: int = 0) -> None:
    client.post(
        "/api/v1/sla-policies",
        json={"name": "Day", "resolution_minutes": 600, "warn_before_minutes": warn},
        headers=auth(world.alice),
    ).raise_for_status()


def _conversation(client: TestClient, world: World, ext: str) -> str:
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": ext, "text": "help", "from": {"email": f"{ext}@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["conversation_id"])


def test_a_snooze_that_ended_runs_the_clock_from_its_end_not_from_the_jobs_round(
    client: TestClient, world: World, database: Database
) -> None:
    # The periodic job reopened a snoozed conversation when it came round and the clock
    # ran again from then: the time after snoozed_until counted as a pause, though the
    # conversation was back on the team's plate.
    from rapport.conversations import service
    from rapport.conversations.models import Status

    _resolution_policy(client, world)
    conv = _conversation(client, world, "wake-1")
    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    _paused_unused(database, conv)
    _move(database, conv, "open", t0)
    with database.session() as db:  # snoozed after an hour, until two hours later
        row = db.get(Conversation, conv)
        assert row is not None
        row.status, row.snoozed_until = Status.snoozed, t0 + timedelta(hours=3)
        sla.on_status(db, conversation=row, at=t0 + timedelta(hours=1))
    with database.session() as db:  # the job comes round two hours after that
        assert service.unsnooze_due(db, now=t0 + timedelta(hours=5)) == 1
    back = _record(database, conv)
    assert back.resolution_started_at == t0 + timedelta(hours=3)
    assert back.resolution_due_at == t0 + timedelta(hours=3 + 9)  # 9 of its 10 h left
    with database.session() as db:
        woken = db.get(Conversation, conv)
        assert woken is not None
        assert (woken.status, woken.snoozed_until) == (Status.open, None)


def test_a_warning_is_sent_once_per_clock_however_often_it_pauses(
    client: TestClient, world: World, database: Database
) -> None:
    # A warned resolution clock, paused and resumed, is due at another time: the warning,
    # kept by due time, was sent again on every resume.
    _resolution_policy(client, world, warn=60)
    conv = _conversation(client, world, "warn-1")
    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    _paused_unused(database, conv)
    _move(database, conv, "open", t0)

    def check(at: datetime) -> int:
        with database.session() as db:
            return sla.check(db, now=at)

    assert check(t0 + timedelta(hours=9, minutes=30)) == 1  # 30 min left: warned
    _move(database, conv, "pending", t0 + timedelta(hours=9, minutes=30))
    assert _record(database, conv).state.value == "ok"  # paused: nothing is due
    _move(database, conv, "open", t0 + timedelta(hours=20))
    assert _record(database, conv).resolution_due_at == t0 + timedelta(hours=20, minutes=30)
    assert check(t0 + timedelta(hours=20)) == 0  # the same clock: warned already
    assert _record(database, conv).state.value == "warning"
    _move(database, conv, "snoozed", t0 + timedelta(hours=20, minutes=10))
    _move(database, conv, "open", t0 + timedelta(hours=22))
    assert check(t0 + timedelta(hours=22)) == 0
    assert check(t0 + timedelta(hours=22, minutes=21)) == 1  # then missed, once

    # Resolved while paused after a warning, then reopened: a fresh clock, warned anew.
    _move(database, conv, "pending", t0 + timedelta(hours=23))
    _move(database, conv, "resolved", t0 + timedelta(hours=24))
    t1 = t0 + timedelta(days=2)
    _move(database, conv, "open", t1)
    assert _record(database, conv).resolution_due_at == t1 + timedelta(hours=10)
    assert check(t1 + timedelta(hours=9, minutes=30)) == 1
    _move(database, conv, "pending", t1 + timedelta(hours=9, minutes=30))
    _move(database, conv, "resolved", t1 + timedelta(hours=9, minutes=40))
    t2 = t1 + timedelta(days=2)
    _move(database, conv, "open", t2)
    assert check(t2 + timedelta(hours=9, minutes=30)) == 1


def test_a_paused_resolution_clock_says_so_with_the_time_it_has_left(
    client: TestClient, world: World, database: Database
) -> None:
    # A paused clock showed as nothing at all: no due time, state "ok", as if none ran.
    _resolution_policy(client, world)
    conv = _conversation(client, world, "held-1")

    def sla_of() -> dict[str, Any]:
        r = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob))
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    running = sla_of()
    assert running["resolution_paused"] is False and running["resolution_left_seconds"] is None
    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    _paused_unused(database, conv)
    _move(database, conv, "open", t0)
    _move(database, conv, "pending", t0 + timedelta(hours=1, minutes=30))
    held = sla_of()
    assert held["resolution_paused"] is True and held["resolution_due_at"] is None
    assert held["resolution_left_seconds"] == (10 * 60 - 90) * 60

    # Missed, then pending: paused with nothing left, the miss still its due time.
    _move(database, conv, "open", t0 + timedelta(hours=2))
    _move(database, conv, "snoozed", t0 + timedelta(hours=12))
    missed = sla_of()
    assert missed["resolution_paused"] is True and missed["resolution_left_seconds"] == 0
    missed_at = t0 + timedelta(hours=10, minutes=30)
    assert datetime.fromisoformat(missed["resolution_due_at"]) == missed_at

    # Resolved: the clock stopped, not paused.
    client.post(
        f"/api/v1/conversations/{conv}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    assert sla_of()["resolution_paused"] is False


def test_a_changed_policy_times_its_open_conversations_anew_and_keeps_what_is_not_named(
    client: TestClient, world: World, database: Database
) -> None:
    # Policies could be added and deleted, not changed: lengthening a target meant deleting
    # the policy, which stopped every clock under it.
    policy = _policy(
        client, world, {"name": "Std", "first_response_minutes": 60, "resolution_minutes": 600}
    )
    waiting, answered, done = (_conversation(client, world, ext) for ext in ("w", "a", "d"))
    client.post(
        f"/api/v1/conversations/{answered}/messages",
        json={"text": "on it"},
        headers=auth(world.bob),
    ).raise_for_status()
    client.post(
        f"/api/v1/conversations/{done}/status", json={"status": "resolved"}, headers=auth(world.bob)
    ).raise_for_status()
    before = {c: _record(database, c) for c in (waiting, answered, done)}
    r = client.patch(
        f"/api/v1/sla-policies/{policy['id']}",
        json={"first_response_minutes": 120, "next_response_minutes": 30, "labels": [" VIP "]},
        headers=auth(world.alice),
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["name"] == "Std" and changed["resolution_minutes"] == 600  # not named: kept
    assert changed["labels"] == ["vip"] and changed["next_response_minutes"] == 30
    after = {c: _record(database, c) for c in (waiting, answered, done)}
    # Still waiting for a first answer: due two hours after the customer wrote, not one.
    assert after[waiting].first_response_due_at - before[waiting].first_response_due_at == (
        timedelta(minutes=60)
    )
    assert after[waiting].resolution_due_at == before[waiting].resolution_due_at
    # Answered: no first response is due; the next response target it did not have is not
    # due either until the customer writes again.
    assert after[answered].first_response_due_at is None
    assert after[answered].next_response_due_at is None
    # Resolved: left alone.
    assert after[done].resolution_due_at == before[done].resolution_due_at
    assert after[done].first_response_due_at == before[done].first_response_due_at
    with database.session(write=False) as db:
        told = db.scalars(
            select(StreamEvent.payload).where(StreamEvent.type == "sla.policy_updated")
        ).all()
    assert told == [{"policy_id": policy["id"], "conversations": 2}]
    # A target taken away is no target; a name cannot be.
    r = client.patch(
        f"/api/v1/sla-policies/{policy['id']}",
        json={"first_response_minutes": None},
        headers=auth(world.alice),
    )
    assert r.status_code == 200 and r.json()["first_response_minutes"] is None
    assert _record(database, waiting).first_response_due_at is None
    for bad in ({"name": None}, {"name": ""}, {"resolution_minutes": 0}, {"labels": None}):
        r = client.patch(
            f"/api/v1/sla-policies/{policy['id']}", json=bad, headers=auth(world.alice)
        )
        assert r.status_code == 422, bad
        assert r.headers["content-type"] == "application/problem+json"


def test_only_an_admin_of_its_own_workspace_changes_a_policy(
    client: TestClient, world: World
) -> None:
    policy = _policy(client, world, {"name": "Std", "first_response_minutes": 60})
    url = f"/api/v1/sla-policies/{policy['id']}"
    assert client.patch(url, json={"name": "x"}, headers=auth(world.bob)).status_code == 403
    assert client.patch(url, json={"name": "x"}, headers=auth(world.mallory)).status_code == 404
    listed = client.get("/api/v1/sla-policies", headers=auth(world.alice)).json()
    assert [p["name"] for p in listed] == ["Std"]


def test_a_target_changed_after_its_miss_is_not_missed_twice(
    client: TestClient, world: World, database: Database
) -> None:
    # Timed anew, a target already missed and announced got a new due time, also past,
    # which the checker announced again: two misses (and their rules' escalations) for one.
    from rapport.conversations.models import ConversationSla

    policy = _policy(client, world, {"name": "Fast", "first_response_minutes": 5})
    conv = _conversation(client, world, "late-twice")
    wrote = utcnow() - timedelta(minutes=40)
    with database.session() as db:
        row, clock = db.get(Conversation, conv), db.get(ConversationSla, conv)
        assert row is not None and clock is not None
        row.waiting_since = wrote
        clock.first_response_due_at = clock.next_due_at = wrote + timedelta(minutes=5)
    with database.session() as db:
        assert sla.check(db, now=utcnow()) == 1  # the miss, announced
    url = f"/api/v1/sla-policies/{policy['id']}"
    client.patch(url, json={"first_response_minutes": 10}, headers=auth(world.alice))
    with database.session() as db:
        assert sla.check(db, now=utcnow()) == 0  # still that miss: not a second one
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state["state"] == "breached" and state["breaches"] == 1
    # Given an hour instead, the customer is not waiting past it any more.
    client.patch(url, json={"first_response_minutes": 60}, headers=auth(world.alice))
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state["state"] == "ok" and state["breaches"] == 1
    assert state["first_response_due_at"].startswith(
        (wrote + timedelta(minutes=60)).isoformat()[:16]
    )
    # A rename changes no clock (and says so to no inbox as a change of time).
    before = _record(database, conv).first_response_due_at
    client.patch(url, json={"name": "Fast lane"}, headers=auth(world.alice))
    assert _record(database, conv).first_response_due_at == before


def test_a_target_met_late_before_the_checker_came_round_is_a_miss_on_record(
    client: TestClient, world: World, database: Database
) -> None:
    # The checker runs once a minute (later when the queue is busy): a reply or a
    # resolution seconds after the due time stopped the clock before it looked, and the
    # miss was never recorded, announced or counted. The reports said "met".
    from rapport.conversations.models import ConversationSla

    _policy(client, world, {"name": "Fast", "first_response_minutes": 5})
    late, never = _conversation(client, world, "late-reply"), _conversation(client, world, "gone")
    due = utcnow() - timedelta(seconds=20)
    with database.session() as db:
        for conv in (late, never):
            clock = db.get(ConversationSla, conv)
            assert clock is not None
            clock.first_response_due_at = clock.next_due_at = due
    client.post(
        f"/api/v1/conversations/{late}/messages", json={"text": "sorry"}, headers=auth(world.bob)
    ).raise_for_status()
    client.post(  # resolved unanswered: its first response was missed all the same
        f"/api/v1/conversations/{never}/status",
        json={"status": "resolved"},
        headers=auth(world.bob),
    ).raise_for_status()
    for conv in (late, never):
        state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
        assert state["breaches"] == 1 and state["state"] == "ok", state
        assert datetime.fromisoformat(state["breached_at"]) == due
    with database.session(write=False) as db:
        told = list(db.scalars(select(StreamEvent).where(StreamEvent.type == "sla.breached")))
    assert sorted(e.payload["conversation_id"] for e in told) == sorted([late, never])
    with database.session() as db:  # and the checker does not count it again
        assert sla.check(db, now=utcnow()) == 0
    assert _record(database, late).breaches == 1


@postgresql_only
def test_a_reply_committed_while_the_checker_runs_is_not_written_over(
    client: TestClient, world: World, database: Database
) -> None:
    # The checker read a record whose target was missed, then waited for a reply that
    # stopped its clock (and announced the miss), and wrote over it: announced a second
    # time, and "breached" for good with a due time nothing runs to. It now holds the
    # record and reads it afresh before saying anything, and leaves one held elsewhere
    # to its next round.
    from rapport.conversations.models import ConversationSla

    _policy(client, world, {"name": "Fast", "first_response_minutes": 5})
    conv = _conversation(client, world, "raced")
    with database.session() as db:
        clock = db.get(ConversationSla, conv)
        assert clock is not None
        clock.first_response_due_at = clock.next_due_at = utcnow() - timedelta(minutes=1)
    checked: list[int] = []

    def check() -> None:
        with database.session() as db:
            checked.append(sla.check(db, now=utcnow()))

    with database.session() as db:
        row = db.get(Conversation, conv)
        assert row is not None
        sla.on_agent_reply(db, conversation=row)  # the reply, not yet committed
        db.flush()
        checker = threading.Thread(target=check)
        checker.start()
        checker.join(1.0)
    checker.join(30)
    assert checked == [0]
    record = _record(database, conv)
    assert (record.state.value, record.next_due_at, record.breaches) == ("ok", None, 1)
    with database.session(write=False) as db:
        told = list(db.scalars(select(StreamEvent.type).where(StreamEvent.type == "sla.breached")))
    assert told == ["sla.breached"]
    with database.session() as db:
        assert sla.check(db, now=utcnow()) == 0


def test_a_warning_of_zero_minutes_is_none_before_the_breach(
    client: TestClient, world: World, database: Database
) -> None:
    # 0 was read as "under a whole minute left": a warning came or not as the checker's
    # round fell in the target's last minute, seconds before the breach it announced.
    _policy(client, world, {"name": "Fast", "first_response_minutes": 5, "warn_before_minutes": 0})
    conv = _conversation(client, world, "warn-zero")
    due = _record(database, conv).first_response_due_at
    with database.session() as db:
        assert sla.check(db, now=due - timedelta(seconds=30)) == 0
        assert sla.check(db, now=due) == 1
    with database.session(write=False) as db:
        types = list(db.scalars(select(StreamEvent.type).where(StreamEvent.type.like("sla.%"))))
    assert types == ["sla.breached"]


@pytest.mark.parametrize("how", ["policy", "priority"])
def test_a_miss_not_yet_announced_stays_on_record_when_the_target_is_timed_anew(
    client: TestClient, world: World, database: Database, how: str
) -> None:
    # Timed anew to a later due time before the checker came round to the one passed
    # (a target lengthened, a priority putting it under a slower policy), the miss was
    # gone: not announced, not counted, and the reports said "met".
    from rapport.conversations.models import ConversationSla

    fast = _policy(client, world, {"name": "Fast", "first_response_minutes": 5, "position": 1})
    _policy(
        client,
        world,
        {"name": "Slow", "first_response_minutes": 120, "priorities": ["low"], "position": 0},
    )
    conv = _conversation(client, world, f"retimed-{how}")
    wrote = utcnow() - timedelta(minutes=20)
    with database.session() as db:
        row, clock = db.get(Conversation, conv), db.get(ConversationSla, conv)
        assert row is not None and clock is not None and clock.policy_id == fast["id"]
        row.waiting_since = wrote
        clock.first_response_due_at = clock.next_due_at = wrote + timedelta(minutes=5)
    if how == "policy":
        r = client.patch(
            f"/api/v1/sla-policies/{fast['id']}",
            json={"first_response_minutes": 60},
            headers=auth(world.alice),
        )
    else:
        r = client.post(
            f"/api/v1/conversations/{conv}/priority",
            json={"priority": "low"},
            headers=auth(world.bob),
        )
    assert r.status_code == 200, r.text
    state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
    assert state["breaches"] == 1 and state["state"] == "ok", state
    assert datetime.fromisoformat(state["breached_at"]) == wrote + timedelta(minutes=5)
    with database.session() as db:  # announced then, and not again
        assert sla.check(db, now=utcnow()) == 0
    with database.session(write=False) as db:
        told = db.scalars(select(StreamEvent.type).where(StreamEvent.type == "sla.breached"))
        assert len(list(told)) == 1


def test_a_first_response_is_owed_once_per_conversation_a_next_response_after_each_answer(
    client: TestClient, world: World
) -> None:
    # As Zendesk's first reply time: resolved before anyone answered and written to again,
    # the conversation still owes its first response (it was given a next-response clock,
    # or none when the policy had no such target, and nobody's answer was ever timed).
    _policy(
        client, world, {"name": "Both", "first_response_minutes": 60, "next_response_minutes": 30}
    )

    def write(ext: str) -> str:
        r = client.post(
            f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
            json={"external_id": ext, "text": "help", "from": {"email": "owed@example.com"}},
            headers=auth(world.bob),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["conversation_id"])

    def call(conv: str, path: str, body: dict[str, Any]) -> None:
        r = client.post(f"/api/v1/conversations/{conv}/{path}", json=body, headers=auth(world.bob))
        assert r.status_code in (200, 201), r.text

    def clocks(conv: str) -> tuple[bool, bool]:
        state = client.get(f"/api/v1/conversations/{conv}/sla", headers=auth(world.bob)).json()
        return state["first_response_due_at"] is not None, state["next_response_due_at"] is not None

    conv = write("owed-1")
    call(conv, "status", {"status": "resolved"})  # resolved unanswered
    assert write("owed-2") == conv
    assert clocks(conv) == (True, False)  # still its first response
    call(conv, "messages", {"text": "here now"})
    assert clocks(conv) == (False, False)
    call(conv, "status", {"status": "resolved"})
    assert write("owed-3") == conv
    assert clocks(conv) == (False, True)  # answered once: a next response from now on
