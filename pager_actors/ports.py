"""The ports: what the engine needs from the outside world, as structural Protocols.

Adapters satisfy them by shape; none of them needs to import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Protocol, runtime_checkable

from pager_actors.domain import EscalationPolicy


class PolicyRepository(Protocol):
    def get(self, service_id: str) -> EscalationPolicy | None:
        """The service's escalation policy, or None when the service is unknown."""
        ...


class MailSender(Protocol):
    def send_mail(self, to: str, subject: str, body: str) -> None:
        """Send one email. Raise on failure."""
        ...


class SmsSender(Protocol):
    def send_sms(self, to: str, text: str) -> None:
        """Send one SMS. Raise on failure."""
        ...


class Timer(Protocol):
    def set_timeout(self, service_id: str, delay: timedelta, token: str) -> None:
        """Arrange for `ack_timeout(service_id, token)` to reach the pager after `delay`."""
        ...


TimeoutCallback = Callable[[str, str], object]


@runtime_checkable
class TimeoutSource(Protocol):
    """A timer that delivers its timeouts itself, once the pager attaches to it."""

    def attach(self, on_timeout: TimeoutCallback) -> None: ...
