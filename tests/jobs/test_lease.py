"""A handler's work against the job's lease: what comes of it is written by the attempt
that holds the job, never by one whose lease ran out and came back."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from rapport.channels import base
from rapport.channels import deliver as deliver_mod
from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.conversations.models import DeliveryStatus, Message
from rapport.db import Database, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.worker import Worker
from tests.factories import World


class _Channel:
    """A channel whose first send hangs until released, then fails (a timeout); the
    second send succeeds."""

    name = "api"

    def __init__(self) -> None:
        self.real = base.get("api")
        self.calls = 0
        self.first_in = threading.Event()
        self.release_first = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def send(self, out: base.Outbound) -> base.SendResult:
        self.calls += 1
        if self.calls == 1:
            self.first_in.set()
            assert self.release_first.wait(30)
            raise base.DeliveryError("provider timed out")
        return base.SendResult(external_id="ext-from-second-worker")


def test_a_slow_worker_coming_back_does_not_clobber_the_new_claimants_delivery(
    database: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    Worker(database, settings).run_until_idle()  # the world's own follow-up jobs
    fake = _Channel()
    real_get = base.get
    monkeypatch.setattr(
        deliver_mod.base, "get", lambda name: fake if name == "api" else real_get(name)
    )
    with database.session() as db:
        conv = db.merge(world.acme.opened.conversation)
        msg = conversations.reply(
            db, conversation=conv, author_id=world.acme.users["alice"].id, text="hello"
        )
        message_id = msg.id
    settings.job_lease_seconds = 1
    slow = Worker(database, settings, name="slow")
    # The slow worker is frozen (a GC pause, a stopped VM): its lease is not extended.
    slow._keep_lease = lambda job: threading.Event()  # type: ignore[method-assign]
    runner = threading.Thread(target=slow.run_once)
    runner.start()
    if not fake.first_in.wait(10):
        with database.session(write=False) as db:
            raise AssertionError([(j.name, j.state, j.last_error) for j in db.query(Job)])
    with database.session() as db:  # its lease ran out
        db.execute(
            update(Job)
            .where(Job.name == "deliver")
            .values(locked_until=utcnow() - timedelta(seconds=5))
        )
    assert Worker(database, settings, name="second").run_once()  # reclaims, sends, done
    with database.session(write=False) as db:
        assert db.get(Message, message_id).status == DeliveryStatus.sent  # type: ignore[union-attr]
    fake.release_first.set()  # the slow worker comes back: its send had failed
    runner.join(10)
    with database.session(write=False) as db:
        row = db.get(Message, message_id)
        assert row is not None
        job_states = {j.state for j in db.query(Job).filter(Job.name == "deliver")}
        # The message was delivered (by the second worker) and its job is done ...
        assert job_states == {JobState.done}
        # ... and the slow worker's late failure leaves it so (it put it back to "queued,
        # retrying", with no job left to send it).
        assert (row.status, row.error) == (DeliveryStatus.sent, None)


def test_a_slow_worker_coming_back_does_not_run_the_rules_the_new_claimant_ran(
    database: Database, settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker frozen past its lease before it opened its transaction came back and ran
    # the event's rules again, after the worker that reclaimed the job had: the customer
    # got the rule's reply twice.
    from rapport.automation import jobs as automation_jobs
    from rapport.automation import service as automation

    Worker(database, settings).run_until_idle()  # the world's own follow-up jobs
    opened = world.acme.opened
    with database.session() as db:
        automation.create_rule(
            db,
            workspace_id=world.acme.workspace.id,
            data={
                "name": "Thanks",
                "event": "message.received",
                "actions": [{"type": "send_message", "value": "Thanks, we are on it"}],
            },
        )
        automation.trigger(
            db,
            workspace_id=world.acme.workspace.id,
            event="message.received",
            conversation_id=opened.conversation.id,
            message_id=opened.message.id,
        )
    frozen, thawed = threading.Event(), threading.Event()
    real_box_for = automation_jobs.box_for

    def box_for(secret: str) -> object:
        if threading.current_thread().name == "slow":
            frozen.set()
            assert thawed.wait(30)
        return real_box_for(secret)

    monkeypatch.setattr(automation_jobs, "box_for", box_for)
    settings.job_lease_seconds = 1
    slow = Worker(database, settings, name="slow")
    slow._keep_lease = lambda job: threading.Event()  # type: ignore[method-assign]
    runner = threading.Thread(target=slow.run_once, name="slow")
    runner.start()
    assert frozen.wait(10)
    with database.session() as db:  # its lease ran out
        db.execute(
            update(Job)
            .where(Job.name == "automation")
            .values(locked_until=utcnow() - timedelta(seconds=5))
        )
    assert Worker(database, settings, name="second").run_once()  # reclaims, runs the rule
    thawed.set()  # the slow worker comes back
    runner.join(10)
    with database.session(write=False) as db:
        sent = db.query(Message).filter(Message.text == "Thanks, we are on it").count()
    assert sent == 1
