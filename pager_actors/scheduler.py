"""A scheduler: one thread runs callbacks at their due times, kept in a heap.

Used by the real timer adapter (ack timeouts), by the registry (restart
backoff, end of quarantine) and by the adapter actors (delivery retries). One
thread serves every pending call, instead of a `threading.Timer` thread each.
Due times use the monotonic clock, so a wall-clock jump neither fires nor
delays anything. It imports no actor and no adapter.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger("pager_actors.scheduler")


class Scheduler:
    """Runs `call_later(delay, fn)` callbacks on its own thread, earliest first.

    A callback should return quickly; one that raises is logged and the
    scheduler carries on. `last_lag`/`max_lag` say how late callbacks ran.
    """

    def __init__(self, name: str = "pager-scheduler",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.fired = 0
        self.last_lag = 0.0
        self.max_lag = 0.0

    def now(self) -> float:
        """The clock due times are counted on (monotonic seconds by default)."""
        return self._clock()

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        due = self._clock() + max(delay, 0.0)
        with self._wake:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            entry = (due, next(self._order), fn)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._heap)

    def close(self) -> None:
        """Stop the thread; callbacks not yet due are dropped."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._heap or self._heap[0][0] > self._clock()):
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._wake.wait(timeout=wait)
                if self._closed:
                    return
                due, _, fn = heapq.heappop(self._heap)
            lag = self._clock() - due
            self.fired += 1
            self.last_lag = lag
            self.max_lag = max(self.max_lag, lag)
            try:
                fn()
            except Exception:
                log.exception("scheduled callback failed")
