"""The registry: supervisor of the service actors.

- Routing. Callers find a live service actor through `cells`, a dict only the
  registry writes and callers read without a lock, so one service's traffic
  never queues behind another's. Only a miss, or a closed inbox, comes here.
- Activation. A service's first message starts its actor, which loads the
  service from the store. At most `max_live` actors run: past that, the
  least recently active ones are passivated, and newcomers wait here.
- Passivation. An actor idle for `passivate_after` is stopped; its state stays
  in its cell (and the store). Messages that race with the stop are handed
  back here and start a new actor.
- Supervision. A crashed actor restarts from its cell's state after an
  exponential backoff with jitter; past 3 restarts in 60 s the service is
  quarantined for a while; a letter that crashed two actors is dead-lettered.
- Resync. When the store refuses a service's commit, its actor is stopped and,
  once every commit queued before is settled, restarted from the store. Refusals
  that repeat back off as restarts do: a refusal that comes back (an overdue
  timer whose commit the store keeps refusing) cannot spin.
- Ownership (in a cluster, `Runtime.held`). No actor ever starts for a service
  this node does not accept: a letter for one is forwarded to its owner (or
  failed `NotOwnerError`), whether it comes routed, held, or handed back by a
  stopping actor. `Abandon` stops the live actors of some shards and forgets
  their cells, so a later adoption loads what the store holds then.

The registry never waits on another actor and does no I/O.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from pager_actors._adapter_actors import Dispatcher
from pager_actors._commit import Barrier
from pager_actors._future import CommandFuture
from pager_actors._inbox import Envelope, InboxClosed, ServiceInbox
from pager_actors._service import (
    STATUS,
    Letter,
    Runtime,
    ServiceActor,
    ServiceCell,
    ServiceStopped,
    fail_envelopes,
)
from pager_actors._shards import not_here
from pager_actors.domain import ArmTimer
from pager_actors.errors import DeadLetterError, PagerStoppedError, ServiceQuarantinedError
from pager_actors.logs import get_logger
from pager_actors.scheduler import Scheduler

log = get_logger("pager_actors.registry")


@dataclass(frozen=True)
class Supervision:
    """Restart and lifetime limits of service actors."""

    max_restarts: int = 3
    restart_window: float = 60.0
    backoff_base: float = 0.1
    backoff_max: float = 5.0
    quarantine_for: float = 300.0
    passivate_after: float | None = None
    max_live: int = 2000
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.5, 1.5))


@dataclass(frozen=True, slots=True)
class Route:
    """Deliver `envelope` to the service's actor, starting one if needed."""

    service_id: str
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Refuse new work; ask every service actor to stop after its queued messages."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time to passivate idle actors."""


@dataclass(frozen=True, slots=True)
class Resync:
    """The store refused a commit of this service: reload it from the store."""

    service_id: str


@dataclass(frozen=True, slots=True)
class Abandon:
    """These shards are no longer run here: stop their live actors (the answer: their stop
    futures), forward what waits for them, forget their cells."""

    shards: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Due:
    """A scheduled step for one service: 'restart', 'release' (quarantine over) or 'reload'."""

    step: str
    service_id: str


