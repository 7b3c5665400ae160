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

Throttled lanes (mail and SMS, when `Pager.start(throttle=...)` asks) also
keep a `SendLog` and a `Holding`: a recipient that has used its budget
(`max_per_contact` sends in the window) is *held* instead of ready, its jobs
waiting, until the instant the window allows; the lanes ask for one `wake()`
then (the earliest instant of all held recipients). The rules added:

- a send counts against the budget when a worker takes it; a bundle counts once;
- a held recipient's later jobs join it, held too;
- `wake()`: each held recipient whose instant came becomes ready, marked
  *released*: when a worker takes it, two or more waiting jobs go out as ONE
  job (`Holding.bundle`), one goes as itself;
- a retry (`Holding.exempt`) neither waits for nor counts against the budget:
  its first attempt counted when it started. It goes to the front of its
  recipient's lane, and a held recipient with a retry waiting becomes ready for
  it alone (then is held again);
- `withdraw(match)`: waiting jobs that `match` accepts leave their lanes (an
  acknowledged incident's pages); jobs already taken are never withdrawn;
- `defer(worker, job, until)`: the worker took `job` but the cluster's
  `SendLedger` refused it (other nodes used the budget): its send is refunded,
  the recipient blocked until `until` (`SendLog.block`), the job goes back to
  the front of its lane (behind any retry waiting there) and the recipient is
  held like any other: it then leaves as one bundle with whatever waited,
  and `withdraw` still finds the job;
- pages held are reported to `Holding.held` (+n as they are held, -n as they
  leave that state by any way): the engine's pending-work count leaves them out,
  so `flush()` and `stop()` do not wait for a window.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pager_actors._throttle import SendLog

W = TypeVar("W")  # a worker (the adapter actors use their inbox)
J = TypeVar("J")  # a job (an effect, or its retry)

# A wake-up may run a hair before the instant it was asked for (float sums): close enough.
_EARLY = 1e-6


class LanesClosed(Exception):
    """The channel is stopping: no job is accepted any more."""


@dataclass(frozen=True)
class Holding(Generic[J]):
    """What throttled lanes need besides their bookkeeping."""

    sends: SendLog
    clock: Callable[[], float]  # now, on the clock `sends` counts with
    wake: Callable[[float], None]  # asks for wake() to be called after this many seconds
    bundle: Callable[[list[J]], J]  # jobs that waited, as one job
    exempt: Callable[[J], bool]  # neither waits for nor counts against the budget (a retry)
    pages: Callable[[J], int]  # pages a job carries (a bundle: several)
    held: Callable[[int], None]  # this many more pages held (> 0), or fewer (< 0)


class DeliveryLanes(Generic[W, J]):
    __slots__ = (
        "_appended",
        "_asked_at",
        "_busy",
        "_check_due",
        "_closed",
        "_held",
        "_held_pages",
        "_holding",
        "_idle",
        "_lock",
        "_queued",
        "_ready",
        "_recipient",
        "_released",
        "_schedule_check",
        "_seq",
        "_serving",
        "_taken",
        "_waiting",
        "_wake_at",
        "_wakes",
    )

    def __init__(self, recipient: Callable[[J], Hashable],
                 schedule_check: Callable[[], None], holding: Holding[J] | None = None) -> None:
        self._recipient = recipient
        self._schedule_check = schedule_check  # asks for check() to be called a little later
        self._holding = holding
        self._held: dict[Hashable, float] = {}  # held recipient -> when it may send again
        self._wakes: list[tuple[float, int, Hashable]] = []  # a heap; stale entries skipped
        self._seq = itertools.count()
        self._wake_at: float | None = None  # the earliest wake-up asked for and not yet run
        self._released: set[Hashable] = set()  # let go by wake(): the next take bundles
        self._held_pages = 0
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
        """Jobs waiting for a worker (not started), held ones included."""
        return self._queued

    @property
    def held(self) -> int:
        """Pages held back by the throttle."""
        return self._held_pages

    def offer(self, job: J) -> W | None:
        """Queue `job`, or return the idle worker that must start it now. Raises LanesClosed."""
        recipient = self._recipient(job)
        holding = self._holding
        ask = False
        wake: float | None = None
        with self._lock:
            if self._closed:
                raise LanesClosed
            lane = self._waiting.get(recipient)
            if lane is not None:  # busy, held, or ready already: keep its order
                ask = self._join(recipient, lane, job)
            elif recipient in self._busy:
                self._waiting[recipient] = deque((job,))
            elif holding is not None and not holding.exempt(job) and (
                    at := holding.sends.next_send(recipient, now := holding.clock())
            ) is not None:  # over its budget: held until the window allows
                self._waiting[recipient] = deque((job,))
                wake = self._hold(recipient, at, now, holding.pages(job))
            elif self._idle and not self._serving:  # nobody at work: start it now
                worker = self._idle.pop()
                self._serving[worker] = recipient
                self._busy.add(recipient)
                if holding is not None and not holding.exempt(job):
                    holding.sends.spend(recipient, holding.clock())
                return worker
            else:
                self._waiting[recipient] = deque((job,))
                self._ready.append(recipient)
                self._appended += 1
                ask = self._ask_check()
            self._queued += 1
        if ask:
            self._schedule_check()
        if wake is not None:
            holding.wake(wake)  # type: ignore[union-attr]
        return None

    def load_sends(self, sends: Iterable[tuple[Hashable, float]]) -> None:
        """Sends made before these lanes existed count against the budget (a restart)."""
        assert self._holding is not None
        with self._lock:
            self._holding.sends.load(sends)

    def _join(self, recipient: Hashable, lane: deque[J], job: J) -> bool:
        """`job` joins its recipient's lane; True if a check must be asked for."""
        holding = self._holding
        if holding is None:
            lane.append(job)
        elif holding.exempt(job):  # a retry goes first, and waits for no window
            lane.appendleft(job)
            if recipient in self._held:
                self._unhold(recipient, released=False, skip=1)
                return self._ask_check()
        else:
            lane.append(job)
            if recipient in self._held:
                self._count_held(holding.pages(job))
        return False

    def wake(self) -> list[tuple[W, J]]:
        """The wake-up asked for through `Holding.wake` is due: every held recipient whose
        window allows a send becomes ready (released). Returns the jobs idle workers must
        start now."""
        holding = self._holding
        assert holding is not None
        delay: float | None = None
        with self._lock:
            self._wake_at = None
            if self._closed:
                return []
            now = holding.clock()
            wakes = self._wakes
            while wakes and wakes[0][0] <= now + _EARLY:
                at, _, recipient = heapq.heappop(wakes)
                if self._held.get(recipient) == at:  # else: stale (withdrawn, retried)
                    self._unhold(recipient, released=True)
            started = self._start_idle()
            while wakes and self._held.get(wakes[0][2]) != wakes[0][0]:
                heapq.heappop(wakes)
            if wakes:
                self._wake_at = wakes[0][0]
                delay = max(self._wake_at - now, 0.0)
        if delay is not None:
            holding.wake(delay)
        return started

    def withdraw(self, match: Callable[[J], bool],
                 recipients: Iterable[Hashable] | None = None) -> list[J]:
        """Take out the waiting jobs `match` accepts (never one a worker took), looking in
        the lanes of `recipients` (None: every lane); returns them in lane order."""
        removed: list[J] = []
        with self._lock:
            if self._closed:
                return removed
            waiting = self._waiting
            lanes = list(waiting.items()) if recipients is None else [
                (r, waiting[r]) for r in dict.fromkeys(recipients) if r in waiting]
            for recipient, lane in lanes:
                gone = [job for job in lane if match(job)]
                if not gone:
                    continue
                removed.extend(gone)
                self._queued -= len(gone)
                if recipient in self._held and self._holding is not None:
                    self._count_held(-sum(self._holding.pages(job) for job in gone))
                kept = deque(job for job in lane if not match(job))
                if kept:
                    self._waiting[recipient] = kept
                    continue
                del self._waiting[recipient]
                self._held.pop(recipient, None)  # its wake-up goes stale
                self._released.discard(recipient)
                if recipient in self._ready:
                    self._ready.remove(recipient)
                    # Counted as taken: the front entry then looks newer than it is, so a
                    # check may look once more before idle workers help. Never sooner.
                    self._taken += 1
        return removed

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
            wake = self._release(worker)
            job = self._take(worker)
        if wake is not None:
            self._holding.wake(wake)  # type: ignore[union-attr]
        return job

    def defer(self, worker: W, job: J, until: float) -> J | None:
        """`worker` took `job` (not a retry) but may not send it before `until` (on the
        holding's clock): the send is not counted, `job` goes back to the front of its
        recipient's lane, and the recipient is held until then. Returns `worker`'s
        next job, as `next` does.

        Raises LanesClosed (the worker released all the same) when the lanes are
        closed: the caller then owns `job`.
        """
        holding = self._holding
        assert holding is not None
        recipient = self._recipient(job)
        with self._lock:
            if self._closed:
                self._release(worker)
                raise LanesClosed
            assert self._serving.get(worker) == recipient, "defer() by a worker not serving it"
            holding.sends.refund(recipient)
            holding.sends.block(recipient, until)
            lane = self._waiting.get(recipient)
            if lane is None:
                lane = self._waiting[recipient] = deque()
            first = 0  # retries that joined meanwhile stay first: they wait for no window
            while first < len(lane) and holding.exempt(lane[first]):
                first += 1
            lane.insert(first, job)
            self._queued += 1
            wake = self._release(worker)
            next_job = self._take(worker)
        if wake is not None:
            holding.wake(wake)
        return next_job

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
            wake = self._release(worker, front=True)
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
                elif recipient in self._held and self._holding is not None:
                    self._count_held(self._holding.pages(job))
                lane.appendleft(job)
                self._queued += 1
            started = self._start_idle()
        if wake is not None:
            self._holding.wake(wake)  # type: ignore[union-attr]
        return started

    def close(self, held: list[J] | None = None) -> list[J]:
        """Refuse every later offer; return the jobs that were waiting (now nobody's). With
        `held`, the jobs the throttle held back go there instead."""
        with self._lock:
            self._closed = True
            left: list[J] = []
            for recipient, lane in self._waiting.items():
                (held if held is not None and recipient in self._held else left).extend(lane)
            self._count_held(-self._held_pages)
            self._waiting.clear()
            self._ready.clear()
            self._held.clear()
            self._released.clear()
            self._wakes.clear()
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

    def _release(self, worker: W, front: bool = False) -> float | None:
        """`worker` no longer serves its recipient. Returns the delay of a wake-up to ask
        for (outside the lock), if that recipient is now held."""
        recipient = self._serving.pop(worker, None)
        if recipient is None:
            return None
        self._busy.discard(recipient)
        lane = self._waiting.get(recipient)
        if lane is None:
            return None
        holding = self._holding
        if holding is not None and not holding.exempt(lane[0]):
            now = holding.clock()
            at = holding.sends.next_send(recipient, now)
            if at is not None:
                return self._hold(recipient, at, now,
                                  sum(holding.pages(job) for job in lane))
        self._appended += 1
        if front:
            self._ready.appendleft(recipient)
        else:
            self._ready.append(recipient)
        return None

    def _take(self, worker: W) -> J | None:
        if self._closed:
            return None
        if not self._ready:
            self._idle.append(worker)
            return None
        recipient = self._ready.popleft()
        self._taken += 1
        lane = self._waiting[recipient]
        if self._holding is None:
            job, taken = lane.popleft(), 1
        else:
            job, taken = self._throttled_take(recipient, lane, self._holding)
        if not lane:
            del self._waiting[recipient]
        self._queued -= taken
        self._serving[worker] = recipient
        self._busy.add(recipient)
        return job

    def _throttled_take(self, recipient: Hashable, lane: deque[J], holding: Holding[J]
                        ) -> tuple[J, int]:
        """The job a worker takes from a throttled lane, and how many jobs it stands for: a
        retry alone (not counted); everything waiting as one bundle once released from a
        hold; otherwise the oldest job."""
        first = lane[0]
        if holding.exempt(first):
            lane.popleft()
            return first, 1
        holding.sends.spend(recipient, holding.clock())
        if recipient in self._released:
            self._released.discard(recipient)
            if len(lane) > 1:
                jobs = list(lane)
                lane.clear()
                return holding.bundle(jobs), len(jobs)
        lane.popleft()
        return first, 1

    def _hold(self, recipient: Hashable, at: float, now: float, pages: int) -> float | None:
        """Hold `recipient` (its jobs wait) until `at`. Returns the delay of a wake-up to ask
        for, unless an earlier one is asked for already."""
        self._held[recipient] = at
        heapq.heappush(self._wakes, (at, next(self._seq), recipient))
        self._count_held(pages)
        if self._wake_at is None or at < self._wake_at:
            self._wake_at = at
            return max(at - now, 0.0)
        return None

    def _unhold(self, recipient: Hashable, released: bool, skip: int = 0) -> None:
        """A held recipient becomes ready; `released` (its window allows a send): its next
        take carries everything waiting. The first `skip` jobs of its lane were not held."""
        del self._held[recipient]
        assert self._holding is not None
        lane = self._waiting[recipient]
        self._count_held(-sum(self._holding.pages(lane[i]) for i in range(skip, len(lane))))
        if released:
            self._released.add(recipient)
        self._ready.append(recipient)
        self._appended += 1

    def _count_held(self, pages: int) -> None:
        if pages and self._holding is not None:
            self._held_pages += pages
            self._holding.held(pages)
