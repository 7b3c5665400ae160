"""Adapter actors: one per port, so a slow gateway holds up only its own queue.

Service actors hand these actors their effects and move on. Each actor calls
its port one effect at a time, catches and logs any failure, counts it, and
never lets one target's failure stop the next.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pykka
import structlog

from pager_actors._counters import Counters
from pager_actors._inbox import Envelope, InboxClosed, ServiceInbox
from pager_actors._logging import info_enabled
from pager_actors._work import WorkTracker
from pager_actors.domain import ArmAckTimeout, Effect, EmailTarget, Notify, SmsTarget, mask_target
from pager_actors.ports import MailSender, SmsSender, Timer

log = structlog.get_logger("pager_actors.adapters")


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

    def __init__(self, work: WorkTracker, counts: ChannelCounts) -> None:
        super().__init__()
        self._work = work
        self._counts = counts
        self._log = log.bind(channel=self.channel)
        self._log_each = info_enabled(self._log)
        self._done_event = f"{self.channel}_{self.done}"

    def on_receive(self, message: Any) -> None:
        try:
            self._call(message)
        except Exception as error:
            self._counts.failed += 1
            self._log.warning(f"{self.channel}_failed", error=repr(error), **_describe(message))
        else:
            self._counts.succeeded += 1
            if self._log_each:
                self._log.info(self._done_event, **_describe(message))
        finally:
            self._work.end()

    def _call(self, effect: Any) -> None:
        raise NotImplementedError

    def on_stop(self) -> None:
        self.actor_inbox.close(self._drop)  # type: ignore[attr-defined]

    def _drop(self, left: list[Any]) -> None:
        """Effects still queued when the pager stopped past its deadline: log them, lost."""
        for envelope in left:
            if isinstance(envelope.message, Notify | ArmAckTimeout):
                self._log.error("effect_dropped", reason="pager stopped",
                                **_describe(envelope.message))
                self._work.end()


class MailActor(_PortActor):
    channel = "mail"

    def __init__(self, port: MailSender, work: WorkTracker, counts: ChannelCounts) -> None:
        super().__init__(work, counts)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, EmailTarget)
        self._port.send_mail(effect.target.address, effect.subject, effect.text)


class SmsActor(_PortActor):
    channel = "sms"

    def __init__(self, port: SmsSender, work: WorkTracker, counts: ChannelCounts) -> None:
        super().__init__(work, counts)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, SmsTarget)
        self._port.send_sms(effect.target.number, effect.text)


class TimerActor(_PortActor):
    channel = "timer"
    done = "armed"

    def __init__(self, port: Timer, work: WorkTracker, counts: ChannelCounts) -> None:
        super().__init__(work, counts)
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
    """Routes a decision's effects to the adapter actors, counting each as pending work."""

    def __init__(self, mail: pykka.ActorRef[MailActor], sms: pykka.ActorRef[SmsActor],
                 timer: pykka.ActorRef[TimerActor], work: WorkTracker,
                 counters: Counters) -> None:
        self._refs = (mail, sms, timer)
        self._mail: ServiceInbox = mail.actor_inbox  # type: ignore[assignment]
        self._sms: ServiceInbox = sms.actor_inbox  # type: ignore[assignment]
        self._timer: ServiceInbox = timer.actor_inbox  # type: ignore[assignment]
        self._work = work
        self._counters = counters

    def dispatch(self, effects: tuple[Effect, ...], settled: int = 0) -> None:
        """Queue `effects`; `settled` units of work end at the same time (one lock, not two)."""
        self._work.add(len(effects) - settled)
        for effect in effects:
            if isinstance(effect, ArmAckTimeout):
                inbox = self._timer
            elif isinstance(effect.target, EmailTarget):
                inbox = self._mail
            else:
                inbox = self._sms
            try:
                inbox.put(Envelope(effect))
            except InboxClosed:
                # Only once the pager is stopping: adapters stop after every service.
                self._work.end()
                self._counters.inc("effects_dropped")
                log.error("effect_dropped", reason="adapter stopped", **_describe(effect))

    def refs(self) -> tuple[pykka.ActorRef[Any], ...]:
        return self._refs
