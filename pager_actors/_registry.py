"""The registry: creates service actors on demand and restarts those that die.

Callers find a live service actor in `cells`, a dict that only the registry
writes and that callers read without a lock (a dict read is atomic), so
traffic for one service never queues behind another's. Only a miss (first
message for a service) or a closed inbox (the actor just stopped) comes here.
The registry never waits on a service actor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from pager_actors._inbox import Envelope, InboxClosed
from pager_actors._service import (
    Runtime,
    ServiceActor,
    ServiceCell,
    ServiceStopped,
    fail_envelopes,
)
from pager_actors.domain import MonitoredService

log = structlog.get_logger("pager_actors.registry")


@dataclass(frozen=True, slots=True)
class Route:
    """Deliver `envelope` to the service's actor, creating the actor if needed."""

    service_id: str
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Refuse new work and ask every service actor to stop after its queued messages."""


class RegistryActor(pykka.ThreadingActor):
    def __init__(self, cells: dict[str, ServiceCell],
                 make_runtime: Callable[[pykka.ActorRef[Any]], Runtime]) -> None:
        super().__init__()
        self._cells = cells
        self._rt = make_runtime(self.actor_ref)
        # Envelopes that met a closed inbox, waiting for that actor's ServiceStopped.
        self._held: dict[str, list[Any]] = {}
        self._closing = False

    def on_receive(self, message: Any) -> Any:
        match message:
            case Route(service_id, envelope):
                self._route(service_id, envelope)
            case ServiceStopped():
                self._restart(message)
            case Shutdown():
                return self._shutdown()
        return None

    def _route(self, service_id: str, envelope: Envelope) -> None:
        if self._closing:
            fail_envelopes([envelope], self._rt.work)
            return
        cell = self._cells.get(service_id)
        if cell is None:
            cell = self._spawn(ServiceCell(MonitoredService(service_id)), [])
        try:
            assert cell.inbox is not None
            cell.inbox.put(envelope)
        except InboxClosed:
            self._held.setdefault(service_id, []).append(envelope)

    def _restart(self, stopped: ServiceStopped) -> None:
        old = stopped.cell
        backlog = stopped.left + self._held.pop(old.service_id, [])
        if self._closing or self._cells.get(old.service_id) is not old:
            fail_envelopes(backlog, self._rt.work)
            return
        self._rt.counters.inc("service_restarts")
        log.warning("service_actor_restarted", service=old.service_id, crashed=stopped.crashed,
                    requeued=len(backlog), version=old.state.version)
        self._spawn(ServiceCell(old.state, old.processed), backlog)

    def _spawn(self, cell: ServiceCell, backlog: list[Any]) -> ServiceCell:
        ref = ServiceActor.start(cell, self._rt)
        cell.ref = ref
        cell.inbox = ref.actor_inbox  # type: ignore[assignment]
        assert cell.inbox is not None
        for envelope in backlog:  # before publishing: nobody else can reach it yet
            cell.inbox.put(envelope)
        self._cells[cell.service_id] = cell
        return cell

    def _shutdown(self) -> list[pykka.Future[Any]]:
        self._closing = True
        for held in self._held.values():
            fail_envelopes(held, self._rt.work)
        self._held.clear()
        stops = []
        for cell in self._cells.values():
            assert cell.ref is not None
            try:
                stops.append(cell.ref.stop(block=False))
            except (InboxClosed, pykka.ActorDeadError):
                continue
        return stops
