"""The service actor: owns one monitored service's state and applies its commands in order.

In a cluster (`Runtime.held` set) it looks before each letter whether its
service is still run here; once not (the shard's lease lapsed, or it was
abandoned), it stops at once and hands that letter and the rest of its inbox
back to the registry, which forwards them to the owner: it never decides on a
state another node may be changing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import pykka

from pager_actors._codes import ReplyCodes
from pager_actors._commit import Commit, Committer
from pager_actors._counters import Counters
from pager_actors._future import CommandFuture
from pager_actors._inbox import InboxClosed, ServiceInbox
from pager_actors._shards import HeldShards
from pager_actors._work import WorkTracker
from pager_actors.domain import (
    ArmTimer,
    Command,
    Decision,
    MonitoredService,
    Notify,
    PageFormat,
    Record,
    Resolver,
    UnknownServiceError,
    decide,
)
from pager_actors.errors import PagerStoppedError
from pager_actors.logs import get_logger, info_enabled
from pager_actors.ports import Forwarder, PolicyRepository, StateStore, Transition
from pager_actors.ports import (
    Outcome as Outcome,  # noqa: PLC0414 - lives with the ports now; the daemon imports it here
)

log = get_logger("pager_actors.service")


class GetStatus:
    """Query: the service's current state (changes nothing)."""


STATUS = GetStatus()


class Letter:
    """A command on its way to a service actor, with the future to resolve.

    `crashes` counts the actors this letter crashed: at two it is dead-lettered.
    `handled` is set once its result went to the committer: from then on the
    letter is never processed again, even if its actor dies. `forward` False:
    should its service leave this node first, it fails rather than going to
    the owner (it was forwarded here already).
    """

    __slots__ = ("command", "crashes", "forward", "future", "handled")

    def __init__(self, command: Command | GetStatus, future: CommandFuture[Any],
                 forward: bool = True) -> None:
        self.command = command
        self.future = future
        self.forward = forward
        self.crashes = 0
        self.handled = False

    def __repr__(self) -> str:
        return f"Letter({self.command!r}, crashes={self.crashes})"


@dataclass(frozen=True)
class Runtime:
    """What every service actor shares."""

    policies: PolicyRepository
    store: StateStore
    committer: Committer
    work: WorkTracker
    counters: Counters
    clock: Callable[[], datetime]
    ack_timeout: timedelta
    registry: pykka.ActorRef[Any]
    page_format: PageFormat
    dispatcher: Any  # Dispatcher: re-arms a reloaded service's timers
    codes: ReplyCodes | None  # when SMS replies are on
    resolve: Resolver | None  # who user: and rotation: targets stand for
    held: HeldShards | None = None  # in a cluster: which services run here
    forwarder: Forwarder | None = None  # in a cluster: carries commands to their owner


class ServiceCell:
    """A service's entry in the registry's routing table; it outlives its actors.

    `state` is the last state the service's actor decided (None until loaded
    from the store); every such state is committed, or queued for commit in
    order, before its effects happen. `inbox` is None while no actor runs.
    """

    __slots__ = (
        "inbox",
        "last_active",
        "processed",
        "rearm",
        "ref",
        "service_id",
        "state",
        "stopping",
    )

    def __init__(self, service_id: str, state: MonitoredService | None = None) -> None:
        self.service_id = service_id
        self.state = state
        self.processed = 0
        self.ref: pykka.ActorRef[Any] | None = None
        self.inbox: ServiceInbox | None = None
        self.last_active = time.monotonic()
        self.stopping = False
        # Set when the store refused a commit: the reloaded state's timers are armed again,
        # since the refused transition may have consumed one (a timeout whose commit failed).
        self.rearm = False


