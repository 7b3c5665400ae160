"""Adapter actors: one per port, so a slow gateway holds up only its own queue.

Service actors `tell` these actors their effects and move on. Each actor calls
its port one effect at a time, catches and logs any failure, counts it, and
never lets one target's failure stop the next.
"""

from __future__ import annotations

import queue
from typing import Any, ClassVar

import pykka
import structlog

from pager_actors._counters import Counters
from pager_actors._work import WorkTracker
from pager_actors.domain import ArmAckTimeout, EmailTarget, Effect, Notify, SmsTarget, mask_target
from pager_actors.ports import MailSender, SmsSender, Timer

log = structlog.get_logger("pager_actors.adapters")


class _PortActor(pykka.ThreadingActor):
    channel: ClassVar[str]
    done: ClassVar[str] = "sent"

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()

    def __init__(self, work: WorkTracker, counters: Counters) -> None:
        super().__init__()
        self._work = work
        self._counters = counters

    def on_receive(self, message: Any) -> None:
        try:
            self._call(message)
        except Exception as error:  # noqa: BLE001 - any port failure is reported, never fatal
            self._counters.inc(f"{self.channel}_failed")
            log.warning(f"{self.channel}_failed", error=repr(error), **_describe(message))
        else:
            self._counters.inc(f"{self.channel}_{self.done}")
            log.info(f"{self.channel}_{self.done}", **_describe(message))
        finally:
            self._work.end()

    def _call(self, effect: Any) -> None:
        raise NotImplementedError


class MailActor(_PortActor):
    channel = "mail"

    def __init__(self, port: MailSender, work: WorkTracker, counters: Counters) -> None:
        super().__init__(work, counters)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, EmailTarget)
        self._port.send_mail(effect.target.address, effect.subject, effect.text)


class SmsActor(_PortActor):
    channel = "sms"

    def __init__(self, port: SmsSender, work: WorkTracker, counters: Counters) -> None:
        super().__init__(work, counters)
        self._port = port

    def _call(self, effect: Notify) -> None:
        assert isinstance(effect.target, SmsTarget)
        self._port.send_sms(effect.target.number, effect.text)


class TimerActor(_PortActor):
    channel = "timer"
    done = "armed"

    def __init__(self, port: Timer, work: WorkTracker, counters: Counters) -> None:
        super().__init__(work, counters)
        self._port = port

    def _call(self, effect: ArmAckTimeout) -> None:
        self._port.set_timeout(effect.service_id, effect.delay, effect.token)


def _describe(effect: Effect) -> dict[str, object]:
    if isinstance(effect, Notify):
        return {"service": effect.service_id, "incident": effect.incident,
                "level": effect.level, "target": mask_target(effect.target)}
    return {"service": effect.service_id, "token": effect.token,
            "delay_s": effect.delay.total_seconds()}


class Dispatcher:
    """Routes a decision's effects to the adapter actors, counting each as pending work."""

    def __init__(self, mail: pykka.ActorRef[Any], sms: pykka.ActorRef[Any],
                 timer: pykka.ActorRef[Any], work: WorkTracker, counters: Counters) -> None:
        self._mail, self._sms, self._timer = mail, sms, timer
        self._work = work
        self._counters = counters

    def dispatch(self, effects: tuple[Effect, ...]) -> None:
        if not effects:
            return
        self._work.begin(len(effects))
        for effect in effects:
            if isinstance(effect, ArmAckTimeout):
                ref = self._timer
            elif isinstance(effect.target, EmailTarget):
                ref = self._mail
            else:
                ref = self._sms
            try:
                ref.tell(effect)
            except pykka.ActorDeadError:
                # Only possible once the pager is stopping: adapters stop last.
                self._work.end()
                self._counters.inc("effects_dropped")
                log.error("effect_dropped", reason="adapter stopped", **_describe(effect))

    def refs(self) -> tuple[pykka.ActorRef[Any], ...]:
        return (self._mail, self._sms, self._timer)
