"""The real timer: ack timeouts on the engine's heap scheduler (one thread for all of them).

10,000 open incidents cost 10,000 heap entries, not 10,000 threads. The due
times themselves are not kept here: the store keeps each armed token's
deadline, and a restarted pager arms the timer again from it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from pager_actors.logs import get_logger
from pager_actors.scheduler import Scheduler

log = get_logger("pager_actors.adapters.timer")


class ThreadedTimer:
    """Calls `on_timeout(service_id, token)` on its scheduler thread when each timeout is due.

    The callback should return quickly (the Pager's `ack_timeout` does: it
    only enqueues). An exception from it is logged and the timer carries on.
    """

    def __init__(self) -> None:
        self._scheduler = Scheduler(name="pager-timer")
        self._on_timeout: Callable[[str, str], object] | None = None

    @property
    def fired(self) -> int:
        return self._scheduler.fired

    @property
    def max_lag(self) -> float:
        """The latest, in seconds, that any timeout fired after its due time."""
        return self._scheduler.max_lag

    @property
    def last_lag(self) -> float:
        return self._scheduler.last_lag

    def attach(self, on_timeout: Callable[[str, str], object]) -> None:
        """Route timeouts to `on_timeout` (the pager's `ack_timeout`)."""
        self._on_timeout = on_timeout

    def set_timeout(self, service_id: str, delay: timedelta, token: str) -> None:
        self._scheduler.call_later(delay.total_seconds(), lambda: self._fire(service_id, token))

    def pending(self) -> int:
        return self._scheduler.pending()

    def close(self) -> None:
        """Stop the thread; timeouts not yet due are dropped (the store re-arms them)."""
        self._scheduler.close()

    def __enter__(self) -> ThreadedTimer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _fire(self, service_id: str, token: str) -> None:
        if self._on_timeout is None:
            log.error("timeout_without_pager", service=service_id, token=token)
            return
        try:
            self._on_timeout(service_id, token)
        except Exception as error:
            log.error("timeout_callback_failed", service=service_id, token=token,
                      error=repr(error))
