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
    EmailTarget,
    EscalationPolicy,
    Incident,
    MonitoredService,
    Target,
)
from pager_actors.domain.texts import (
    PageFormat,
    check_text,
    headline,
    mail_body,
    sms_text,
    subject,
)

DEFAULT_FORMAT = PageFormat()

# -- commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    """The service misbehaves. `message` must be text a store can keep (ValueError if not)."""

    message: str

    def __post_init__(self) -> None:
        check_text(self.message, "an alert message")


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
    `subject` and `text` are already within the limits of the target's
    channel (`pager_actors.domain.texts`): a mail's Subject and body, or an
    SMS (whose `subject` is unused).
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
    fmt: PageFormat = DEFAULT_FORMAT,
) -> Decision:
    """Apply one command to one service. Raises UnknownServiceError without a policy.

    `fmt` says how much alert text a page carries.
    """
    if policy is None:
        raise UnknownServiceError(service.service_id)
    match command:
        case RaiseAlert(message):
            return _on_alert(service, message, policy, now, ack_timeout, fmt)
        case Acknowledge():
            return _on_acknowledge(service)
        case ReportHealthy():
            if service.incident is None:
                return _ignored(service, "already_healthy")
            return _changed(service, None, (), "resolved")
        case ExpireAckTimeout(token):
            return _on_timeout(service, token, now, ack_timeout, fmt)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover


# The helpers below build values with their constructors rather than
# dataclasses.replace(), which costs several microseconds a call on the hot path.


def _on_alert(  # noqa: PLR0917
    service: MonitoredService,
    message: str,
    policy: EscalationPolicy,
    now: datetime,
    ack_timeout: timedelta,
    fmt: PageFormat,
) -> Decision:
    if service.incident is not None:
        return _ignored(service, "already_unhealthy")
    number = service.incidents_opened + 1
    incident = _paged(service.service_id, number, message, policy, 1, now + ack_timeout)
    opened = MonitoredService(service.service_id, incident, number, service.version + 1)
    return Decision(opened, _page(service.service_id, incident, ack_timeout, fmt),
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
    service: MonitoredService, token: str | None, now: datetime, ack_timeout: timedelta,
    fmt: PageFormat,
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
    return _changed(service, escalated, _page(service.service_id, escalated, ack_timeout, fmt),
                    "escalated")


def _paged(service_id: str, number: int, message: str, policy: EscalationPolicy,  # noqa: PLR0917
           level: int, deadline: datetime) -> Incident:
    """The incident once `level` is paged: its timeout armed under a fresh token."""
    return Incident(number, message, policy, level, acknowledged=False,
                    armed_token=token_for(service_id, number, level), ack_deadline=deadline)


def _page(service_id: str, incident: Incident, ack_timeout: timedelta,
          fmt: PageFormat) -> tuple[Effect, ...]:
    """Notify every target of the incident's level, then arm its timeout."""
    level, number, message = incident.level, incident.number, incident.message
    head = headline(service_id, number, level)
    targets = incident.policy.level(level).targets
    mail = sms = ("", "")  # (subject, text), each rendered once per level
    if any(isinstance(target, EmailTarget) for target in targets):
        mail = (subject(service_id, message), mail_body(head, message))
    if not all(isinstance(target, EmailTarget) for target in targets):
        sms = ("", sms_text(head, message, fmt))
    effects: list[Effect] = [
        Notify(service_id, number, level, target,
               *(mail if isinstance(target, EmailTarget) else sms))
        for target in targets
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
