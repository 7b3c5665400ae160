"""The functional core: `decide(service, command, policy, now, ack_timeout)`.

Commands are what a caller asks for; effects are what must happen outside the
domain as a result (notify a target, arm a timer). `decide` reads no clock,
takes no lock and does no I/O: the caller passes `now` and carries out the
effects.
"""

from __future__ import annotations

from dataclasses import dataclass
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
            acked = Incident(incident.number, incident.message, incident.policy,
                             incident.level, True, None)
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
                disarmed = Incident(incident.number, incident.message, incident.policy,
                                    incident.level, False, None)
                return _changed(service, disarmed, (), "escalation_exhausted")
            return _escalate(service, incident, now, ack_timeout)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover


# The helpers below build values with their constructors rather than
# dataclasses.replace(), which costs several microseconds a call on the hot path.


def _open_incident(
    service: MonitoredService,
    message: str,
    policy: EscalationPolicy,
    now: datetime,
    ack_timeout: timedelta,
) -> Decision:
    number = service.incidents_opened + 1
    token, effects = _notify_level(service.service_id, number, message, policy, 1, now,
                                   ack_timeout)
    incident = Incident(number, message, policy, 1, False, token)
    opened = MonitoredService(service.service_id, incident, number, service.version + 1)
    return Decision(opened, effects, "incident_opened")


def _escalate(
    service: MonitoredService, incident: Incident, now: datetime, ack_timeout: timedelta
) -> Decision:
    level = incident.level + 1
    token, effects = _notify_level(service.service_id, incident.number, incident.message,
                                   incident.policy, level, now, ack_timeout)
    escalated = Incident(incident.number, incident.message, incident.policy, level, False, token)
    return _changed(service, escalated, effects, "escalated")


def _notify_level(
    service_id: str,
    number: int,
    message: str,
    policy: EscalationPolicy,
    level: int,
    now: datetime,
    ack_timeout: timedelta,
) -> tuple[str, tuple[Effect, ...]]:
    """Page every target of `level` and arm its timeout: the token and the effects."""
    subject = f"[{service_id}] {message}"
    text = (f"[{service_id}] level {level} page, incident #{number}: {message}. "
            "Acknowledge it in the console.")
    effects: list[Effect] = [
        Notify(service_id, number, level, target, subject, text)
        for target in policy.level(level).targets
    ]
    token = token_for(service_id, number, level)
    effects.append(ArmAckTimeout(service_id, token, ack_timeout, now + ack_timeout))
    return token, tuple(effects)


def _changed(
    service: MonitoredService,
    incident: Incident | None,
    effects: tuple[Effect, ...],
    event: str,
) -> Decision:
    new = MonitoredService(service.service_id, incident, service.incidents_opened,
                           service.version + 1)
    return Decision(new, effects, event)


def _ignored(service: MonitoredService, reason: str) -> Decision:
    return Decision(service, (), "ignored", reason)
