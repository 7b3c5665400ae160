"""Adapter actors: a small pool of them per port, so a slow gateway holds up only its own sends.

Service actors (or the store writer, once a commit is durable) hand their
effects to the `Dispatcher` and move on. Each channel (mail, SMS, timer) has
`DeliveryLanes` and `concurrency` adapter actors: a send for a recipient who
already has one in flight waits behind it, so a recipient whose gateway hangs
holds one actor and never all of them. Each actor calls its port one effect
at a time, catches and logs any failure, counts it, reports the delivery
result to the outbox, and never lets one target's failure stop the next. If an
actor itself crashes, the Dispatcher puts its unfinished effects back in their
lanes and starts a new one.

With a throttle (`Throttling`), mail and SMS lanes hold back a contact over
its limit; what waited goes out as one `Bundle` once the window allows. The
actor sends it as one message (`pager_actors.domain.bundle`), then settles
every page it carried with that one outcome and `carried_by` its id, and
tells each page's service of a final failure, as for a single page. An
acknowledged or closed incident's `Withdraw` takes its pages still waiting in
throttled lanes out (their rows are settled `withdrawn`); status updates and
pages already handed to an actor go out.

In a cluster (`HeldShards`), a mail or SMS actor asks, just before each port
call, whether each page's service may still be paged from here (its shard is
run here and the lease's local deadline has not passed). A page that may not
is *fenced*: not sent, its row neither delivered nor failed (still pending, for
the shard's next owner), logged `send_fenced` and counted `sends_fenced`; a
bundle goes out with the pages that may. When shards are abandoned,
`Dispatcher.hand_over` takes their pages still waiting in the lanes out the
same way (`DeliveryLanes.withdraw`, as for a `Withdraw`, but settling nothing).
Timers are local to a node and need no check: one that fires for a service the
node no longer runs is dropped by the facade.

A cluster's throttle (`Pager.start(ledger=...)`, a `SendLedger`): each node's
lanes count only that node's sends, so just before a throttled send that is not
a retry (after the fence), the actor also claims it in the ledger, which counts
every node's. A refused claim sends nothing: the job goes back to the front of
its recipient's lane and the recipient is held until the instant the ledger
named (`DeliveryLanes.defer`), so it then leaves in a bundle with whatever
else waited, as after a local hold; it is logged `send_refused_by_ledger` and
counted `ledger_refusals`. A ledger that cannot be asked fails open: the page
goes, `throttle_ledger_failed` is logged and `throttle_ledger_failures`
counted (the node's own budget still holds), since a page matters more than a
budget.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

import pykka

from pager_actors._counters import Counters
from pager_actors._inbox import Envelope, InboxClosed, ServiceInbox
from pager_actors._lanes import DeliveryLanes, Holding, LanesClosed
from pager_actors._shards import HeldShards
from pager_actors._throttle import SendLog, Throttling
from pager_actors._work import WorkTracker
from pager_actors.domain import (
    ArmTimer,
    Contact,
    Effect,
    EmailTarget,
    Notify,
    Record,
    SmsTarget,
    Withdraw,
    mask_target,
    mask_text,
    parse_contact,
)
from pager_actors.domain.bundle import bundle_mail, bundle_sms
from pager_actors.logs import get_logger, info_enabled
from pager_actors.ports import (
    AlarmClock,
    DeliveryResult,
    MailSender,
    SendLedger,
    SmsSender,
    Timer,
    TransientDeliveryError,
)
from pager_actors.scheduler import Scheduler

log = get_logger("pager_actors.adapters")

Settle = Callable[[DeliveryResult], None]

# A refused claim holds its recipient at least this long, whatever the ledger said: the
# lanes never ask it again at once, in a loop.
LEDGER_MIN_WAIT = 0.01

# A job queued while some actors are busy waits for one of them to finish it; an idle actor
# takes it only if it waited this long (see DeliveryLanes.check). A port that answers in
# microseconds keeps one actor busy instead of waking a thread per effect; a slow or hung
# one gets every idle actor working within this delay.
HELP_AFTER = 0.005
# A page whose shard is still run here but whose lease renewal is late (past the local send
# deadline) is offered again this often, until the lease is renewed or let go.
LATE_RECHECK = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """How a transient delivery failure is retried: `attempts` in all, backoff doubling."""

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.5, 1.5))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff) * self.jitter())


class Bundle(NamedTuple):
    """Pages to one contact that a throttle held back, sent as one message. `id` is unique
    (`bundle/<uuid>`): each page's outbox row is marked `carried_by` it."""

    id: str
    pages: tuple[Notify, ...]

    @property
    def target(self) -> Contact:
        return self.pages[0].target


