"""Adapter actors: one per port, so a slow gateway holds up only its own queue.

Service actors (or the store writer, once a commit is durable) hand these
actors their effects and move on. Each actor calls its port one effect at a
time, catches and logs any failure, counts it, reports the delivery result to
the outbox, and never lets one target's failure stop the next. If the actor
itself crashes, the Dispatcher starts a new one with the effects still queued.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pykka

from pager_actors._counters import Counters
from pager_actors._inbox import Envelope, InboxClosed, ServiceInbox
from pager_actors._work import WorkTracker
from pager_actors.domain import (
    ArmTimer,
    Effect,
    EmailTarget,
    Notify,
    Record,
    SmsTarget,
    mask_target,
    mask_text,
)
from pager_actors.logs import get_logger, info_enabled
from pager_actors.ports import (
    DeliveryResult,
    MailSender,
    SmsSender,
    Timer,
    TransientDeliveryError,
)
from pager_actors.scheduler import Scheduler

log = get_logger("pager_actors.adapters")

Settle = Callable[[DeliveryResult], None]


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


@dataclass(frozen=True, slots=True)
class Retry:
    """An effect's next attempt, after a transient failure."""

    effect: Effect
    attempt: int


class ChannelCounts:
    """Deliveries of one channel. Only its adapter actor writes it, so it needs no lock."""

    __slots__ = ("failed", "retried", "succeeded")

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.retried = 0


@dataclass(frozen=True)
class Wiring:
    """What an adapter actor is connected to."""

    work: WorkTracker
    counts: ChannelCounts
    settle: Settle | None  # reports delivery results to the outbox
    on_crash: Callable[[str, list[Any]], None]  # starts a replacement with the leftovers
    retry_later: Callable[[float, Retry], bool]
    retry: RetryPolicy


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
        self._counts = wiring.counts
        self._settle = wiring.settle
        self._on_crash = wiring.on_crash
        self._retry_later = wiring.retry_later
        self._retry = wiring.retry
        self._log = log.bind(channel=self.channel)
        self._log_each = info_enabled(self._log)
        self._done_event = f"{self.channel}_{self.done}"
        self._current: Any = None  # the effect being handled, until its port was called

    def on_receive(self, message: Any) -> None:
        self._current = message
        effect, attempt = ((message.effect, message.attempt) if isinstance(message, Retry)
                           else (message, 1))
        error: str | None = None
        try:
            self._call(effect)
        except TransientDeliveryError as failure:
            if attempt < self._retry.attempts:
                self._current = None
                if not self._schedule_retry(effect, attempt, failure):
                    # Stopping: not a final failure. The row stays pending for the next start.
                    self._log.warning(f"{self.channel}_deferred", error=mask_text(str(failure)),
                                      **_describe(effect))
                    self._work.end()
                return  # still pending work: the retry ends it
            error = str(failure)
        except Exception as failure:  # a port failure is reported, never fatal
            error = str(failure) or repr(failure)
        if error is not None:
            error = mask_text(error)  # gateways echo numbers and addresses in their errors
            self._counts.failed += 1
            self._log.warning(f"{self.channel}_failed", error=error, attempts=attempt,
                              **_describe(effect))
        else:
            self._counts.succeeded += 1
            if self._log_each:
                self._log.info(self._done_event, **_describe(effect))
        self._current = None  # the port was called: never call it again for this effect
        if self._settle is not None and isinstance(effect, Notify):
            self._settle(DeliveryResult(effect.key, error))  # ends the work once recorded
        else:
            self._work.end()

    def _call(self, effect: Any) -> None:
        raise NotImplementedError

    def _schedule_retry(self, effect: Effect, attempt: int, failure: Exception) -> bool:
        delay = self._retry.delay(attempt)
        if not self._retry_later(delay, Retry(effect, attempt + 1)):
            return False  # stopping: the outbox row stays pending for the next start
        self._counts.retried += 1
        self._log.warning(f"{self.channel}_retrying", error=mask_text(str(failure)),
                          attempt=attempt,
                          delay_s=round(delay, 3), **_describe(effect))
        return True

    def on_failure(self, *exc_info: Any) -> None:
        self._log.error(f"{self.channel}_actor_crashed", error=repr(exc_info[1]))
        first = [] if self._current is None else [Envelope(self._current)]
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(lambda left: self._on_crash(self.channel, first + left))

    def on_stop(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(self._drop)

    def _drop(self, left: list[Any]) -> None:
        """Effects queued after the stop request: logged; their outbox rows stay pending."""
        for envelope in left:
            message = envelope.message
            effect = message.effect if isinstance(message, Retry) else message
            if isinstance(effect, Notify | ArmTimer):
                self._log.error("effect_dropped", reason="pager stopped", **_describe(effect))
                self._work.end()


class MailActor(_PortActor):
    channel = "mail"

    def __init__(self, port: MailSender, wiring: Wiring) -> None:
        super().__init__(wiring)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, EmailTarget)
        self._port.send_mail(effect.target.address, effect.subject, effect.text)


