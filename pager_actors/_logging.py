"""Logging helpers for actors: resolve loggers once, skip work for disabled levels."""

from __future__ import annotations

import logging
from typing import Any


def info_enabled(logger: Any) -> bool:
    """Whether `logger` (a bound structlog logger) emits info events.

    Actors ask once at start, so a filtered hot path does not even build
    its event's fields.
    """
    check = getattr(logger, "is_enabled_for", None) or getattr(logger, "isEnabledFor", None)
    return True if check is None else bool(check(logging.INFO))
