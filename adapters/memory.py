"""In-memory adapters that record what they did: for tests, demos and embedding."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from pager_actors.cluster import shard_of
from pager_actors.domain import (
    ArmedTimer,
    Command,
    EscalationPolicy,
    IncidentSummary,
    MonitoredService,
    Notify,
    Record,
    TimelineEntry,
)
from pager_actors.domain.model import reply_codes_of
from pager_actors.domain.timeline import summarize
from pager_actors.oncall import Override
from pager_actors.ports import DeliveryResult, Outcome, Reply, Transition, VersionConflictError


class InMemoryPolicyRepository:
    """Escalation policies by service id, changeable at run time."""

    def __init__(self, policies: Iterable[EscalationPolicy] = ()) -> None:
        self._policies = {policy.service_id: policy for policy in policies}

    def get(self, service_id: str) -> EscalationPolicy | None:
        return self._policies.get(service_id)

    def put(self, policy: EscalationPolicy) -> None:
        self._policies[policy.service_id] = policy

    def remove(self, service_id: str) -> None:
        self._policies.pop(service_id, None)

    def replace(self, policies: Iterable[EscalationPolicy]) -> None:
        """Swap in a whole new set at once (a config reload): readers see old or new."""
        self._policies = {policy.service_id: policy for policy in policies}

    def service_ids(self) -> list[str]:
        """Every service id, in the order the policies were given."""
        return list(self._policies)


@dataclass(frozen=True, slots=True)
class SentMail:
    to: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class SentSms:
    to: str
    text: str


class RecordingMailSender:
    """Records every email in `sent`, in the order sent."""

    def __init__(self) -> None:
        self.sent: list[SentMail] = []

    def send_mail(self, to: str, subject: str, body: str) -> None:
        self.sent.append(SentMail(to, subject, body))


class RecordingSmsSender:
    """Records every SMS in `sent`, in the order sent."""

    def __init__(self) -> None:
        self.sent: list[SentSms] = []

    def send_sms(self, to: str, text: str) -> None:
        self.sent.append(SentSms(to, text))


@dataclass(frozen=True, slots=True)
class TimerCall:
    """One `set_timeout` call recorded by ManualTimer."""

    service_id: str
    delay: timedelta
    token: str
    due: timedelta


class ManualTimer:
    """A timer that only fires when a test advances its clock.

    `armed` records every `set_timeout` call; `advance()` fires the timeouts
    that fall due, in due order, through the attached callback, and returns
    what the callback returned (the pager's futures).
    """

    def __init__(self) -> None:
        self.armed: list[TimerCall] = []
        self.now = timedelta(0)
        self._waiting: list[TimerCall] = []
        self._lock = threading.Lock()
        self._on_timeout: Callable[[str, str], object] | None = None

    def attach(self, on_timeout: Callable[[str, str], object]) -> None:
        self._on_timeout = on_timeout

    def set_timeout(self, service_id: str, delay: timedelta, token: str) -> None:
        with self._lock:
            timeout = TimerCall(service_id, delay, token, self.now + delay)
            self.armed.append(timeout)
            self._waiting.append(timeout)

    def pending(self) -> list[TimerCall]:
        """Armed timeouts that have not fired yet."""
        with self._lock:
            return list(self._waiting)

    def advance(self, by: timedelta) -> list[object]:
        """Move the clock forward by `by` and fire everything now due."""
        with self._lock:
            self.now += by
            due = sorted((t for t in self._waiting if t.due <= self.now), key=lambda t: t.due)
            self._waiting = [t for t in self._waiting if t.due > self.now]
        if due and self._on_timeout is None:
            raise RuntimeError("ManualTimer fired but no pager is attached")
        return [self._on_timeout(t.service_id, t.token) for t in due]  # type: ignore[misc]


class ManualClock:
    """An AlarmClock (`pager_actors.ports`) that moves only when a test advances it.

    `call_later` callbacks run in the thread that calls `advance()`, in due
    order, before it returns: a throttle's wake-up has happened by then.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._due: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        with self._lock:
            heapq.heappush(self._due, (self._now + max(delay, 0.0), next(self._order), fn))

    def pending(self) -> int:
        """Callbacks not yet due."""
        with self._lock:
            return len(self._due)

    def advance(self, seconds: float) -> int:
        """Move the clock forward and run every callback now due (also those that the
        callbacks ask for, if due); how many ran."""
        with self._lock:
            self._now += seconds
        ran = 0
        while True:
            with self._lock:
                if not self._due or self._due[0][0] > self._now:
                    return ran
                _, _, fn = heapq.heappop(self._due)
            fn()
            ran += 1


class InMemoryStore:
    """The default store: committed states, the outbox and timelines in dicts, lost with the
    process.

    A service's record is its frozen `MonitoredService` (a few hundred bytes;
    the policy snapshot is shared with the repository, not copied).
    """

    group_commit: ClassVar[bool] = False
    RECENT_SENDS = 10_000  # deliveries remembered for `recent_sends`, newest kept

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._states: dict[str, MonitoredService] = {}
        self._pending: dict[str, Notify] = {}
        self._timelines: dict[tuple[str, int | None], list[TimelineEntry]] = {}
        self._overrides: dict[str, list[Override]] = {}
        self._override_ids = 0
        # (contact URI, delivered at, the delivery or bundle that carried it)
        self._sent: deque[tuple[str, datetime, str]] = deque(maxlen=self.RECENT_SENDS)
        self.failed: dict[str, str] = {}
        self.carried_by: dict[str, str] = {}  # a bundled row's delivery id -> its bundle
        self.withdrawn: set[str] = set()

    def load(self, service_id: str) -> MonitoredService | None:
        return self._states.get(service_id)

    def commit(self, transitions: Sequence[Transition],
               deliveries: Sequence[DeliveryResult] = ()) -> None:
        with self._lock:
            for t in transitions:  # check everything before changing anything
                stored = self._states.get(t.state.service_id)
                found = stored.version if stored is not None else 0
                if found != t.expected_version:
                    raise VersionConflictError(t.state.service_id, t.expected_version, found)
            for t in transitions:
                self._states[t.state.service_id] = t.state
                for effect in t.effects:
                    if isinstance(effect, Notify):
                        self._pending[effect.key] = effect
                    elif isinstance(effect, Record):
                        self._append(effect.service_id, effect.entry)
            if deliveries:
                self._settle(deliveries)

    def _append(self, service_id: str, entry: TimelineEntry) -> None:
        self._timelines.setdefault((service_id, entry.incident), []).append(entry)

    def _settle(self, deliveries: Sequence[DeliveryResult]) -> None:
        now = self._clock()
        for result in deliveries:
            notify = self._pending.pop(result.delivery_id, None)
            if notify is not None:
                self._append(notify.service_id, notify.outcome(now, result.error,
                                                               result.withdrawn))
                if result.error is None and not result.withdrawn:
                    self._sent.append((notify.target.uri, now,
                                       result.carried_by or result.delivery_id))
            if result.withdrawn:
                self.withdrawn.add(result.delivery_id)
            elif result.error is not None:
                self.failed[result.delivery_id] = result.error
            if result.carried_by is not None:
                self.carried_by[result.delivery_id] = result.carried_by

    def armed_timers(self, *, shards: Collection[int] | None = None) -> list[ArmedTimer]:
        with self._lock:
            return [timer for state in self._states.values() for timer in state.timers()
                    if shards is None or shard_of(state.service_id) in shards]

    def undelivered(self, *, shards: Collection[int] | None = None) -> list[Notify]:
        with self._lock:
            return [page for page in self._pending.values()
                    if shards is None or shard_of(page.service_id) in shards]

    def open_incidents(self) -> int:
        with self._lock:
            return sum(1 for s in self._states.values() if s.incident is not None)

    def recent_sends(self, since: datetime) -> list[tuple[str, datetime]]:
        """From the last RECENT_SENDS deliveries."""
        with self._lock:
            first: dict[str, tuple[str, datetime]] = {}
            for uri, at, carrier in self._sent:
                if at >= since:
                    first.setdefault(carrier, (uri, at))
        return sorted(first.values(), key=lambda send: send[1])

    def reply_codes(self, *, shards: Collection[int] | None = None
                    ) -> list[tuple[str, str, int, datetime | None]]:
        with self._lock:
            return reply_codes_of([state for state in self._states.values()
                                   if shards is None or shard_of(state.service_id) in shards])

    def timeline(self, service_id: str, incident: int) -> list[TimelineEntry]:
        with self._lock:
            return list(self._timelines.get((service_id, incident), ()))

    def incidents(self, service_id: str, limit: int = 50) -> list[IncidentSummary]:
        with self._lock:
            numbers = sorted((n for sid, n in self._timelines if sid == service_id
                              and n is not None), reverse=True)[:limit + 1]
            found = (summarize(n, self._timelines[(service_id, n)]) for n in numbers)
            return [summary for summary in found if summary is not None][:limit]

    def prune_timeline(self, before: datetime) -> int:
        """Old entries go, except those of incidents still open."""
        removed = 0
        with self._lock:
            open_now = {(s.service_id, s.incident.number) for s in self._states.values()
                        if s.incident is not None}
            for key, entries in list(self._timelines.items()):
                if key in open_now:
                    continue
                kept = [entry for entry in entries if entry.at >= before]
                removed += len(entries) - len(kept)
                if kept:
                    self._timelines[key] = kept
                else:
                    del self._timelines[key]
        return removed

    def add_override(self, rotation: str, user: str, start: datetime, end: datetime,
                     created: datetime) -> Override:
        with self._lock:
            self._override_ids += 1
            override = Override(self._override_ids, user, start, end)
            self._overrides.setdefault(rotation, []).append(override)
            return override

    def remove_override(self, rotation: str, override: int) -> bool:
        with self._lock:
            kept = [o for o in self._overrides.get(rotation, []) if o.id != override]
            removed = len(kept) != len(self._overrides.get(rotation, []))
            self._overrides[rotation] = kept
            return removed

    def overrides(self) -> dict[str, list[Override]]:
        with self._lock:
            return {rotation: list(found) for rotation, found in self._overrides.items()
                    if found}

    def prune_overrides(self, before: datetime) -> int:
        with self._lock:
            removed = 0
            for rotation, found in self._overrides.items():
                kept = [o for o in found if o.end >= before]
                removed += len(found) - len(kept)
                self._overrides[rotation] = kept
            return removed

    def probe(self) -> None:
        """Memory always takes a write."""

    def close(self) -> None:
        pass


class InMemoryOwnership:
    """An Ownership (`pager_actors.ports`) set by hand: the shards this node holds, and the
    local deadline of its leases on `clock` (None: they never lapse).

    `may_send` turns false once the deadline passes, as a node paused past its
    lease would find; `owns` does not (the lease row is still this node's until
    another takes it).
    """

    def __init__(self, shards: Iterable[int] = (), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._shards = frozenset(shards)
        self._clock = clock
        self.deadline: float | None = None

    @property
    def shards(self) -> frozenset[int]:
        return self._shards

    def hold(self, shards: Iterable[int]) -> None:
        """These shards' leases are now this node's."""
        self._shards = self._shards | frozenset(shards)

    def drop(self, shards: Iterable[int]) -> None:
        """These shards' leases are gone (lost or handed over)."""
        self._shards = self._shards - frozenset(shards)

    def owns(self, service_id: str) -> bool:
        return shard_of(service_id) in self._shards

    def may_send(self, service_id: str) -> bool:
        return self.owns(service_id) and (self.deadline is None
                                          or self._clock() < self.deadline)


class InMemorySendLedger:
    """A SendLedger (`pager_actors.ports`) in one process, shared by the pagers a test runs
    as the nodes of one cluster: the sends claimed per (channel, contact), on `clock`
    (monotonic seconds; tests pass a `ManualClock`'s `now`). Thread-safe.

    `claims` records every claim as (channel, contact, allowed); set `failing` to
    an exception to make each claim raise it (a ledger out of reach).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, str], deque[float]] = {}
        self.claims: list[tuple[str, str, bool]] = []
        self.failing: Exception | None = None

    def claim(self, channel: str, contact: str, limit: int, window: float) -> float | None:
        with self._lock:
            if self.failing is not None:
                raise self.failing
            now = self._clock()
            sent = self._sent.setdefault((channel, contact), deque())
            while sent and sent[0] <= now - window:  # half-open: a send counts until +window
                sent.popleft()
            allowed = len(sent) < limit
            self.claims.append((channel, contact, allowed))
            if allowed:
                sent.append(now)
                return None
            return max(sent[-limit] + window - now, 1e-3)

    def sends(self, channel: str, contact: str) -> list[float]:
        """When the sends to `contact` still counted were claimed."""
        with self._lock:
            return list(self._sent.get((channel, contact), ()))


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One command a RecordingForwarder was given."""

    service_id: str
    command: Command
    reply: Reply[Outcome]


class RecordingForwarder:
    """A Forwarder (`pager_actors.ports`) that records each command in `forwarded`, then
    hands it to `to` if given (a test's stand-in for the owner), else leaves its reply for
    the test to resolve."""

    def __init__(self, to: Callable[[Forwarded], object] | None = None) -> None:
        self.forwarded: list[Forwarded] = []
        self._to = to
        self._lock = threading.Lock()

    def forward(self, service_id: str, command: Command, reply: Reply[Outcome]) -> None:
        sent = Forwarded(service_id, command, reply)
        with self._lock:
            self.forwarded.append(sent)
        if self._to is not None:
            self._to(sent)
