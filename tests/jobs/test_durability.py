"""The job queue: nothing lost, nothing run twice at once, failures retried then dead-lettered."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

import tests.jobs.handlers  # noqa: F401  (registers the test jobs)
from rapport.config import Settings
from rapport.db import Database, utcnow
from rapport.jobs import periodic, service
from rapport.jobs.models import Job, JobState
from rapport.jobs.registry import Later, RetryLater
from rapport.jobs.worker import Worker


def enqueue(database: Database, name: str, **args: object) -> str:
    with database.session() as db:
        return service.enqueue(db, name=name, args=dict(args)).id


def job_row(database: Database, job_id: str) -> Job:
    with database.session(write=False) as db:
        row = db.get(Job, job_id)
        assert row is not None
        return row


def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    with pytest.raises(RuntimeError), database.session() as db:
        service.enqueue(db, name="test.record", args={"path": str(out)})
        raise RuntimeError("the request failed after enqueueing")
    assert Worker(database, settings).run_until_idle() == 0
    assert not out.exists()


def test_a_failing_job_backs_off_and_is_dead_lettered_after_its_attempts(
    database: Database, settings: Settings
) -> None:
    with database.session() as db:
        job_id = service.enqueue(db, name="test.fail", max_attempts=3).id
    worker = Worker(database, settings)
    delays = []
    for attempt in range(1, 4):
        with database.session() as db:  # make it due now, as the backoff would after a while
            db.execute(update(Job).where(Job.id == job_id).values(run_at=utcnow()))
        before = utcnow()
        assert worker.run_once()
        row = job_row(database, job_id)
        assert row.attempts == attempt and "failed" in (row.last_error or "")
        if attempt < 3:
            assert row.state == JobState.queued
            delays.append((row.run_at - before).total_seconds())
    assert job_row(database, job_id).state == JobState.dead
    assert delays[1] > delays[0] > 0  # exponential: each wait longer than the last


def test_a_job_done_keeps_no_error_of_an_earlier_attempt(
    database: Database, settings: Settings
) -> None:
    # The first attempt's error (a provider quoting the address it refused) stayed on the
    # done row for the week it is kept, where an erasure does not look; nothing reads it.
    job_id = enqueue(database, "test.flaky", secret="zoe@example.com")
    worker = Worker(database, settings)
    assert worker.run_once()
    assert "zoe@example.com" in (job_row(database, job_id).last_error or "")
    with database.session() as db:  # due now, as the backoff would make it after a while
        db.execute(update(Job).where(Job.id == job_id).values(run_at=utcnow()))
    assert worker.run_once()
    row = job_row(database, job_id)
    assert row.state == JobState.done and row.last_error is None


def test_a_job_not_kept_once_done_leaves_no_row(database: Database, settings: Settings) -> None:
    enqueue(database, "test.forgotten", report="wamid.HBgLMTQxNTU1NTAxMjM")
    assert Worker(database, settings).run_until_idle() == 1
    with database.session(write=False) as db:
        assert db.scalars(select(Job).where(Job.name == "test.forgotten")).all() == []


def test_a_job_has_the_attempts_its_kind_declares_unless_its_caller_says(
    database: Database, settings: Settings
) -> None:
    # @job(max_attempts=...) was never read: every job got 8 (the bot's reply, 3 declared).
    with database.session() as db:
        fragile = service.enqueue(db, name="test.fragile").id
        told = service.enqueue(db, name="test.fragile", max_attempts=5).id
        plain = service.enqueue(db, name="test.fail").id
    assert job_row(database, fragile).max_attempts == 2
    assert job_row(database, told).max_attempts == 5
    assert job_row(database, plain).max_attempts == service.DEFAULT_ATTEMPTS


def test_a_permanent_error_or_an_unknown_job_is_dead_lettered_at_once(
    database: Database, settings: Settings
) -> None:
    permanent = enqueue(database, "test.fail", permanent=True)
    unknown = enqueue(database, "no.such.job")
    Worker(database, settings).run_until_idle()
    assert job_row(database, permanent).state == JobState.dead
    assert job_row(database, permanent).attempts == 1
    assert "no handler" in (job_row(database, unknown).last_error or "")
    with database.session() as db:
        assert service.retry_dead(db, job_id=permanent)
    assert job_row(database, permanent).state == JobState.queued


def test_concurrent_workers_never_run_the_same_job_twice(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    ids = {enqueue(database, "test.count", path=str(out)) for _ in range(120)}
    workers = [Worker(database, settings, name=f"w{i}") for i in range(4)]
    threads = [threading.Thread(target=w.run_until_idle) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    runs = out.read_text().split()
    assert sorted(runs) == sorted(ids)  # every job once, none twice
    with database.session(write=False) as db:
        states = set(db.scalars(select(Job.state).where(Job.id.in_(ids))))
    assert states == {JobState.done}


def test_periodic_jobs_are_enqueued_once_per_slot_by_any_number_of_workers(
    database: Database,
) -> None:
    now = time.time()
    created = [periodic.tick(database, now=now) for _ in range(3)]
    assert created[0] == len(periodic.SCHEDULE) and created[1:] == [0, 0]
    # An hour later, every job whose period is up is due again, and only those.
    later = now + 3600
    due = [n for n, p in periodic.SCHEDULE.items() if int(later // p) != int(now // p)]
    assert {"unsnooze", "sla_check"} <= set(due)
    assert periodic.tick(database, now=later) == len(due)


def _worker(database_url: str, settings: Settings, lease: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": database_url,
        "RAPPORT_SECRET_KEY": settings.secret_key.get_secret_value(),
        "RAPPORT_JOB_LEASE_SECONDS": str(lease),
        "RAPPORT_LOG_LEVEL": "WARNING",
        "RAPPORT_DEMO": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "rapport.cli", "worker", "--import", "tests.jobs.handlers"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )


def _wait_for(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_a_worker_killed_after_claiming_leaves_the_job_to_another_once(
    database: Database, database_url: str, settings: Settings, tmp_path: Path
) -> None:
    out, flag = tmp_path / "done", tmp_path / "block"
    flag.write_text("hang")
    job_id = enqueue(database, "test.record", path=str(out), block_flag=str(flag))
    first = _worker(database_url, settings, lease=2)
    try:
        _wait_for(lambda: Path(str(out) + ".claimed").exists())
        assert job_row(database, job_id).state == JobState.running
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    flag.unlink()
    second = _worker(database_url, settings, lease=2)
    try:
        _wait_for(lambda: job_row(database, job_id).state == JobState.done, timeout=40)
    finally:
        second.terminate()
        second.wait(10)
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split()[0] == job_id
    assert lines[0].split()[1] == str(second.pid)
    assert job_row(database, job_id).attempts == 2


def test_a_lease_that_ran_out_is_reclaimed_in_process(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "ran"
    job_id = enqueue(database, "test.record", path=str(out))
    with database.session() as db:  # a worker claimed it and vanished an hour ago
        db.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                state=JobState.running,
                locked_by="ghost",
                attempts=1,
                locked_until=utcnow() - timedelta(hours=1),
            )
        )
    assert Worker(database, settings).run_until_idle() == 1
    assert job_row(database, job_id).state == JobState.done and out.read_text().count("\n") == 1


def test_a_job_longer_than_its_lease_keeps_it_and_runs_once(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    """The running worker extends the lease while the handler works, so a second worker
    never takes the job for an abandoned one."""
    import threading

    out = tmp_path / "slow"
    job_id = enqueue(database, "test.slow", path=str(out), seconds=3.0)
    settings.job_lease_seconds = 1
    first = Worker(database, settings, name="first")
    runner = threading.Thread(target=first.run_once)
    runner.start()
    _wait_for(lambda: job_row(database, job_id).state == JobState.running)
    second = Worker(database, settings, name="second")
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:  # the second worker keeps looking meanwhile
        second.run_once()
        time.sleep(0.2)
    runner.join(10)
    assert out.read_text().splitlines() == [f"{job_id} 1"]
    row = job_row(database, job_id)
    assert row.state == JobState.done and row.attempts == 1


def test_the_threads_of_one_worker_process_never_act_on_each_others_jobs(
    database: Database, settings: Settings
) -> None:
    # `rapport worker --threads N` makes its workers on its main thread, and their id was
    # that thread's: all N shared one, so any could extend, finish or fail a sibling's job.
    first, second = Worker(database, settings), Worker(database, settings)
    assert first.id != second.id
    job_id = enqueue(database, "test.fail")
    with database.session() as db:
        [job] = service.claim(db, worker_id=first.id, lease_seconds=60)
    with database.session() as db:
        assert not service.extend(db, job_id=job_id, worker_id=second.id, lease_seconds=60)
        assert not service.finish(db, job_id=job_id, worker_id=second.id)
        assert service.fail(db, job=job, worker_id=second.id, error="not mine") is None
    row = job_row(database, job_id)
    assert row.state == JobState.running and row.locked_by == first.id and row.last_error is None


def test_a_failure_reported_after_the_job_was_finished_changes_nothing(
    database: Database,
) -> None:
    # fail() asked only who had locked the job, not whether it still ran: a failure reported
    # once the job was done (by a sibling under the same id) put it back in the queue.
    job_id = enqueue(database, "test.fail")
    with database.session() as db:
        [job] = service.claim(db, worker_id="w1", lease_seconds=60)
    with database.session() as db:
        assert service.finish(db, job_id=job_id, worker_id="w1")
    with database.session() as db:
        assert service.fail(db, job=job, worker_id="w1", error="too late") is None
    row = job_row(database, job_id)
    assert row.state == JobState.done and row.last_error is None


def test_a_job_is_told_when_it_is_dead_lettered_however_that_comes(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    # Only a handler could settle what its job left behind, and only while it ran: a job
    # whose lease ran out on every attempt died without a word (a reply stayed "queued").
    out = tmp_path / "deaths"
    failing = enqueue(database, "test.doomed", path=str(out))
    abandoned = enqueue(database, "test.doomed", path=str(out))
    with database.session() as db:
        db.execute(update(Job).where(Job.id == failing).values(attempts=2, max_attempts=3))
        db.execute(
            update(Job)
            .where(Job.id == abandoned)
            .values(
                state=JobState.running,
                attempts=8,
                locked_by="ghost",
                locked_until=utcnow() - timedelta(hours=1),
            )
        )
    assert Worker(database, settings).run_until_idle() == 2
    assert sorted(out.read_text().splitlines()) == sorted(
        [
            f"{failing} RuntimeError: attempt 3 of 3 failed",
            f"{abandoned} lease expired on every attempt",
        ]
    )
    # A hook that fails is logged; the job is dead-lettered all the same.
    broken = enqueue(database, "test.doomed", path=str(out), hook_fails="zoe@example.com")
    with database.session() as db:
        db.execute(update(Job).where(Job.id == broken).values(max_attempts=1))
    assert Worker(database, settings).run_until_idle() == 1
    assert job_row(database, broken).state == JobState.dead
    assert {job_row(database, j).state for j in (failing, abandoned)} == {JobState.dead}


def test_a_handler_that_exits_is_a_failed_attempt_and_the_worker_goes_on(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    # A handler's SystemExit or KeyboardInterrupt is no Exception: it ended the worker's
    # thread (`rapport serve` served on with no worker) and its job stayed running until
    # the lease ran out.
    exits = enqueue(database, "test.exit")
    interrupts = enqueue(database, "test.exit", interrupt=True)
    after = enqueue(database, "test.record", path=str(tmp_path / "ran"))
    ran: list[int] = []
    thread = threading.Thread(
        target=lambda: ran.append(Worker(database, settings).run_until_idle())
    )
    thread.start()
    thread.join(30)
    assert ran == [3]
    for job_id, error in ((exits, "SystemExit: 3"), (interrupts, "KeyboardInterrupt")):
        row = job_row(database, job_id)
        assert row.state == JobState.queued and row.attempts == 1 and row.last_error == error
    assert job_row(database, after).state == JobState.done


def test_ctrl_c_still_stops_a_worker_running_on_the_main_thread(
    database: Database, settings: Settings
) -> None:
    # Not a regression: `rapport worker --once` runs jobs on the main thread, where Python
    # raises Ctrl-C; that stops the process, it is no failure of the job it interrupts.
    job_id = enqueue(database, "test.exit", interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        Worker(database, settings).run_until_idle()
    row = job_row(database, job_id)
    assert row.state == JobState.running and row.last_error is None  # left to its lease


def test_a_job_put_off_says_why_in_rapports_own_words_alone(
    database: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker logged a postponed job's reason at INFO, whatever text it was given.
    with pytest.raises(ValueError):
        RetryLater("550 <zoe@example.com>: try later", seconds=1)  # type: ignore[arg-type]
    later = enqueue(database, "test.later")
    caplog.set_level(logging.INFO, logger="rapport.jobs.worker")
    assert Worker(database, settings).run_until_idle() == 1
    (said,) = [r for r in caplog.records if getattr(r, "event", None) == "job.later"]
    assert (said.job_id, said.reason) == (later, Later.sending_rate.value)  # type: ignore[attr-defined]
    assert job_row(database, later).state == JobState.queued