Sendable = Effect | Bundle


@dataclass(frozen=True, slots=True)
class Retry:
    """An effect's next attempt, after a transient failure. In a cluster, `terms` holds
    the term (`HeldShards.term`) of each of its pages' shards when it failed."""

    effect: Sendable
    attempt: int
    terms: tuple[int, ...] | None = None


Job = Sendable | Retry
Lanes = DeliveryLanes[ServiceInbox, Job]


def recipient(job: Job) -> Hashable:
    """Who a job is for: the target of a notification or bundle, the service of a timer."""
    effect = job.effect if type(job) is Retry else job
    return effect.service_id if type(effect) is ArmTimer else effect.target  # type: ignore[union-attr]


def _pages(job: Job) -> tuple[Notify, ...]:
    """The pages a mail or SMS job carries."""
    effect = job.effect if isinstance(job, Retry) else job
    if isinstance(effect, Bundle):
        return effect.pages
    assert isinstance(effect, Notify), effect
    return (effect,)


def _page_count(job: Job) -> int:
    effect = job.effect if isinstance(job, Retry) else job
    return len(effect.pages) if isinstance(effect, Bundle) else 1


def bundle(jobs: list[Job]) -> Bundle:
    """Jobs that waited for one contact, as one bundle (bundles and retries among them
    unpacked)."""
    return Bundle(f"bundle/{uuid.uuid4()}", tuple(page for job in jobs for page in _pages(job)))


def _is_retry(job: Job) -> bool:
    return type(job) is Retry


class ChannelCounts:
    """Deliveries counted by one adapter actor. Only that actor writes it: no lock."""

    __slots__ = ("failed", "retried", "succeeded")

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.retried = 0


@dataclass(frozen=True)
class Wiring:
    """What an adapter actor is connected to."""

    work: WorkTracker
    lanes: Lanes
    counts: ChannelCounts  # this actor's own: several actors share a channel
    settle: Settle | None  # reports delivery results to the outbox
    on_exit: Callable[[ServiceInbox, list[Job], bool], None]  # (inbox, unfinished, crashed)
    retry_later: Callable[[float, Retry], bool]
    retry: RetryPolicy
    page_failed: Callable[[Notify], object] | None = None  # tells the service, to escalate
    shards: HeldShards | None = None  # in a cluster: whose pages may be sent from here
    counters: Counters | None = None
    # In a cluster with a SendLedger: None if a send may go now, else the instant (on the
    # throttle's clock) before which it may not.
    claim: Callable[[Notify | Bundle], float | None] | None = None


