"""Login rate limits: failed logins counted per account, per client address and overall.

Each count is a sliding window (15 minutes). A login attempt is refused before
its password is checked once any of its counts is full, so a refused attempt
costs no hashing and tells nothing about the password. Unknown account names
are counted like known ones, so a refusal says nothing about who exists. A
success clears its account's count, not its client's.

`LoginLimiter` counts in this process's memory; a cluster counts in its
database (`adapters.pg_console`), so failures on every node add up.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from pager_actors.console.ports import ACCOUNT_KEY_CHARS, LoginLimits, Refusal, account_key

__all__ = ["ACCOUNT_KEY_CHARS", "LoginLimiter", "LoginLimits", "Refusal"]


class LoginLimiter:
    """`LoginAttempts` in memory. Thread-safe; time from `clock` (monotonic seconds)."""

    def __init__(self, limits: LoginLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self._clock = limits or LoginLimits(), clock
        self._accounts: dict[str, deque[float]] = {}
        self._clients: dict[str, deque[float]] = {}
        self._overall: deque[float] = deque()
        self._lock = threading.Lock()

    def refused(self, account: str, client: str) -> Refusal | None:
        """The limit that refuses an attempt for `account` from `client` now, if any."""
        limits, now = self.limits, self._clock()
        with self._lock:
            for scope, times, most in (
                    ("account", self._accounts.get(account_key(account)), limits.per_account),
                    ("client", self._clients.get(client), limits.per_client),
                    ("overall", self._overall, limits.overall)):
                if times is None:
                    continue
                self._expire(times, now)
                if len(times) >= most:
                    wait = times[len(times) - most] + limits.window - now
                    return Refusal(scope, max(1, math.ceil(wait)))
        return None

    def failed(self, account: str, client: str) -> None:
        now = self._clock()
        with self._lock:
            for table, key in ((self._accounts, account_key(account)), (self._clients, client)):
                times = table.get(key)
                if times is None:
                    times = table[key] = deque()
                    self._bound(table, now)
                times.append(now)
            self._overall.append(now)
            self._expire(self._overall, now)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._accounts.pop(account_key(account), None)

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.limits.window:
            times.popleft()

    def _bound(self, table: dict[str, deque[float]], now: float) -> None:
        """Forget expired keys, then the oldest, past `max_tracked`."""
        if len(table) <= self.limits.max_tracked:
            return
        for key in [k for k, times in table.items()
                    if not times or times[-1] <= now - self.limits.window]:
            del table[key]
        while len(table) > self.limits.max_tracked:
            del table[next(iter(table))]

