"""Per-contact throttles: at most `max_per_contact` messages to one contact in any window.

`Throttle` and `Throttling` are what `Pager.start(throttle=...)` takes; the
daemon passes `[mail]`/`[sms] max_per_contact` and `throttle_window`. `SendLog`
is the bookkeeping one throttled channel's `DeliveryLanes` keep: when each
recipient's recent sends started. It is plain data behind the lanes' lock: no
thread, no clock of its own (times are passed in), so tests drive it directly.

A send counts when it starts, whatever its outcome, and a bundle counts once.
A window is half-open: a send at `t` counts until `t + window`, exclusive.

In a cluster, a send this log allowed may still be refused by the cluster's
`SendLedger` (other nodes used the contact's budget): it is then `refund`ed (it
never happened) and the recipient `block`ed until the instant the ledger named.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from pager_actors.ports import AlarmClock


@dataclass(frozen=True)
class Throttle:
    """At most `max_per_contact` messages to one contact in any `window`."""

    max_per_contact: int
    window: timedelta

    def __post_init__(self) -> None:
        if self.max_per_contact < 1:
            raise ValueError(f"max_per_contact must be at least 1, got {self.max_per_contact}")
        if self.window <= timedelta(0):
            raise ValueError(f"the throttle window must be positive, got {self.window}")


@dataclass(frozen=True)
class Throttling:
    """The throttle of each channel (None: that channel is not throttled), and the clock
    they count on (None: the pager's own `Scheduler`, monotonic; tests pass a
    `ManualClock`)."""

    mail: Throttle | None = None
    sms: Throttle | None = None
    clock: AlarmClock | None = None

    def of(self, channel: str) -> Throttle | None:
        return self.mail if channel == "mail" else self.sms if channel == "sms" else None

    @property
    def longest(self) -> timedelta:
        """The longest window: how far back sends matter when rebuilding at start."""
        return max((t.window for t in (self.mail, self.sms) if t is not None),
                   default=timedelta(0))


class SendLog:
    """When each recipient's last sends started, at most `max_per_contact` of them each."""

    __slots__ = ("_blocked", "_max", "_sent", "_sweep_at", "_throttle", "_window")

    def __init__(self, throttle: Throttle) -> None:
        self._max = throttle.max_per_contact
        self._window = throttle.window.total_seconds()
        self._sent: dict[Hashable, deque[float]] = {}
        self._blocked: dict[Hashable, float] = {}  # recipient -> no send before this instant
        self._sweep_at = 1024  # forget quiet recipients once this many are remembered
        self._throttle = throttle

    @property
    def throttle(self) -> Throttle:
        return self._throttle

    def next_send(self, recipient: Hashable, now: float) -> float | None:
        """None if `recipient` may be sent to at `now`; else the instant it may."""
        blocked = self._blocked.get(recipient)
        if blocked is not None:
            if blocked > now:
                return max(blocked, self._next_sent(recipient, now) or blocked)
            del self._blocked[recipient]
        return self._next_sent(recipient, now)

    def _next_sent(self, recipient: Hashable, now: float) -> float | None:
        """`next_send` by this log's own sends."""
        sent = self._sent.get(recipient)
        if sent is None:
            return None
        horizon = now - self._window
        while sent and sent[0] <= horizon:
            sent.popleft()
        if len(sent) < self._max:
            if not sent:
                del self._sent[recipient]
            return None
        return sent[0] + self._window

    def spend(self, recipient: Hashable, now: float) -> None:
        """A send to `recipient` starts at `now`."""
        sent = self._sent.get(recipient)
        if sent is None:
            sent = self._sent[recipient] = deque()
            if len(self._sent) + len(self._blocked) > self._sweep_at:
                self._sweep(now)
        sent.append(now)
        if len(sent) > self._max:  # only the last `max` sends decide when the next may go
            sent.popleft()

    def refund(self, recipient: Hashable) -> None:
        """The last send to `recipient` (its `spend`) did not happen: it no longer counts.

        Only the last send may be refunded, before any other spend to `recipient`
        (the lanes refund the send a worker took, while it still serves that
        recipient). A send that `spend` pushed out was out of the window already:
        a spend is only made when the window allows it."""
        sent = self._sent.get(recipient)
        if sent:
            sent.pop()

    def block(self, recipient: Hashable, until: float) -> None:
        """No send to `recipient` before `until` (a later block than one already set wins),
        whatever this log's own sends allow."""
        self._blocked[recipient] = max(until, self._blocked.get(recipient, until))

    def load(self, sends: Iterable[tuple[Hashable, float]]) -> None:
        """Sends that started before this log existed (rebuilt from the store), any order."""
        for recipient, at in sorted(sends, key=lambda send: send[1]):
            self.spend(recipient, at)

    def __len__(self) -> int:
        """Recipients remembered."""
        return len(self._sent)

    def _sweep(self, now: float) -> None:
        for recipient in [r for r, until in self._blocked.items() if until <= now]:
            del self._blocked[recipient]
        horizon = now - self._window
        for recipient in [r for r, sent in self._sent.items() if not sent or sent[-1] <= horizon]:
            del self._sent[recipient]
        self._sweep_at = max(1024, 2 * (len(self._sent) + len(self._blocked)))