class _PortActor(pykka.ThreadingActor):
    channel: ClassVar[str]
    done: ClassVar[str] = "sent"
    # A port call can hang on the network: such a thread must not keep the process alive
    # after Pager.stop() gave up on it (its outbox row stays pending for the next start).
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> ServiceInbox:
        return ServiceInbox()

    def __init__(self, wiring: Wiring) -> None:
        super().__init__()
        self._work = wiring.work
        self._lanes = wiring.lanes
        self._settle = wiring.settle
        self._counts = wiring.counts
        self._on_exit = wiring.on_exit
        self._retry_later = wiring.retry_later
        self._retry = wiring.retry
        self._page_failed = wiring.page_failed
        self._shards = wiring.shards if self.channel != "timer" else None
        self._counters = wiring.counters
        self._claim = wiring.claim if self.channel != "timer" else None
        self._log = log.bind(channel=self.channel)
        self._log_each = info_enabled(self._log)
        self._done_event = f"{self.channel}_{self.done}"
        self._current: Any = None  # the job being handled, until its port was called

    def on_receive(self, message: Any) -> None:
        """Handle the job handed over, then the next ones the lanes give, until none is left.

        Asking the lanes directly costs no inbox round trip; the inbox only
        wakes an idle actor (or carries pykka's stop request).
        """
        inbox: ServiceInbox = self.actor_inbox  # type: ignore[assignment]
        job: Job | None = message
        while job is not None:
            self._current = job
            deferred = self._deliver(job)
            job = self._lanes.next(inbox) if deferred is None else self._defer(inbox, *deferred)

    def _deliver(self, job: Job) -> tuple[Notify | Bundle, float] | None:
        """Send `job` (what of it the fence allows). Returns what the ledger refused and the
        instant it may go, or None."""
        effect, attempt = (job.effect, job.attempt) if isinstance(job, Retry) else (job, 1)
        shards = self._shards
        if shards is None:
            refused = self._ledger_refusal(effect, attempt)
            if refused is None:
                self._attempt(effect, attempt)
            return refused
        terms = job.terms if isinstance(job, Retry) else None
        cleared = self._fence(effect, shards, terms, attempt)  # type: ignore[arg-type]
        if cleared is None:
            self._current = None
            return None
        try:
            refused = self._ledger_refusal(cleared, attempt)
            if refused is None:
                self._attempt(cleared, attempt)
            return refused
        finally:
            for page in _pages(cleared):
                shards.end_send(page.service_id)

    def _ledger_refusal(self, effect: Sendable, attempt: int
                        ) -> tuple[Notify | Bundle, float] | None:
        """None if `effect` may be sent now; else it and the instant the ledger allows it.
        A retry is not claimed: its first attempt was."""
        if self._claim is None or attempt > 1:
            return None
        assert type(effect) is Notify or type(effect) is Bundle, effect
        until = self._claim(effect)
        return None if until is None else (effect, until)

    def _defer(self, inbox: ServiceInbox, effect: Notify | Bundle, until: float) -> Job | None:
        """The ledger refused `effect`: back to its recipient's lane, held until `until`.
        Returns this actor's next job."""
        self._current = None  # the lanes have it now
        if self._counters is not None:
            self._counters.inc("ledger_refusals")
        if self._log_each:
            self._log.info("send_refused_by_ledger", **_describe(effect))
        try:
            return self._lanes.defer(inbox, effect, until)
        except LanesClosed:  # stopping: its rows stay pending for the next start
            self._log.warning(f"{self.channel}_deferred", error="pager stopped",
                              **_describe(effect))
            self._work.end(_page_count(effect))
            return None

    def _fence(self, effect: Notify | Bundle, shards: HeldShards,
               terms: tuple[int, ...] | None, attempt: int) -> Notify | Bundle | None:
        """The part of `effect` that may be sent from here (None: nothing), each of its pages
        counted in flight. The others wait or are fenced: a page of a shard still run
        here whose lease renewal is late is tried again shortly (`LATE_RECHECK`); any
        other is fenced, its work ends and its row stays pending."""
        pages = _pages(effect)
        given = [terms[i] if terms else None for i in range(len(pages))]
        allowed = [shards.start_send(page.service_id, term)
                   for page, term in zip(pages, given, strict=True)]
        if all(allowed):
            return effect
        waiting = {i for i, (page, ok) in enumerate(zip(pages, allowed, strict=True))
                   if not ok and shards.late(page.service_id, given[i])}
        if waiting:
            self._recheck([pages[i] for i in sorted(waiting)], attempt, shards)
        fenced = [page for i, (page, ok) in enumerate(zip(pages, allowed, strict=True))
                  if not ok and i not in waiting]
        self._work.end(len(fenced))
        if self._counters is not None:
            self._counters.inc("sends_fenced", len(fenced))
        for page in fenced:
            self._log.warning("send_fenced", **_describe(page))
        kept = tuple(page for page, ok in zip(pages, allowed, strict=True) if ok)
        if not kept:
            return None
        assert type(effect) is Bundle  # a single page is all allowed or all fenced
        return Bundle(effect.id, kept)

    def _recheck(self, pages: list[Notify], attempt: int, shards: HeldShards) -> None:
        """Pages held back only by a late lease renewal: offered again in LATE_RECHECK s,
        in this term, the same attempt (nothing was sent)."""
        effect: Notify | Bundle = pages[0] if len(pages) == 1 else \
            Bundle(f"bundle/{uuid.uuid4()}", tuple(pages))
        terms = tuple(shards.term(page.service_id) for page in pages)
        if not self._retry_later(LATE_RECHECK, Retry(effect, attempt, terms)):
            self._work.end(len(pages))  # stopping: the rows stay pending for the next start
            return
        if self._counters is not None:
            self._counters.inc("sends_waiting_for_lease", len(pages))
        for page in pages:
            self._log.info("send_waits_for_lease", **_describe(page))

    def _attempt(self, effect: Sendable, attempt: int) -> None:
        """Call the port; retry a transient failure later; report the outcome."""
        error: str | None = None
        try:
            try:
                self._call(effect)
            finally:
                self._current = None  # the port was called: never call it again for this effect
        except TransientDeliveryError as failure:
            if attempt < self._retry.attempts:
                if not self._schedule_retry(effect, attempt, failure):
                    # Stopping: not a final failure. The row stays pending for the next start.
                    self._log.warning(f"{self.channel}_deferred", error=_storable(failure),
                                      **_describe(effect))
                    self._work.end(_page_count(effect))
                return  # still pending work: the retry ends it
            error = _storable(failure)
        except Exception as failure:  # a port failure is reported, never fatal
            error = _storable(failure)
        self._report(effect, attempt, error)

    def _report(self, effect: Sendable, attempt: int, error: str | None) -> None:
        """Count and log the outcome, tell the services of failed pages, settle the rows."""
        if error is not None:
            self._counts.failed += 1
            self._log.warning(f"{self.channel}_failed", error=error, attempts=attempt,
                              **_describe(effect))
        else:
            self._counts.succeeded += 1
            if self._log_each:
                self._log.info(self._done_event, **_describe(effect))
        if type(effect) is ArmTimer:
            self._work.end()
            return
        pages = _pages(effect)
        if error is not None and self._page_failed is not None:
            # Before the result settles: its own work begins before this delivery's ends, so
            # flush() and stop() wait for it. A level whose every page failed escalates at once.
            for page in pages:
                self._page_failed(page)
        if self._settle is None:
            self._work.end(len(pages))
            return
        carrier = effect.id if type(effect) is Bundle else None
        for page in pages:  # each ends its unit of work once recorded
            self._settle(DeliveryResult(page.key, error, carrier))

    def _call(self, effect: Any) -> None:
        raise NotImplementedError

    def _schedule_retry(self, effect: Sendable, attempt: int, failure: Exception) -> bool:
        delay = self._retry.delay(attempt)
        terms = None if self._shards is None or type(effect) is ArmTimer \
            else tuple(self._shards.term(page.service_id) for page in _pages(effect))
        if not self._retry_later(delay, Retry(effect, attempt + 1, terms)):
            return False  # stopping: the outbox row stays pending for the next start
        self._counts.retried += 1
        self._log.warning(f"{self.channel}_retrying", error=_storable(failure),
                          attempt=attempt,
                          delay_s=round(delay, 3), **_describe(effect))
        return True

    def on_failure(self, *exc_info: Any) -> None:
        self._log.error(f"{self.channel}_actor_crashed", error=repr(exc_info[1]))
        self._exit(crashed=True)

    def on_stop(self) -> None:
        self._exit(crashed=False)

    def _exit(self, crashed: bool) -> None:
        """Hand the unfinished job and the inbox leftovers over, under the inbox lock."""
        first = [] if self._current is None else [self._current]
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(lambda left: self._on_exit(inbox, first + _jobs(left), crashed))


