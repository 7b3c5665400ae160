"""Delivery lanes: which worker sends which job next, with at most one job per recipient at once.

One `DeliveryLanes` per channel. It is pure bookkeeping behind one lock: no
thread, no clock, no I/O, so tests drive it directly. Jobs wait in a FIFO lane
per recipient; a recipient is *busy* while a worker handles one of its jobs,
and *ready* while it has jobs and no worker. Workers either serve one
recipient or are idle. The rules:

- `offer(job)`: behind its recipient's lane if that recipient is busy or
  already waiting. Else, when no worker is at work, straight to an idle
  worker (returned: the caller hands the job over). Else the recipient joins
  the ready queue, for the next worker to finish.
- `next(worker)`: the worker finished its job. Its recipient goes to the back
  of the ready queue if it has more jobs (round robin: one recipient with a
  long backlog does not starve the others), then the worker takes the front
  recipient's oldest job, or goes idle.
- `check()`: a recipient queued as ready while some workers were idle asks for
  one check a little later (`schedule_check`). If a recipient queued before
  that request is still waiting then, the busy workers are slow or stuck:
  every idle worker takes a ready recipient. Waking a second thread for a port that answers in
  microseconds costs more than the send itself; this way a fast port keeps one
  worker busy, while a slow or hung one gets help after one check interval.

So a recipient whose gateway hangs holds one worker, never all of them, and
never has two sends in flight.
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
    __slots__ = ("_appended", "_asked_at", "_busy", "_check_due", "_closed", "_idle", "_lock",
                 "_queued", "_ready", "_recipient", "_schedule_check", "_serving", "_taken",
                 "_waiting")

    def __init__(self, recipient: Callable[[J], Hashable],
                 schedule_check: Callable[[], None]) -> None:
        self._recipient = recipient
        self._schedule_check = schedule_check  # asks for check() to be called a little later
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, deque[J]] = {}  # recipient -> jobs not yet started
        self._ready: deque[Hashable] = deque()  # recipients with waiting jobs and no worker
        self._busy: set[Hashable] = set()  # recipients a worker is handling now
        self._serving: dict[W, Hashable] = {}  # busy worker -> its recipient
        self._idle: list[W] = []  # a stack: the last worker to finish is the warmest
        self._queued = 0
        self._closed = False
        # Ready entries are numbered in queue order: `_appended` so far, `_taken` so far, so
        # the front one is number `_taken + 1`. A check asked for when `_asked_at` entries
        # had been queued finds the front one waiting since before it asked if
        # `_taken < _asked_at`.
        self._appended = self._taken = self._asked_at = 0
        self._check_due = False

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker (not started)."""
        return self._queued

    def offer(self, job: J) -> W | None:
        """Queue `job`, or return the idle worker that must start it now. Raises LanesClosed."""
        recipient = self._recipient(job)
        ask = False
        with self._lock:
            if self._closed:
                raise LanesClosed
            lane = self._waiting.get(recipient)
            if lane is not None:  # busy, or ready already: keep its order
                lane.append(job)
            elif recipient in self._busy:
                self._waiting[recipient] = deque((job,))
            elif self._idle and not self._serving:  # nobody at work: start it now
                worker = self._idle.pop()
                self._serving[worker] = recipient
                self._busy.add(recipient)
                return worker
            else:
                self._waiting[recipient] = deque((job,))
                self._ready.append(recipient)
                self._appended += 1
                ask = self._ask_check()
            self._queued += 1
        if ask:
            self._schedule_check()
        return None

    def check(self) -> list[tuple[W, J]]:
        """The check `schedule_check` was asked for is due: if a ready recipient has waited
        since it was asked for, idle workers take the ready recipients. Returns the jobs
        they must start."""
        with self._lock:
            self._check_due = False
            if self._closed or not self._ready or not self._idle:
                return []
            if self._taken < self._asked_at:
                return self._start_idle()
            ask = self._ask_check()  # the workers kept up so far: look again later
        if ask:
            self._schedule_check()
        return []

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
                        self._appended += 1
                lane.appendleft(job)
                self._queued += 1
            return self._start_idle()

    def close(self) -> list[J]:
        """Refuse every later offer; return the jobs that were waiting (now nobody's)."""
        with self._lock:
            self._closed = True
            left = [job for lane in self._waiting.values() for job in lane]
            self._waiting.clear()
            self._ready.clear()
            self._queued = 0
            return left

    def _ask_check(self) -> bool:
        """Ask for a check (at most one due at a time) while workers are idle."""
        if self._check_due or not self._idle:
            return False
        self._check_due = True
        self._asked_at = self._appended
        return True

    def _start_idle(self) -> list[tuple[W, J]]:
        started = []
        while self._idle and self._ready:
            idle = self._idle.pop()
            job = self._take(idle)
            assert job is not None
            started.append((idle, job))
        return started

    def _release(self, worker: W, front: bool = False) -> None:
        recipient = self._serving.pop(worker, None)
        if recipient is None:
            return
        self._busy.discard(recipient)
        if recipient in self._waiting:
            self._appended += 1
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
        self._taken += 1
        lane = self._waiting[recipient]
        job = lane.popleft()
        if not lane:
            del self._waiting[recipient]
        self._queued -= 1
        self._serving[worker] = recipient
        self._busy.add(recipient)
        return job
