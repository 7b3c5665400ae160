"""Adapter actors: one per port, so a slow gateway holds up only its own queue.

Service actors (or the store writer, once a commit is durable) hand these
actors their effects and move on. Each actor calls its port one effect at a
time, catches and logs any failure, counts it, reports the delivery result to
the outbox, and never lets one target's failure stop the next. If the actor
itself crashes, the Dispatcher starts a new one with the effects still queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pykka
import structlog

from pager_actors._counters import Counters
from pager_actors._inbox import Envelope, InboxClosed, ServiceInbox
from pager_actors._logging import info_enabled
from pager_actors._work import WorkTracker
from pager_actors.domain import ArmAckTimeout, Effect, EmailTarget, Notify, SmsTarget, mask_target
from pager_actors.ports import DeliveryResult, MailSender, SmsSender, Timer

log = structlog.get_logger("pager_actors.adapters")

Settle = Callable[[DeliveryResult], None]


class ChannelCounts:
    """Deliveries of one channel. Only its adapter actor writes it, so it needs no lock."""

    __slots__ = ("failed", "succeeded")

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0


class _PortActor(pykka.ThreadingActor):
    channel: ClassVar[str]
    done: ClassVar[str] = "sent"

    @staticmethod
    def _create_actor_inbox() -> ServiceInbox:
        return ServiceInbox()

    def __init__(self, work: WorkTracker, counts: ChannelCounts, settle: Settle | None,
                 on_crash: Callable[[str, list[Any]], None]) -> None:
        super().__init__()
        self._work = work
        self._counts = counts
        self._settle = settle
        self._on_crash = on_crash
        self._log = log.bind(channel=self.channel)
        self._log_each = info_enabled(self._log)
        self._done_event = f"{self.channel}_{self.done}"
        self._current: Any = None  # the effect being handled, until its port was called

    def on_receive(self, effect: Any) -> None:
        self._current = effect
        error: str | None = None
        try:
            self._call(effect)
        except Exception as failure:
            error = repr(failure)
            self._counts.failed += 1
            self._log.warning(f"{self.channel}_failed", error=error, **_describe(effect))
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
            if isinstance(envelope.message, Notify | ArmAckTimeout):
                self._log.error("effect_dropped", reason="pager stopped",
                                **_describe(envelope.message))
                self._work.end()


class MailActor(_PortActor):
    channel = "mail"

    def __init__(self, port: MailSender, *args: Any) -> None:
        super().__init__(*args)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, EmailTarget)
        self._port.send_mail(effect.target.address, effect.subject, effect.text)


class SmsActor(_PortActor):
    channel = "sms"

    def __init__(self, port: SmsSender, *args: Any) -> None:
        super().__init__(*args)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, SmsTarget)
        self._port.send_sms(effect.target.number, effect.text)


class TimerActor(_PortActor):
    channel = "timer"
    done = "armed"

    def __init__(self, port: Timer, *args: Any) -> None:
        super().__init__(*args)
        self._port = port

    def _call(self, effect: ArmAckTimeout) -> None:
        self._port.set_timeout(effect.service_id, effect.delay, effect.token)


def _describe(effect: Effect) -> dict[str, object]:
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

    def __init__(self, work: WorkTracker, counters: Counters) -> None:
        self._work = work
        self._counters = counters
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
                return actor.start(port, self._work, self.counts[channel], settle, self._replace)
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

    def dispatch(self, effects: tuple[Effect, ...], settled: int = 0) -> None:
        """Queue `effects`; `settled` units of work end at the same time (one lock, not two)."""
        self._work.add(len(effects) - settled)
        for effect in effects:
            if isinstance(effect, ArmAckTimeout):
                channel = "timer"
            elif isinstance(effect.target, EmailTarget):
                channel = "mail"
            else:
                channel = "sms"
            self._put(channel, effect)

    def _put(self, channel: str, effect: Effect) -> None:
        for _ in range(2):  # a crashed actor's replacement is published before InboxClosed
            try:
                self._inboxes[channel].put(Envelope(effect))
                return
            except InboxClosed:
                continue
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
