"""The service actor: owns one monitored service's state and applies its commands in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import pykka
import structlog

from pager_actors._adapter_actors import Dispatcher
from pager_actors._counters import Counters
from pager_actors._future import CommandFuture
from pager_actors._inbox import ServiceInbox
from pager_actors._logging import info_enabled
from pager_actors._work import WorkTracker
from pager_actors.domain import (
    Command,
    Decision,
    Effect,
    MonitoredService,
    Notify,
    ServiceStatus,
    UnknownServiceError,
    decide,
)
from pager_actors.errors import PagerStoppedError
from pager_actors.ports import PolicyRepository

log = structlog.get_logger("pager_actors.service")


class GetStatus:
    """Query: the service's current status (changes nothing)."""


STATUS = GetStatus()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did, as resolved in its future.

    `seq` numbers the commands this service processed, in processing order.
    """

    service_id: str
    seq: int
    event: str
    reason: str | None
    state: MonitoredService
    effects: tuple[Effect, ...]

    @property
    def status(self) -> ServiceStatus:
        """The service's status right after this command."""
        return self.state.status()


@dataclass(frozen=True)
class Runtime:
    """What every service actor shares."""

    policies: PolicyRepository
    dispatcher: Dispatcher
    work: WorkTracker
    counters: Counters
    clock: Callable[[], datetime]
    ack_timeout: timedelta
    registry: pykka.ActorRef[Any]


class ServiceCell:
    """One incarnation of a service actor, as the registry's routing table holds it.

    The actor writes `state` after every transition; it is what the registry
    restarts the service from if the actor dies.
    """

    __slots__ = ("inbox", "processed", "ref", "service_id", "state")

    def __init__(self, state: MonitoredService, processed: int = 0) -> None:
        self.service_id = state.service_id
        self.state = state
        self.processed = processed
        self.ref: pykka.ActorRef[Any] | None = None
        self.inbox: ServiceInbox | None = None


@dataclass(frozen=True, slots=True)
class ServiceStopped:
    """A service actor stopped; `left` holds the envelopes it had not processed."""

    cell: ServiceCell
    left: list[Any]
    crashed: bool


class ServiceActor(pykka.ThreadingActor):
    @staticmethod
    def _create_actor_inbox() -> ServiceInbox:
        return ServiceInbox()

    def __init__(self, cell: ServiceCell, runtime: Runtime) -> None:
        super().__init__()
        self._cell = cell
        self._rt = runtime
        self._log = log.bind(service=cell.service_id)
        self._log_each = info_enabled(self._log)

    def on_receive(self, message: tuple[Command | GetStatus, CommandFuture[Any]]) -> None:
        command, future = message
        settled = False  # _apply ends the command's work as it queues the effects
        try:
            if command is STATUS:
                future.set(self._cell.state.status())
            else:
                outcome = self._apply(command)  # type: ignore[arg-type]
                settled = True
                future.set(outcome)
        except UnknownServiceError as error:
            future.fail(error)
        except Exception:
            future.set_exception()
            raise  # the actor dies; the registry restarts it from its last state
        finally:
            if not settled:
                self._rt.work.end()

    def _apply(self, command: Command) -> Outcome:
        cell, rt = self._cell, self._rt
        policy = rt.policies.get(cell.service_id)
        decision = decide(cell.state, command, policy, now=rt.clock(), ack_timeout=rt.ack_timeout)
        cell.state = decision.service
        cell.processed += 1
        rt.dispatcher.dispatch(decision.effects, settled=1)
        self._record(decision)
        return Outcome(cell.service_id, cell.processed, decision.event, decision.reason,
                       decision.service, decision.effects)

    def _record(self, decision: Decision) -> None:
        if decision.event == "ignored":
            if self._log_each:
                self._log.debug("command_ignored", reason=decision.reason)
            return
        self._rt.counters.inc(decision.event)
        if not self._log_each:
            return
        status = decision.service.status()
        notified = sum(isinstance(effect, Notify) for effect in decision.effects)
        self._log.info(decision.event, page_level=status.level, acknowledged=status.acknowledged,
                       notified=notified)

    def on_stop(self) -> None:
        self._hand_over(crashed=False)

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        self._log.error("service_actor_crashed", error=repr(exception_value))
        self._hand_over(crashed=True)

    def _hand_over(self, *, crashed: bool) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(lambda left: self._tell_registry(ServiceStopped(self._cell, left, crashed)))

    def _tell_registry(self, stopped: ServiceStopped) -> None:
        try:
            self._rt.registry.tell(stopped)
        except pykka.ActorDeadError:
            fail_envelopes(stopped.left, self._rt.work)


def fail_envelopes(envelopes: list[Any], work: WorkTracker) -> None:
    """Resolve queued commands with PagerStoppedError: the pager is shutting down."""
    for envelope in envelopes:
        if envelope.reply_to is not None:  # pykka's own stop request
            envelope.reply_to.set(None)
            continue
        _, future = envelope.message
        future.fail(PagerStoppedError("the pager stopped before this command ran"))
        work.end()
