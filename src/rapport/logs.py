"""Structured JSON logs. Message bodies and contact details never go in at INFO."""

import logging
import sys

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
            # A traceback as text in the JSON line (the console renderer prints its own).
            *([structlog.processors.format_exc_info] if json else []),
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
