"""Values of the escalation domain: targets, policies and a monitored service's state.

Everything here is a frozen value. A service's state only changes by `decide()`
returning a new one.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from pager_actors.domain.masking import mask_email, mask_phone


@dataclass(frozen=True, slots=True)
class EmailTarget:
    """An on-call person reached by email."""

    address: str
    masked: str = field(init=False, repr=False, compare=False)
    uri: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "@" not in self.address or self.address.strip() != self.address:
            raise ValueError(f"not an email address: {self.address!r}")
        # Computed once: every page, log line and timeline entry asks for them.
        object.__setattr__(self, "masked", mask_email(self.address))
        object.__setattr__(self, "uri", f"mailto:{self.address}")



@dataclass(frozen=True, slots=True)
class SmsTarget:
    """An on-call person reached by SMS."""

    number: str
    masked: str = field(init=False, repr=False, compare=False)
    uri: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digits = self.number.removeprefix("+")
        if not digits.isdigit() or not 3 <= len(digits) <= 15:
            raise ValueError(f"not a phone number: {self.number!r}")
        object.__setattr__(self, "masked", mask_phone(self.number))
        object.__setattr__(self, "uri", f"sms:{self.number}")



Contact = EmailTarget | SmsTarget


@dataclass(frozen=True, slots=True)
class UserTarget:
    """A person by id: paging them pages every contact they have, resolved at page time."""

    id: str
    masked: str = field(init=False, repr=False, compare=False)
    uri: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id(self.id, "user")
        object.__setattr__(self, "uri", f"user:{self.id}")
        object.__setattr__(self, "masked", self.uri)


@dataclass(frozen=True, slots=True)
class RotationTarget:
    """Whoever a rotation puts on call when the page is decided."""

    id: str
    masked: str = field(init=False, repr=False, compare=False)
    uri: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_id(self.id, "rotation")
        object.__setattr__(self, "uri", f"rotation:{self.id}")
        object.__setattr__(self, "masked", self.uri)


Target = EmailTarget | SmsTarget | UserTarget | RotationTarget

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check_id(value: str, what: str) -> None:
    if not _ID.fullmatch(value):
        raise ValueError(f"not a {what} id (1-64 of A-Z a-z 0-9 . _ -): {value!r}")


def parse_contact(uri: str) -> Contact:
    """`mailto:someone@example.com` or `sms:+33600000001` -> a contact. Raises ValueError."""
    scheme, sep, rest = uri.partition(":")
    if sep and scheme == "mailto":
        return EmailTarget(rest)
    if sep and scheme == "sms":
        return SmsTarget(rest)
    raise ValueError(f"not a contact (want mailto:ADDRESS or sms:NUMBER): {uri!r}")


def parse_target(uri: str) -> Target:
    """A level target: a contact, `user:ID` or `rotation:ID`. Raises ValueError."""
    scheme, sep, rest = uri.partition(":")
    if sep and scheme == "user":
        return UserTarget(rest)
    if sep and scheme == "rotation":
        return RotationTarget(rest)
    if sep and scheme in ("mailto", "sms"):
        return parse_contact(uri)
    raise ValueError(f"not a target (want mailto:ADDRESS, sms:NUMBER, user:ID or "
                     f"rotation:ID): {uri!r}")


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
    """The ordered levels to notify for one monitored service, and how it escalates.

    - `repeat`: after the last level's timeout, start again at level 1, up to
      this many more rounds, before escalation is exhausted;
    - `ack_expiry`: an acknowledgement that lasts this long without the
      incident being resolved expires, and the current level is paged again;
    - `heartbeat`: once the service sent a first heartbeat, a silence this
      long fires its `heartbeat` alert.
    """

    service_id: str
    levels: tuple[Level, ...]
    repeat: int
    ack_expiry: timedelta | None
    heartbeat: timedelta | None

    def __init__(self, service_id: str, levels: Iterable[Level], *, repeat: int = 0,
                 ack_expiry: timedelta | None = None,
                 heartbeat: timedelta | None = None) -> None:
        check_service_id(service_id)
        levels = tuple(levels)
        if not levels:
            raise ValueError(f"policy for {service_id!r} has no levels")
        if repeat < 0:
            raise ValueError(f"repeat must be 0 or more, got {repeat}")
        if ack_expiry is not None and ack_expiry <= timedelta(0):
            raise ValueError(f"ack_expiry must be positive, got {ack_expiry}")
        if heartbeat is not None and heartbeat < MIN_HEARTBEAT:
            raise ValueError(f"heartbeat must be at least {MIN_HEARTBEAT}, got {heartbeat}")
        object.__setattr__(self, "service_id", service_id)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "repeat", repeat)
        object.__setattr__(self, "ack_expiry", ack_expiry)
        object.__setattr__(self, "heartbeat", heartbeat)

    def level(self, number: int) -> Level:
        """Level `number`, counted from 1."""
        return self.levels[number - 1]

    @property
    def rounds(self) -> int:
        """How many times the levels are walked in all: 1 + repeat."""
        return 1 + self.repeat


MIN_HEARTBEAT = timedelta(seconds=10)
KEY_MAX_CHARS = 200
DEFAULT_KEY = "default"
HEARTBEAT_KEY = "heartbeat"
MAX_WINDOW = timedelta(days=7)


def check_key(key: object) -> str:
    """An alert's dedup key: 1-200 printable characters, else ValueError."""
    if not isinstance(key, str) or not 1 <= len(key) <= KEY_MAX_CHARS \
            or not key.isprintable():
        raise ValueError(f"an alert key is 1-{KEY_MAX_CHARS} printable characters, "
                         f"got {str(key)[:40]!r}")
    return key


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


