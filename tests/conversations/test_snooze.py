"""Snoozed conversations waking up: the periodic job against what agents do meanwhile."""

import threading
from datetime import timedelta

from sqlalchemy import select

from rapport.conversations import service
from rapport.conversations.models import Conversation, Message, MessageKind, Status
from rapport.db import Database, utcnow
from tests.conftest import postgresql_only
from tests.factories import World


def _snoozed_until_just_now(database: Database, conv: str) -> None:
    with database.session() as db:
        row = db.get(Conversation, conv)
        assert row is not None
        row.status, row.snoozed_until = Status.snoozed, utcnow() - timedelta(minutes=1)


def _wake_up(database: Database, woken: list[int]) -> None:
    with database.session() as db:
        woken.append(service.unsnooze_due(db))


@postgresql_only
def test_a_snooze_moved_while_the_wake_up_job_runs_is_not_undone(
    world: World, database: Database
) -> None:
    # The job read the conversation as due, then waited for the agent's change (a snooze
    # moved to tomorrow) and wrote over it: the conversation woke at once, and the agent's
    # new time was gone. The job now leaves a conversation another transaction holds to its
    # next round, when it reads it as it is.
    conv = world.acme.opened.conversation.id
    _snoozed_until_just_now(database, conv)
    tomorrow = utcnow() + timedelta(days=1)
    woken: list[int] = []
    with database.session() as db:
        row = db.get(Conversation, conv)
        assert row is not None
        service.set_status(
            db,
            conversation=row,
            status=Status.snoozed,
            snoozed_until=tomorrow,
            actor_id=world.acme.users["bob"].id,
        )
        db.flush()  # the agent's change is written, not yet committed
        job = threading.Thread(target=_wake_up, args=(database, woken))
        job.start()
        job.join(1.0)  # the job runs meanwhile
    job.join(30)
    assert woken == [0]
    with database.session(write=False) as db:
        row = db.get(Conversation, conv)
        assert row is not None
        assert (row.status, row.snoozed_until) == (Status.snoozed, tomorrow)
        said = list(
            db.scalars(
                select(Message.text).where(
                    Message.conversation_id == conv, Message.kind == MessageKind.activity
                )
            )
        )
    assert not [line for line in said if line.startswith("Back from snooze")]


@postgresql_only
def test_two_wake_up_jobs_side_by_side_wake_a_conversation_once(
    world: World, database: Database
) -> None:
    # A job run again while the first still ran (its worker paused past its lease) woke the
    # same conversations a second time: two "Back from snooze" lines, the status rules run
    # twice.
    conv = world.acme.opened.conversation.id
    _snoozed_until_just_now(database, conv)
    woken: list[int] = []
    with database.session() as db:
        assert service.unsnooze_due(db) == 1
        db.flush()
        second = threading.Thread(target=_wake_up, args=(database, woken))
        second.start()
        second.join(1.0)
    second.join(30)
    assert woken == [0]
    with database.session(write=False) as db:
        said = list(
            db.scalars(
                select(Message.text).where(
                    Message.conversation_id == conv, Message.text.like("Back from snooze%")
                )
            )
        )
    assert len(said) == 1