ERROR_MAX_CHARS = 500


def _storable(failure: BaseException) -> str:
    """A gateway's error as the outbox and the timeline may keep it: contacts masked
    (gateways echo them), at most 500 characters, and text UTF-8 can encode (a gateway's
    JSON can decode to a lone surrogate)."""
    text = mask_text(str(failure) or repr(failure))[:ERROR_MAX_CHARS]
    return text.encode("utf-8", "replace").decode("utf-8")


def _jobs(envelopes: list[Any]) -> list[Job]:
    """The jobs among a closed inbox's leftovers; a stop request left there is answered."""
    jobs = []
    for envelope in envelopes:
        if envelope.reply_to is not None:
            envelope.reply_to.set(None)
        else:
            jobs.append(envelope.message)
    return jobs


class MailActor(_PortActor):
    channel = "mail"

    def __init__(self, port: MailSender, wiring: Wiring) -> None:
        super().__init__(wiring)
        self._port = port

    def _call(self, effect: Notify | Bundle) -> None:
        assert isinstance(effect.target, EmailTarget)
        if type(effect) is Bundle:
            self._port.send_mail(effect.target.address, *bundle_mail(effect.pages))
        else:
            self._port.send_mail(effect.target.address, effect.subject, effect.text)  # type: ignore[union-attr]