class RegistryActor(pykka.ThreadingActor):
    @staticmethod
    def _create_actor_inbox() -> ServiceInbox:
        return ServiceInbox()  # closable: a Route that arrives after the stop is failed, not lost

    def __init__(self, cells: dict[str, ServiceCell],
                 make_runtime: Callable[[pykka.ActorRef[Any]], Runtime],
                 dispatcher: Dispatcher, scheduler: Scheduler, supervision: Supervision) -> None:
        super().__init__()
        self._cells = cells
        self._rt = make_runtime(self.actor_ref)
        self._dispatcher = dispatcher
        self._scheduler = scheduler
        self._rules = supervision
        self._live: dict[str, ServiceCell] = {}
        # Services whose messages wait here (restart backoff, reload, capacity, stopping).
        self._held: dict[str, list[Any]] = {}
        self._waiting: deque[str] = deque()  # services held for lack of capacity, FIFO
        self._restarts: dict[str, deque[float]] = {}
        self._quarantined: dict[str, float] = {}
        self._reloading: set[str] = set()
        self._refusals: dict[str, deque[float]] = {}
        self._reload_delays: dict[str, float] = {}
        self._closing = False

    # -- messages ------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except Exception:
            # The registry must outlive any bug in one message: log it and carry on.
            log.exception("registry_error", message=repr(message))
            return None

    def on_stop(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(self._fail_leftovers)

    def _fail_leftovers(self, left: list[Any]) -> None:
        error = PagerStoppedError("the pager stopped before this command ran")
        for envelope in left:
            message = envelope.message
            if isinstance(message, Route):
                fail_envelopes([message.envelope], self._rt.work, error)
            elif isinstance(message, ServiceStopped):
                fail_envelopes(message.left, self._rt.work, error)
            elif envelope.reply_to is not None:
                envelope.reply_to.set(None)

    def _handle(self, message: Any) -> Any:
        match message:
            case Route(service_id, envelope):
                self._route(service_id, envelope)
            case ServiceStopped():
                self._stopped(message)
                self._admit_waiting()
            case _Due("restart", service_id):
                self._activate(service_id, self._held.pop(service_id, []))
            case _Due("release", service_id):
                self._release(service_id)
            case _Due("reload", service_id):
                delay = self._reload_delays.pop(service_id, 0.0)
                if delay:  # a repeated refusal: the same message again, after the backoff
                    self._later(delay, _Due("reload", service_id))
                else:
                    self._reloaded(service_id)
            case Resync(service_id):
                self._resync(service_id)
            case Tick():
                self._passivate_idle()
            case Abandon(shards):
                return self._abandon(shards)
            case Shutdown():
                return self._shutdown()
        return None

    # -- routing -------------------------------------------------------------------

    def _route(self, service_id: str, envelope: Any) -> None:
        if self._closing:
            fail_envelopes([envelope], self._rt.work, PagerStoppedError("the pager is stopped"))
            return
        held = self._rt.held
        if held is not None and not held.accepts(service_id):
            self._disown(service_id, [envelope])  # and never into a draining actor's inbox
            return
        if service_id in self._quarantined:
            self._refuse_quarantined(service_id, [envelope])
            return
        if service_id in self._held:
            self._held[service_id].append(envelope)
            return
        cell = self._cells.get(service_id)
        if cell is not None and cell.inbox is not None:
            try:
                cell.inbox.put(envelope)
            except InboxClosed:  # it is stopping: its ServiceStopped is already queued here
                self._held[service_id] = [envelope]
            return
        self._activate(service_id, [envelope])

    def _activate(self, service_id: str, backlog: list[Any]) -> None:
        backlog = self._without_dead_letters(backlog)
        if not backlog:
            return
        held = self._rt.held
        if held is not None and not held.accepts(service_id):
            self._disown(service_id, backlog)
            return
        if service_id in self._reloading:  # a restart or a free slot came first: the
            # service starts from the store once its reload is due, never before
            self._held[service_id] = backlog + self._held.get(service_id, [])
            return
        if len(self._live) >= self._rules.max_live:
            self._held[service_id] = backlog
            self._waiting.append(service_id)
            self._evict_for_room()
            return
        cell = self._cells.get(service_id)
        if cell is None:
            cell = self._cells[service_id] = ServiceCell(service_id)
        ref = ServiceActor.start(cell, self._rt)
        cell.ref, cell.stopping = ref, False
        self._live[service_id] = cell
        inbox: ServiceInbox = ref.actor_inbox  # type: ignore[assignment]
        for index, envelope in enumerate(backlog):  # before publishing: no one else can reach it
            try:
                inbox.put(envelope)
            except InboxClosed:
                # It died on an earlier letter: these follow the ones it hands back.
                self._held[service_id] = backlog[index:]
                return
        cell.inbox = inbox

    def _admit_waiting(self) -> None:
        while self._waiting and len(self._live) < self._rules.max_live:
            service_id = self._waiting.popleft()
            self._activate(service_id, self._held.pop(service_id, []))
        if self._waiting:  # a re-activation took the room: make more
            self._evict_for_room()

    # -- stops, restarts, quarantine ---------------------------------------------

    def _stopped(self, stopped: ServiceStopped) -> None:
        cell = stopped.cell
        service_id = cell.service_id
        self._live.pop(service_id, None)
        requested = cell.stopping
        cell.ref, cell.inbox, cell.stopping = None, None, False
        backlog = stopped.left + self._held.pop(service_id, [])
        held = self._rt.held
        if self._closing:
            fail_envelopes(backlog, self._rt.work, PagerStoppedError("the pager stopped"))
        elif held is not None and not held.accepts(service_id):
            self._forget(service_id)
            self._disown(service_id, backlog)
        elif service_id in self._reloading:
            self._held[service_id] = backlog
            self._forget_state(cell)
            self._rt.committer.barrier(Barrier(service_id, self._reload_due))
        elif stopped.crash is not None:
            self._after_crash(service_id, backlog, stopped.crash)
        else:
            if not requested:
                log.warning("service_actor_stopped_from_outside", service=service_id)
                self._rt.counters.inc("service_restarts")
            self._activate(service_id, backlog)

    def _recent(self, history: dict[str, deque[float]], service_id: str) -> deque[float]:
        """`service_id`'s entries in `history` within the restart window (older ones go)."""
        now = time.monotonic()
        recent = history.setdefault(service_id, deque())
        while recent and now - recent[0] > self._rules.restart_window:
            recent.popleft()
        return recent

    def _backoff(self, attempts: int) -> float:
        return float(min(self._rules.backoff_base * 2 ** attempts, self._rules.backoff_max)
                     * self._rules.jitter())

    def _after_crash(self, service_id: str, backlog: list[Any], crash: BaseException) -> None:
        recent = self._recent(self._restarts, service_id)
        if len(recent) >= self._rules.max_restarts:
            self._quarantine(service_id, backlog, crash)
            return
        delay = self._backoff(len(recent))
        recent.append(time.monotonic())
        self._rt.counters.inc("service_restarts")
        log.warning("service_actor_restarting", service=service_id, error=repr(crash),
                    attempt=len(recent), delay_s=round(delay, 3), requeued=len(backlog))
        self._held[service_id] = backlog
        self._later(delay, _Due("restart", service_id))

    def _quarantine(self, service_id: str, backlog: list[Any], crash: BaseException) -> None:
        self._quarantined[service_id] = time.monotonic() + self._rules.quarantine_for
        self._rt.counters.inc("services_quarantined")
        log.critical("service_quarantined", service=service_id, error=repr(crash),
                     restarts=self._rules.max_restarts, window_s=self._rules.restart_window,
                     quarantine_s=self._rules.quarantine_for, refused=len(backlog))
        self._refuse_quarantined(service_id, self._without_dead_letters(backlog))
        self._later(self._rules.quarantine_for, _Due("release", service_id))

    def _refuse_quarantined(self, service_id: str, envelopes: list[Any]) -> None:
        fail_envelopes(envelopes, self._rt.work, ServiceQuarantinedError(
            f"service {service_id!r} is quarantined after {self._rules.max_restarts} crashes "
            f"in {self._rules.restart_window:.0f} s; commands are refused until it is released"))

    def _release(self, service_id: str) -> None:
        """Quarantine over: a fresh restart budget, and its timers armed again."""
        self._quarantined.pop(service_id, None)
        self._restarts.pop(service_id, None)
        log.warning("service_released", service=service_id)
        cell = self._cells.get(service_id)
        if cell is not None and cell.state is not None:
            now = datetime.now(UTC)
            self._dispatcher.dispatch(tuple(
                ArmTimer(service_id, timer.token, max(timer.deadline - now, timedelta(0)),
                         timer.deadline) for timer in cell.state.timers()))

    def _without_dead_letters(self, envelopes: list[Any]) -> list[Any]:
        kept = []
        for envelope in envelopes:
            letter = envelope.message
            if isinstance(letter, Letter) and letter.crashes >= 2:
                self._rt.counters.inc("dead_letters")
                log.error("dead_letter", command=repr(letter.command), crashes=letter.crashes)
                letter.future.fail(DeadLetterError(
                    f"{letter.command!r} crashed its service actor {letter.crashes} times "
                    "and was dropped"))
                self._rt.work.end()
            else:
                kept.append(envelope)
        return kept

    # -- resync after a refused commit ---------------------------------------------

    def _resync(self, service_id: str) -> None:
        if service_id in self._reloading or self._closing:
            return
        self._reloading.add(service_id)
        refused = self._recent(self._refusals, service_id)
        if refused:  # the first reload is at once; one that repeats waits
            self._reload_delays[service_id] = self._backoff(len(refused) - 1)
        refused.append(time.monotonic())
        self._held.setdefault(service_id, [])
        cell = self._live.get(service_id)
        if cell is not None:
            self._stop_actor(cell)  # its ServiceStopped sends the barrier
        else:
            if (idle := self._cells.get(service_id)) is not None:
                self._forget_state(idle)
            self._rt.committer.barrier(Barrier(service_id, self._reload_due))

    def _reload_due(self, service_id: str) -> None:
        """From the store writer, once every commit queued before the barrier is settled."""
        with contextlib.suppress(pykka.ActorDeadError, InboxClosed):
            self.actor_ref.tell(_Due("reload", service_id))

    @staticmethod
    def _forget_state(cell: ServiceCell) -> None:
        """The cell's state is one the store refused: reads wait for the reload (they go
        through the registry), the next actor loads the committed state and arms its
        timers again."""
        cell.state = None
        cell.rearm = True

    def _reloaded(self, service_id: str) -> None:
        self._reloading.discard(service_id)
        cell = self._cells.get(service_id)
        if cell is not None:
            self._forget_state(cell)
        log.warning("service_reloaded_from_store", service=service_id)
        backlog = self._held.pop(service_id, [])
        if not backlog and cell is not None:  # start it anyway: loading re-arms its timers
            self._rt.work.begin()
            backlog = [Envelope(Letter(STATUS, CommandFuture()))]
        self._activate(service_id, backlog)

    # -- passivation -----------------------------------------------------------

    def _passivate_idle(self) -> None:
        if self._rules.passivate_after is None:
            return
        cutoff = time.monotonic() - self._rules.passivate_after
        for cell in list(self._live.values()):
            if not cell.stopping and cell.last_active < cutoff:
                self._stop_actor(cell)
                self._rt.counters.inc("passivations")

    def _evict_for_room(self) -> None:
        """Stop the least recently active tenth of the live actors (not already stopping)."""
        stopping = sum(1 for c in self._live.values() if c.stopping)
        if stopping >= len(self._waiting):
            return
        idle = sorted((c for c in self._live.values() if not c.stopping),
                      key=lambda c: c.last_active)
        for cell in idle[:max(1, self._rules.max_live // 10)]:
            self._stop_actor(cell)
            self._rt.counters.inc("evictions")

    def _stop_actor(self, cell: ServiceCell) -> None:
        cell.stopping = True
        assert cell.ref is not None
        # Already stopping on its own? Then its ServiceStopped is on the way.
        with contextlib.suppress(InboxClosed, pykka.ActorDeadError):
            cell.ref.stop(block=False)

    # -- ownership -----------------------------------------------------------------

    def _abandon(self, shards: frozenset[int]) -> list[pykka.Future[Any]]:
        """Stop the live actors of `shards` (each ServiceStopped then forwards what it left
        and forgets the cell); forward what waits here and forget the other cells now."""
        held = self._rt.held
        assert held is not None
        stops = []
        for service_id in [s for s in {*self._cells, *self._held} if held.shard(s) in shards]:
            cell = self._live.get(service_id)
            if cell is not None:
                cell.stopping = True
                assert cell.ref is not None
                # Already stopping on its own? Then its ServiceStopped is on the way.
                with contextlib.suppress(InboxClosed, pykka.ActorDeadError):
                    stops.append(cell.ref.stop(block=False))
                continue
            backlog = self._held.pop(service_id, [])
            self._forget(service_id)
            self._disown(service_id, backlog)
        return stops

    def _forget(self, service_id: str) -> None:
        """Drop everything known of a service this node no longer runs: a later adoption
        starts from the store, with a fresh restart budget."""
        self._cells.pop(service_id, None)
        self._live.pop(service_id, None)
        with contextlib.suppress(ValueError):
            self._waiting.remove(service_id)
        for table in (self._restarts, self._quarantined, self._refusals, self._reload_delays):
            table.pop(service_id, None)
        self._reloading.discard(service_id)

    def _disown(self, service_id: str, envelopes: list[Any]) -> None:
        """Letters for a service not run here: forwarded to its owner, or failed."""
        rt = self._rt
        held = rt.held
        assert held is not None
        shard = held.shard(service_id)
        for envelope in envelopes:
            if envelope.reply_to is not None:  # pykka's stop request
                envelope.reply_to.set(None)
                continue
            letter = envelope.message
            rt.counters.inc(not_here(service_id, shard, letter.command, letter.future,
                                     rt.forwarder, forward=letter.forward))
            rt.work.end()

    # -- shutdown ------------------------------------------------------------------

    def _shutdown(self) -> list[pykka.Future[Any]]:
        self._closing = True
        for held in self._held.values():
            fail_envelopes(held, self._rt.work, PagerStoppedError("the pager stopped"))
        self._held.clear()
        stops = []
        for cell in list(self._live.values()):
            cell.stopping = True
            assert cell.ref is not None
            try:
                stops.append(cell.ref.stop(block=False))
            except (InboxClosed, pykka.ActorDeadError):
                continue
        return stops

    def _later(self, delay: float, message: Any) -> None:
        def deliver() -> None:
            with contextlib.suppress(pykka.ActorDeadError, InboxClosed):
                self.actor_ref.tell(message)

        with contextlib.suppress(RuntimeError):  # the scheduler closes when the pager stops
            self._scheduler.call_later(delay, deliver)

