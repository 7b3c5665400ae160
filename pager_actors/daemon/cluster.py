"""The daemon as a node of a cluster: leases, forwarding and their endpoint (issue 11).

With `[pager] state = "postgresql://…"` every daemon is a node. `Node` plugs
the lease keeper (which shards this node runs) and the forwarder (commands for
the others' shards) into the pager, in the order that keeps every page:

1. the pager starts owning nothing (`Pager.start(ownership=keeper, ...)`), and
   the store's commits are fenced by the keeper's lease epochs;
2. the forwarder serves: commands other nodes forwarded for shards held here
   are run here (never forwarded again);
3. the keeper takes this node's fair share of the shards; each adoption
   re-arms their timers, resends their pending pages, then claims the commands
   that waited for them.

Overrides are written by whichever node was asked; every node reads them again
each second (`refresh`), so a page decided anywhere follows an override made
anywhere within about a second.

`leave()` hands every shard over at once (a graceful abandon: queued commands
finish, commits and sends in flight settle, then the leases are released), so
the others take them without waiting for the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pager_actors._future import CommandFuture
from pager_actors._pager import Pager
from pager_actors.domain import Command
from pager_actors.logs import get_logger
from pager_actors.ports import Outcome, Reply

log = get_logger("pager_actors.daemon.cluster")


class Leases(Protocol):
    """What the daemon needs of `adapters.pg_cluster.LeaseKeeper`: the engine's Ownership
    port, and the lease cycle."""

    def owns(self, service_id: str) -> bool: ...

    def may_send(self, service_id: str) -> bool: ...

    def start(self, adopt: Callable[[frozenset[int]], None],
              abandon: Callable[[frozenset[int], bool], bool]) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def set_config_hash(self, config_hash: str) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def figures(self) -> Mapping[str, int]: ...

    def healthy(self) -> bool: ...


class Forwarding(Protocol):
    """What the daemon needs of `adapters.pg_forward.PgForwarder`: the engine's Forwarder
    port, and serving the commands forwarded to this node."""

    def forward(self, service_id: str, command: Command, reply: Reply[Outcome]) -> None: ...

    def serve(self, run: Callable[[str, Command], CommandFuture[Outcome]],
              held: Callable[[], Collection[int]]) -> None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...

    def figures(self) -> Mapping[str, int]: ...


REFRESH_SECONDS = 1.0


class Node:
    """One daemon's place in the cluster: its leases and its forwarder, around its pager.
    `refresh` is called every REFRESH_SECONDS on a thread of its own (what other nodes
    may have changed: the overrides)."""

    def __init__(self, node_id: str, leases: Leases, forwarding: Forwarding, *,
                 hand_over_timeout: float, refresh: Callable[[], None] | None = None) -> None:
        self.node_id = node_id
        # No lease is renewed while a hand-over runs: it must end well before they lapse.
        self.hand_over_timeout = hand_over_timeout
        self.leases = leases
        self.forwarding = forwarding
        self._refresh = refresh
        self._leaving = threading.Event()
        self._pager: Pager | None = None

    def join(self, pager: Pager) -> None:
        """Serve forwarded commands, then take this node's share of the shards."""
        self._pager = pager
        self.forwarding.serve(lambda service_id, command: pager.submit(
            service_id, command, forward=False), pager.accepting)
        self.leases.start(self._adopt, self._abandon)
        if self._refresh is not None:
            threading.Thread(target=self._refreshing, args=(self._refresh,),
                             name="pager-cluster-refresh", daemon=True).start()

    def _refreshing(self, refresh: Callable[[], None]) -> None:
        while not self._leaving.wait(REFRESH_SECONDS):
            try:
                refresh()
            except Exception as error:  # PostgreSQL away: the last tables stay in force
                log.warning("cluster_refresh_failed", error=str(error))

    def _adopt(self, shards: frozenset[int]) -> None:
        assert self._pager is not None
        self._pager.adopt(shards)
        self.forwarding.wake()  # commands that waited for these shards run now

    def _abandon(self, shards: frozenset[int], graceful: bool) -> bool:
        assert self._pager is not None
        return self._pager.abandon(shards, graceful=graceful, timeout=self.hand_over_timeout)

    def leave(self) -> None:
        """Hand every shard over (graceful), then stop forwarding. Safe to call twice."""
        self._leaving.set()
        try:
            self.leases.stop(timeout=self.hand_over_timeout + 5)
        finally:
            with contextlib.suppress(Exception):
                self.forwarding.close()

    def problem(self) -> str | None:
        """Why this node should not get traffic now (for /readyz), or None."""
        if not self.leases.healthy():
            return "cannot renew the shard leases (PostgreSQL unreachable?): this node runs " \
                   "no service until it can"
        return None

    def figures(self) -> dict[str, int]:
        return {**self.leases.figures(), **self.forwarding.figures()}

    async def endpoint(self, request: Request) -> Response:
        """GET /api/v1/cluster: the nodes, the shards each holds, their last renewal and
        config hash, read from PostgreSQL."""
        status = await asyncio.to_thread(self.leases.status)
        return JSONResponse(status)
