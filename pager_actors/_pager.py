"""The Pager facade: the public entry point, and the only engine code that waits on futures."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pykka
import structlog

from pager_actors._adapter_actors import (
    ChannelCounts,
    Dispatcher,
    MailActor,
    SmsActor,
    TimerActor,
)
from pager_actors._counters import Counters
from pager_actors._future import CommandFuture, failed
from pager_actors._inbox import Envelope, InboxClosed
from pager_actors._registry import RegistryActor, Route, Shutdown
from pager_actors._service import STATUS, GetStatus, Outcome, Runtime, ServiceCell
from pager_actors._work import WorkTracker
from pager_actors.domain import (
    Acknowledge,
    Command,
    ExpireAckTimeout,
    Health,
    RaiseAlert,
    ReportHealthy,
    ServiceStatus,
    UnknownServiceError,
)
from pager_actors.errors import PagerOverloadedError, PagerStoppedError
from pager_actors.ports import MailSender, PolicyRepository, SmsSender, TimeoutSource, Timer

log = structlog.get_logger("pager_actors")

DEFAULT_ACK_TIMEOUT = timedelta(minutes=15)
_HEALTHY = ServiceStatus(Health.HEALTHY, None, False, None)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Pager:
    """An on-call pager: one actor per monitored service, behind a thread-safe facade.

    Every command method returns at once with a future that resolves, to an
    `Outcome`, once the service's actor has processed the command, or fails
    with `UnknownServiceError`. Each calling thread may have at most
    `max_in_flight` unsettled commands; the next one waits for the oldest.
    """

    def __init__(self, *, policies: PolicyRepository, registry: pykka.ActorRef[Any],
                 cells: dict[str, ServiceCell], dispatcher: Dispatcher,
                 channels: dict[str, ChannelCounts], work: WorkTracker,
                 counters: Counters, max_in_flight: int, overload_timeout: float) -> None:
        self._policies = policies
        self._registry = registry
        self._cells = cells
        self._dispatcher = dispatcher
        self._channels = channels
        self._work = work
        self._counters = counters
        self._max_in_flight = max_in_flight
        self._overload_timeout = overload_timeout
        self._in_flight = threading.local()
        self._stopping = False
        self._stop_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        policies: PolicyRepository,
        mail: MailSender,
        sms: SmsSender,
        timer: Timer,
        ack_timeout: timedelta = DEFAULT_ACK_TIMEOUT,
        *,
        clock: Callable[[], datetime] = _utc_now,
        max_in_flight: int = 16,
        overload_timeout: float = 30.0,
    ) -> Pager:
        """Start the adapter actors, then the registry; attach to the timer if it calls back."""
        if ack_timeout <= timedelta(0):
            raise ValueError(f"ack_timeout must be positive, got {ack_timeout}")
        work, counters = WorkTracker(), Counters()
        channels = {"mail_sent": ChannelCounts(), "sms_sent": ChannelCounts(),
                    "timer_armed": ChannelCounts()}
        dispatcher = Dispatcher(
            MailActor.start(mail, work, channels["mail_sent"]),
            SmsActor.start(sms, work, channels["sms_sent"]),
            TimerActor.start(timer, work, channels["timer_armed"]),
            work, counters,
        )
        cells: dict[str, ServiceCell] = {}

        def runtime(registry: pykka.ActorRef[Any]) -> Runtime:
            return Runtime(policies, dispatcher, work, counters, clock, ack_timeout, registry)

        registry = RegistryActor.start(cells, runtime)
        pager = cls(policies=policies, registry=registry, cells=cells, dispatcher=dispatcher,
                    channels=channels, work=work, counters=counters, max_in_flight=max_in_flight,
                    overload_timeout=overload_timeout)
        if isinstance(timer, TimeoutSource):
            timer.attach(pager.ack_timeout)
        log.info("pager_started", ack_timeout_s=ack_timeout.total_seconds())
        return pager

    # -- commands -------------------------------------------------------------

    def alert(self, service_id: str, message: str) -> CommandFuture[Outcome]:
        """The service misbehaves: open an incident unless one is open."""
        return self._submit(service_id, RaiseAlert(message))

    def acknowledge(self, service_id: str) -> CommandFuture[Outcome]:
        """Someone took the open incident: stop escalating it."""
        return self._submit(service_id, Acknowledge())

    def healthy(self, service_id: str) -> CommandFuture[Outcome]:
        """The service recovered: close the incident."""
        return self._submit(service_id, ReportHealthy())

    def ack_timeout(self, service_id: str, token: str | None = None) -> CommandFuture[Outcome]:
        """The timeout armed with `token` fired (None: whichever is armed now)."""
        return self._submit(service_id, ExpireAckTimeout(token))

    def status(self, service_id: str, timeout: float = 5.0) -> ServiceStatus:
        """The service's status as of every command it processed so far."""
        if service_id not in self._cells and not self._stopping:
            if self._policies.get(service_id) is None:
                raise UnknownServiceError(service_id)
            if service_id not in self._cells:  # known, never touched: healthy
                return _HEALTHY
        result: ServiceStatus = self._submit(service_id, STATUS).get(timeout=timeout)
        return result

    # -- lifecycle ------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> None:
        """Return once all work submitted so far is done, port calls included.

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
        deadline = time.monotonic() + timeout
        try:
            stops: list[pykka.Future[Any]] = self._registry.ask(
                Shutdown(), block=True, timeout=timeout)
            for stop in stops:
                stop.get(timeout=max(deadline - time.monotonic(), 0))
        except pykka.Timeout:
            log.error("pager_stop_timeout", phase="services", timeout_s=timeout)
        except pykka.ActorDeadError:
            pass
        for ref in (self._registry, *self._dispatcher.refs()):
            try:
                ref.stop(timeout=max(deadline - time.monotonic(), 0.1))
            except pykka.Timeout:
                log.error("pager_stop_timeout", phase="adapters", actor=str(ref))
        log.info("pager_stopped")

    # -- introspection --------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since start (incidents, escalations, sent and failed by channel, restarts)."""
        figures = self._counters.snapshot()
        for done, counts in self._channels.items():
            figures[done] = counts.succeeded
            figures[done.split("_")[0] + "_failed"] = counts.failed
        figures["service_actors"] = sum(1 for c in list(self._cells.values())
                                        if c.ref is not None and c.ref.is_alive())
        figures["pending_work"] = self._work.pending
        return figures

    # -- routing --------------------------------------------------------------

    def _submit(self, service_id: str, command: Command | GetStatus) -> CommandFuture[Any]:
        if self._stopping:
            return failed(PagerStoppedError("the pager is stopped"))
        future: CommandFuture[Any] = CommandFuture()
        try:
            self._admit(future)
        except PagerOverloadedError as error:
            return failed(error)
        envelope = Envelope((command, future))
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
        self._work.begin()
        if cell is not None:
            try:
                assert cell.inbox is not None
                cell.inbox.put(envelope)
                return future
            except InboxClosed:
                pass  # the actor just stopped: the registry restarts it and routes this
        try:
            self._registry.tell(Route(service_id, envelope))
        except pykka.ActorDeadError:
            self._work.end()
            future.fail(PagerStoppedError("the pager is stopped"))
        return future

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
