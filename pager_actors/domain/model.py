"""Values of the escalation domain: targets, policies and a monitored service's state.

Everything here is a frozen value. A service's state only changes by `decide()`
returning a new one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class EmailTarget:
    """An on-call person reached by email."""

    address: str

    def __post_init__(self) -> None:
        if "@" not in self.address or self.address.strip() != self.address:
            raise ValueError(f"not an email address: {self.address!r}")

    @property
    def uri(self) -> str:
        return f"mailto:{self.address}"


@dataclass(frozen=True, slots=True)
class SmsTarget:
    """An on-call person reached by SMS."""

    number: str

    def __post_init__(self) -> None:
        digits = self.number.removeprefix("+")
        if not digits.isdigit() or not 3 <= len(digits) <= 15:
            raise ValueError(f"not a phone number: {self.number!r}")

    @property
    def uri(self) -> str:
        return f"sms:{self.number}"


Target = EmailTarget | SmsTarget


def parse_target(uri: str) -> Target:
    """`mailto:someone@example.com` or `sms:+33600000001` -> a target. Raises ValueError."""
    scheme, sep, rest = uri.partition(":")
    if sep and scheme == "mailto":
        return EmailTarget(rest)
    if sep and scheme == "sms":
        return SmsTarget(rest)
    raise ValueError(f"not a target (want mailto:ADDRESS or sms:NUMBER): {uri!r}")


@dataclass(frozen=True, init=False)
class Level:
    """One step of an escalation policy: everyone in it is notified together.

    A target listed twice is kept once, in the order first seen.
    """

    targets: tuple[Target, ...]

    def __init__(self, targets: Iterable[Target]) -> None:
        unique = tuple(dict.fromkeys(targets))
        if not unique:
            raise ValueError("a level needs at least one target")
        object.__setattr__(self, "targets", unique)


SERVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_service_id(service_id: object) -> str:
    """`service_id` if it is a valid id (it appears in URLs and timer tokens), else ValueError."""
    if not isinstance(service_id, str) or not SERVICE_ID.fullmatch(service_id):
        raise ValueError(f"not a service id (1-128 of A-Z a-z 0-9 . _ : -, starting with a "
                         f"letter or digit): {service_id!r}")
    return service_id


@dataclass(frozen=True, init=False)
class EscalationPolicy:
    """The ordered levels to notify for one monitored service."""

    service_id: str
    levels: tuple[Level, ...]

    def __init__(self, service_id: str, levels: Iterable[Level]) -> None:
        check_service_id(service_id)
        levels = tuple(levels)
        if not levels:
            raise ValueError(f"policy for {service_id!r} has no levels")
        object.__setattr__(self, "service_id", service_id)
        object.__setattr__(self, "levels", levels)

    def level(self, number: int) -> Level:
        """Level `number`, counted from 1."""
        return self.levels[number - 1]


class Health(enum.Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What the console shows for a service. `level` is 1-based, None when healthy."""

    health: Health
    level: int | None
    acknowledged: bool
    message: str | None


@dataclass(frozen=True, slots=True)
class Incident:
    """An open incident: from the first alert to the healthy event.

    `policy` is a snapshot taken when the incident opened, so an escalation
    follows the levels that were in force then. `armed_token` names the only
    acknowledgement timeout that may still escalate it; None means no timeout
    can (acknowledged, or the last level's timeout already fired).
    `ack_deadline` is when that timeout falls due, so a restart can re-arm it
    with the time that remains.
    """

    number: int
    message: str
    policy: EscalationPolicy
    level: int
    acknowledged: bool = False
    armed_token: str | None = None
    ack_deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class MonitoredService:
    """The whole state of one monitored service.

    `incidents_opened` numbers incidents, so tokens of an old incident never
    match a new one. `version` grows with every state change.
    """

    service_id: str
    incident: Incident | None = None
    incidents_opened: int = 0
    version: int = 0

    @property
    def health(self) -> Health:
        return Health.HEALTHY if self.incident is None else Health.UNHEALTHY

    def status(self) -> ServiceStatus:
        incident = self.incident
        if incident is None:
            return ServiceStatus(Health.HEALTHY, None, False, None)
        return ServiceStatus(Health.UNHEALTHY, incident.level, incident.acknowledged,
                             incident.message)
