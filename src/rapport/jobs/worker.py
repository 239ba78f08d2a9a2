"""The worker loop: claim a job, run its handler, mark it done or schedule the retry."""

import logging
import os
import secrets
import socket
import threading
import time
import traceback
from datetime import timedelta

from sqlalchemy.orm import Session

from rapport.config import Settings
from rapport.db import Database, savepoint, utcnow
from rapport.jobs import registry, service
from rapport.jobs.models import Job, JobState
from rapport.metrics import JOBS

log = logging.getLogger(__name__)


def _shutting_down(exc: BaseException) -> bool:
    """Whether ``exc`` stops the process rather than the job: Ctrl-C, which Python raises
    on the main thread (where ``rapport worker --once`` runs its jobs). The job it
    interrupts is left to its lease, as a worker killed by a signal leaves its own."""
    return (
        isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread()
    )


def _kind(exc: BaseException) -> str:
    """What failed, for the log: the exception's class, never its text."""
    return type(exc).__qualname__


class Worker:
    """Runs jobs one at a time; start several (threads or processes) for more throughput."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        name: str | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        self.database = database
        self.settings = settings
        # The threads of one `rapport worker` are made on its main thread: a random part,
        # not the thread's, tells them apart, since a job is only ever its holder's.
        self.id = name or f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(6)}"
        self.poll_seconds = poll_seconds

    def run_once(self) -> bool:
        """Claim and run one due job; False when there was none."""
        with self.database.session() as db:
            jobs = service.claim(
                db, worker_id=self.id, lease_seconds=self.settings.job_lease_seconds
            )
        if not jobs:
            return False
        self._execute(jobs[0])
        return True

    def run_until_idle(self, max_jobs: int = 10_000) -> int:
        """Run due jobs until none is left (tests and ``rapport worker --once``)."""
        done = 0
        while done < max_jobs and self.run_once():
            done += 1
        return done

    def run_forever(self, stop: threading.Event) -> None:
        from rapport.jobs import periodic

        log.info("worker started", extra={"event": "worker.start", "worker": self.id})
        next_tick = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_tick:
                    periodic.tick(self.database)
                    next_tick = time.monotonic() + 30
                busy = self.run_once()
            except BaseException as exc:
                if _shutting_down(exc):
                    raise
                log.exception("worker loop error", extra={"event": "worker.error"})
                busy = False
            if not busy:
                service.wakeup.wait(self.poll_seconds)
                service.wakeup.clear()
        log.info("worker stopped", extra={"event": "worker.stop", "worker": self.id})

    def _execute(self, job: Job) -> None:
        spec = registry.get(job.name)
        started = time.perf_counter()
        if spec is None:
            self._fail(
                job, f"no handler registered for job {job.name!r}", "NoHandler", permanent=True
            )
            return
        if job.attempts > job.max_attempts:
            self._fail(job, "lease expired on every attempt", "LeaseExpired", permanent=True)
            return
        ctx = registry.JobContext(
            database=self.database,
            settings=self.settings,
            job_id=job.id,
            attempt=job.attempts,
            workspace_id=job.workspace_id,
            max_attempts=job.max_attempts,
            worker_id=self.id,
        )
        heartbeat = self._keep_lease(job)
        try:
            spec.fn(ctx, **job.args)
        except registry.RetryLater as exc:
            self._postpone(job, exc.reason, seconds=exc.seconds)
            return
        except registry.PermanentError as exc:
            self._fail(job, f"{type(exc).__name__}: {exc}", _kind(exc), permanent=True)
            return
        except BaseException as exc:
            # A handler's SystemExit or KeyboardInterrupt (its own, or a library's) is a
            # failed attempt like any other: the worker goes on with the next job.
            if _shutting_down(exc):
                raise
            detail = "".join(traceback.format_exception_only(exc)).strip()
            self._fail(job, detail, _kind(exc), permanent=False)
            return
        finally:
            heartbeat.set()
        with self.database.session() as db:
            finished = service.finish(db, job_id=job.id, worker_id=self.id, keep=spec.keep_done)
        JOBS.labels(name=job.name, outcome="done").inc()
        log.info(
            "job done",
            extra={
                "event": "job.done",
                "job": job.name,
                "job_id": job.id,
                "workspace_id": job.workspace_id,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "lease_kept": finished,
            },
        )

    def _keep_lease(self, job: Job) -> threading.Event:
        """While the handler runs, extend its lease every third of it: a long job (a
        duplicate scan of a large base) is never taken for a dead worker's. A worker that
        dies stops extending, and the job is reclaimed when the lease runs out."""
        done = threading.Event()
        every = max(self.settings.job_lease_seconds / 3, 0.2)

        def beat() -> None:
            while not done.wait(every):
                try:
                    with self.database.session() as db:
                        service.extend(
                            db,
                            job_id=job.id,
                            worker_id=self.id,
                            lease_seconds=self.settings.job_lease_seconds,
                        )
                except Exception:  # the next beat tries again; the lease is the backstop
                    log.warning("lease not extended", extra={"event": "job.lease_failed"})

        threading.Thread(target=beat, name=f"lease-{job.id[:8]}", daemon=True).start()
        return done

    def _fail(self, job: Job, error: str, kind: str, *, permanent: bool) -> None:
        """Record the failure (``error``, whole, on the job row: the dead-letter list shows
        it to admins, an erasure reaches it) and log its ``kind`` only: an exception's text
        may quote a refused address or a provider's error naming a phone number."""
        spec = registry.get(job.name)
        with self.database.session() as db:
            state = service.fail(db, job=job, worker_id=self.id, error=error, permanent=permanent)
            if state == JobState.dead and spec is not None and spec.on_dead is not None:
                self._tell_dead(db, spec.on_dead, job, error)
        if state is None:
            outcome = "lost"  # its lease ran out and another worker has it now
        else:
            outcome = "dead" if state == JobState.dead else "retry"
        JOBS.labels(name=job.name, outcome=outcome).inc()
        log.warning(
            "job failed",
            extra={
                "event": f"job.{outcome}",
                "job": job.name,
                "job_id": job.id,
                "workspace_id": job.workspace_id,
                "attempt": job.attempts,
                "error": kind,
            },
        )

    def _tell_dead(self, db: Session, on_dead: registry.DeadHook, job: Job, error: str) -> None:
        """The job's own settling of its death, in the transaction that records it; should
        it fail, the job is dead-lettered all the same (else it would die again with every
        lease that runs out)."""
        try:
            with savepoint(db):
                on_dead(db, job, error)
        except Exception:
            log.exception(
                "dead job not settled",
                extra={"event": "job.on_dead_failed", "job": job.name, "job_id": job.id},
            )

    def _postpone(self, job: Job, reason: registry.Later, *, seconds: float) -> None:
        """Run the job again after ``seconds``; the log says why in Rapport's own words."""
        with self.database.session() as db:
            kept = service.postpone(
                db, job_id=job.id, worker_id=self.id, run_at=utcnow() + timedelta(seconds=seconds)
            )
        JOBS.labels(name=job.name, outcome="later" if kept else "lost").inc()
        log.info(
            "job postponed",
            extra={
                "event": "job.later",
                "job": job.name,
                "job_id": job.id,
                "workspace_id": job.workspace_id,
                "seconds": round(seconds, 1),
                "reason": reason.value,
            },
        )


class WorkerThread:
    """The in-process worker that ``rapport serve`` runs beside the web app."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=worker.run_forever, args=(self.stop_event,), name="rapport-worker", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10) -> None:
        self.stop_event.set()
        service.wakeup.set()
        self.thread.join(timeout)
