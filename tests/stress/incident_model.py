"""An independent, sequential model of one service's keyed alerts, windows and heartbeats.

Written from the rules of issue 8, not from the engine's code, for a clock that
stands still: every window covers "now", and a heartbeat's countdown never
runs out (its timer, fired early, arms itself again). Policies repeat once
and acks expire. It predicts the event each command reports, the pages each
incident gets and the timers that are armed. Timer tokens follow the
documented formats (`svc#3@2r1p2`, `svc#3ack1`, `svc~heartbeat4`,
`svc~window1`), which are the engine's interface to its timer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IncidentModel:
    service_id: str
    levels: int
    rounds: int = 2
    opened: int = 0
    open: bool = False
    level: int = 0
    round: int = 1
    page: int = 0
    acks: int = 0
    acked: bool = False
    armed: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    windows: set[int] = field(default_factory=set)
    windows_opened: int = 0
    heartbeat: str | None = None
    heartbeats: int = 0
    paged: list[tuple[int, int]] = field(default_factory=list)  # (incident, level)
    timers: int = 0  # timers armed so far

    def apply(self, kind: str, arg: str | int | None) -> str:
        """Apply one command; return the event the engine should report."""
        if kind == "alert":
            return self._fire(str(arg), f"{arg} fires")
        if kind == "resolve":
            if arg not in self.keys:
                return "ignored"
            del self.keys[str(arg)]
            if not self.keys and self.open:
                self._close()
                return "resolved"
            return "alert_resolved"
        if kind == "healthy":
            if not self.open and not self.keys:
                return "ignored"
            self._close()
            return "resolved"
        if kind == "ack":
            if not self.open or self.acked:
                return "ignored"
            self.acks += 1
            self.acked = True
            self.armed = f"{self.service_id}#{self.opened}ack{self.acks}"  # the expiry
            self.timers += 1
            return "acknowledged"
        if kind == "heartbeat":
            if self.heartbeat is None:
                self.heartbeats += 1
                self.heartbeat = f"{self.service_id}~heartbeat{self.heartbeats}"
                self.timers += 1
            if "heartbeat" in self.keys:
                return self.apply("resolve", "heartbeat")
            return "heartbeat"
        if kind == "start_window":
            self.windows_opened += 1
            self.windows.add(self.windows_opened)
            self.timers += 1
            return "maintenance_started"
        if kind == "end_window":
            return self._end_window(int(arg))  # type: ignore[arg-type]
        assert kind == "timer"
        token = arg
        if self.open and self.armed is not None and token in (None, self.armed):
            if self.acked:  # the ack expired: the current level again
                self.acked = False
                self._page(self.level)
                return "ack_expired"
            return self._escalate()
        if token is not None and token == self.heartbeat:  # early: the clock stands still
            self.timers += 1
            return "timer_rearmed"
        for window in sorted(self.windows):
            if token == f"{self.service_id}~window{window}":
                return self._end_window(window)
        return "ignored"

    def _fire(self, key: str, message: str) -> str:
        if key in self.keys:
            return "ignored"
        self.keys[key] = message
        if self.open:
            return "alert_added"
        if self.windows:  # the clock stands still: every window covers now
            return "suppressed"
        self._open()
        return "incident_opened"

    def _open(self) -> None:
        self.opened += 1
        self.open, self.level, self.round, self.page, self.acked = True, 0, 1, 0, False
        self.acks = 0
        self._page(1)

    def _page(self, level: int) -> None:
        self.level, self.page = level, self.page + 1
        self.paged.append((self.opened, level))
        self.armed = f"{self.service_id}#{self.opened}@{level}r{self.round}p{self.page}"
        self.timers += 1

    def _escalate(self) -> str:
        if self.level == self.levels and self.round == self.rounds:
            self.armed = None
            return "escalation_exhausted"
        if self.level == self.levels:
            self.round += 1
            self._page(1)
        else:
            self._page(self.level + 1)
        return "escalated"

    def _close(self) -> None:
        self.open, self.acked, self.armed, self.level = False, False, None, 0
        self.keys.clear()

    def _end_window(self, window: int) -> str:
        if window not in self.windows:
            return "ignored"
        self.windows.discard(window)
        if not self.open and self.keys and not self.windows:
            self._open()
        return "maintenance_ended"

    def status(self) -> tuple[str, int | None, bool, list[str]]:
        if not self.open:
            return ("healthy", None, False, list(self.keys))
        return ("unhealthy", self.level, self.acked, list(self.keys))
