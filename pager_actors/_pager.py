"""The Pager facade: the public entry point, and the only engine code that waits on futures.

In a cluster (`Pager.start(ownership=...)`) the pager runs only the shards it
has adopted and still leases: `adopt()` and `abandon()` are what a node's
coordinator calls as it gains and loses shard leases; commands for other
services go to the `Forwarder`, and reads of them come from the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka

from pager_actors._adapter_actors import Dispatcher, RetryPolicy
from pager_actors._codes import CodeUse, ReplyCodes, shard_of_code
from pager_actors._commit import (
    Barrier,
    Committer,
    GroupCommitter,
    InlineCommitter,
    LateCallback,
    StoreHealth,
    StoreWriter,
)
from pager_actors._counters import Counters
from pager_actors._future import CommandFuture, failed
from pager_actors._inbox import Envelope, InboxClosed
from pager_actors._registry import (
    Abandon,
    RegistryActor,
    Resync,
    Route,
    Shutdown,
    Supervision,
    Tick,
)
from pager_actors._service import STATUS, GetStatus, Letter, Outcome, Runtime, ServiceCell
from pager_actors._shards import HeldShards, not_here
from pager_actors._throttle import Throttling
from pager_actors._work import WorkTracker
from pager_actors.cluster import SHARDS
from pager_actors.domain import (
    DEFAULT_KEY,
    Acknowledge,
    ArmTimer,
    Command,
    EndMaintenance,
    Heartbeat,
    IncidentSummary,
    MonitoredService,
    Notify,
    PageFailed,
    PageFormat,
    RaiseAlert,
    ReportHealthy,
    ResolveAlert,
    Resolver,
    ServiceStatus,
    StartMaintenance,
    TimelineEntry,
    TimerFired,
    UnknownServiceError,
)
from pager_actors.errors import NotOwnerError, PagerOverloadedError, PagerStoppedError
from pager_actors.logs import get_logger
from pager_actors.ports import (
    Forwarder,
    MailSender,
    Ownership,
    PolicyRepository,
    SendLedger,
    SmsSender,
    StateStore,
    TimeoutSource,
    Timer,
)
from pager_actors.scheduler import Scheduler

log = get_logger("pager_actors")

DEFAULT_ACK_TIMEOUT = timedelta(minutes=15)
DEFAULT_KEEP_TIMELINE = timedelta(days=90)
PRUNE_EVERY = 3600.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Pager:
    """An on-call pager: one actor per monitored service, behind a thread-safe facade.

    Every command method returns at once with a future that resolves, to an
    `Outcome`, once the service's actor has processed the command and its
    transition is committed to the store, or fails (`UnknownServiceError`,
    `ServiceQuarantinedError`, `DeadLetterError`, `StoreError`). Each calling
    thread may have at most `max_in_flight` unsettled commands; the next one
    waits for half of them.
    """

    def __init__(self, *, policies: PolicyRepository, store: StateStore,
                 registry: pykka.ActorRef[Any], writer: pykka.ActorRef[Any] | None,
                 cells: dict[str, ServiceCell], dispatcher: Dispatcher, work: WorkTracker,
                 counters: Counters, scheduler: Scheduler, max_in_flight: int,
                 overload_timeout: float, committer: Committer, health: StoreHealth,
                 codes: ReplyCodes | None = None, held: HeldShards | None = None,
                 forwarder: Forwarder | None = None,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self._policies = policies
        self._scheduler = scheduler
        self._store = store
        self._registry = registry
        self._writer = writer
        self._cells = cells
        self._dispatcher = dispatcher
        self._work = work
        self._counters = counters
        self._max_in_flight = max_in_flight
        self._overload_timeout = overload_timeout
        self._in_flight = threading.local()
        self._stopping = False
        self._stop_lock = threading.Lock()
        self._ticker: _Ticker | None = None
        self._health = health
        self._committer = committer
        self._codes = codes
        self._held = held
        self._forwarder = forwarder
        self._clock = clock

    @classmethod
    def start(
        cls,
        policies: PolicyRepository,
        mail: MailSender,
        sms: SmsSender,
        timer: Timer,
        ack_timeout: timedelta = DEFAULT_ACK_TIMEOUT,
        *,
        store: StateStore | None = None,
        passivate_after: timedelta | None = None,
        max_live_services: int = 2000,
        supervision: Supervision | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = _utc_now,
        max_in_flight: int = 16,
        overload_timeout: float = 30.0,
        page_format: PageFormat | None = None,
        keep_timeline: timedelta = DEFAULT_KEEP_TIMELINE,
        mail_concurrency: int = 8,
        sms_concurrency: int = 8,
        resolver: Resolver | None = None,
        throttle: Throttling | None = None,
        ownership: Ownership | None = None,
        forwarder: Forwarder | None = None,
        ledger: SendLedger | None = None,
    ) -> Pager:
        """Start the actors in dependency order, recover from `store`, attach to the timer.

        Recovery: every timer the stored states rely on (ack timeouts and
        expiries, heartbeats, ends of maintenance windows) is armed again with
        the time that remains (0 if past due), and every page not yet
        delivered is sent again. Timeline entries older than `keep_timeline`
        are pruned at start and every hour.

        `mail_concurrency` and `sms_concurrency`: at most this many sends in
        flight on the channel, and never two for the same recipient.

        `throttle`: at most so many messages per contact in a window, by channel
        (None, the default: no throttling). Pages over the limit wait and go out as
        one bundle when the window allows; the sends of the last window are read
        back from the store first, so a restart does not reset the count.

        `ownership`: this node is one of a cluster, and runs only the services of
        the shards it leases (`pager_actors.cluster.shard_of`). Start-up then
        recovers nothing: the node's coordinator calls `adopt()` for each shard it
        acquires and `abandon()` for each it loses. Commands for services run
        elsewhere go to `forwarder` (without one they fail `NotOwnerError`).
        Throttles are still rebuilt at start, from every recent send in the store:
        a contact's budget spans shards.

        `ledger`: the cluster's count of sends per contact (a `SendLedger`), so a
        throttle's budget holds over every node, not per node: each throttled
        send that is not a retry is claimed there first, and one refused waits in
        its lane, its contact held until the ledger allows (then bundled as after
        a local hold). A ledger that fails lets the send go. Without `throttle`
        it is not used; None (the default): each node counts its own sends.
        """
        _check_options(ack_timeout, mail_concurrency, sms_concurrency,
                       forwarding=forwarder is not None, owning=ownership is not None)
        if store is None:
            from adapters.memory import InMemoryStore  # noqa: PLC0415 - the documented default
            store = InMemoryStore()
        rules = supervision or Supervision()
        rules = dataclasses.replace(
            rules, max_live=max_live_services,
            passivate_after=passivate_after.total_seconds() if passivate_after
            else rules.passivate_after)
        work, counters = WorkTracker(), Counters()
        scheduler = Scheduler()
        dispatcher = Dispatcher(work, counters, scheduler, retry or RetryPolicy(),
                                {"mail": mail_concurrency, "sms": sms_concurrency},
                                throttling=throttle, ledger=ledger)
        lost_sync = LateCallback()
        writer: pykka.ActorRef[Any] | None = None
        committer: Committer
        health = StoreHealth()
        if store.group_commit:
            writer = StoreWriter.start(store, dispatcher, work, lost_sync, health)
            committer = GroupCommitter(writer)
        else:
            committer = InlineCommitter(store, dispatcher, work)
        page_failed = LateCallback()  # the pager, once it exists
        held = HeldShards(ownership) if ownership is not None else None
        dispatcher.start(mail, sms, timer, committer.settle, page_failed, shards=held)
        cells: dict[str, ServiceCell] = {}
        fmt = page_format or PageFormat()
        codes: ReplyCodes | None = None
        if fmt.reply_codes:
            codes = ReplyCodes(clock, shard_of=(held.shard, SHARDS) if held is not None
                               else None)
            if held is None:  # in a cluster, each adoption loads its shards' codes
                codes.load(store.reply_codes())

        def runtime(registry: pykka.ActorRef[Any]) -> Runtime:
            return Runtime(policies, store, committer, work, counters, clock, ack_timeout,
                           registry, fmt, dispatcher, codes, resolver, held, forwarder)

        registry = RegistryActor.start(cells, runtime, dispatcher, scheduler, rules)
        lost_sync.target = lambda service_id: _tell(registry, Resync(service_id))
        pager = cls(policies=policies, store=store, registry=registry, writer=writer,
                    cells=cells, dispatcher=dispatcher, work=work, counters=counters,
                    scheduler=scheduler, max_in_flight=max_in_flight,
                    overload_timeout=overload_timeout, committer=committer, health=health,
                    codes=codes, held=held, forwarder=forwarder, clock=clock)
        page_failed.target = pager.page_failed
        if throttle is not None:  # before recovery resends anything
            pager._restore_throttles(throttle, clock())
        if isinstance(timer, TimeoutSource):  # before recovery: an overdue timeout fires at once
            timer.attach(pager.deliver_timeout)
        if held is None:  # in a cluster, each adoption recovers its own shards
            pager._recover(clock())
        pager._prune_timeline(clock, keep_timeline)
        if rules.passivate_after is not None:
            pager._ticker = _Ticker(registry, min(rules.passivate_after / 4, 1.0))
        log.info("pager_started", ack_timeout_s=ack_timeout.total_seconds(),
                 store=type(store).__name__, cluster=held is not None)
        return pager

    def _recover(self, now: datetime) -> None:
        started = time.perf_counter()
        armed = self._store.armed_timers()
        self._dispatcher.dispatch(tuple(
            ArmTimer(a.service_id, a.token, max(a.deadline - now, timedelta(0)), a.deadline)
            for a in armed))
        undelivered = self._store.undelivered()
        self._dispatcher.dispatch(tuple(undelivered))
        if armed or undelivered:
            log.warning("pager_recovered", timers_rearmed=len(armed),
                        notifications_resent=len(undelivered),
                        seconds=round(time.perf_counter() - started, 3))

    # -- shards (in a cluster) ------------------------------------------------------

    def adopt(self, shards: Collection[int]) -> None:
        """This node acquired these shards' leases: run their services from now on.

        What `start` recovers on a single node, restricted to these shards:
        every timer their stored states rely on is armed again with the time
        left (at once if past due), every page still pending in their outbox
        is sent again, and their reply codes are loaded. Shards already adopted
        are left as they are. The store is read before the shards are taken on,
        so a page committed here afterwards is never also resent.
        Raises StoreError (nothing adopted) if the store cannot be read.
        """
        held = self._cluster()
        if self._stopping:
            raise PagerStoppedError("the pager is stopped")
        new = frozenset(shards) - held.adopted
        if not new:
            return
        started = time.perf_counter()
        now = self._clock()
        armed = self._store.armed_timers(shards=new)
        undelivered = self._store.undelivered(shards=new)
        if self._codes is not None:
            self._codes.load(self._store.reply_codes(shards=new))
        held.adopt(new)  # before the timers: one already due fires as soon as it is armed
        try:
            self._dispatcher.dispatch(tuple(
                ArmTimer(a.service_id, a.token, max(a.deadline - now, timedelta(0)),
                         a.deadline) for a in armed))
            self._dispatcher.dispatch(tuple(undelivered))
        except BaseException:  # not adopted after all: a later adoption starts afresh
            self.abandon(new)
            raise
        log.info("shards_adopted", shards=len(new), timers_rearmed=len(armed),
                 notifications_resent=len(undelivered),
                 seconds=round(time.perf_counter() - started, 3))

    def abandon(self, shards: Collection[int], *, graceful: bool = False,
                timeout: float = 10.0) -> bool:
        """This node lost these shards' leases, or hands them over: stop running their
        services. Returns once nothing of theirs runs here.

        Their live actors stop and their cells are forgotten. Commands still
        waiting for them go to the forwarder (or fail `NotOwnerError`); nothing
        queued is dropped. Their pages still waiting to be sent are taken out of
        the delivery lanes unsent, rows left pending for the next owner.

        `graceful` (a hand-over, the lease still held): the actors first finish
        the commands already queued for them, and every commit they made is
        settled in the store, as is the outcome of every send already in flight,
        before this returns; then the next owner loads all of it and resends
        nothing this node delivered. Without it (the lease is lost), the actors
        stop at their next command, which goes to the owner.

        Returns False if a graceful hand-over ran out of `timeout` before all of that
        was settled: the caller should then let the lease lapse rather than release it,
        so that the next owner does not resend a page still in flight here.
        """
        held = self._cluster()
        gone = frozenset(shards) & held.adopted
        if not gone:
            return True
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        if graceful:
            held.drain(gone)
        else:
            held.release(gone)
        try:
            settled = self._stop_services(gone, left)
            if graceful:
                settled = self._settle_commits(left(), "commits") and settled
        finally:
            held.release(gone)

        def leaving(service_id: str) -> bool:
            return held.shard(service_id) in gone

        left_pending = self._dispatcher.hand_over(leaving)
        if graceful:
            if not held.wait_sends(gone, left()):
                log.error("abandon_timeout", phase="sends", timeout_s=timeout)
                settled = False
            settled = self._settle_commits(left(), "deliveries") and settled
        if self._codes is not None:
            self._codes.forget(leaving)
        log.info("shards_abandoned", shards=len(gone), graceful=graceful,
                 pages_left_pending=left_pending, settled=settled)
        return settled

    def accepting(self) -> frozenset[int]:
        """The shards whose new commands run here (adopted, not being handed over): those
        whose forwarded commands this node should take."""
        return self._cluster().accepting

    def _cluster(self) -> HeldShards:
        if self._held is None:
            raise RuntimeError("adopt() and abandon() need Pager.start(ownership=...)")
        return self._held

    def _stop_services(self, shards: frozenset[int], left: Callable[[], float]) -> bool:
        """Have the registry stop these shards' actors, and wait until it has forgotten them
        (False: not within the time left)."""
        while True:
            try:
                stops: list[pykka.Future[Any]] = self._registry.ask(
                    Abandon(shards), block=True, timeout=left())
                for stop in stops:
                    stop.get(timeout=left())
            except pykka.Timeout:
                log.error("abandon_timeout", phase="services")
                return False
            except (pykka.ActorDeadError, InboxClosed):
                return True  # stopped: nothing runs
            if not stops:  # every ServiceStopped came before this answer: all forgotten
                return True

    def _settle_commits(self, timeout: float, phase: str) -> bool:
        """Wait until everything queued for the store so far is written (False: it was not
        within `timeout`)."""
        settled = threading.Event()
        try:
            self._committer.barrier(Barrier("", lambda _: settled.set()))  # no service's
        except InboxClosed:
            return True  # stopped: the writer wrote what it could
        if not settled.wait(timeout):
            log.error("abandon_timeout", phase=phase, timeout_s=round(timeout, 3))
            return False
        return True

    def _restore_throttles(self, throttle: Throttling, now: datetime) -> None:
        sends = self._store.recent_sends(now - throttle.longest)
        counted = self._dispatcher.restore_throttles(sends, now)
        if counted:
            log.info("throttles_restored", sends=counted)

    def _prune_timeline(self, clock: Callable[[], datetime], keep: timedelta) -> None:
        """Forget timeline entries older than `keep`; again in an hour."""
        try:
            now = clock()
            removed = self._store.prune_timeline(now - keep)
            if removed:
                log.info("timeline_pruned", entries=removed, keep_days=keep.days)
            self._store.prune_overrides(now)
        except Exception as error:  # a failed prune costs nothing but disk; try again later
            log.warning("timeline_prune_failed", error=str(error))
        with contextlib.suppress(RuntimeError):  # the scheduler closed: the pager stopped
            self._scheduler.call_later(PRUNE_EVERY, lambda: self._prune_timeline(clock, keep))

    # -- commands -------------------------------------------------------------

    def alert(self, service_id: str, message: str,
              key: str = DEFAULT_KEY) -> CommandFuture[Outcome]:
        """The alert `key` of the service fires: open an incident, or join the open one.

        Raises ValueError at once, before anything is queued, for a message
        that is not text a store can keep (a lone surrogate) or a bad key.
        """
        return self._submit(service_id, RaiseAlert(message, key))

    def resolve_alert(self, service_id: str, key: str = DEFAULT_KEY,
                      by: str = "api") -> CommandFuture[Outcome]:
        """The alert `key` stopped firing; the incident closes with its last firing key."""
        return self._submit(service_id, ResolveAlert(key, by))

    def acknowledge(self, service_id: str, by: str = "api",
                    incident: int | None = None) -> CommandFuture[Outcome]:
        """Someone took the open incident: stop escalating it. With `incident`, only that
        one (a link or a reply names it): another one is left alone (reason `not_open`)."""
        return self._submit(service_id, Acknowledge(by, incident))

    def healthy(self, service_id: str, by: str = "api",
                incident: int | None = None) -> CommandFuture[Outcome]:
        """The service recovered: close the incident and clear every firing key (with
        `incident`, only if that one is the open incident)."""
        return self._submit(service_id, ReportHealthy(by, incident))

    def heartbeat(self, service_id: str) -> CommandFuture[Outcome]:
        """The service is alive: restart its heartbeat countdown (the first one arms it)."""
        return self._submit(service_id, Heartbeat())

    def start_maintenance(self, service_id: str, end: datetime, start: datetime | None = None,
                          reason: str = "") -> CommandFuture[Outcome]:
        """Open a maintenance window; its id is in the outcome's state (`windows[-1].id`)."""
        return self._submit(service_id, StartMaintenance(end, start, reason))

    def end_maintenance(self, service_id: str, window: int) -> CommandFuture[Outcome]:
        """End maintenance window `window` now: what fires meanwhile pages."""
        return self._submit(service_id, EndMaintenance(window))

    def submit(self, service_id: str, command: Command, *,
               forward: bool = True) -> CommandFuture[Outcome]:
        """Any command, as an object. `forward=False`: run it here or fail NotOwnerError,
        never forward it (what a node does with a command forwarded to it, so that a
        command never goes round between nodes)."""
        return self._submit(service_id, command, forward=forward)

    def ack_timeout(self, service_id: str, token: str | None = None) -> CommandFuture[Outcome]:
        """The timer armed with `token` fired (None: the incident's armed timer)."""
        return self._submit(service_id, TimerFired(token))

    def deliver_timeout(self, service_id: str, token: str) -> CommandFuture[Outcome]:
        """What a timer calls: like `ack_timeout`, but never slowed down by backpressure.

        A timer thread serves every service; making it wait for its own
        earlier timeouts would delay all of them.
        """
        return self._submit(service_id, TimerFired(token), admit=False)

    def page_failed(self, page: Notify) -> CommandFuture[Outcome]:
        """What an adapter reports when a page failed for good (never held back)."""
        return self._submit(page.service_id, PageFailed(page.incident, page.page, page.level,
                                                        page.round, page.target.uri),
                            admit=False)

    def status(self, service_id: str, timeout: float = 5.0) -> ServiceStatus:
        """The service's last committed status."""
        return self.state(service_id, timeout).status()

    def state(self, service_id: str, timeout: float = 5.0) -> MonitoredService:
        """The service's whole last committed state: incident, firing alerts, windows.

        A service with no running actor is answered from its cell or the
        store, without starting an actor; so is one run by another node.
        """
        cell = self._cells.get(service_id)
        if self._policies.get(service_id) is None:
            raise UnknownServiceError(service_id)
        held = self._held
        if held is not None and not held.accepts(service_id):
            return self._stored(service_id)
        if (cell is None or cell.inbox is None) and not self._stopping:
            if cell is None:
                return self._stored(service_id)
            if cell.state is not None:
                return cell.state
        try:
            result: MonitoredService = self._submit(service_id, STATUS).get(timeout=timeout)
        except NotOwnerError:  # it left this node meanwhile
            return self._stored(service_id)
        return result

    def _stored(self, service_id: str) -> MonitoredService:
        """The service's committed state as the store holds it (none yet: a fresh one)."""
        return self._store.load(service_id) or MonitoredService(service_id)

    def reply_code(self, code: str) -> CodeUse | None:
        """Which incident an SMS reply code names: open, or closed within a day
        (`released` set); None if no incident has it. In a cluster, a code of a shard
        run elsewhere is read from the store (its owner committed it there)."""
        if self._codes is None:
            return None
        held = self._held
        shard = shard_of_code(code, SHARDS) if held is not None else None
        if held is None or shard is None or shard in held.adopted:
            return self._codes.holder(code)
        for found, service_id, incident, released in self._store.reply_codes(shards={shard}):
            if found == code:
                return CodeUse(service_id, incident, released)
        return None

    def timeline(self, service_id: str, incident: int) -> list[TimelineEntry]:
        """Incident `incident`'s timeline, oldest first, as committed."""
        if self._policies.get(service_id) is None:
            raise UnknownServiceError(service_id)
        return self._store.timeline(service_id, incident)

    def incidents(self, service_id: str, limit: int = 50) -> list[IncidentSummary]:
        """The service's last `limit` incidents, newest first."""
        if self._policies.get(service_id) is None:
            raise UnknownServiceError(service_id)
        return self._store.incidents(service_id, limit)

    # -- lifecycle ------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> None:
        """Return once all work submitted so far is done: commits, port calls, outbox marks.

        Pages a throttle holds back for a later window are not waited for (nor by
        `stop()`); once their window allows, they are work again.
        Raises TimeoutError if work is still pending after `timeout` seconds
        (for example a port call that hangs).
        """
        if not self._work.wait_idle(timeout):
            raise TimeoutError(f"{self._work.pending} unit(s) of work still pending after "
                               f"{timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new commands, let queued ones finish, then stop actors in reverse start order."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        if self._ticker is not None:
            self._ticker.stop()
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        try:
            stops: list[pykka.Future[Any]] = self._registry.ask(
                Shutdown(), block=True, timeout=timeout)
            for stop in stops:
                stop.get(timeout=left())
        except pykka.Timeout:
            log.error("pager_stop_timeout", phase="services", timeout_s=timeout)
        except pykka.ActorDeadError:
            pass
        self._stop_actor(self._registry, left())
        # Let accepted work finish: commits, deliveries and their outbox marks, which go
        # through the writer, so it stops last. Past the deadline what is left stays
        # pending in the outbox and is sent at the next start.
        if not self._work.wait_idle(left()):
            log.error("pager_stop_timeout", phase="deliveries", pending=self._work.pending)
        self._scheduler.close()
        self._dispatcher.stop(timeout=left())
        if self._writer is not None:
            self._stop_actor(self._writer, left())
        log.info("pager_stopped")

    @staticmethod
    def _stop_actor(ref: pykka.ActorRef[Any], timeout: float) -> None:
        try:
            ref.stop(timeout=timeout)
        except pykka.Timeout:
            log.error("pager_stop_timeout", phase=str(ref))

    # -- introspection --------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since start: incidents, escalations, deliveries by channel, restarts..."""
        figures = self._counters.snapshot()
        for channel, counts in self._dispatcher.counts().items():
            figures[f"{channel}_{'armed' if channel == 'timer' else 'sent'}"] = counts.succeeded
            figures[f"{channel}_failed"] = counts.failed
            figures[f"{channel}_retried"] = counts.retried
        figures["service_actors"] = sum(1 for c in list(self._cells.values())
                                        if c.inbox is not None)
        figures["known_services"] = len(self._cells)
        figures["pending_work"] = self._work.pending
        if self._held is not None:
            figures["shards_adopted"] = len(self._held.adopted)
        return figures

    def mailbox_depths(self) -> dict[str, int]:
        """Messages waiting: in the registry's and store writer's inboxes, and, for mail, sms
        and timer, the effects not yet started."""
        depths = {"registry": self._registry.actor_inbox.qsize()}  # type: ignore[attr-defined]
        if self._writer is not None:
            depths["store_writer"] = self._writer.actor_inbox.qsize()  # type: ignore[attr-defined]
        depths.update(self._dispatcher.queue_depths())
        return depths

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called: new commands are refused."""
        return self._stopping

    def store_problem(self) -> str | None:
        """Why the store refuses commits (disk full...), or None while it takes them.

        While there is a problem, a call also asks the store writer to try a
        small write (one probe queued at most), so recovery shows without traffic.
        """
        health = self._health
        problem = health.problem
        if problem is not None and not health.probing \
                and isinstance(self._committer, GroupCommitter):
            health.probing = True
            try:
                self._committer.probe()
            except InboxClosed:
                health.probing = False
        return problem

    def open_incidents(self) -> int:
        """Services with an open incident, as committed."""
        return self._store.open_incidents()

    # -- routing --------------------------------------------------------------

    def _submit(self, service_id: str, command: Command | GetStatus,
                admit: bool = True, forward: bool = True) -> CommandFuture[Any]:
        if self._stopping:
            return failed(PagerStoppedError("the pager is stopped"))
        future: CommandFuture[Any] = CommandFuture()
        if admit and self._max_in_flight:
            try:
                self._admit(future)
            except PagerOverloadedError as error:
                return failed(error)
        envelope = Envelope(Letter(command, future, forward))
        cell = self._cells.get(service_id)
        if cell is None:
            try:
                known = self._policies.get(service_id) is not None
            except Exception as error:
                future.fail(error)
                return future
            if not known:
                future.fail(UnknownServiceError(service_id))
                return future
        rerouted = self._rerouted()
        earlier = rerouted.get(service_id)
        if earlier is not None and earlier.done():
            del rerouted[service_id]
            earlier = None
        held = self._held
        # Not run here: forwarded, unless an earlier command of this thread still waits in
        # the registry, which forwards this one after it.
        if held is not None and (earlier is None or not forward) \
                and not held.accepts(service_id):
            self._counters.inc(not_here(service_id, held.shard(service_id), command, future,
                                        self._forwarder, forward=forward))
            return future
        self._work.begin()
        inbox = cell.inbox if cell is not None else None
        if inbox is not None and earlier is None:
            try:
                inbox.put(envelope)
                return future
            except InboxClosed:
                pass  # the actor just stopped: the registry routes this after its backlog
        # Through the registry. Until it is processed, this thread's next commands for
        # the service follow the same way, so none can overtake it.
        rerouted[service_id] = future
        if not _tell(self._registry, Route(service_id, envelope)):
            self._work.end()
            future.fail(PagerStoppedError("the pager is stopped"))
        return future

    def _rerouted(self) -> dict[str, CommandFuture[Any]]:
        """This thread's commands sent through the registry and not yet processed, by service."""
        rerouted: dict[str, CommandFuture[Any]] | None = getattr(self._in_flight, "rerouted",
                                                                 None)
        if rerouted is None:
            rerouted = self._in_flight.rerouted = {}
        return rerouted

    def _admit(self, future: CommandFuture[Any]) -> None:
        """Backpressure: wait for this thread's oldest command once `max_in_flight` are unsettled.

        Without it, a flood from one caller piles up unbounded backlogs and
        many runnable threads, and every other caller's latency grows with it.
        """
        mine: deque[CommandFuture[Any]] | None = getattr(self._in_flight, "futures", None)
        if mine is None:
            mine = self._in_flight.futures = deque()
        while mine and mine[0].done():
            mine.popleft()
        # Once full, drain to half: the caller then sleeps once per half a window,
        # not once per command.
        while len(mine) >= self._max_in_flight:
            self._wait_until_at_most(mine, self._max_in_flight // 2)
        mine.append(future)

    def _wait_until_at_most(self, mine: deque[CommandFuture[Any]], count: int) -> None:
        while len(mine) > count:
            oldest = mine.popleft()
            try:
                oldest.get(timeout=self._overload_timeout)
            except pykka.Timeout:
                mine.appendleft(oldest)
                raise PagerOverloadedError(
                    f"{len(mine)} commands from this thread unsettled after "
                    f"{self._overload_timeout} s") from None
            except Exception:
                pass


def _check_options(ack_timeout: timedelta, mail_concurrency: int, sms_concurrency: int, *,
                   forwarding: bool, owning: bool) -> None:
    if ack_timeout <= timedelta(0):
        raise ValueError(f"ack_timeout must be positive, got {ack_timeout}")
    for name, value in (("mail_concurrency", mail_concurrency),
                        ("sms_concurrency", sms_concurrency)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if forwarding and not owning:
        raise ValueError("a forwarder needs an ownership: without one, every service is "
                         "run here and nothing is forwarded")


def _tell(ref: pykka.ActorRef[Any], message: Any) -> bool:
    try:
        ref.tell(message)
    except (pykka.ActorDeadError, InboxClosed):
        return False
    return True


class _Ticker:
    """Tells the registry `Tick` at a fixed interval, so it can passivate idle actors."""

    def __init__(self, registry: pykka.ActorRef[Any], interval: float) -> None:
        self._registry = registry
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pager-passivation",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            if not _tell(self._registry, Tick()):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
