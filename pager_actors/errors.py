"""Errors of the running engine (the domain's own errors live in `pager_actors.domain`)."""

from __future__ import annotations

from pager_actors.domain.errors import PagerError


class PagerStoppedError(PagerError):
    """The pager is stopping or stopped: the command was not accepted."""


class PagerOverloadedError(PagerError):
    """This caller's earlier commands stayed unsettled too long; the new one was not accepted."""


class ServiceQuarantinedError(PagerError):
    """The service's actor crashed too often; its commands are refused for a while."""


class DeadLetterError(PagerError):
    """The command crashed its service actor twice and was dropped (it is logged)."""


class NotOwnerError(PagerError):
    """This node does not run the service: its shard is leased elsewhere, not adopted here
    yet, or being handed over; and there was no forwarder to carry the command (or it was
    not to be forwarded: a timer or a page's failure is the owner's own)."""

    def __init__(self, service_id: str, shard: int) -> None:
        super().__init__(f"service {service_id!r} (shard {shard}) is not owned by this node")
        self.service_id = service_id
        self.shard = shard
