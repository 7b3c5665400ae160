"""A cheap one-shot future, compatible with `pykka.Future`.

pykka's ThreadingFuture builds a Condition (an RLock and a deque) per future
and a waiter lock per `get()`. A command future needs far less: one plain Lock,
held from creation until the result is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import queue
import sys
import threading
import weakref
from typing import Any, TypeVar

import pykka
from pykka._types import OptExcInfo

T = TypeVar("T")
_log = logging.getLogger("pager_actors.future")

# Guards the rare callback lists (only the HTTP layer uses them): one lock for all futures.
_callbacks_lock = threading.Lock()


class CommandFuture(pykka.Future[T]):
    """Resolved exactly once, by `set()` or `set_exception()`; `get()` may be called often."""

    def __init__(self) -> None:
        super().__init__()
        self._ready = threading.Lock()
        self._ready.acquire()
        self._settled = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Any] | None = None

    def done(self) -> bool:
        """True once a value or an exception is set."""
        return self._settled

    def get(self, *, timeout: float | None = None) -> T:
        if self._get_hook is None and not self._settled:
            if not self._ready.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
                raise pykka.Timeout(f"{timeout} seconds")
            self._ready.release()
        if self._get_hook is not None:  # set before or while we waited
            return super().get(timeout=timeout)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def set(self, value: Any | None = None) -> None:
        self._settle(value, None)

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        error = (exc_info or sys.exc_info())[1]
        assert error is not None, "set_exception() outside an except block"
        self._settle(None, error)

    def set_get_hook(self, func: Any) -> None:
        """As pykka's: refused once resolved; wakes any thread already waiting in get()."""
        if self._settled or self._get_hook is not None:
            raise queue.Full("future already resolved")
        super().set_get_hook(func)
        self._ready.release()

    def add_done_callback(self, callback: Any) -> None:
        """Call `callback(self)` once resolved: at once if it already is, else in the resolving
        thread. Lets an asyncio handler await a command without tying up a thread."""
        with _callbacks_lock:
            if not self._settled:
                self._callbacks = [*(self._callbacks or ()), callback]
                return
        callback(self)

    def fail(self, error: BaseException) -> None:
        """Resolve with `error`; `get()` raises it."""
        self._settle(None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        if self._settled or self._get_hook is not None:
            raise queue.Full("future already resolved")
        self._value, self._error = value, error
        with _callbacks_lock:
            self._settled = True
            callbacks, self._callbacks = self._callbacks, None
        self._ready.release()
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:  # a waiter's callback must not break whoever resolves the future
                _log.exception("future callback failed")


def failed(error: BaseException) -> CommandFuture[Any]:
    """A future that already holds `error`."""
    future: CommandFuture[Any] = CommandFuture()
    future.fail(error)
    return future


async def settled(future: CommandFuture[Any], timeout: float) -> bool:
    """Wait, without blocking the event loop, until `future` is settled: False if `timeout`
    seconds passed first."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()
    wakeups = _wakeups_of(loop)
    future.add_done_callback(lambda _: wakeups.add(waiter))
    wakeups.expire_after(timeout, waiter)
    return await waiter


class _LoopWakeups:
    """Waiters of one event loop whose futures settle in other threads.

    The store writer settles a group commit's futures one after another; waking the
    loop for each (`call_soon_threadsafe` writes to its self-pipe) cost a system call
    and a loop iteration per request. Here the first waiter of a batch schedules one
    call and the others join it. Likewise the deadlines: one loop timer, for the
    earliest, instead of a timer handle armed and cancelled per request.
    """

    __slots__ = ("_deadlines", "_lock", "_loop", "_ready", "_sequence", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the loop is this object's key in `_wakeups`, which must not keep it alive.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._ready: list[asyncio.Future[bool]] = []
        # Touched on the loop's thread only:
        self._deadlines: list[tuple[float, int, asyncio.Future[bool]]] = []
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, waiter: asyncio.Future[bool]) -> None:
        """From any thread: settle `waiter` (True) on its loop soon."""
        with self._lock:
            self._ready.append(waiter)
            if len(self._ready) > 1:  # a call is already scheduled and has not run yet
                return
        loop = self._loop()
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(self._run)

    def expire_after(self, timeout: float, waiter: asyncio.Future[bool]) -> None:
        """On the loop: settle `waiter` with False once `timeout` seconds have passed."""
        loop = waiter.get_loop()
        deadline = loop.time() + timeout
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, waiter))
        if self._timer is None or deadline < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)

    def _run(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for waiter in ready:
            if not waiter.done():  # expired, or its request was cancelled
                waiter.set_result(True)

    def _expire(self) -> None:
        self._timer = None
        deadlines = self._deadlines
        if not deadlines:
            return
        loop = deadlines[0][2].get_loop()
        now = loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][2].done()):
            waiter = heapq.heappop(deadlines)[2]
            if not waiter.done():
                waiter.set_result(False)
        if deadlines:
            self._timer = loop.call_at(deadlines[0][0], self._expire)


_wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWakeups] = (
    weakref.WeakKeyDictionary())
_wakeups_lock = threading.Lock()


def _wakeups_of(loop: asyncio.AbstractEventLoop) -> _LoopWakeups:
    found = _wakeups.get(loop)
    if found is None:
        with _wakeups_lock:  # tests run several loops, each in its own thread
            found = _wakeups.setdefault(loop, _LoopWakeups(loop))
    return found