class SmsActor(_PortActor):
    channel = "sms"

    def __init__(self, port: SmsSender, wiring: Wiring) -> None:
        super().__init__(wiring)
        self._port = port

    def _call(self, effect: Notify | Bundle) -> None:
        assert isinstance(effect.target, SmsTarget)
        text = bundle_sms(effect.pages) if type(effect) is Bundle else effect.text  # type: ignore[union-attr]
        self._port.send_sms(effect.target.number, text)


class TimerActor(_PortActor):
    channel = "timer"
    done = "armed"

    def __init__(self, port: Timer, wiring: Wiring) -> None:
        super().__init__(wiring)
        self._port = port

    def _call(self, effect: ArmTimer) -> None:
        self._port.set_timeout(effect.service_id, effect.delay, effect.token)


def _channel(effect: Sendable) -> str:
    if type(effect) is ArmTimer:
        return "timer"
    # timeline records never reach the adapters; withdrawals never reach a channel
    assert type(effect) is Notify or type(effect) is Bundle, effect
    return "mail" if type(effect.target) is EmailTarget else "sms"


def _describe(effect: Sendable) -> dict[str, object]:
    assert not isinstance(effect, Record | Withdraw), effect
    if isinstance(effect, Notify):
        return {"service": effect.service_id, "incident": effect.incident,
                "page_level": effect.level, "target": mask_target(effect.target)}
    if isinstance(effect, Bundle):
        return {"bundle": effect.id, "pages": len(effect.pages),
                "target": mask_target(effect.target)}
    return {"service": effect.service_id, "token": effect.token,
            "delay_s": effect.delay.total_seconds()}


def _withdrawable(withdraw: Withdraw) -> Callable[[Job], bool]:
    """Whether a waiting job is one of the incident's pages (not a status update, not a
    retry of a page a gateway already had, not a bundle)."""
    service_id, incident, _ = withdraw

    def match(job: Job) -> bool:
        return type(job) is Notify and job.incident == incident \
            and job.service_id == service_id and "/status/" not in job.key
    return match


