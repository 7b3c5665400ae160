"""The functional core: `decide(service, command, policy, now, ack_timeout)`.

Commands are what a caller asks for; effects are what must happen outside the
domain as a result (notify a target, arm a timer). `decide` reads no clock,
takes no lock and does no I/O: the caller passes `now` and carries out the
effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    never produced twice under the same key, so it is the delivery id.
    """

    service_id: str
    incident: int
    level: int
    target: Target
    subject: str
    text: str
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: the outbox, the adapters and the logs all ask for it.
        object.__setattr__(self, "key",
                           f"{self.service_id}/{self.incident}/{self.level}/{self.target.uri}")


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
    match command:
        case RaiseAlert(message):
            return _on_alert(service, message, policy, now, ack_timeout)
        case Acknowledge():
            return _on_acknowledge(service)
        case ReportHealthy():
            if service.incident is None:
                return _ignored(service, "already_healthy")
            return _changed(service, None, (), "resolved")
        case ExpireAckTimeout(token):
            return _on_timeout(service, token, now, ack_timeout)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover


# The helpers below build values with their constructors rather than
# dataclasses.replace(), which costs several microseconds a call on the hot path.


def _on_alert(
    service: MonitoredService,
    message: str,
    policy: EscalationPolicy,
    now: datetime,
    ack_timeout: timedelta,
) -> Decision:
    if service.incident is not None:
        return _ignored(service, "already_unhealthy")
    number = service.incidents_opened + 1
    incident = _paged(service.service_id, number, message, policy, 1, now + ack_timeout)
    opened = MonitoredService(service.service_id, incident, number, service.version + 1)
    return Decision(opened, _page(service.service_id, incident, now, ack_timeout),
                    "incident_opened")


def _on_acknowledge(service: MonitoredService) -> Decision:
    incident = service.incident
    if incident is None:
        return _ignored(service, "no_open_incident")
    if incident.acknowledged:
        return _ignored(service, "already_acknowledged")
    acked = Incident(incident.number, incident.message, incident.policy, incident.level,
                     acknowledged=True, armed_token=None)
    return _changed(service, acked, (), "acknowledged")


def _on_timeout(
    service: MonitoredService, token: str | None, now: datetime, ack_timeout: timedelta
) -> Decision:
    incident = service.incident
    if incident is None:
        return _ignored(service, "no_open_incident")
    if incident.acknowledged:
        return _ignored(service, "acknowledged")
    if incident.armed_token is None or token not in (None, incident.armed_token):
        return _ignored(service, "stale_token")
    if incident.level == len(incident.policy.levels):
        disarmed = Incident(incident.number, incident.message, incident.policy, incident.level,
                            acknowledged=False, armed_token=None)
        return _changed(service, disarmed, (), "escalation_exhausted")
    escalated = _paged(service.service_id, incident.number, incident.message, incident.policy,
                       incident.level + 1, now + ack_timeout)
    return _changed(service, escalated, _page(service.service_id, escalated, now, ack_timeout),
                    "escalated")


def _paged(service_id: str, number: int, message: str, policy: EscalationPolicy,  # noqa: PLR0917
           level: int, deadline: datetime) -> Incident:
    """The incident once `level` is paged: its timeout armed under a fresh token."""
    return Incident(number, message, policy, level, acknowledged=False,
                    armed_token=token_for(service_id, number, level), ack_deadline=deadline)


def _page(service_id: str, incident: Incident, now: datetime,
          ack_timeout: timedelta) -> tuple[Effect, ...]:
    """Notify every target of the incident's level, then arm its timeout."""
    level, number, message = incident.level, incident.number, incident.message
    subject = f"[{service_id}] {message}"
    text = (f"[{service_id}] level {level} page, incident #{number}: {message}. "
            "Acknowledge it in the console.")
    effects: list[Effect] = [
        Notify(service_id, number, level, target, subject, text)
        for target in incident.policy.level(level).targets
    ]
    assert incident.armed_token is not None and incident.ack_deadline is not None
    effects.append(ArmAckTimeout(service_id, incident.armed_token, ack_timeout,
                                 incident.ack_deadline))
    return tuple(effects)


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
