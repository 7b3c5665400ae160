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
