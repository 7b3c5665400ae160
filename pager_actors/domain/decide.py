"""The functional core: `decide(service, command, policy, now=, ack_timeout=)`.

Commands are what a caller asks for; effects are what must happen outside the
domain as a result (notify a target, arm a timer, append to the timeline,
withdraw the pages a throttle still holds back once nobody needs them).
`decide` reads no clock, takes no lock and does no I/O: the caller passes
`now` and carries out the effects.

A service has at most one open incident, which stays open while at least one
of its alerts (by key) fires. Every timer a service relies on (ack timeout,
ack expiry, heartbeat, end of a maintenance window) is armed with a token
that names it; a timer whose token the state no longer holds does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from pager_actors.domain.errors import UnknownServiceError
from pager_actors.domain.links import Links, claim_for
from pager_actors.domain.model import (
    DEFAULT_KEY,
    HEARTBEAT_KEY,
    MAX_WINDOW,
    Alert,
    Contact,
    EmailTarget,
    EscalationPolicy,
    Incident,
    MonitoredService,
    RotationTarget,
    SmsTarget,
    Target,
    UserTarget,
    Window,
    check_key,
    parse_contact,
    window_token,
)
from pager_actors.domain.texts import (
    PageFormat,
    check_text,
    cut,
    headline,
    mail_body,
    one_line,
    sms_text,
    subject,
)
from pager_actors.domain.timeline import TimelineEntry

DEFAULT_FORMAT = PageFormat()
REPLY_CODE_QUARANTINE = timedelta(hours=24)

# -- commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    """An alert fires. `message` must be text a store can keep, `key` 1-200 printable
    characters (ValueError if not)."""

    message: str
    key: str = DEFAULT_KEY

    def __post_init__(self) -> None:
        check_text(self.message, "an alert message")
        check_key(self.key)


@dataclass(frozen=True, slots=True)
class ResolveAlert:
    """The alert with this key stopped firing. `by` says through what (api, alertmanager)."""

    key: str
    by: str = "api"

    def __post_init__(self) -> None:
        check_key(self.key)


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Someone took the incident: stop escalating it. `by` says who or through what;
    `incident`, when given, is the one they meant (a link, a reply): another one is not
    acknowledged in its place."""

    by: str = "api"
    incident: int | None = None


@dataclass(frozen=True, slots=True)
class ReportHealthy:
    """Operator override: the service is fine. Closes the incident, clears every key.
    `incident`, when given, must be the open one (as for Acknowledge)."""

    by: str = "api"
    incident: int | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The timer armed with `token` fell due (None: the incident's armed timer)."""

    token: str | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The service is alive: restart the heartbeat countdown."""


@dataclass(frozen=True, slots=True)
class StartMaintenance:
    """Open a maintenance window from `start` (None: now) to `end`."""

    end: datetime
    start: datetime | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        check_text(self.reason, "a maintenance reason")


@dataclass(frozen=True, slots=True)
class EndMaintenance:
    """End maintenance window `window` now."""

    window: int


@dataclass(frozen=True, slots=True)
class PageFailed:
    """Page number `page` (of `level` in `round`) of `incident` to `target` (a URI) failed
    for good."""

    incident: int
    page: int
    level: int
    round: int
    target: str


Command = (RaiseAlert | ResolveAlert | Acknowledge | ReportHealthy | TimerFired | Heartbeat
           | StartMaintenance | EndMaintenance | PageFailed)

# -- effects ----------------------------------------------------------------


class Notify(NamedTuple):
    """Tell one target about an incident.

    `key` is the page's own delivery id, unique per (service, incident,
    round, level, page number, target): the outbox row and the adapters know
    the page by it. `subject` and `text` are already within the limits of the
    target's channel (`pager_actors.domain.texts`): a mail's Subject and
    body, or an SMS (whose `subject` is unused). `reply_code` is the code an SMS
    page asks replies to name, so that a bundle carrying it can name it too.
    """

    service_id: str
    incident: int
    level: int
    target: Contact
    subject: str
    text: str
    key: str
    round: int = 1
    page: int = 1
    reply_code: str | None = None

    @property
    def channel(self) -> str:
        return "mail" if isinstance(self.target, EmailTarget) else "sms"

    def outcome(self, at: datetime, error: str | None,
                withdrawn: bool = False) -> TimelineEntry:
        """The timeline entry of this page's delivery: `delivered`, `delivery_failed` with
        its (masked) error, or `withdrawn` (an ack came while a throttle held it back)."""
        event = "withdrawn" if withdrawn else "delivered" if error is None \
            else "delivery_failed"
        return TimelineEntry(at, event, self.incident, self.level, self.round,
                             self.target.masked, self.channel, error)


class ArmTimer(NamedTuple):
    """Arm a timer; when it falls due only `token` may act."""

    service_id: str
    token: str
    delay: timedelta
    deadline: datetime


class Record(NamedTuple):
    """Append `entry` to the service's timeline, in the same commit as the state."""

    service_id: str
    entry: TimelineEntry


