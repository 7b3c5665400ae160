"""Errors the domain reports to callers."""

from __future__ import annotations


class PagerError(Exception):
    """Base class of every error pager-actors raises on purpose."""


class UnknownServiceError(PagerError, LookupError):
    """The service has no escalation policy; nothing was changed."""

    def __init__(self, service_id: str) -> None:
        super().__init__(f"unknown service {service_id!r}: it has no escalation policy")
        self.service_id = service_id
