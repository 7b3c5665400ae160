"""Which shards this pager runs: the engine's side of a cluster's ownership (issue 11).

The `Ownership` port says which shard leases this node holds. The engine adds
what only it knows: which of those shards it has *adopted* (their timers armed
again and their pending pages resent here), and which it is *draining* (handing
over gracefully: the actors already running finish, nothing new starts). So a
service is

- *accepted* (new commands run here, the registry may start its actor) when
  its shard is adopted, not draining, and leased;
- *run* (a live actor keeps processing its letters) when its shard is adopted,
  draining or not, and leased: a lease that lapses stops the actor at its next
  letter, which goes back to the registry to be forwarded;
- *sendable* (a gateway may be called for its pages) when accepted and the
  port's `may_send` holds (the lease's local deadline has not passed).

Sends in flight are counted per shard, so a graceful hand-over can wait for them
before the next owner resends what is still pending. Each adoption of a shard
starts a new *term*: a retry scheduled in an earlier term is fenced, since the
adoption that began the current one resent its page already.

Reads (`accepts`, `runs`) take no lock: the shard sets are frozensets replaced
whole. Only the send gate and its wait take the lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Collection

from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import Command, PageFailed, TimerFired
from pager_actors.errors import NotOwnerError
from pager_actors.logs import get_logger
from pager_actors.ports import Forwarder, Ownership, Reply

log = get_logger("pager_actors.shards")


class HeldShards:
    def __init__(self, ownership: Ownership, shards: int = SHARDS) -> None:
        self._ownership = ownership
        self._shards = shards
        self._running: frozenset[int] = frozenset()  # adopted, draining ones included
        self._draining: frozenset[int] = frozenset()
        self._sending: Counter[int] = Counter()  # sends in flight, by shard
        self._terms: Counter[int] = Counter()  # adoptions so far, by shard
        self._lock = threading.Condition()

    def shard(self, service_id: str) -> int:
        return shard_of(service_id, self._shards)

    @property
    def adopted(self) -> frozenset[int]:
        """The shards run here, draining ones included."""
        return self._running

    @property
    def accepting(self) -> frozenset[int]:
        """The shards whose new commands run here: adopted and not draining."""
        return self._running - self._draining

    def accepts(self, service_id: str) -> bool:
        """New commands for the service run here."""
        shard = shard_of(service_id, self._shards)
        return shard in self._running and shard not in self._draining \
            and self._ownership.owns(service_id)

    def runs(self, service_id: str) -> bool:
        """The service's live actor may go on processing its letters."""
        return shard_of(service_id, self._shards) in self._running \
            and self._ownership.owns(service_id)

    def term(self, service_id: str) -> int:
        """How many times the service's shard was adopted here."""
        return self._terms[shard_of(service_id, self._shards)]

    def adopt(self, shards: Collection[int]) -> None:
        with self._lock:
            self._terms.update(frozenset(shards) - self._running)
            self._running |= frozenset(shards)
            self._draining -= frozenset(shards)

    def drain(self, shards: Collection[int]) -> None:
        """Graceful hand-over begins: no new command, actor or send for these shards; the
        actors already running finish their letters."""
        with self._lock:
            self._draining |= frozenset(shards) & self._running

    def release(self, shards: Collection[int]) -> None:
        """These shards are no longer run here at all."""
        with self._lock:
            self._running -= frozenset(shards)
            self._draining -= frozenset(shards)

    def start_send(self, service_id: str, term: int | None = None) -> bool:
        """Just before a gateway call for one of the service's pages: True (and counted in
        flight until `end_send`) if it may go, False if it is fenced. `term`: the term the
        page was last tried in (a retry), fenced unless it is still the current one."""
        shard = shard_of(service_id, self._shards)
        with self._lock:
            if not self._sendable(shard, term):
                return False
            try:
                allowed = self._ownership.may_send(service_id)
            except Exception as error:  # a port that cannot tell: fenced (the row stays)
                log.error("may_send_failed", service=service_id, error=repr(error))
                return False
            if allowed:
                self._sending[shard] += 1
            return allowed

    def late(self, service_id: str, term: int | None = None) -> bool:
        """After `start_send` said no: True if only the lease's local send deadline stood in
        the way, the shard still being run here in the same term and its lease still held
        (its renewal is late, not lost). Such a page is tried again shortly: once the
        lease is renewed it goes; once the shard is let go (or adopted again, a new term)
        it is fenced for good and its row stays pending for whoever adopts it."""
        with self._lock:
            if not self._sendable(shard_of(service_id, self._shards), term):
                return False
        try:
            return self._ownership.owns(service_id)  # held, only its send deadline passed
        except Exception:  # a port that cannot tell: fenced (the row stays)
            return False

    def _sendable(self, shard: int, term: int | None) -> bool:
        """The lock held: the shard is run here, not draining, and `term` (if given) is
        still its current one."""
        return shard in self._running and shard not in self._draining \
            and (term is None or term == self._terms[shard])

    def end_send(self, service_id: str) -> None:
        shard = shard_of(service_id, self._shards)
        with self._lock:
            self._sending[shard] -= 1
            if self._sending[shard] <= 0:
                del self._sending[shard]
                self._lock.notify_all()

    def wait_sends(self, shards: Collection[int], timeout: float) -> bool:
        """True once no send of these shards is in flight; False if `timeout` passed first."""
        wanted = frozenset(shards)
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(shard in wanted for shard in self._sending):
                left = deadline - time.monotonic()
                if left <= 0 or not self._lock.wait(left):
                    return not any(shard in wanted for shard in self._sending)
            return True


def not_here(service_id: str, shard: int, command: object, reply: Reply[object],
             forwarder: Forwarder | None, *, forward: bool = True) -> str:
    """Answer a command for a service this pager does not run; returns what was done
    (a counter's name).

    A command goes to the forwarder, which resolves `reply` with the owner's
    outcome; without one (or with `forward` False) it fails NotOwnerError. A
    timer's firing and a page's failure are the owner's own business: the owner
    armed its own timers and resends its own pages, so they are dropped (failed
    NotOwnerError), never forwarded. A status read fails NotOwnerError (the
    facade then reads the store).
    """
    if isinstance(command, TimerFired):
        log.debug("timeout_not_owned", service=service_id, shard=shard, token=command.token)
        reply.fail(NotOwnerError(service_id, shard))
        return "timeouts_not_owned"
    if isinstance(command, PageFailed):
        log.debug("page_failure_not_owned", service=service_id, shard=shard,
                  incident=command.incident)
        reply.fail(NotOwnerError(service_id, shard))
        return "page_failures_not_owned"
    if forward and forwarder is not None and isinstance(command, Command):
        try:
            forwarder.forward(service_id, command, reply)
        except Exception as error:  # a broken forwarder fails this command, not its caller
            log.error("forward_failed", service=service_id, error=repr(error))
            with contextlib.suppress(Exception):  # unless it resolved the reply already
                reply.fail(error)
            return "commands_not_forwarded"
        return "commands_forwarded"
    reply.fail(NotOwnerError(service_id, shard))
    return "commands_not_owned"