@dataclass(frozen=True, slots=True)
class ServiceStopped:
    """A service actor stopped; `left` holds the envelopes it had not processed."""

    cell: ServiceCell
    left: list[Any]
    crash: BaseException | None


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
        self._current: Letter | None = None
        self._not_run = False  # the current letter is handed back: the service left this node

    def on_start(self) -> None:
        if self._cell.state is not None:
            return
        try:
            stored = self._rt.store.load(self._cell.service_id)
        except Exception as error:
            self._log.error("service_load_failed", error=repr(error))
            self._hand_over(error)
            raise
        self._cell.state = stored or MonitoredService(self._cell.service_id)
        if self._cell.rearm:
            self._cell.rearm = False
            now = self._rt.clock()
            self._rt.dispatcher.dispatch(tuple(
                ArmTimer(t.service_id, t.token, max(t.deadline - now, timedelta(0)), t.deadline)
                for t in self._cell.state.timers()))

    def on_receive(self, letter: Letter) -> None:
        self._current = letter
        held = self._rt.held
        if held is not None and not held.runs(self._cell.service_id):
            self._not_run = True
            self._stop()  # pykka's: now, without the rest of the inbox; on_stop hands it back
            return
        self._cell.last_active = time.monotonic()
        try:
            if letter.command is STATUS:
                if self._rt.policies.get(self._cell.service_id) is None:
                    raise UnknownServiceError(self._cell.service_id)
                letter.handled = True
                self._rt.committer.submit(Commit(self._cell.service_id, None, (), letter.future,
                                                 self._cell.state))
            else:
                self._apply(letter)
        except UnknownServiceError as error:
            letter.handled = True
            letter.future.fail(error)
            self._rt.work.end()
        self._current = None

    def _apply(self, letter: Letter) -> None:
        cell, rt = self._cell, self._rt
        state = cell.state
        assert state is not None
        policy = rt.policies.get(cell.service_id)
        now, codes = rt.clock(), rt.codes
        next_code = None if codes is None or state.incident is not None \
            else codes.reserve(cell.service_id, state.incidents_opened + 1)
        decision = decide(state, letter.command, policy,  # type: ignore[arg-type]
                          now=now, ack_timeout=rt.ack_timeout, fmt=rt.page_format,
                          next_code=next_code, resolve=rt.resolve)
        closed = state.incident
        if codes is not None and closed is not None and closed.reply_code is not None \
                and decision.service.incident is None:
            codes.release(closed.reply_code, now)
        changed = decision.service is not state
        outcome = Outcome(cell.service_id, cell.processed + 1, decision.event, decision.reason,
                          decision.service, decision.effects)
        transition = Transition(state.version, decision.service, decision.effects) if changed \
            else None
        # Timeline records are for the store; pages and timers go to the adapters.
        actions = tuple(e for e in decision.effects if not isinstance(e, Record))
        commit = Commit(cell.service_id, transition, actions, letter.future, outcome)
        rt.committer.submit(commit)  # an inline commit that fails raises: state stays as it was
        letter.handled = True
        cell.state = decision.service
        cell.processed += 1
        self._record(decision)

    def _record(self, decision: Decision) -> None:
        if decision.event == "ignored":
            if self._log_each:
                self._log.debug("command_ignored", reason=decision.reason)
            return
        happened = [e.entry.event for e in decision.effects
                    if isinstance(e, Record) and e.entry.event != "paged"]
        if happened:
            self._rt.counters.inc_all(happened)
        if decision.event == "escalation_exhausted":
            # Nobody else will be paged for this incident: worth a warning whatever the level.
            incident = decision.service.incident
            self._log.warning("escalation_exhausted", incident=incident and incident.number,
                              reason=decision.reason)
            return
        if not self._log_each:
            return
        status = decision.service.status()
        notified = sum(isinstance(effect, Notify) for effect in decision.effects)
        self._log.info(decision.event, page_level=status.level, acknowledged=status.acknowledged,
                       notified=notified, reason=decision.reason)

    def on_stop(self) -> None:
        self._hand_over(None)

    def on_failure(self, exception_type: type[BaseException] | None,
                   exception_value: BaseException | None,
                   traceback: TracebackType | None) -> None:
        self._log.error("service_actor_crashed", error=repr(exception_value),
                        command=repr(self._current))
        self._hand_over(exception_value or RuntimeError("unknown failure"))

    def _hand_over(self, crash: BaseException | None) -> None:
        """Close the inbox; give the registry what is left, the crashing letter first."""
        letter = self._current
        first: list[Any] = []
        if (crash is not None or self._not_run) and letter is not None and not letter.handled:
            if crash is not None:
                letter.crashes += 1
            first = [_Requeued(letter)]
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(lambda left: self._tell_registry(ServiceStopped(self._cell, first + left,
                                                                    crash)))

    def _tell_registry(self, stopped: ServiceStopped) -> None:
        try:
            self._rt.registry.tell(stopped)
        except (pykka.ActorDeadError, InboxClosed):
            fail_envelopes(stopped.left, self._rt.work, PagerStoppedError(
                "the pager stopped before this command ran"))


class _Requeued:
    """An envelope for a letter that crashed its actor, or that it handed back unrun, and
    goes round once more."""

    __slots__ = ("message", "reply_to")

    def __init__(self, letter: Letter) -> None:
        self.message = letter
        self.reply_to = None


def fail_envelopes(envelopes: list[Any], work: WorkTracker, error: BaseException) -> None:
    """Resolve queued commands with `error`; answer pykka's own stop requests."""
    for envelope in envelopes:
        if envelope.reply_to is not None:
            envelope.reply_to.set(None)
            continue
        envelope.message.future.fail(error)
        work.end()
