"""Counts unsettled work, so `Pager.flush()` waits on one condition instead of pinging actors."""

from __future__ import annotations

import threading


class WorkTracker:
    """Work begins before it is queued and ends once done.

    Work that spawns more work (a command and the notifications it causes)
    begins the children before it ends itself, so the count reaches zero only
    when the whole chain is done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def begin(self, count: int = 1) -> None:
        with self._lock:
            self._pending += count

    def end(self, count: int = 1) -> None:
        self.add(-count)

    def add(self, delta: int) -> None:
        """Begin (delta > 0) or end (delta < 0) work in one step."""
        with self._lock:
            self._pending += delta
            if self._pending == 0:
                self._idle.notify_all()

    @property
    def pending(self) -> int:
        return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is pending; False if `timeout` seconds passed first."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)