class _Channel:
    """One channel: its lanes, its port, its live adapter actors, and every actor's counts."""

    def __init__(self, name: str, actor: type[_PortActor], port: Any,
                 schedule_check: Callable[[_Channel], None],
                 holding: Callable[[_Channel], Holding[Job] | None]) -> None:
        self.name = name
        self.actor = actor
        self.port = port
        self.holding = holding(self)
        self.lanes: Lanes = DeliveryLanes(recipient, lambda: schedule_check(self), self.holding)
        self.refs: dict[ServiceInbox, pykka.ActorRef[Any]] = {}
        self.counts: list[ChannelCounts] = []  # kept after an actor is gone: counts add up

    def totals(self) -> ChannelCounts:
        total = ChannelCounts()
        for counts in list(self.counts):
            total.succeeded += counts.succeeded
            total.failed += counts.failed
            total.retried += counts.retried
        return total


class Dispatcher:
    """Routes effects to the adapter actors through each channel's lanes, counting each as
    pending work.

    It also supervises the actors: a crashed one is replaced at once, and the
    effect it had not finished goes back to the front of its recipient's lane.
    """

    def __init__(self, work: WorkTracker, counters: Counters, scheduler: Scheduler,
                 retry: RetryPolicy, concurrency: dict[str, int] | None = None, *,
                 throttling: Throttling | None = None,
                 ledger: SendLedger | None = None) -> None:
        self._work = work
        self._counters = counters
        self._scheduler = scheduler
        self._retry = retry
        # set_timeout never blocks: one timer actor is enough.
        self._concurrency = {"mail": 1, "sms": 1, "timer": 1, **(concurrency or {})}
        self._channels: dict[str, _Channel] = {}
        self._settle: Settle | None = None
        self._page_failed: Callable[[Notify], object] | None = None
        self._shards: HeldShards | None = None
        self._throttling = throttling
        self._ledger = ledger
        self._clock: AlarmClock = (throttling and throttling.clock) or scheduler

    def start(self, mail: MailSender, sms: SmsSender, timer: Timer,
              settle: Settle | None,
              page_failed: Callable[[Notify], object] | None = None, *,
              shards: HeldShards | None = None) -> None:
        self._settle = settle
        self._page_failed = page_failed
        self._shards = shards
        check, hold = self._schedule_check, self._holding
        for channel in (_Channel("mail", MailActor, mail, check, hold),
                        _Channel("sms", SmsActor, sms, check, hold),
                        _Channel("timer", TimerActor, timer, check, hold)):
            self._channels[channel.name] = channel
            for _ in range(self._concurrency[channel.name]):
                self._spawn(channel)

    def _holding(self, channel: _Channel) -> Holding[Job] | None:
        """What a throttled channel's lanes need; None for a channel without a throttle."""
        throttle = self._throttling.of(channel.name) if self._throttling else None
        if throttle is None:
            return None
        clock = self._clock

        def wake(delay: float) -> None:
            # Once the clock is closed the pager is stopping: held pages stay pending for
            # the next start.
            with contextlib.suppress(RuntimeError):
                clock.call_later(delay, lambda: self._wake(channel))

        def held(pages: int) -> None:  # held pages are not work flush() can wait for
            self._work.add(-pages)

        return Holding(SendLog(throttle), clock.now, wake, bundle, _is_retry, _page_count,
                       held)

    def _claimer(self, channel: _Channel) -> Callable[[Notify | Bundle], float | None] | None:
        """How a throttled channel's actors claim a send in the cluster's ledger (None: no
        ledger, or no throttle): None if it may go now, else the instant it may, on the
        throttle's clock. A ledger that fails lets the send go (fail open)."""
        ledger = self._ledger
        if ledger is None or channel.holding is None:
            return None
        throttle = channel.holding.sends.throttle
        limit, window = throttle.max_per_contact, throttle.window.total_seconds()
        name, clock, counters = channel.name, self._clock, self._counters

        def claim(effect: Notify | Bundle) -> float | None:
            try:
                wait = ledger.claim(name, effect.target.uri, limit, window)
            except Exception as failure:  # an unreachable ledger must not stop a page
                counters.inc("throttle_ledger_failures")
                log.warning("throttle_ledger_failed", channel=name, error=_storable(failure),
                            **_describe(effect))
                return None
            return None if wait is None else clock.now() + max(wait, LEDGER_MIN_WAIT)
        return claim

    def restore_throttles(self, sends: list[tuple[str, datetime]], now: datetime) -> int:
        """Count sends made before this start (from the store: contact URI, when) against
        the throttles, so a restart does not reset them. Returns how many were counted."""
        counted = 0
        mono = self._clock.now()
        for channel in self._channels.values():
            if channel.holding is None:
                continue
            window = channel.holding.sends.throttle.window
            mine = [(parse_contact(uri), mono - (now - at).total_seconds())
                    for uri, at in sends if now - at < window
                    and uri.startswith("mailto:" if channel.name == "mail" else "sms:")]
            channel.lanes.load_sends(mine)
            counted += len(mine)
        return counted

    def _wake(self, channel: _Channel) -> None:
        for idle, job in channel.lanes.wake():
            self._hand(channel, idle, job)

    def _spawn(self, channel: _Channel) -> None:
        counts = ChannelCounts()
        channel.counts.append(counts)

        def on_exit(inbox: ServiceInbox, unfinished: list[Job], crashed: bool) -> None:
            self._exited(channel, inbox, unfinished, crashed)

        ref = channel.actor.start(channel.port, Wiring(
            self._work, channel.lanes, counts, self._settle, on_exit, self._retry_later,
            self._retry, self._page_failed, self._shards, self._counters,
            self._claimer(channel)))
        inbox: ServiceInbox = ref.actor_inbox  # type: ignore[assignment]
        channel.refs[inbox] = ref
        first = channel.lanes.join(inbox)
        if first is not None:
            self._hand(channel, inbox, first)

    def _exited(self, channel: _Channel, inbox: ServiceInbox, unfinished: list[Job],
                crashed: bool) -> None:
        """Called by an adapter actor that crashed or stopped, under its closed inbox's lock."""
        channel.refs.pop(inbox, None)
        try:
            started = channel.lanes.retire(inbox, unfinished)
        except LanesClosed:
            for job in unfinished:
                self._drop(job, "pager stopped")
            return
        for idle, job in started:
            self._hand(channel, idle, job)
        # A crash is a bug: replace the actor. One stopped from outside is not replaced
        # (pykka's stop_all must end with no actor left); the others take its recipients.
        if crashed:
            self._counters.inc("adapter_restarts")
            log.error("adapter_actor_restarted", channel=channel.name, requeued=len(unfinished))
            self._spawn(channel)

    def _schedule_check(self, channel: _Channel) -> None:
        try:
            self._scheduler.call_later(HELP_AFTER, lambda: self._check(channel))
        except RuntimeError:  # the scheduler is closed: stopping; check at once
            self._check(channel)

    def _check(self, channel: _Channel) -> None:
        for idle, job in channel.lanes.check():
            self._hand(channel, idle, job)

    def _retry_later(self, delay: float, retry: Retry) -> bool:
        """Queue `retry` on its channel after `delay` s; False if the pager is stopping."""
        channel = self._channels[_channel(retry.effect)]
        try:
            self._scheduler.call_later(delay, lambda: self._offer(channel, retry))
        except RuntimeError:
            return False
        return True

    def counts(self) -> dict[str, ChannelCounts]:
        """Deliveries so far, by channel."""
        return {name: channel.totals() for name, channel in self._channels.items()}

    def queue_depths(self) -> dict[str, int]:
        """Effects waiting for an adapter actor (not started), by channel."""
        return {name: channel.lanes.queued for name, channel in self._channels.items()}

    def dispatch(self, effects: tuple[Effect, ...], settled: int = 0) -> None:
        """Queue `effects`, in order; `settled` units of work end at the same time (one lock,
        not two)."""
        self._work.add(len(effects) - settled)
        channels = self._channels
        for effect in effects:
            if type(effect) is Withdraw:
                self._withdraw(effect)
                self._work.end()
            else:
                self._offer(channels[_channel(effect)], effect)

    def _take_out(self, match: Callable[[Job], bool], contacts: list[Contact] | None,
                  throttled_only: bool) -> Iterator[tuple[_Channel, list[Job]]]:
        """The jobs `match` accepts still waiting in the mail and SMS lanes (throttled ones
        only, if asked), taken out, by channel."""
        for channel in self._channels.values():
            if channel.name == "timer" or (throttled_only and channel.holding is None):
                continue
            jobs = channel.lanes.withdraw(match, contacts)
            if jobs:
                yield channel, jobs

    def hand_over(self, leaving: Callable[[str], bool]) -> int:
        """Take the pages of services `leaving` this node still waiting in the lanes out,
        settling nothing: their rows stay pending for the next owner. Returns how many.

        A bundle or retry mixing pages of services that stay is left: the send-time
        fence keeps the others out of it.
        """
        def match(job: Job) -> bool:
            return all(leaving(page.service_id) for page in _pages(job))

        taken = 0
        for channel, jobs in self._take_out(match, None, throttled_only=False):
            pages = sum(_page_count(job) for job in jobs)
            self._work.end(pages)
            taken += pages
            log.info("pages_left_for_next_owner", channel=channel.name, pages=pages)
        return taken

    def _withdraw(self, withdraw: Withdraw) -> None:
        """Take the incident's pages still waiting in throttled lanes out; their rows are
        settled `withdrawn`. Unthrottled lanes send what they have."""
        match = _withdrawable(withdraw)
        contacts = [parse_contact(uri) for uri in withdraw.contacts] or None
        for channel, pages in self._take_out(match, contacts, throttled_only=True):
            self._counters.inc("pages_withdrawn", len(pages))
            log.info("pages_withdrawn", channel=channel.name, service=withdraw.service_id,
                     incident=withdraw.incident, pages=len(pages))
            for page in pages:
                if self._settle is not None:
                    self._settle(DeliveryResult(page.key, withdrawn=True))  # type: ignore[union-attr]
                else:
                    self._work.end()

    def _offer(self, channel: _Channel, job: Job) -> None:
        try:
            idle = channel.lanes.offer(job)
        except LanesClosed:  # only once the pager is stopping: adapters stop after services
            self._drop(job, "adapter stopped")
            return
        if idle is not None:
            self._hand(channel, idle, job)

    def _hand(self, channel: _Channel, inbox: ServiceInbox, job: Job) -> None:
        """Give `job` to the idle actor behind `inbox`."""
        try:
            inbox.put(Envelope(job))
        except InboxClosed:  # it stopped meanwhile; its exit released it from the lanes
            self._offer(channel, job)

    def _drop(self, job: Job, reason: str) -> None:
        """A job no actor will run: logged; its outbox row stays pending for the next start."""
        effect = job.effect if isinstance(job, Retry) else job
        self._work.end(_page_count(effect))
        self._counters.inc("effects_dropped")
        log.error("effect_dropped", reason=reason, **_describe(effect))

    def stop(self, timeout: float) -> None:
        """Drop the effects not started (logged), then stop every adapter actor within `timeout`.

        An actor still inside a port call past `timeout` is left to its daemon thread.
        Pages a throttle held back are expected to wait: one line says how many stay
        pending for the next start.
        """
        for channel in self._channels.values():
            held: list[Job] = []
            for job in channel.lanes.close(held):
                self._drop(job, "pager stopped")
            if held:
                pages = sum(_page_count(job) for job in held)
                self._work.end(pages)
                log.warning("held_pages_left_pending", channel=channel.name, pages=pages)
        deadline = time.monotonic() + timeout
        stops = []
        for channel in self._channels.values():
            for ref in list(channel.refs.values()):
                with contextlib.suppress(InboxClosed):  # it is stopping already
                    stops.append((ref, ref.stop(block=False)))
        for ref, stopped in stops:
            try:
                stopped.get(timeout=max(deadline - time.monotonic(), 0.0))
            except pykka.Timeout:
                log.error("adapter_stop_timeout", actor=str(ref))
