"""The ports: what the engine needs from the outside world, as structural Protocols.

Adapters satisfy them by shape; none of them needs to import this module.
`Ownership` and `Forwarder` are what a cluster node plugs in (issue 11): which
services this node may run and page for, and how a command reaches the node
that runs its service; `SendLedger` is the cluster's one count of the sends
to each contact, so a throttle's budget holds over every node.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable

from pager_actors.domain import (
    ArmedTimer,
    Command,
    Effect,
    EscalationPolicy,
    IncidentSummary,
    MonitoredService,
    Notify,
    PagerError,
    ServiceStatus,
    TimelineEntry,
)
from pager_actors.oncall import Override

T_contra = TypeVar("T_contra", contravariant=True)


class PolicyRepository(Protocol):
    def get(self, service_id: str) -> EscalationPolicy | None:
        """The service's escalation policy, or None when the service is unknown."""
        ...


class DeliveryError(Exception):
    """A sender could not deliver. Senders raise one of the two kinds below."""


class TransientDeliveryError(DeliveryError):
    """Worth retrying: network error, timeout, rate limit (429), server error (5xx)."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: rejected request (400), bad credentials (401), refused address.

    Any exception a sender raises that is not a TransientDeliveryError is
    treated as permanent: it is not retried.
    """


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


class AlarmClock(Protocol):
    """Monotonic seconds, and a callback after a delay: the engine's `Scheduler`, or
    `adapters.memory.ManualClock` in tests. Throttles count time with it."""

    def now(self) -> float: ...

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """Call `fn` once `delay` seconds have passed; RuntimeError once closed."""
        ...


@runtime_checkable
class TimeoutSource(Protocol):
    """A timer that delivers its timeouts itself, once the pager attaches to it."""

    def attach(self, on_timeout: TimeoutCallback) -> None: ...


class SendLedger(Protocol):
    """Sends per contact counted for a whole cluster (issue 11), in one place every node
    asks: a throttled channel claims each send there, after its own `SendLog` allowed it.

    Called from an adapter actor's thread, just before a throttled send that is
    not a retry (a retry counted at its first attempt; a bundle counts once),
    after the cluster's send gate allowed it. It may block briefly (a database
    round trip). StoreError (or any failure) means the ledger could not be asked:
    the engine then sends anyway (fail open: a page matters more than a budget),
    logs `throttle_ledger_failed` and counts `throttle_ledger_failures`.
    """

    def claim(self, channel: str, contact: str, limit: int, window: float) -> float | None:
        """Atomically: if fewer than `limit` sends to `contact` (a contact URI) on `channel`
        were recorded in the last `window` seconds (the ledger's own clock), record one
        now and return None; else record nothing and return the seconds (> 0) until the
        window allows the next send."""
        ...


# -- commands and their outcomes; a cluster's ownership and forwarding -----------


class Outcome(NamedTuple):
    """What a command did, as resolved in its future.

    `seq` numbers the commands this service processed, in processing order.
    """

    service_id: str
    seq: int
    event: str
    reason: str | None
    state: MonitoredService
    effects: tuple[Effect, ...]

    @property
    def status(self) -> ServiceStatus:
        """The service's status right after this command."""
        return self.state.status()


class Reply(Protocol[T_contra]):
    """Where a command's answer goes: the engine's `CommandFuture` has this shape."""

    def set(self, value: T_contra) -> None:
        """Resolve with the answer."""
        ...

    def fail(self, error: BaseException) -> None:
        """Resolve with an error (`get()` raises it)."""
        ...


class Ownership(Protocol):
    """Which services this node may run: the shard leases it holds (issue 11).

    Both calls are made on hot paths (every command, every send): answer from
    memory, never from the network.
    """

    def owns(self, service_id: str) -> bool:
        """This node holds the lease of the service's shard: it may run the service's
        actor and commit for it."""
        ...

    def may_send(self, service_id: str) -> bool:
        """`owns`, and the lease's local monotonic deadline (renewal + TTL - margin) has
        not passed: asked just before every gateway call, so that a node paused past
        its lease stops paging by itself."""
        ...


class Forwarder(Protocol):
    """Carries a command to the node that owns its service."""

    def forward(self, service_id: str, command: Command, reply: Reply[Outcome]) -> None:
        """Queue `command` for the owner of `service_id` and return at once: it is called
        from callers' threads and from engine actors, which must never wait. Resolve
        `reply` later, from another thread, with the owner's `Outcome` once the owner
        committed it, or with an error (the owner refused, or no answer in time)."""
        ...


# -- the durable store -------------------------------------------------------


class Transition(NamedTuple):
    """One command's result, to commit before any of its effects happen.

    The store applies it only if the service's stored version is still
    `expected_version` (0: never stored); otherwise it raises VersionConflictError.
    Its Notify effects become outbox rows keyed by `Notify.key`; its Record
    effects are appended to the service's timeline.
    """

    expected_version: int
    state: MonitoredService
    effects: tuple[Effect, ...]


