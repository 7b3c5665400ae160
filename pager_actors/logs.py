"""Logging: structlog's API (events with fields) on top of the standard `logging` module.

Every logger of the package is `pager_actors.<part>`, a standard library logger.
The engine never configures logging and never writes to stdout on its own:
embedded in a host program, the host's logging configuration decides where
its events go (unconfigured, Python shows warnings and errors on stderr).

Each record carries the event and its fields twice: rendered as the message
(`mail_failed channel='mail' target='o***@example.com'`), for any formatter,
and as a dict in `record.event_dict`, for formatters that want structure, such
as the daemon's `EventFormatter` (JSON lines, or coloured lines on a terminal).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

_LOGGING_KEYS = ("exc_info", "stack_info")


def _to_stdlib(logger: Any, method: str, event_dict: MutableMapping[str, Any]
               ) -> tuple[tuple[str], dict[str, Any]]:
    """The last processor: the arguments of the standard library logger's call."""
    kwargs: dict[str, Any] = {key: event_dict.pop(key) for key in _LOGGING_KEYS
                              if key in event_dict}
    fields = " ".join(f"{key}={value!r}" for key, value in event_dict.items()
                      if key != "event")
    message = f"{event_dict.get('event', '')} {fields}".rstrip()
    kwargs["extra"] = {"event_dict": dict(event_dict)}
    return (message,), kwargs


_PROCESSORS: list[Any] = [structlog.stdlib.filter_by_level, _to_stdlib]


def get_logger(name: str) -> Any:
    """A structlog logger writing through the standard library logger `name`.

    It uses its own processors, not structlog's global configuration, so a host
    program's structlog set-up neither breaks it nor is changed by it.
    """
    return structlog.wrap_logger(logging.getLogger(name), processors=_PROCESSORS,
                                 wrapper_class=structlog.stdlib.BoundLogger,
                                 cache_logger_on_first_use=True)


def info_enabled(logger: Any) -> bool:
    """Whether `logger` emits info events. Actors ask once at start, so a filtered hot
    path does not even build its event's fields."""
    check = getattr(logger, "isEnabledFor", None) or getattr(logger, "is_enabled_for", None)
    return True if check is None else bool(check(logging.INFO))


class EventFormatter(logging.Formatter):
    """One line per record: JSON (`json=True`) or structlog's coloured console line.

    Records from this package keep their fields; any other library's record
    (uvicorn, pykka) becomes `{"event": its message}` with its logger's name.
    """

    def __init__(self, *, json_lines: bool) -> None:
        super().__init__()
        self._render: Any = (structlog.processors.JSONRenderer(default=str) if json_lines
                             else structlog.dev.ConsoleRenderer())

    def format(self, record: logging.LogRecord) -> str:
        given: dict[str, Any] = dict(getattr(record, "event_dict", None)
                                     or {"event": record.getMessage()})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = {"timestamp": f"{stamp}.{int(record.msecs):03d}Z",
                  "level": record.levelname.lower(), "logger": record.name,
                  "event": given.pop("event", ""), **given}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return str(self._render(None, record.levelname.lower(), fields))


def configure(level: int | str | None = None, *, json_lines: bool | None = None) -> None:
    """The daemon's logging: every logger to stdout, one event per line.

    JSON lines unless stdout is a terminal. The level comes from `level`, else
    PAGER_LOG_LEVEL (info). Only entry points call this, never the engine.
    """
    import os  # noqa: PLC0415 - only entry points get here

    if level is None:
        level = os.environ.get("PAGER_LOG_LEVEL", "info")
    if isinstance(level, str):
        level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    if json_lines is None:
        json_lines = not sys.stdout.isatty()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(EventFormatter(json_lines=json_lines))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Other libraries speak only when something is wrong.
    for noisy in ("pykka", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class CapturedEvents(list[dict[str, Any]]):
    """Events logged by the package while captured: each a dict with `event` and `level`."""


@contextmanager
def capture_events(level: int = logging.DEBUG) -> Iterator[CapturedEvents]:
    """Record every event of `pager_actors.*` loggers (for tests), whatever the host's set-up."""
    captured = CapturedEvents()

    class _Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields = dict(getattr(record, "event_dict", None) or {"event": record.getMessage()})
            fields["log_level"] = record.levelname.lower()
            captured.append(fields)

    recorder = _Recorder(level)
    package = logging.getLogger("pager_actors")
    old_level = package.level
    package.addHandler(recorder)
    package.setLevel(level)
    try:
        yield captured
    finally:
        package.removeHandler(recorder)
        package.setLevel(old_level)
