"""An independent, sequential model of one service's escalation, for the stress tests.

Written from the product rules, not from the engine's code: it predicts what
each command does to a service when commands are applied one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pager_actors.domain import token_for


@dataclass
class ModelService:
    service_id: str
    levels: int
    incident: int = 0
    open: bool = False
    level: int = 0
    acked: bool = False
    armed: str | None = None
    message: str | None = None
    paged: list[tuple[int, int]] = field(default_factory=list)  # (incident, level)

    def apply(self, kind: str, arg: str | None) -> str:
        """Apply one command; return the event name the engine should report."""
        if kind == "alert":
            if self.open:
                return "ignored"
            self.incident += 1
            self.open, self.level, self.acked, self.message = True, 1, False, arg
            return self._page("incident_opened")
        if kind == "ack":
            if not self.open or self.acked:
                return "ignored"
            self.acked, self.armed = True, None
            return "acknowledged"
        if kind == "healthy":
            if not self.open:
                return "ignored"
            self.open, self.level, self.acked = False, 0, False
            self.armed = self.message = None
            return "resolved"
        assert kind == "timeout"
        if not self.open or self.acked or self.armed is None or arg not in (None, self.armed):
            return "ignored"
        if self.level == self.levels:
            self.armed = None
            return "escalation_exhausted"
        self.level += 1
        return self._page("escalated")

    def _page(self, event: str) -> str:
        self.paged.append((self.incident, self.level))
        self.armed = token_for(self.service_id, self.incident, self.level)
        return event

    def status(self) -> tuple[str, int | None, bool, str | None]:
        if not self.open:
            return ("healthy", None, False, None)
        return ("unhealthy", self.level, self.acked, self.message)