class Withdraw(NamedTuple):
    """The incident was acknowledged or closed: its pages that a throttle still holds back
    need not go out. Status updates and pages already handed to a gateway are kept.
    `contacts` are the URIs paged for it, where its pages can wait (empty: unknown)."""

    service_id: str
    incident: int
    contacts: tuple[str, ...] = ()


Effect = Notify | ArmTimer | Record | Withdraw


class Reached(NamedTuple):
    """A contact a page goes to, who it belongs to (if known), and how it was found."""

    contact: Contact
    user: str | None = None
    via: str | None = None


class Resolver(Protocol):
    """Who `target` (a user or a rotation) stands for at `now`: their contacts, possibly
    none. Called by `decide` each time a level is paged; pure as far as `decide` knows."""

    def __call__(self, target: UserTarget | RotationTarget,
                 now: datetime) -> Sequence[Reached]: ...

# -- decisions --------------------------------------------------------------


class Decision(NamedTuple):
    """The new state, the effects to carry out, and a past-tense name for what happened.

    `event` is one of: incident_opened, alert_added, alert_resolved, resolved,
    suppressed, escalated, acknowledged, ack_expired, escalation_exhausted,
    page_failed, heartbeat, heartbeat_missed, heartbeat_disarmed, timer_rearmed,
    maintenance_started, maintenance_ended, ignored. `reason` says why a command
    was ignored, or why an escalation came early (`delivery_failed`).
    """

    service: MonitoredService
    effects: tuple[Effect, ...]
    event: str
    reason: str | None = None


def token_for(service_id: str, incident: int, level: int, round_: int = 1, page: int = 1) -> str:
    """The token of the ack timeout armed after page number `page` (level, round) of
    `incident`."""
    return f"{service_id}#{incident}@{level}r{round_}p{page}"


def expiry_token(service_id: str, incident: int, ack: int) -> str:
    """The token of the expiry of acknowledgement number `ack` of `incident`."""
    return f"{service_id}#{incident}ack{ack}"


def heartbeat_token(service_id: str, beat: int) -> str:
    return f"{service_id}~heartbeat{beat}"


def decide(
    service: MonitoredService,
    command: Command,
    policy: EscalationPolicy | None,
    *,
    now: datetime,
    ack_timeout: timedelta,
    fmt: PageFormat = DEFAULT_FORMAT,
    next_code: str | None = None,
    resolve: Resolver | None = None,
) -> Decision:
    """Apply one command to one service. Raises UnknownServiceError without a policy.

    `fmt` says what pages carry besides the alert; `next_code` is the reply code
    reserved for the next incident this service opens (when `fmt.reply_codes`);
    `resolve` says whom `user:` and `rotation:` targets stand for now (without it, they
    reach nobody and the fallback is paged).
    """
    if policy is None:
        raise UnknownServiceError(service.service_id)
    core = _Core(service, policy, now, ack_timeout, fmt, next_code, resolve)
    match command:
        case RaiseAlert(message, key):
            return core.fire(key, message)
        case ResolveAlert(key, by):
            return core.resolve_key(key, by)
        case Acknowledge(by, incident):
            return core.acknowledge(by, incident)
        case ReportHealthy(by, incident):
            return core.heal(by, incident)
        case TimerFired(token):
            return core.timer(token)
        case Heartbeat():
            return core.heartbeat()
        case StartMaintenance(end, start, reason):
            return core.start_window(start or now, end, reason)
        case EndMaintenance(window):
            return core.end_window(window)
        case PageFailed(incident, page, level, round_, target):
            return core.page_failed(incident, page, level, round_, target)
    raise TypeError(f"not a command: {command!r}")  # pragma: no cover