class SmsActor(_PortActor):
    channel = "sms"

    def __init__(self, port: SmsSender, wiring: Wiring) -> None:
        super().__init__(wiring)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, SmsTarget)
        self._port.send_sms(effect.target.number, effect.text)


class TimerActor(_PortActor):
    channel = "timer"
    done = "armed"

    def __init__(self, port: Timer, wiring: Wiring) -> None:
        super().__init__(wiring)
        self._port = port

    def _call(self, effect: ArmTimer) -> None:
        self._port.set_timeout(effect.service_id, effect.delay, effect.token)


def _channel(effect: Effect) -> str:
    if isinstance(effect, ArmTimer):
        return "timer"
    assert isinstance(effect, Notify), effect  # timeline records never reach the adapters
    return "mail" if isinstance(effect.target, EmailTarget) else "sms"


def _describe(effect: Effect) -> dict[str, object]:
    assert not isinstance(effect, Record), effect
    if isinstance(effect, Notify):
        return {"service": effect.service_id, "incident": effect.incident,
                "page_level": effect.level, "target": mask_target(effect.target)}
    return {"service": effect.service_id, "token": effect.token,
            "delay_s": effect.delay.total_seconds()}


class Dispatcher:
    """Routes effects to the adapter actors, counting each as pending work.

    It also supervises them: a crashed adapter actor is replaced at once by a
    new one that first gets the effects the old one had not finished.
    """

    CHANNELS = ("mail", "sms", "timer")

    def __init__(self, work: WorkTracker, counters: Counters, scheduler: Scheduler,
                 retry: RetryPolicy) -> None:
        self._work = work
        self._counters = counters
        self._scheduler = scheduler
        self._retry = retry
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._inboxes: dict[str, ServiceInbox] = {}
        self._factories: dict[str, Callable[[], pykka.ActorRef[Any]]] = {}
        self.counts = {channel: ChannelCounts() for channel in self.CHANNELS}
        self._stopping = False

    def start(self, mail: MailSender, sms: SmsSender, timer: Timer,
              settle: Settle | None) -> None:
        ports: dict[str, tuple[type[_PortActor], Any]] = {
            "mail": (MailActor, mail), "sms": (SmsActor, sms), "timer": (TimerActor, timer)}
        for channel, (actor, port) in ports.items():
            def factory(actor: type[_PortActor] = actor, port: Any = port,
                        channel: str = channel) -> pykka.ActorRef[Any]:
                return actor.start(port, Wiring(self._work, self.counts[channel], settle,
                                                self._replace, self._retry_later, self._retry))
            self._factories[channel] = factory
            self._spawn(channel, [])

    def _spawn(self, channel: str, backlog: list[Any]) -> None:
        ref = self._factories[channel]()
        for envelope in backlog:
            ref.actor_inbox.put(envelope)
        self._refs[channel] = ref
        self._inboxes[channel] = ref.actor_inbox  # type: ignore[assignment]

    def _replace(self, channel: str, backlog: list[Any]) -> None:
        """Called by a crashed adapter actor, under its closed inbox's lock."""
        if self._stopping:
            return
        self._counters.inc("adapter_restarts")
        log.error("adapter_actor_restarted", channel=channel, requeued=len(backlog))
        self._spawn(channel, backlog)

    def _retry_later(self, delay: float, retry: Retry) -> bool:
        """Queue `retry` on its channel after `delay` s; False if the pager is stopping."""
        channel = _channel(retry.effect)
        try:
            self._scheduler.call_later(delay, lambda: self._put(channel, retry))
        except RuntimeError:
            return False
        return True

    def queue_depths(self) -> dict[str, int]:
        return {channel: inbox.qsize() for channel, inbox in self._inboxes.items()}

    def dispatch(self, effects: tuple[Effect, ...], settled: int = 0) -> None:
        """Queue `effects`; `settled` units of work end at the same time (one lock, not two)."""
        self._work.add(len(effects) - settled)
        for effect in effects:
            self._put(_channel(effect), effect)

    def _put(self, channel: str, message: Effect | Retry) -> None:
        for _ in range(2):  # a crashed actor's replacement is published before InboxClosed
            try:
                self._inboxes[channel].put(Envelope(message))
                return
            except InboxClosed:
                continue
        effect = message.effect if isinstance(message, Retry) else message
        # Only once the pager is stopping: adapters stop after every service.
        self._work.end()
        self._counters.inc("effects_dropped")
        log.error("effect_dropped", reason="adapter stopped", **_describe(effect))

    def stop(self, timeout: float) -> None:
        self._stopping = True
        for ref in self._refs.values():
            try:
                ref.stop(timeout=timeout)
            except pykka.Timeout:
                log.error("adapter_stop_timeout", actor=str(ref))
