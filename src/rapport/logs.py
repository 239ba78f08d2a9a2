"""Structured JSON logs. Message bodies and contact details never go in at INFO."""

import logging
import sys
import traceback
from types import TracebackType
from typing import Any

import structlog

from rapport.problems import LOGGED


def configure(level: str = "INFO", json: bool = True) -> None:
    """Route stdlib and structlog records through one JSON (or console) renderer."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    pre_chain: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A traceback as text, without what the exception said, in the JSON line and
            # on the console alike: a console's output is kept as often (a service's
            # journal, a container's log) and the text may quote a customer's contact.
            frames_only,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would print every URL (with ids); our metrics count requests.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").addFilter(_logged_by_us)
    structlog.configure(
        processors=[*pre_chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def _logged_by_us(record: logging.LogRecord) -> bool:
    """Not what uvicorn logs again of an error our problem handler logged with its request
    (Starlette raises it on once the 500 is answered); every other error it logs."""
    error = record.exc_info[1] if record.exc_info else None
    return error is None or LOGGED not in getattr(error, "__notes__", ())


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def frames_only(
    _: Any, __: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """In place of structlog's ``format_exc_info``: the record's exception as ``exception``,
    a traceback whose frames and classes are Python's and whose messages are left out. An
    exception's text may quote a customer's address or phone (a mail server's refusal, a
    provider's error, a constraint naming a value); where it matters it is kept elsewhere
    (a failed job's on its row)."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        error: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        error = exc_info[1]
    else:
        error = None
    if error is not None:
        event_dict["exception"] = traceback_without_text(error)
    return event_dict


def traceback_without_text(error: BaseException) -> str:
    """The traceback Python would print, chained causes included, each exception's last
    line its class alone (``smtplib.SMTPRecipientsRefused``), never its message."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    parts: list[str] = []
    for earlier, later in zip(chain[:0:-1], chain[-2::-1], strict=True):
        parts += _one(earlier.__traceback__, earlier)
        parts.append(_CAUSE if later.__cause__ is earlier else _CONTEXT)
    parts += _one(error.__traceback__, error)
    return "".join(parts).rstrip("\n")


def _one(tb: TracebackType | None, error: BaseException) -> list[str]:
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    frames = ["Traceback (most recent call last):\n", *traceback.format_tb(tb)] if tb else []
    return [*frames, f"{name}\n"]
