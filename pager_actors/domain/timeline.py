"""An incident's timeline: what happened to it, in order, as values the store appends.

The domain writes most entries (`opened`, `paged`, `escalated`, ...) as part
of the transition that caused them; the store adds `delivered`,
`delivery_failed` and `withdrawn` when an adapter reports a page's outcome. Targets and
errors are masked before they get here: a timeline never holds a full
address or number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

# Every event a timeline entry may carry.
EVENTS = frozenset({
    "opened", "alert_added", "alert_resolved", "paged", "delivered", "delivery_failed",
    "escalated", "acknowledged", "ack_expired", "suppressed", "resolved", "exhausted",
    "no_one_on_call", "withdrawn",
})


class TimelineEntry(NamedTuple):
    """One event of one incident. An alert suppressed by maintenance is filed under the
    incident the service opens next (most often the one its window's end opens).
    `message` is the alert's text, on the entries of a firing alert (opened,
    alert_added, suppressed). On `paged` entries, `user` is who was paged
    (when known) and `via` how they were found: `rotation ID`, `user` or `fallback`."""

    at: datetime
    event: str
    incident: int | None
    level: int | None = None
    round: int | None = None
    target: str | None = None
    channel: str | None = None
    error: str | None = None
    by: str | None = None
    key: str | None = None
    message: str | None = None
    user: str | None = None
    via: str | None = None


@dataclass(frozen=True, slots=True)
class IncidentSummary:
    """One incident as the incident list shows it."""

    number: int
    opened: datetime
    closed: datetime | None
    level: int
    acknowledged_by: str | None
    message: str | None


def summarize(number: int, entries: list[TimelineEntry]) -> IncidentSummary | None:
    """An incident's summary from its timeline entries (None without an `opened` entry)."""
    opened = next((e for e in entries if e.event == "opened"), None)
    if opened is None:
        return None
    closed = next((e.at for e in entries if e.event == "resolved"), None)
    level = max((e.level for e in entries if e.level is not None
                 and e.event in ("opened", "escalated", "paged")), default=1)
    acked = [e.by for e in entries if e.event == "acknowledged"]
    return IncidentSummary(number, opened.at, closed, level, acked[-1] if acked else None,
                           opened.message)
