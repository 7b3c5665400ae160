"""A service actor's inbox, which can be closed and drained atomically.

Pykka drops the `tell` messages left in the inbox of an actor that crashed or
stopped. A pager must not: when a service actor stops, `close()` takes every
message still queued and hands it to the registry under the same lock that
`put()` takes, so a message is either in the drained batch or refused with
InboxClosed (and then routed through the registry, after the batch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class InboxClosed(Exception):
    """The actor behind this inbox has stopped; route the message through the registry."""


class Envelope:
    """What pykka's actor loop reads: a message and an optional reply future."""

    __slots__ = ("message", "reply_to")

    def __init__(self, message: Any, reply_to: Any = None) -> None:
        self.message = message
        self.reply_to = reply_to


class ServiceInbox:
    __slots__ = ("_closed", "_lock", "_queue")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False

    def put(self, envelope: Any, /) -> None:
        with self._lock:
            if self._closed:
                raise InboxClosed
            self._queue.put(envelope)

    def get(self) -> Any:
        return self._queue.get()

    def empty(self) -> bool:
        return self._queue.empty()

    def qsize(self) -> int:
        return self._queue.qsize()

    def drain(self, limit: int | None = None) -> list[Any]:
        """Take queued envelopes, up to `limit` of them, without waiting."""
        taken: list[Any] = []
        while limit is None or len(taken) < limit:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def close(self, hand_over: Callable[[list[Any]], None]) -> None:
        """Refuse further puts and pass what is left to `hand_over`, under the lock.

        Calling `hand_over` under the lock orders it before any message that a
        sender re-routes after seeing InboxClosed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            hand_over(self.drain())
