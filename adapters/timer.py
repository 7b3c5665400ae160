"""A real timer: one scheduler thread over a heap of due times.

One thread serves every armed timeout, instead of a `threading.Timer` (one
thread each) per timeout, so 10,000 open incidents cost 10,000 heap entries,
not 10,000 threads. Due times use the monotonic clock, so a wall-clock jump
neither fires nor delays a timeout.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

import structlog

log = structlog.get_logger("adapters.timer")


class ThreadedTimer:
    """Calls `on_timeout(service_id, token)` on its own thread when each timeout falls due.

    The callback should return quickly (the Pager's `ack_timeout` does: it
    only enqueues). An exception from it is logged and the timer carries on.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, str, str]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._on_timeout: Callable[[str, str], object] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pager-timer", daemon=True)
        self.fired = 0
        self.max_lag = 0.0

    def attach(self, on_timeout: Callable[[str, str], object]) -> None:
        """Route timeouts to `on_timeout` and start the scheduler thread."""
        with self._wake:
            self._on_timeout = on_timeout
            if not self._thread.is_alive() and not self._closed:
                self._thread.start()

    def set_timeout(self, service_id: str, delay: timedelta, token: str) -> None:
        due = self._clock() + max(delay.total_seconds(), 0.0)
        with self._wake:
            if self._closed:
                raise RuntimeError("timer is closed")
            entry = (due, next(self._order), service_id, token)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._heap)

    def close(self) -> None:
        """Stop the thread; timeouts not yet due are dropped (a durable store re-arms them)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> ThreadedTimer:
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
                due, _, service_id, token = heapq.heappop(self._heap)
                callback = self._on_timeout
            self._fire(callback, service_id, token, self._clock() - due)

    def _fire(self, callback: Callable[[str, str], object] | None, service_id: str, token: str,
              lag: float) -> None:
        self.fired += 1
        self.max_lag = max(self.max_lag, lag)
        if callback is None:
            log.error("timeout_without_pager", service=service_id, token=token)
            return
        try:
            callback(service_id, token)
        except Exception as error:
            log.error("timeout_callback_failed", service=service_id, token=token,
                      error=repr(error))