class DeliveryResult(NamedTuple):
    """The outcome of one outbox row's port call: delivered (error None) or failed; or the
    row was `withdrawn` before any port call (an ack came while a throttle held it back).

    `error` is already masked. `carried_by` names the bundle that carried the row, when
    several pages went out as one message. The store marks the row and appends
    `delivered`, `delivery_failed` or `withdrawn` to the incident's timeline.
    """

    delivery_id: str
    error: str | None = None
    carried_by: str | None = None
    withdrawn: bool = False


class StoreError(PagerError):
    """The store could not read or write; nothing of the failed call was applied."""


class TransitionRefusedError(StoreError):
    """The store refused one service's transition; the others of its batch can still commit.

    Stores raise it (rolling back the whole call) for anything that is that
    transition's own fault: a version conflict, a value the store cannot hold.
    Any other StoreError means the store itself refuses writes (disk full,
    I/O error): nothing can commit until it recovers.
    """

    def __init__(self, service_id: str, reason: str) -> None:
        super().__init__(f"service {service_id!r}: the store refused the transition: {reason}")
        self.service_id = service_id


class ShardLostError(TransitionRefusedError):
    """The node no longer holds its service's shard lease at the epoch it holds it by (the
    fencing token): another node may run the service now, so nothing of this transition
    was written. The rest of its batch can still commit.

    `also`: the other services of the same batch refused for the same reason (their
    shards lost too), so that the batch is retried once without all of them."""

    def __init__(self, service_id: str, shard: int, node: str, epoch: int | None,
                 also: tuple[str, ...] = ()) -> None:
        held = f"at epoch {epoch}" if epoch is not None else "(this node holds no epoch of it)"
        super().__init__(service_id, f"shard {shard} is no longer leased to node {node!r} "
                                     f"{held}")
        self.shard = shard
        self.node = node
        self.epoch = epoch
        self.service_ids = (service_id, *also)


class VersionConflictError(TransitionRefusedError):
    """A transition was decided on a state that is no longer the stored one."""

    def __init__(self, service_id: str, expected: int, found: int | None) -> None:
        super().__init__(service_id, f"expected stored version {expected}, found {found}")


class StoreCorruptError(StoreError):
    """The store's file is not a readable pager store; it was left untouched."""


class StoreLockedError(StoreError):
    """Another pager owns this state; this one must not touch it."""


class StateStore(Protocol):
    """Where service states and the outbox of undelivered notifications live.

    `group_commit` says whether a commit is costly (a disk flush): the engine
    then batches commits from many services through one writer.
    """

    group_commit: ClassVar[bool]

    def load(self, service_id: str) -> MonitoredService | None:
        """The last committed state of a service, or None if it never changed."""
        ...

    def commit(self, transitions: Sequence[Transition],
               deliveries: Sequence[DeliveryResult] = ()) -> None:
        """Apply all of it atomically, or nothing (then raise StoreError).

        A transition refused on its own account raises TransitionRefusedError
        naming its service, so the caller can commit the rest without it.
        """
        ...

    def armed_timers(self, *, shards: Collection[int] | None = None) -> list[ArmedTimer]:
        """Every timer the stored states rely on: ack timeouts and expiries, heartbeats,
        ends of maintenance windows (`MonitoredService.timers()`). With `shards`, only
        the services of those shards (`pager_actors.cluster.shard_of`)."""
        ...

    def undelivered(self, *, shards: Collection[int] | None = None) -> list[Notify]:
        """Outbox rows neither delivered nor failed, oldest first; with `shards`, only
        those shards' services'."""
        ...

    def open_incidents(self) -> int:
        """How many services have an open incident (for the metrics gauge)."""
        ...

    def recent_sends(self, since: datetime) -> list[tuple[str, datetime]]:
        """(contact URI, when) of each message delivered since `since`, oldest first; a
        bundle's rows count once. Throttles are rebuilt from it at start."""
        ...

    def reply_codes(self, *, shards: Collection[int] | None = None
                    ) -> list[tuple[str, str, int, datetime | None]]:
        """Every reply code a stored state holds, as (code, service, incident, released):
        its open incident's (released None), and those released within the last day;
        with `shards`, only those shards' services'."""
        ...

    def timeline(self, service_id: str, incident: int) -> list[TimelineEntry]:
        """The incident's timeline, oldest first (empty if unknown or pruned)."""
        ...

    def incidents(self, service_id: str, limit: int = 50) -> list[IncidentSummary]:
        """The service's last `limit` incidents, newest first, from their timelines."""
        ...

    def prune_timeline(self, before: datetime) -> int:
        """Forget timeline entries older than `before`; how many were removed."""
        ...

    def add_override(self, rotation: str, user: str, start: datetime, end: datetime,
                     created: datetime) -> Override:
        """Store an override of `rotation`; its id grows with each one added (the last
        created wins an overlap)."""
        ...

    def remove_override(self, rotation: str, override: int) -> bool:
        """Forget one override; False if `rotation` has no such override."""
        ...

    def overrides(self) -> dict[str, list[Override]]:
        """Every stored override, by rotation, oldest id first."""
        ...

    def prune_overrides(self, before: datetime) -> int:
        """Forget overrides that ended before `before`; how many."""
        ...

    def probe(self) -> None:
        """Prove a small write can commit; raise StoreError while none can (disk full)."""
        ...

    def close(self) -> None: ...
