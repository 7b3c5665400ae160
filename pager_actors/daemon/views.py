"""What the HTTP API answers: the engine's values as JSON-ready dicts.

Times are ISO 8601 in UTC with a `Z`. Nothing here holds a full contact:
timeline targets are masked by the domain before they are stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pager_actors.domain import IncidentSummary, MonitoredService, TimelineEntry, Window


def utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def service(state: MonitoredService) -> dict[str, Any]:
    """A service as GET /api/v1/services/{id} shows it."""
    status = state.status()
    incident = state.incident
    return {
        "service_id": state.service_id, "health": status.health.value, "level": status.level,
        "acknowledged": status.acknowledged, "message": status.message,
        "incident": incident.number if incident else None,
        "round": incident.round if incident else None,
        "opened_at": utc(incident.opened_at) if incident else None,
        "acknowledged_by": incident.acknowledged_by if incident else None,
        "alerts": [{"key": a.key, "message": a.message, "since": utc(a.since)}
                   for a in state.alerts],
        "maintenance": [window(w) for w in state.windows],
    }


def window(w: Window) -> dict[str, Any]:
    return {"id": w.id, "start": utc(w.start), "end": utc(w.end), "reason": w.reason}


def incident(summary: IncidentSummary) -> dict[str, Any]:
    return {"number": summary.number, "opened": utc(summary.opened),
            "closed": utc(summary.closed), "level": summary.level,
            "acknowledged_by": summary.acknowledged_by, "message": summary.message}


def entry(e: TimelineEntry) -> dict[str, Any]:
    shown: dict[str, Any] = {"at": utc(e.at), "event": e.event}
    for name in ("level", "round", "target", "channel", "user", "via", "error", "by", "key",
                 "message"):
        value = getattr(e, name)
        if value is not None:
            shown[name] = value
    return shown