class _Core:
    """One decision's context. Builds values with their constructors: on the hot path
    `dataclasses.replace` costs several microseconds a call."""

    __slots__ = ("ack_timeout", "effects", "fmt", "next_code", "now", "policy", "resolve",
                 "sid", "state", "version")

    def __init__(self, state: MonitoredService, policy: EscalationPolicy, now: datetime,  # noqa: PLR0917
                 ack_timeout: timedelta, fmt: PageFormat, next_code: str | None,
                 resolve: Resolver | None) -> None:
        self.state, self.policy, self.now = state, policy, now
        self.next_code, self.resolve = next_code, resolve
        self.version = state.version + 1  # every state this decision builds is the next one
        self.ack_timeout, self.fmt = ack_timeout, fmt
        self.sid = state.service_id
        self.effects: list[Effect] = []

    # -- results -------------------------------------------------------------

    def _done(self, new: MonitoredService, event: str, reason: str | None = None) -> Decision:
        return Decision(new, tuple(self.effects), event, reason)

    def _ignored(self, reason: str) -> Decision:
        return Decision(self.state, (), "ignored", reason)

    def _service(self, incident: Incident | None, *, alerts: tuple[Alert, ...] | None = None,
                 windows: tuple[Window, ...] | None = None, opened: int | None = None,
                 windows_opened: int | None = None,
                 heartbeat: tuple[str | None, datetime | None, int] | None = None,
                 released: tuple[tuple[str, datetime], ...] | None = None
                 ) -> MonitoredService:
        """The next version of the state, with the parts given changed."""
        s = self.state
        token, deadline, beats = heartbeat or (s.heartbeat_token, s.heartbeat_deadline,
                                               s.heartbeats)
        return MonitoredService(
            s.service_id, incident, s.incidents_opened if opened is None else opened,
            self.version, s.alerts if alerts is None else alerts,
            s.windows if windows is None else windows,
            s.windows_opened if windows_opened is None else windows_opened,
            token, deadline, beats, s.released_codes if released is None else released)

    def _record(self, event: str, incident: int | None, **fields: object) -> None:
        self.effects.append(Record(self.sid, TimelineEntry(self.now, event, incident,
                                                           **fields)))  # type: ignore[arg-type]

    # -- alerts ----------------------------------------------------------------

    def fire(self, key: str, message: str) -> Decision:
        state = self.state
        if any(alert.key == key for alert in state.alerts):
            return self._ignored("duplicate")
        alerts = (*state.alerts, Alert(key, message, self.now))
        incident = state.incident
        if incident is not None:
            self._record("alert_added", incident.number, key=key, message=message)
            return self._done(self._service(incident, alerts=alerts), "alert_added")
        if state.in_maintenance(self.now):
            # Filed under the incident that opens next: when the window ends with the key
            # still firing, that incident's timeline starts with what maintenance held.
            self._record("suppressed", state.incidents_opened + 1, key=key, message=message)
            return self._done(self._service(None, alerts=alerts), "suppressed")
        return self._done(self._open(alerts), "incident_opened")

    def _open(self, alerts: tuple[Alert, ...]) -> MonitoredService:
        """Open an incident for `alerts` (the first names it) and page level 1."""
        number = self.state.incidents_opened + 1
        first = alerts[0]
        self._record("opened", number, level=1, round=1, key=first.key, message=first.message)
        code = self.next_code if self.fmt.reply_codes else None
        incident = self._paged(Incident(number, first.message, self.policy, 1,
                                        opened_at=self.now, page=0, reply_code=code),
                               1, 1, len(alerts))
        return self._service(incident, alerts=alerts, opened=number)

    def resolve_key(self, key: str, by: str) -> Decision:
        state, incident = self.state, self.state.incident
        alerts = tuple(alert for alert in state.alerts if alert.key != key)
        if len(alerts) == len(state.alerts):
            if incident is not None and incident.legacy:
                return self._close(by, key)
            return self._ignored("unknown_alert")
        if alerts or incident is None:
            # A key held by maintenance resolves where its `suppressed` entry went: under the
            # incident that opens next.
            number = incident.number if incident is not None else state.incidents_opened + 1
            self._record("alert_resolved", number, key=key, by=by)
            return self._done(self._service(incident, alerts=alerts), "alert_resolved")
        return self._close(by, key)

    def heal(self, by: str, number: int | None) -> Decision:
        incident = self.state.incident
        if number is not None and (incident is None or incident.number != number):
            return self._ignored("not_open")
        if incident is None and not self.state.alerts:
            return self._ignored("already_healthy")
        return self._close(by, None)

    def _close(self, by: str | None, key: str | None) -> Decision:
        """Close the incident (if any) and clear every firing key."""
        incident = self.state.incident
        released = None
        if incident is None:  # only keys held by maintenance fire: each is cleared
            for alert in self.state.alerts:
                self._record("alert_resolved", self.state.incidents_opened + 1, key=alert.key,
                             by=by)
        else:
            self._record("resolved", incident.number, by=by, key=key)
            self._withdraw(incident)
            self._status_update(incident, "resolved", by)
            if incident.reply_code is not None:  # kept a day, so it names no newer incident
                released = self._released(incident.reply_code)
        return self._done(self._service(None, alerts=(), released=released), "resolved")

    def _released(self, code: str) -> tuple[tuple[str, datetime], ...]:
        day_ago = self.now - REPLY_CODE_QUARANTINE
        return (*((c, at) for c, at in self.state.released_codes if at > day_ago),
                (code, self.now))

    # -- acknowledgement -------------------------------------------------------

    def acknowledge(self, by: str, number: int | None) -> Decision:
        incident = self.state.incident
        if incident is None:
            return self._ignored("no_open_incident")
        if number is not None and incident.number != number:
            return self._ignored("not_open")
        if incident.acknowledged:
            return self._ignored("already_acknowledged")
        acks = incident.acks + 1
        token: str | None = None
        deadline: datetime | None = None
        expiry = incident.policy.ack_expiry  # the snapshot, like the levels
        if expiry is not None:
            token, deadline = expiry_token(self.sid, incident.number, acks), self.now + expiry
            self.effects.append(ArmTimer(self.sid, token, expiry, deadline))
        self._record("acknowledged", incident.number, level=incident.level,
                     round=incident.round, by=by)
        self._withdraw(incident)
        self._status_update(incident, "acknowledged", by)
        acked = incident._replace(acknowledged=True, armed_token=token, ack_deadline=deadline,
                                  acknowledged_by=by, acks=acks)
        return self._done(self._service(acked), "acknowledged")

    def _withdraw(self, incident: Incident) -> None:
        """Pages of `incident` still held back need not go out; before any status update, so
        that it is never withdrawn. They wait in the lanes of the contacts it paged, or of
        the fallback (paged once escalation was exhausted, and not in `paged`)."""
        contacts = incident.paged | {contact.uri for contact in self.fmt.fallback}
        self.effects.append(Withdraw(self.sid, incident.number, tuple(sorted(contacts))))

    def _status_update(self, incident: Incident, what: str, by: str | None) -> None:
        """Tell everyone paged for `incident` that it was acknowledged or resolved."""
        if not self.fmt.status_updates or not incident.paged:
            return
        sid, number = self.sid, incident.number
        line = f"[{sid}] incident #{number} {what}" + (f" by {by}" if by else "")
        text = f"{line}: {cut(one_line(incident.message), 120)}"
        kind = f"{what}{incident.acks + 1}" if what == "acknowledged" else what
        for uri in sorted(incident.paged):
            target = parse_contact(uri)
            self.effects.append(Notify(sid, number, incident.level, target, line, text,
                                       f"{sid}/{number}/status/{kind}/{uri}", incident.round,
                                       incident.page))

    # -- timers ----------------------------------------------------------------

    def timer(self, token: str | None) -> Decision:
        state, incident = self.state, self.state.incident
        if incident is not None and incident.armed_token is not None \
                and token in (None, incident.armed_token):
            if incident.acknowledged:
                return self._ack_expired(incident)
            return self._escalate(incident, None)
        if token is not None and token == state.heartbeat_token:
            return self._heartbeat_due()
        for window in state.windows:
            if token == window_token(self.sid, window.id):
                return self.end_window(window.id)
        if token is None and incident is None:
            return self._ignored("no_open_incident")
        if incident is not None and incident.acknowledged:
            return self._ignored("acknowledged")
        return self._ignored("stale_token")

    def _escalate(self, incident: Incident, reason: str | None) -> Decision:
        policy = incident.policy
        level, round_ = incident.level + 1, incident.round
        if level > len(policy.levels):
            level, round_ = 1, round_ + 1
        if round_ > policy.rounds:
            self._record("exhausted", incident.number, level=incident.level,
                         round=incident.round)
            if self.fmt.fallback:  # nobody acknowledged: the fallback hears it, once
                number = incident.number
                self._send(number, incident.level, incident.round, incident.page,
                           [Reached(c, None, "fallback") for c in self.fmt.fallback],
                           incident.message, f"{headline(self.sid, number, incident.level)}: "
                           "escalation exhausted, nobody acknowledged", "", None,
                           f"{self.sid}/{number}/exhausted/p{incident.page}/")
            disarmed = incident._replace(acknowledged=False, armed_token=None, ack_deadline=None)
            return self._done(self._service(disarmed), "escalation_exhausted", reason)
        self._record("escalated", incident.number, level=level, round=round_)
        escalated = self._paged(incident, level, round_, len(self.state.alerts))
        return self._done(self._service(escalated), "escalated", reason)

    def _ack_expired(self, incident: Incident) -> Decision:
        self._record("ack_expired", incident.number, level=incident.level,
                     round=incident.round)
        unacked = incident._replace(acknowledged=False, armed_token=None, ack_deadline=None)
        paged = self._paged(unacked, incident.level, incident.round, len(self.state.alerts))
        return self._done(self._service(paged), "ack_expired")

    def _paged(self, incident: Incident, level: int, round_: int, firing: int) -> Incident:
        """Page `level` of `incident` (its next page number) and arm its ack timeout.

        Each target is resolved now: a rotation to whoever is on call, a user to all of
        their contacts. A level that reaches nobody pages the fallback, if there is one."""
        page, number, sid, now = incident.page + 1, incident.number, self.sid, self.now
        policy, message = incident.policy, incident.message
        token = token_for(sid, number, level, round_, page)
        deadline = now + self.ack_timeout
        reached = self._reach(policy.level(level).targets)
        if not reached:
            self._record("no_one_on_call", number, level=level, round=round_)
            reached = [Reached(contact, None, "fallback") for contact in self.fmt.fallback]
        head = headline(sid, number, level)
        if policy.repeat:
            head += f", round {round_} of {policy.rounds}"
        more = f"+{firing - 1} more firing" if firing > 1 else ""
        self._send(number, level, round_, page, reached, message, head, more,
                   incident.reply_code, f"{sid}/{number}/r{round_}/l{level}/p{page}/")
        self.effects.append(ArmTimer(sid, token, self.ack_timeout, deadline))
        uris = frozenset(r.contact.uri for r in reached)
        return Incident(number, message, policy, level, False, token, deadline, round_, page,
                        frozenset(), incident.opened_at, incident.acknowledged_by,
                        incident.acks, incident.legacy, incident.reply_code,
                        incident.paged | uris if incident.paged else uris, uris)

    def _reach(self, targets: tuple[Target, ...]) -> list[Reached]:
        """The contacts `targets` stand for now, each once, in order."""
        reached: dict[str, Reached] = {}
        resolve = self.resolve
        for target in targets:
            if isinstance(target, EmailTarget | SmsTarget):
                reached.setdefault(target.uri, Reached(target, None, None))
            elif resolve is not None:
                for found in resolve(target, self.now):
                    reached.setdefault(found.contact.uri, found)
        return list(reached.values())

    def _send(self, number: int, level: int, round_: int, page: int,  # noqa: PLR0917
              reached: list[Reached], message: str, head: str, more: str, code: str | None,
              prefix: str) -> None:
        """One page to each contact reached, rendered once per channel (and per mail when
        the mail carries its own links), each recorded in the timeline."""
        sid, now, fmt = self.sid, self.now, self.fmt
        flat = one_line(message)
        mail = sms = ("", "")  # (subject, text)
        if any(isinstance(r.contact, EmailTarget) for r in reached):
            mail = (subject(sid, flat, f"({more})" if more else ""),
                    mail_body(head, message, more))
        if any(isinstance(r.contact, SmsTarget) for r in reached):
            reply = f"Reply ACK {code} to acknowledge, RES {code} to resolve." if code else ""
            sms = ("", sms_text(head, flat, fmt, " ".join(filter(None, (more, reply)))))
        effects = self.effects
        for contact, user, via in reached:
            by_mail = isinstance(contact, EmailTarget)
            text = mail if by_mail else sms
            if by_mail and fmt.links is not None:  # links are bound to their contact
                text = (mail[0], mail_body(head, message, more,
                                           self._links(fmt.links, number, contact.uri)))
            effects.append(Notify(sid, number, level, contact, text[0], text[1],
                                  prefix + contact.uri, round_, page,
                                  None if by_mail else code))
            effects.append(Record(sid, TimelineEntry(now, "paged", number, level, round_,
                                                     contact.masked,
                                                     "mail" if by_mail else "sms",
                                                     user=user, via=via)))

    def _links(self, links: Links, number: int, uri: str) -> str:
        """The lines a mail ends with: Acknowledge, Resolve, and the incident's page."""
        target = links.digest(uri)
        ack = links.respond_url(claim_for("ack", self.sid, number, target, self.now))
        res = links.respond_url(claim_for("res", self.sid, number, target, self.now))
        page = links.url(f"/services/{self.sid}/incidents/{number}")
        return f"Acknowledge: {ack}\nResolve: {res}\nIncident: {page}"

    # -- failed pages ------------------------------------------------------------

    def page_failed(self, number: int, page: int, level: int, round_: int,
                    target: str) -> Decision:
        incident = self.state.incident
        if incident is None or (incident.number, incident.page, incident.level,
                                incident.round) != (number, page, level, round_) \
                or incident.acknowledged or incident.armed_token is None \
                or target in incident.failed:
            return self._ignored("stale_delivery")
        failed = incident.failed | {target}
        if failed >= incident.page_targets:
            return self._escalate(incident, "delivery_failed")
        noted = incident._replace(failed=failed)
        return self._done(self._service(noted), "page_failed")

    # -- heartbeats --------------------------------------------------------------

    def heartbeat(self) -> Decision:
        interval = self.policy.heartbeat
        if interval is None:
            return self._ignored("no_heartbeat")
        state = self.state
        token, beats = state.heartbeat_token, state.heartbeats
        if token is None:  # the first heartbeat, or the first since one was missed
            beats += 1
            token = heartbeat_token(self.sid, beats)
            self.effects.append(ArmTimer(self.sid, token, interval, self.now + interval))
        # Otherwise only the deadline moves: the armed timer, when it fires early, arms
        # itself again for what remains (one timer per service, however often it beats).
        armed = (token, self.now + interval, beats)
        if any(alert.key == HEARTBEAT_KEY for alert in state.alerts):
            # Back: the missed heartbeat's alert resolves, as a resolve of its key would.
            self.state = self._service(state.incident, heartbeat=armed)
            return self.resolve_key(HEARTBEAT_KEY, "heartbeat")
        return self._done(self._service(state.incident, heartbeat=armed), "heartbeat")

    def _heartbeat_due(self) -> Decision:
        state = self.state
        interval = self.policy.heartbeat
        deadline = state.heartbeat_deadline
        if interval is None:  # heartbeats were removed from the config: forget the countdown
            return self._done(self._service(state.incident, heartbeat=(None, None,
                                                                       state.heartbeats)),
                              "heartbeat_disarmed")
        if deadline is not None and self.now < deadline:  # heartbeats came meanwhile
            assert state.heartbeat_token is not None
            self.effects.append(ArmTimer(self.sid, state.heartbeat_token,
                                         deadline - self.now, deadline))
            return Decision(state, tuple(self.effects), "timer_rearmed")
        self.state = self._service(state.incident, heartbeat=(None, None, state.heartbeats))
        decision = self.fire(HEARTBEAT_KEY, f"no heartbeat for {_duration(interval)}")
        if decision.event == "ignored":  # its alert already fires: just disarmed
            return self._done(self.state, "heartbeat_missed")
        return decision

    # -- maintenance ---------------------------------------------------------------

    def start_window(self, start: datetime, end: datetime, reason: str) -> Decision:
        if not start < end or end - start > MAX_WINDOW or end <= self.now:
            return self._ignored("invalid_window")
        number = self.state.windows_opened + 1
        window = Window(number, start, end, reason)
        self.effects.append(ArmTimer(self.sid, window_token(self.sid, number),
                                     end - self.now, end))
        return self._done(self._service(self.state.incident,
                                        windows=(*self.state.windows, window),
                                        windows_opened=number), "maintenance_started")

    def end_window(self, number: int) -> Decision:
        state = self.state
        windows = tuple(window for window in state.windows if window.id != number)
        if len(windows) == len(state.windows):
            return self._ignored("unknown_window")
        self.state = self._service(state.incident, windows=windows)
        if self.state.incident is None and self.state.alerts \
                and not self.state.in_maintenance(self.now):
            # What fired during the window now pages, as though it had just arrived.
            self.state = self._open(self.state.alerts)
        return self._done(self.state, "maintenance_ended")


def _duration(delta: timedelta) -> str:
    """5m, 90s, 1h30m: how a config wrote it."""
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") \
        + (f"{seconds}s" if seconds else "")
    return text or "0s"
