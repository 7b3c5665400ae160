"""A service's state as JSON, for the SQL stores: every field, the policy snapshot included.

Times are ISO 8601 strings with their offset. Decoding shares one policy
object per distinct snapshot, so 10,000 open incidents of one policy hold one
copy of it. `legacy_state()` turns a schema v1/v2 row (an incident without
keys) into today's state.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from pager_actors.domain import (
    DEFAULT_KEY,
    Alert,
    EscalationPolicy,
    Incident,
    Level,
    MonitoredService,
    Window,
    parse_target,
)


def encode(state: MonitoredService) -> str:
    incident = state.incident
    data: dict[str, Any] = {
        "opened": state.incidents_opened,
        "incident": None if incident is None else _incident(incident),
        "alerts": [[a.key, a.message, a.since.isoformat()] for a in state.alerts],
    }
    if state.windows or state.windows_opened:
        data["windows"] = [[w.id, w.start.isoformat(), w.end.isoformat(), w.reason]
                           for w in state.windows]
        data["windows_opened"] = state.windows_opened
    if state.heartbeats:
        data["heartbeat"] = [state.heartbeat_token, _time(state.heartbeat_deadline),
                             state.heartbeats]
    if state.released_codes:
        data["released"] = [[code, at.isoformat()] for code, at in state.released_codes]
    return json.dumps(data, separators=(",", ":"))


def decode(service_id: str, version: int, text: str) -> MonitoredService:
    data = json.loads(text)
    token, deadline, beats = data.get("heartbeat") or (None, None, 0)
    return MonitoredService(
        service_id, _incident_from(data["incident"]), data["opened"], version,
        tuple(Alert(key, message, datetime.fromisoformat(since))
              for key, message, since in data["alerts"]),
        tuple(Window(number, datetime.fromisoformat(start), datetime.fromisoformat(end), reason)
              for number, start, end, reason in data.get("windows", ())),
        data.get("windows_opened", 0), token, _parse(deadline), beats,
        tuple((code, datetime.fromisoformat(at)) for code, at in data.get("released", ())))


def legacy_state(service_id: str, version: int, opened: int, incident_json: str | None,
                 since: datetime) -> MonitoredService:
    """A v1/v2 row: its open incident gets the key `default` and is marked legacy, so that
    a resolve of any key closes it."""
    if incident_json is None:
        return MonitoredService(service_id, None, opened, version)
    data = json.loads(incident_json)
    # Page 0: the rows of its pages from before (migrated as page 1 of their level) can never
    # be taken for pages it sends from now on.
    incident = Incident(data["number"], data["message"], _policy_from(data["policy"]),
                        data["level"], data["acknowledged"], data["armed_token"],
                        _parse(data["ack_deadline"]), page=0, opened_at=since, legacy=True)
    return MonitoredService(service_id, incident, opened, version,
                            (Alert(DEFAULT_KEY, incident.message, since),))


def _incident(incident: Incident) -> dict[str, Any]:
    return {
        "number": incident.number, "message": incident.message,
        "policy": _policy(incident.policy), "level": incident.level,
        "acknowledged": incident.acknowledged, "armed_token": incident.armed_token,
        "ack_deadline": _time(incident.ack_deadline), "round": incident.round,
        "page": incident.page, "failed": sorted(incident.failed),
        "opened_at": _time(incident.opened_at), "acknowledged_by": incident.acknowledged_by,
        "acks": incident.acks, "legacy": incident.legacy,
        "reply_code": incident.reply_code, "paged": sorted(incident.paged),
        "page_targets": sorted(incident.page_targets),
    }


def _incident_from(data: dict[str, Any] | None) -> Incident | None:
    if data is None:
        return None
    return Incident(data["number"], data["message"], _policy_from(data["policy"]),
                    data["level"], data["acknowledged"], data["armed_token"],
                    _parse(data["ack_deadline"]), data["round"], data["page"],
                    frozenset(data["failed"]), _parse(data["opened_at"]),
                    data["acknowledged_by"], data["acks"], data["legacy"],
                    data.get("reply_code"), frozenset(data.get("paged", ())),
                    frozenset(data.get("page_targets", ())))


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


@lru_cache(maxsize=4096)
def _policy(policy: EscalationPolicy) -> dict[str, Any]:
    data: dict[str, Any] = {"service_id": policy.service_id,
                            "levels": [[t.uri for t in level.targets] for level in policy.levels]}
    if policy.repeat:
        data["repeat"] = policy.repeat
    if policy.ack_expiry is not None:
        data["ack_expiry_s"] = policy.ack_expiry.total_seconds()
    if policy.heartbeat is not None:
        data["heartbeat_s"] = policy.heartbeat.total_seconds()
    return data


_policies_seen: dict[str, EscalationPolicy] = {}


def _policy_from(data: dict[str, Any]) -> EscalationPolicy:
    """Decode a policy snapshot, sharing one object per distinct snapshot."""
    key = json.dumps(data, sort_keys=True)
    policy = _policies_seen.get(key)
    if policy is None:
        expiry, heartbeat = data.get("ack_expiry_s"), data.get("heartbeat_s")
        policy = EscalationPolicy(
            data["service_id"],
            [Level([parse_target(uri) for uri in level]) for level in data["levels"]],
            repeat=data.get("repeat", 0),
            ack_expiry=timedelta(seconds=expiry) if expiry is not None else None,
            heartbeat=timedelta(seconds=heartbeat) if heartbeat is not None else None)
        if len(_policies_seen) < 65536:
            _policies_seen[key] = policy
    return policy
