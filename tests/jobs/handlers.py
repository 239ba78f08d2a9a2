"""Job handlers used by the tests (imported by `rapport worker --import tests.jobs.handlers`)."""

import os
import smtplib
import time
from pathlib import Path

from sqlalchemy.orm import Session

from rapport.jobs.models import Job
from rapport.jobs.registry import JobContext, Later, PermanentError, RetryLater, job


@job("test.record")
def record(ctx: JobContext, *, path: str, block_flag: str | None = None) -> None:
    """Append a line to ``path``; while ``block_flag`` exists, first say so and hang."""
    if block_flag and Path(block_flag).exists():
        Path(path + ".claimed").write_text(str(os.getpid()))
        while True:  # the test kills this worker here
            time.sleep(0.1)
    with open(path, "a") as fh:
        fh.write(f"{ctx.job_id} {os.getpid()}\n")


@job("test.fail")
def fail(ctx: JobContext, *, permanent: bool = False) -> None:
    if permanent:
        raise PermanentError("this can never work")
    raise RuntimeError(f"attempt {ctx.attempt} failed")


@job("test.refused")
def refused(ctx: JobContext, *, address: str) -> None:
    """Fail as a mail server refusing a recipient does: the exception quotes the address."""
    raise smtplib.SMTPRecipientsRefused({address: (550, b"5.1.1 Recipient address rejected")})


@job("test.fragile", max_attempts=2)
def fragile(ctx: JobContext) -> None:
    raise RuntimeError(f"attempt {ctx.attempt} failed")


@job("test.count")
def count(ctx: JobContext, *, path: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{ctx.job_id}\n")


@job("test.slow")
def slow(ctx: JobContext, *, path: str, seconds: float) -> None:
    """Work longer than a lease, then record who did it."""
    time.sleep(seconds)
    with open(path, "a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt}\n")


def _write_death(db: Session, dead: Job, error: str) -> None:
    """Record, beside the job's ``path``, that it died and why (once per death)."""
    with open(dead.args["path"], "a") as fh:
        fh.write(f"{dead.id} {error}\n")
    if quoted := dead.args.get("hook_fails"):
        raise RuntimeError(f"the hook failed too: 550 <{quoted}>")


@job("test.doomed", on_dead=_write_death)
def doomed(ctx: JobContext, *, path: str, hook_fails: bool = False) -> None:
    raise RuntimeError(f"attempt {ctx.attempt} of {ctx.max_attempts} failed")


@job("test.exit")
def exit_(ctx: JobContext, *, interrupt: bool = False) -> None:
    """What a handler, or a library it calls, may raise that is no Exception."""
    raise KeyboardInterrupt if interrupt else SystemExit(3)


@job("test.flaky")
def flaky(ctx: JobContext, *, secret: str) -> None:
    """Fails its first attempt, quoting ``secret`` as a provider quotes an address."""
    if ctx.attempt == 1:
        raise RuntimeError(f"550 <{secret}>: recipient rejected")


@job("test.forgotten", keep_done=False)
def forgotten(ctx: JobContext, *, report: str) -> None:
    """A job whose arguments are not kept once it has run."""


@job("test.later")
def later(ctx: JobContext) -> None:
    """Whose turn has not come, as a message over its inbox's sending rate."""
    raise RetryLater(Later.sending_rate, seconds=60)
