"""Process set-up shared by the entry points (`__main__`, the daemon): logging."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(level: int | None = None, *, json: bool | None = None) -> None:
    """Readable lines on a terminal, JSON lines otherwise; level from PAGER_LOG_LEVEL (info)."""
    if level is None:
        name = os.environ.get("PAGER_LOG_LEVEL", "info").upper()
        level = logging.getLevelNamesMapping().get(name, logging.INFO)
    if json is None:
        json = not sys.stdout.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("pykka").setLevel(logging.WARNING)
