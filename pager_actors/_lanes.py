"""Delivery lanes: which worker sends which job next, with at most one job per recipient at once.

One `DeliveryLanes` per channel. It is pure bookkeeping behind one lock: no
thread, no I/O, so tests drive it directly. Jobs wait in a FIFO lane per
recipient; a recipient is *busy* while a worker handles one of its jobs, and
*ready* while it has jobs and no worker. Workers are either serving one
recipient or idle. The rules:

- `offer(job)`: behind its recipient's lane if that recipient is busy or
  already waiting; else straight to an idle worker (returned, the caller hands
  the job over); else the recipient joins the ready queue.
- `next(worker)`: the worker finished its job. Its recipient goes to the back
  of the ready queue if it has more jobs (round robin: one recipient with a
  long backlog does not starve the others), then the worker takes the front
  recipient's oldest job, or goes idle.

So a recipient whose gateway hangs holds one worker, never all of them, and
never gets two sends in flight.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

W = TypeVar("W")  # a worker (the adapter actors use their inbox)
J = TypeVar("J")  # a job (an effect, or its retry)


class LanesClosed(Exception):
    """The channel is stopping: no job is accepted any more."""


class DeliveryLanes(Generic[W, J]):
    __slots__ = ("_busy", "_closed", "_idle", "_lock", "_queued", "_ready", "_recipient",
                 "_serving", "_waiting")

    def __init__(self, recipient: Callable[[J], Hashable]) -> None:
        self._recipient = recipient
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, deque[J]] = {}  # recipient -> jobs not yet started
        self._ready: deque[Hashable] = deque()  # recipients with waiting jobs and no worker
        self._busy: set[Hashable] = set()  # recipients a worker is handling now
        self._serving: dict[W, Hashable] = {}  # busy worker -> its recipient
        self._idle: list[W] = []  # a stack: the last worker to finish is the warmest
        self._queued = 0
        self._closed = False

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker (not started)."""
        return self._queued

    def offer(self, job: J) -> W | None:
        """Queue `job`, or return the idle worker that must start it now. Raises LanesClosed."""
        recipient = self._recipient(job)
        with self._lock:
            if self._closed:
                raise LanesClosed
            lane = self._waiting.get(recipient)
            if lane is not None:  # busy, or ready already: keep its order
                lane.append(job)
            elif recipient in self._busy:
                self._waiting[recipient] = deque((job,))
            elif self._idle:
                worker = self._idle.pop()
                self._serving[worker] = recipient
                self._busy.add(recipient)
                return worker
            else:
                self._waiting[recipient] = deque((job,))
                self._ready.append(recipient)
            self._queued += 1
            return None

    def join(self, worker: W) -> J | None:
        """A new worker: its first job, or None (it is idle until offered one)."""
        with self._lock:
            return self._take(worker)

    def next(self, worker: W) -> J | None:
        """`worker` finished its job: its next one, or None (idle, or the lanes are closed)."""
        with self._lock:
            self._release(worker)
            return self._take(worker)

    def retire(self, worker: W, unfinished: Iterable[J] = ()) -> list[tuple[W, J]]:
        """`worker` is gone (crashed or stopped): release its recipient, and put `unfinished`
        back at the front of their lanes, in order.

        Returns the jobs that idle workers must start now. Raises LanesClosed
        (the worker released all the same) when the lanes are closed: the
        caller then owns `unfinished`.
        """
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
            self._release(worker, front=True)
            if self._closed:
                raise LanesClosed
            for job in reversed(list(unfinished)):
                recipient = self._recipient(job)
                lane = self._waiting.get(recipient)
                if lane is None:
                    lane = self._waiting[recipient] = deque()
                    if recipient not in self._busy:
                        self._ready.appendleft(recipient)
                lane.appendleft(job)
                self._queued += 1
            started = []
            while self._idle and self._ready:
                idle = self._idle.pop()
                first = self._take(idle)
                assert first is not None
                started.append((idle, first))
            return started

    def close(self) -> list[J]:
        """Refuse every later offer; return the jobs that were waiting (now nobody's)."""
        with self._lock:
            self._closed = True
            left = [job for lane in self._waiting.values() for job in lane]
            self._waiting.clear()
            self._ready.clear()
            self._queued = 0
            return left

    def _release(self, worker: W, front: bool = False) -> None:
        recipient = self._serving.pop(worker, None)
        if recipient is None:
            return
        self._busy.discard(recipient)
        if recipient in self._waiting:
            if front:
                self._ready.appendleft(recipient)
            else:
                self._ready.append(recipient)

    def _take(self, worker: W) -> J | None:
        if self._closed:
            return None
        if not self._ready:
            self._idle.append(worker)
            return None
        recipient = self._ready.popleft()
        lane = self._waiting[recipient]
        job = lane.popleft()
        if not lane:
            del self._waiting[recipient]
        self._queued -= 1
        self._serving[worker] = recipient
        self._busy.add(recipient)
        return job
