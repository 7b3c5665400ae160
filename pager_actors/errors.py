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


class ForwardTimeoutError(PagerError):
    """A forwarded command got no answer from its owner in time (issue 11).

    `applied` says what the forwarder could establish: False, no node ever took the
    command, and it never will (it is withdrawn): sending it again is safe; None, a node
    took it (or the forwarder could not check) but no answer came: whether it was
    applied is unknown, so look at the service before sending it again.
    """

    def __init__(self, service_id: str, timeout: float, applied: bool | None,
                 detail: str | None = None) -> None:
        if applied is False:
            text = (f"no node took the command for service {service_id!r} within "
                    f"{timeout:g} s; it was not applied: send it again")
        else:
            text = (f"no answer for service {service_id!r} within {timeout:g} s: "
                    f"{detail or 'a node took the command but did not answer'}; whether "
                    "it was applied is unknown")
        super().__init__(text)
        self.service_id = service_id
        self.timeout = timeout
        self.applied = applied


class OwnerFailedError(PagerError):
    """The node that ran a forwarded command failed with an error this node cannot
    rebuild (not one of the engine's, the store's or ValueError): its type and words."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"the owner failed: {kind}: {message}")
        self.kind = kind