class Alert(NamedTuple):
    """One firing alert of a service, by its dedup key."""

    key: str
    message: str
    since: datetime


class Window(NamedTuple):
    """A maintenance window: an alert that fires in [start, end) opens no incident."""

    id: int
    start: datetime
    end: datetime
    reason: str = ""

    def covers(self, now: datetime) -> bool:
        return self.start <= now < self.end


class Incident(NamedTuple):
    """An open incident: from the first firing alert until the last one is resolved.

    `policy` is a snapshot taken when the incident opened, so an escalation
    follows the levels that were in force then. `armed_token` names the only
    timer of the incident that may still act: its ack timeout while
    unacknowledged, its ack expiry once acknowledged (None: no timer, as after
    an ack without expiry or once escalation is exhausted). `ack_deadline` is
    when that timer falls due, so a restart can arm it again with the time
    that remains. `page` numbers each paging of a level within the incident
    (first page, escalations, repeats, expired acks), so every page has its
    own delivery id; `failed` holds the targets whose page number `page`
    failed for good. `legacy` marks an incident opened before alerts had keys:
    a resolve of any key closes it. `reply_code` is what an SMS reply names it
    by (when replies are on); `paged` holds every contact URI paged for it, who
    may answer by SMS and who gets status updates; `page_targets` those of page
    number `page` (a level whose every one failed escalates at once).
    """

    number: int
    message: str
    policy: EscalationPolicy
    level: int
    acknowledged: bool = False
    armed_token: str | None = None
    ack_deadline: datetime | None = None
    round: int = 1
    page: int = 1
    failed: frozenset[str] = frozenset()
    opened_at: datetime | None = None
    acknowledged_by: str | None = None
    acks: int = 0
    legacy: bool = False
    reply_code: str | None = None
    paged: frozenset[str] = frozenset()
    page_targets: frozenset[str] = frozenset()


class ArmedTimer(NamedTuple):
    """A timer a service relies on: when `token` falls due, the service acts on it."""

    service_id: str
    token: str
    deadline: datetime


class MonitoredService(NamedTuple):
    """The whole state of one monitored service.

    - `incident`: the open incident, if any;
    - `alerts`: the firing alerts, oldest first (suppressed ones included);
    - `windows`: maintenance windows not yet ended;
    - `heartbeat_token`, `heartbeat_deadline`: the armed heartbeat, if any;
    - `released_codes`: reply codes of incidents closed in the last 24 h, with
      when, so that no code names a newer incident before a day has passed.
    `incidents_opened`, `windows_opened` and `heartbeats` number incidents,
    windows and heartbeat timers, so a token of an old one never matches a
    new one. `version` grows with every state change.
    """

    service_id: str
    incident: Incident | None = None
    incidents_opened: int = 0
    version: int = 0
    alerts: tuple[Alert, ...] = ()
    windows: tuple[Window, ...] = ()
    windows_opened: int = 0
    heartbeat_token: str | None = None
    heartbeat_deadline: datetime | None = None
    heartbeats: int = 0
    released_codes: tuple[tuple[str, datetime], ...] = ()

    @property
    def health(self) -> Health:
        return Health.HEALTHY if self.incident is None else Health.UNHEALTHY

    def status(self) -> ServiceStatus:
        incident = self.incident
        if incident is None:
            return ServiceStatus(Health.HEALTHY, None, False, None)
        return ServiceStatus(Health.UNHEALTHY, incident.level, incident.acknowledged,
                             incident.message)

    def timers(self) -> list[ArmedTimer]:
        """Every timer this state relies on, to arm again after a restart."""
        armed = []
        incident = self.incident
        if incident is not None and incident.armed_token and incident.ack_deadline:
            armed.append(ArmedTimer(self.service_id, incident.armed_token,
                                    incident.ack_deadline))
        if self.heartbeat_token and self.heartbeat_deadline:
            armed.append(ArmedTimer(self.service_id, self.heartbeat_token,
                                    self.heartbeat_deadline))
        armed.extend(ArmedTimer(self.service_id, window_token(self.service_id, window.id),
                                window.end) for window in self.windows)
        return armed

    def in_maintenance(self, now: datetime) -> bool:
        return any(window.covers(now) for window in self.windows)


def window_token(service_id: str, window: int) -> str:
    """The token of the timer that ends maintenance window `window`."""
    return f"{service_id}~window{window}"


def reply_codes_of(states: list[MonitoredService]) -> list[tuple[str, str, int, datetime | None]]:
    """(code, service, incident, released) for every reply code these states hold: each open
    incident's (released None), and those their services released (the incident numbers of
    released codes no longer matter: 0)."""
    found: list[tuple[str, str, int, datetime | None]] = []
    for state in states:
        if state.incident is not None and state.incident.reply_code is not None:
            found.append((state.incident.reply_code, state.service_id, state.incident.number,
                          None))
        found.extend((code, state.service_id, 0, at) for code, at in state.released_codes)
    return found
