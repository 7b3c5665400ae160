"""The functional core: `decide(service, command, policy, now, ack_timeout)`.

Commands are what a caller asks for; effects are what must happen outside the
domain as a result (notify a target, arm a timer). `decide` reads no clock,
takes no lock and does no I/O: the caller passes `now` and carries out the
effects.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pager_actors.domain.errors import UnknownServiceError
from pager_actors.domain.model import (
    EscalationPolicy,
    Incident,
    MonitoredService,
    Target,
)

# -- commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    message: str


@dataclass(frozen=True, slots=True)
class Acknowledge:
    pass


@dataclass(frozen=True, slots=True)
class ReportHealthy:
    pass


@dataclass(frozen=True, slots=True)
class ExpireAckTimeout:
    """The acknowledgement timeout armed with `token` fired (None: the one armed now)."""

    token: str | None = None


Command = RaiseAlert | Acknowledge | ReportHealthy | ExpireAckTimeout

# -- effects ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell one target about an incident.

    `key` is unique per (service, incident, level, target): the same page is
    never produced twice under the same key, so it doubles as a delivery id.
    """

    service_id: str
    incident: int
    level: int
    target: Target
    subject: str
    text: str

    @property
    def key(self) -> str:
        return f"{self.service_id}/{self.incident}/{self.level}/{self.target}"


@dataclass(frozen=True, slots=True)
class ArmAckTimeout:
    """Arm the acknowledgement timeout; only `token` may escalate when it fires."""

    service_id: str
    token: str
    delay: timedelta
    deadline: datetime


Effect = Notify | ArmAckTimeout

# -- decisions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The new state, the effects to carry out, and a past-tense name for what happened.

    `event` is one of: incident_opened, escalated, acknowledged, resolved,
    escalation_exhausted, ignored. `reason` says why a command was ignored.
    """

    service: MonitoredService
    effects: tuple[Effect, ...]
    event: str
    reason: str | None = None


def token_for(service_id: str, incident: int, level: int) -> str:
    """The token of the timeout armed after notifying `level` of `incident`."""
    return f"{service_id}#{incident}@{level}"


def decide(
    service: MonitoredService,
    command: Command,
    policy: EscalationPolicy | None,
    *,
    now: datetime,
    ack_timeout: timedelta,
) -> Decision:
    """Apply one command to one service. Raises UnknownServiceError without a policy."""
    if policy is None:
        raise UnknownServiceError(service.service_id)
    incident = service.incident
    match command:
        case RaiseAlert(message):
            if incident is not None:
                return _ignored(service, "already_unhealthy")
            return _open_incident(service, message, policy, now, ack_timeout)
        case Acknowledge():
            if incident is None:
                return _ignored(service, "no_open_incident")
            if incident.acknowledged:
                return _ignored(service, "already_acknowledged")
            acked = replace(incident, acknowledged=True, armed_token=None)
            return _changed(service, acked, (), "acknowledged")
        case ReportHealthy():
            if incident is None:
                return _ignored(service, "already_healthy")
            return _changed(service, None, (), "resolved")
        case ExpireAckTimeout(token):
            if incident is None:
                return _ignored(service, "no_open_incident")
            if incident.acknowledged:
                return _ignored(service, "acknowledged")
            if incident.armed_token is None or token not in (None, incident.armed_token):
                return _ignored(service, "stale_token")
            if incident.level == len(incident.policy.levels):
                disarmed = replace(incident, armed_token=None)
                return _changed(service, disarmed, (), "escalation_exhausted")
            return _escalate(service, incident, now, ack_timeout)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover


def _open_incident(
    service: MonitoredService,
    message: str,
    policy: EscalationPolicy,
    now: datetime,
    ack_timeout: timedelta,
) -> Decision:
    number = service.incidents_opened + 1
    incident = Incident(number=number, message=message, policy=policy, level=1)
    opened = replace(service, incidents_opened=number)
    incident, effects = _notify_level(service.service_id, incident, now, ack_timeout)
    return _changed(opened, incident, effects, "incident_opened")


def _escalate(
    service: MonitoredService, incident: Incident, now: datetime, ack_timeout: timedelta
) -> Decision:
    incident = replace(incident, level=incident.level + 1)
    incident, effects = _notify_level(service.service_id, incident, now, ack_timeout)
    return _changed(service, incident, effects, "escalated")


def _notify_level(
    service_id: str, incident: Incident, now: datetime, ack_timeout: timedelta
) -> tuple[Incident, tuple[Effect, ...]]:
    level = incident.level
    subject = f"[{service_id}] {incident.message}"
    text = (
        f"[{service_id}] level {level} page, incident #{incident.number}: "
        f"{incident.message}. Acknowledge it in the console."
    )
    notes: list[Effect] = [
        Notify(service_id, incident.number, level, target, subject, text)
        for target in incident.policy.level(level).targets
    ]
    token = token_for(service_id, incident.number, level)
    notes.append(ArmAckTimeout(service_id, token, ack_timeout, now + ack_timeout))
    return replace(incident, armed_token=token), tuple(notes)


def _changed(
    service: MonitoredService,
    incident: Incident | None,
    effects: tuple[Effect, ...],
    event: str,
) -> Decision:
    new = replace(service, incident=incident, version=service.version + 1)
    return Decision(new, effects, event)


def _ignored(service: MonitoredService, reason: str) -> Decision:
    return Decision(service, (), "ignored", reason)
