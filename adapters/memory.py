"""In-memory adapters that record what they did: for tests, demos and embedding."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from pager_actors.domain import EscalationPolicy


class InMemoryPolicyRepository:
    """Escalation policies by service id, changeable at run time."""

    def __init__(self, policies: Iterable[EscalationPolicy] = ()) -> None:
        self._policies = {policy.service_id: policy for policy in policies}

    def get(self, service_id: str) -> EscalationPolicy | None:
        return self._policies.get(service_id)

    def put(self, policy: EscalationPolicy) -> None:
        self._policies[policy.service_id] = policy

    def remove(self, service_id: str) -> None:
        self._policies.pop(service_id, None)

    def service_ids(self) -> list[str]:
        return sorted(self._policies)


@dataclass(frozen=True, slots=True)
class SentMail:
    to: str
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class SentSms:
    to: str
    text: str


class RecordingMailSender:
    """Records every email in `sent`, in the order sent."""

    def __init__(self) -> None:
        self.sent: list[SentMail] = []

    def send_mail(self, to: str, subject: str, body: str) -> None:
        self.sent.append(SentMail(to, subject, body))


class RecordingSmsSender:
    """Records every SMS in `sent`, in the order sent."""

    def __init__(self) -> None:
        self.sent: list[SentSms] = []

    def send_sms(self, to: str, text: str) -> None:
        self.sent.append(SentSms(to, text))


@dataclass(frozen=True, slots=True)
class ArmedTimeout:
    service_id: str
    delay: timedelta
    token: str
    due: timedelta


class ManualTimer:
    """A timer that only fires when a test advances its clock.

    `armed` records every `set_timeout` call; `advance()` fires the timeouts
    that fall due, in due order, through the attached callback, and returns
    what the callback returned (the pager's futures).
    """

    def __init__(self) -> None:
        self.armed: list[ArmedTimeout] = []
        self.now = timedelta(0)
        self._waiting: list[ArmedTimeout] = []
        self._lock = threading.Lock()
        self._on_timeout: Callable[[str, str], object] | None = None

    def attach(self, on_timeout: Callable[[str, str], object]) -> None:
        self._on_timeout = on_timeout

    def set_timeout(self, service_id: str, delay: timedelta, token: str) -> None:
        with self._lock:
            timeout = ArmedTimeout(service_id, delay, token, self.now + delay)
            self.armed.append(timeout)
            self._waiting.append(timeout)

    def pending(self) -> list[ArmedTimeout]:
        """Armed timeouts that have not fired yet."""
        with self._lock:
            return list(self._waiting)

    def advance(self, by: timedelta) -> list[object]:
        """Move the clock forward by `by` and fire everything now due."""
        with self._lock:
            self.now += by
            due = sorted((t for t in self._waiting if t.due <= self.now), key=lambda t: t.due)
            self._waiting = [t for t in self._waiting if t.due > self.now]
        if due and self._on_timeout is None:
            raise RuntimeError("ManualTimer fired but no pager is attached")
        return [self._on_timeout(t.service_id, t.token) for t in due]  # type: ignore[misc]
