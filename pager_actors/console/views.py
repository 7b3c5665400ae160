"""What the pages show: the engine's values shaped for the templates, without I/O.

Times are shown in UTC ("2026-11-30 03:12 UTC") with their age ("14 min ago").
Contacts appear only in their masked form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pager_actors.domain import (
    Alert,
    EmailTarget,
    EscalationPolicy,
    IncidentSummary,
    MonitoredService,
    SmsTarget,
    Target,
    TimelineEntry,
    UserTarget,
    Window,
)

EVENT_LABELS = {
    "opened": "Incident opened",
    "alert_added": "Alert added",
    "alert_resolved": "Alert resolved",
    "paged": "Paged",
    "delivered": "Page delivered",
    "delivery_failed": "Page failed",
    "escalated": "Escalated",
    "acknowledged": "Acknowledged",
    "ack_expired": "Acknowledgement expired",
    "suppressed": "Held by maintenance",
    "resolved": "Resolved",
    "exhausted": "Escalation exhausted",
    "no_one_on_call": "No one on call",
    "withdrawn": "Page withdrawn",
}


def when(moment: datetime | None) -> str:
    """"2026-11-30 03:12 UTC", or an em dash."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()


def duration(span: timedelta) -> str:
    """"45 s", "14 min", "2 h 05 min", "3 d 4 h"."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@dataclass(frozen=True)
class ServiceRow:
    """One service as the overview lists it."""

    id: str
    incident: int | None
    acknowledged: bool
    acknowledged_by: str | None
    level: int | None
    levels: int | None
    round: int | None
    rounds: int | None
    opened: str
    opened_iso: str
    age: str | None
    alerts: tuple[Alert, ...]
    maintenance_until: str | None  # the end of the window in force, if any

    @property
    def in_maintenance(self) -> bool:
        return self.maintenance_until is not None

    @property
    def open(self) -> bool:
        return self.incident is not None

    @property
    def unacknowledged(self) -> bool:
        return self.open and not self.acknowledged


def service_row(state: MonitoredService, now: datetime) -> ServiceRow:
    incident = state.incident
    ends = [w.end for w in state.windows if w.covers(now)]
    until = when(max(ends)) if ends else None
    if incident is None:
        return ServiceRow(state.service_id, None, False, None, None, None, None, None, "—", "",
                          None, state.alerts, until)
    opened = incident.opened_at
    return ServiceRow(
        state.service_id, incident.number, incident.acknowledged, incident.acknowledged_by,
        incident.level, len(incident.policy.levels), incident.round, incident.policy.rounds,
        when(opened), iso(opened), duration(now - opened) if opened else None, state.alerts,
        until)


def overview(states: list[MonitoredService], now: datetime) -> list[ServiceRow]:
    """Every service: open and unacknowledged first, then acknowledged (oldest incident
    first within each), then the healthy ones in config order."""
    rows = [service_row(state, now) for state in states]
    far = datetime.max.replace(tzinfo=UTC).isoformat()
    order = {row.id: n for n, row in enumerate(rows)}
    return sorted(rows, key=lambda r: (not r.open, r.acknowledged,
                                       r.opened_iso or far, order[r.id]))


@dataclass(frozen=True)
class TargetView:
    channel: str  # "Mail" or "SMS"
    masked: str


@dataclass(frozen=True)
class PolicyView:
    levels: tuple[tuple[TargetView, ...], ...]
    repeat: int
    ack_expiry: str | None
    heartbeat: str | None


def _channel(target: Target) -> str:
    if isinstance(target, EmailTarget):
        return "Mail"
    if isinstance(target, SmsTarget):
        return "SMS"
    if isinstance(target, UserTarget):
        return "Person"
    return "On call in"  # a rotation: whoever it puts on call when the page is decided


def policy(found: EscalationPolicy) -> PolicyView:
    """The policy with every contact masked."""
    levels = tuple(tuple(TargetView(_channel(t), t.masked) for t in level.targets)
                   for level in found.levels)
    return PolicyView(levels, found.repeat,
                      duration(found.ack_expiry) if found.ack_expiry else None,
                      duration(found.heartbeat) if found.heartbeat else None)


@dataclass(frozen=True)
class EntryView:
    at: str
    at_iso: str
    event: str
    label: str
    details: tuple[str, ...]
    message: str | None


def entry(e: TimelineEntry) -> EntryView:
    details = []
    if e.level is not None:
        details.append(f"level {e.level}" + (f", round {e.round}" if e.round else ""))
    if e.target is not None:
        details.append(f"{'SMS' if e.channel == 'sms' else 'mail'} to {e.target}")
    if e.user is not None:
        found = f" (found by {e.via})" if e.via else ""
        details.append(f"user {e.user}{found}")
    if e.by is not None:
        details.append(f"by {e.by}")
    if e.key is not None:
        details.append(f"key {e.key}")
    if e.error is not None:
        details.append(e.error)
    label = EVENT_LABELS.get(e.event, e.event.replace("_", " ").capitalize())
    return EntryView(when_precise(e.at), iso(e.at), e.event, label, tuple(details), e.message)


def when_precise(moment: datetime) -> str:
    """Timeline times, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def timeline(entries: list[TimelineEntry], newest_first: bool = True) -> list[EntryView]:
    shown = [entry(e) for e in entries]
    return shown[::-1] if newest_first else shown


@dataclass(frozen=True)
class WindowView:
    id: int
    start: str
    end: str
    reason: str
    active: bool


def window(w: Window, now: datetime) -> WindowView:
    return WindowView(w.id, when(w.start), when(w.end), w.reason, w.covers(now))


@dataclass(frozen=True)
class IncidentView:
    number: int
    opened: str
    closed: str
    lasted: str | None
    level: int
    acknowledged_by: str | None
    message: str | None


def incident(summary: IncidentSummary, now: datetime) -> IncidentView:
    end = summary.closed or now
    return IncidentView(summary.number, when(summary.opened),
                        when(summary.closed) if summary.closed else "still open",
                        duration(end - summary.opened), summary.level,
                        summary.acknowledged_by, summary.message)


def default_window_end(now: datetime) -> str:
    """The maintenance form's proposed end: an hour from now, as datetime-local text (UTC)."""
    end = (now + timedelta(hours=1)).astimezone(UTC).replace(second=0, microsecond=0)
    return end.strftime("%Y-%m-%dT%H:%M")
