"""LeaseKeeper: a cluster node's shard leases in PostgreSQL, with fencing epochs (issue 11).

Each node process runs one keeper. It is the engine's `Ownership` port
(`owns`, `may_send`, answered from memory) and the store's fence (`fence()`,
which `PostgresStore.set_fence` checks inside every commit's transaction).

The tables (schema v2, created by `PostgresStore`'s migration, so the store is
opened first): `leases`, one row per shard (holder `node`, `epoch`, which
grows at every change of holder and is the fencing token, `expires_at` by the
database's clock); `nodes`, one row per running node (`last_seen`, its
`config_hash`, `leaving` while it stops).

A tick, every ttl/3 and at once on a `pager_leases` notification (a node
released shards, joined or is leaving):

1. *Renew*: one UPDATE extends this node's leases, each only at the epoch held
   and only if unexpired. A lease not renewed is lost: it leaves the local map
   first, then `abandon(lost, False)`. `nodes.last_seen` is refreshed.
2. *Fair share*: live nodes (seen within ttl, not leaving) each get
   ceil(shards / live). Short of it, the node takes free or lapsed leases
   (`FOR UPDATE SKIP LOCKED`, epoch + 1), adds them to the local map, then
   calls `adopt(new)`; if that raises, they are released again. A lease taken
   from another node whose lease lapsed (not released) is a *failover*.
3. Over it (a node joined): the excess is handed over gracefully,
   `abandon(excess, True)` first, then the rows are released and the others
   notified.

Local deadlines, monotonic, from the instant just before the renewal query that
last succeeded (`renewed_at`): `owns` holds until renewed_at + ttl, the
lease's own end as far as this node can know; `may_send` until renewed_at +
ttl - margin (ttl/4), so a node paused (SIGSTOP, a long GC) past its lease
stops paging by itself, before any other node can have taken the lease. While
PostgreSQL cannot be reached, once renewed_at + ttl passes every held shard is
treated as lost; when it returns, the ordinary ticks acquire leases again (new
epochs) and adopt them. A database error never stops the keeper's thread: it is
logged and the next tick tries again.

Threads: `adopt` and `abandon` are called on the keeper's own thread (during
`start()`, on the caller's, for the first tick), never two at once. A graceful
`abandon` should return well within ttl - margin: no lease is renewed while it
runs. The local map is a frozen snapshot replaced whole, so `owns`,
`may_send`, `fence` and `held` take no lock. `status()` reads on a connection
of its own; the thread's connection also LISTENs.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import psycopg

from adapters.postgres import Connection, PostgresTarget, configure_session
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.logs import get_logger
from pager_actors.ports import StoreError

log = get_logger("pager_actors.adapters.pg_cluster")

CHANNEL = "pager_leases"
MIN_TTL = 3.0
# A node row unseen this long is a node that died without stopping: forgotten.
FORGET_NODES_AFTER = "1 hour"
# How often the thread looks up from its wait: a stop, a suspension, a deadline passed.
POLL = 0.25

Adopt = Callable[[frozenset[int]], None]
# abandon(shards, graceful) -> whether a graceful hand-over settled in time (if not, the
# leases are left to lapse instead of being released).
Abandon = Callable[[frozenset[int], bool], bool | None]


@dataclass(frozen=True, slots=True)
class HeldLeases:
    """The leases this node holds, as its last successful renewal confirmed them: shard to
    epoch, and the monotonic instant taken just before that renewal's query."""

    epochs: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    renewed_at: float = -math.inf

    def without(self, shards: frozenset[int]) -> HeldLeases:
        return HeldLeases(MappingProxyType({s: e for s, e in self.epochs.items()
                                            if s not in shards}), self.renewed_at)

    def having(self, epochs: Mapping[int, int]) -> HeldLeases:
        return HeldLeases(MappingProxyType({**self.epochs, **epochs}), self.renewed_at)


@dataclass
class LeaseFigures:
    """What the keeper counted since it started (for metrics)."""

    lease_renewals: int = 0
    lease_renewal_failures: int = 0
    failovers: int = 0
    shards_lost: int = 0
    shards_handed_over: int = 0
    shards_resynced: int = 0
    nodes_config_mismatch: int = 0


class LeaseKeeper:
    """One node's shard leases: the engine's Ownership port and the store's fence.

    `node` names this process in the cluster (unique among the running nodes);
    `ttl` is the lease's length in seconds (at least 3); `config_hash` the
    fingerprint of the node's configuration, compared across nodes in
    `status()`; `shards` how many lease rows are in play (the store's 64).
    Nothing connects until `start()`.
    """

    def __init__(self, dsn: str, *, node: str, ttl: float = 10.0, config_hash: str = "",
                 shards: int = SHARDS) -> None:
        if ttl < MIN_TTL:
            raise ValueError(f"the lease ttl must be at least {MIN_TTL:g} s, got {ttl:g}")
        if not node:
            raise ValueError("a node needs a name")
        if not 1 <= shards <= SHARDS:
            raise ValueError(f"shards must be in [1, {SHARDS}], got {shards}")
        self.node = node
        self.ttl = ttl
        self.margin = ttl / 4
        self._shards = shards
        self._config_hash = config_hash
        # The keeper's timeouts follow its ttl, whatever the DSN says: a renewal that
        # waits longer than a tick is worth less than a retry on a new connection.
        tick_ms = int(ttl * 1000 / 3)
        self._target = PostgresTarget.parse(
            dsn, application_name=f"pager-leases {node}"[:63],
            overrides={"connect_timeout": str(max(2, math.ceil(ttl / 3))),
                       "tcp_user_timeout": str(tick_ms)})
        self._statement_timeout = f"{tick_ms}ms"
        self._held = HeldLeases()
        self._figures = LeaseFigures()
        self._renewal_ok = False
        self._db: Connection | None = None  # the thread's: ticks and LISTEN
        self._reader: Connection | None = None  # status()'s
        self._reader_lock = threading.Lock()
        self._adopt: Adopt | None = None
        self._abandon: Abandon | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._woken = threading.Event()
        self._suspended = False
        self._tick_lock = threading.Lock()  # held during a tick: `suspend` waits on it
        self._stop_lock = threading.Lock()

    # -- the Ownership port and the fence (memory only) ---------------------------

    def owns(self, service_id: str) -> bool:
        """The service's shard is held here and its lease, as far as this node knows, has
        not ended (renewed_at + ttl)."""
        held = self._held
        return (shard_of(service_id, self._shards) in held.epochs
                and time.monotonic() < held.renewed_at + self.ttl)

    def may_send(self, service_id: str) -> bool:
        """`owns`, and the send deadline (renewed_at + ttl - margin) has not passed."""
        held = self._held
        return (shard_of(service_id, self._shards) in held.epochs
                and time.monotonic() < held.renewed_at + self.ttl - self.margin)

    def fence(self) -> tuple[str, Mapping[int, int]]:
        """(node, {shard: epoch}) of the local map, for the store's commit check. Not cut
        by the local deadline: the database's clock decides there."""
        return self.node, self._held.epochs

    def held(self) -> frozenset[int]:
        return frozenset(self._held.epochs)

    def healthy(self) -> bool:
        """The last renewal succeeded and its send deadline has not passed (for /readyz)."""
        return self._renewal_ok and time.monotonic() < (self._held.renewed_at + self.ttl
                                                          - self.margin)

    def figures(self) -> dict[str, int]:
        f = self._figures
        return {"shards_held": len(self._held.epochs), "lease_renewals": f.lease_renewals,
                "lease_renewal_failures": f.lease_renewal_failures, "failovers": f.failovers,
                "shards_lost": f.shards_lost, "shards_handed_over": f.shards_handed_over,
                "shards_resynced": f.shards_resynced,
                "nodes_config_mismatch": f.nodes_config_mismatch}

    def set_config_hash(self, config_hash: str) -> None:
        """The node's configuration changed (SIGHUP): stored at the next tick, which comes
        at once."""
        self._config_hash = config_hash
        self._woken.set()

    # -- start and stop -----------------------------------------------------------

    def start(self, adopt: Adopt, abandon: Abandon) -> None:
        """Join the cluster: record the node, run the first tick here (so a lone node holds
        every shard when this returns), then tick on the keeper's thread.

        Raises StoreError, with nothing started, if PostgreSQL cannot be reached.
        """
        if self._thread is not None or self._stopped:
            raise RuntimeError("a LeaseKeeper starts once")
        self._adopt, self._abandon = adopt, abandon
        try:
            db = self._connection()
            db.execute(
                "INSERT INTO nodes (node, started_at, last_seen, config_hash) "
                "VALUES (%s, now(), now(), %s) ON CONFLICT (node) DO UPDATE SET "
                "started_at = now(), last_seen = now(), config_hash = excluded.config_hash, "
                "leaving = FALSE", (self.node, self._config_hash))
            self._notify(db, "joined")
        except psycopg.Error as error:
            self._drop_connection()
            raise StoreError(f"{self._target.where}: node {self.node!r} cannot join the "
                             f"cluster: {self._target.reason(error)}") from error
        log.info("node_joined", node=self.node, ttl_s=self.ttl)
        self._tick()
        if self._stopping.is_set():  # stop() came from a callback of that first tick
            self._leave()
            return
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper-{self.node}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Leave gracefully: mark the node leaving, `abandon(held, True)`, release every
        lease, notify the others, forget the node row; then close. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
            self._suspended = False
            if self._thread is threading.current_thread():
                return  # called from a callback: the thread leaves once it returns
            if self._thread is not None:
                self._thread.join(timeout)
                if self._thread.is_alive():
                    log.error("lease_keeper_stop_timeout", node=self.node, timeout_s=timeout)
            else:
                self._drop_connection()
            with self._reader_lock:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None

    def suspend(self) -> None:
        """Stop ticking, as a process paused by SIGSTOP would (for tests and drills):
        returns once no tick runs. `owns` and `may_send` keep answering from the map."""
        with self._tick_lock:
            self._suspended = True

    def resume(self) -> None:
        self._suspended = False
        self._woken.set()

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        period = self.ttl / 3
        next_tick = time.monotonic() + period
        while not self._stopping.is_set():
            with self._tick_lock:
                if not self._suspended:  # a paused process notices nothing, as SIGSTOP
                    self._expire_if_overdue()
            if not self._suspended and (self._woken.is_set()
                                        or time.monotonic() >= next_tick):
                self._woken.clear()
                started = time.monotonic()
                self._tick()
                next_tick = started + period  # a long adoption does not delay the renewal
                continue
            self._wait(min(max(next_tick - time.monotonic(), 0.0), POLL))
        self._leave()

    def _wait(self, seconds: float) -> None:
        """Until a notification from another node, or `seconds`."""
        db = self._db
        if db is None or self._suspended:
            self._stopping.wait(seconds)
            return
        try:
            for notice in db.notifies(timeout=seconds, stop_after=1):
                if notice.pid != db.info.backend_pid:  # our own NOTIFY comes back too
                    self._woken.set()
        except psycopg.Error as error:
            log.warning("lease_listen_failed", node=self.node,
                        reason=self._target.reason(error))
            self._drop_connection()

    def _tick(self) -> None:
        with self._tick_lock:
            if self._suspended:
                return
            try:
                self._renew_and_balance()
            except Exception as error:  # never the end of the thread
                log.error("lease_tick_failed", node=self.node, error=repr(error))
                self._drop_connection()

    def _renew_and_balance(self) -> None:
        started = time.monotonic()
        try:
            db = self._connection()
            renewed = self._renew(db)
        except psycopg.Error as error:
            self._renewal_ok = False
            self._figures.lease_renewal_failures += 1
            log.warning("lease_renewal_failed", node=self.node,
                        reason=self._target.reason(error), shards_held=len(self._held.epochs))
            if self._db is not None and self._db.closed:
                self._drop_connection()
            self._expire_if_overdue()
            return
        before = self._held
        lost = frozenset(before.epochs) - renewed
        self._held = HeldLeases(MappingProxyType({s: e for s, e in before.epochs.items()
                                                  if s in renewed}), started)
        self._renewal_ok = True
        self._figures.lease_renewals += 1
        if lost:
            self._lose(lost, "not_renewed")
        if self._held.epochs and time.monotonic() >= started + self.ttl:
            self._expire_if_overdue()  # so slow that this renewal's own local end passed
            return
        if self._held.epochs and time.monotonic() >= before.renewed_at + self.ttl:
            # `owns` said no for a while before this renewal came back: the engine may have
            # dropped timers and stopped actors meanwhile. Start those shards afresh.
            self._resync(db, dict(self._held.epochs))
        try:
            live, mismatched = self._live_nodes(db)
            self._figures.nodes_config_mismatch = mismatched
            share = math.ceil(self._shards / max(live, 1))
            held = len(self._held.epochs)
            if held < share:
                self._acquire(db, share - held)
            elif held > share:
                self._hand_over(db, held - share)
        except psycopg.Error as error:
            log.warning("lease_balance_failed", node=self.node,
                        reason=self._target.reason(error))
            if db.closed:
                self._drop_connection()

    def _renew(self, db: Connection) -> frozenset[int]:
        """Extend every lease held at its epoch and unexpired; refresh the node's row.
        Returns the shards renewed."""
        held = self._held.epochs
        shards = sorted(held)
        with db.transaction():
            # Rows locked in shard order, as the store's fence locks them: never a deadlock.
            rows = db.execute(
                "WITH mine AS (SELECT l.shard FROM leases l "
                "JOIN unnest(%s::smallint[], %s::bigint[]) AS h(shard, epoch) "
                "ON l.shard = h.shard AND l.epoch = h.epoch "
                "WHERE l.node = %s AND l.expires_at > now() ORDER BY l.shard FOR UPDATE OF l) "
                "UPDATE leases SET expires_at = now() + make_interval(secs => %s) "
                "FROM mine WHERE leases.shard = mine.shard RETURNING leases.shard",
                (shards, [held[s] for s in shards], self.node, self.ttl)).fetchall()
            db.execute(
                "INSERT INTO nodes (node, started_at, last_seen, config_hash) "
                "VALUES (%s, now(), now(), %s) ON CONFLICT (node) DO UPDATE SET "
                "last_seen = now(), config_hash = excluded.config_hash",
                (self.node, self._config_hash))
        return frozenset(shard for (shard,) in rows)

    def _live_nodes(self, db: Connection) -> tuple[int, int]:
        """How many nodes are live (seen within ttl, not leaving; this one counts), and how
        many of them run another configuration than this one."""
        db.execute(f"DELETE FROM nodes WHERE last_seen < now() - interval '{FORGET_NODES_AFTER}'")
        row = db.execute(
            "SELECT count(*), count(*) FILTER (WHERE config_hash <> %s) FROM nodes "
            "WHERE last_seen > now() - make_interval(secs => %s) AND NOT leaving "
            "AND node <> %s", (self._config_hash, self.ttl, self.node)).fetchone()
        others, mismatched = row if row is not None else (0, 0)
        return int(others) + 1, int(mismatched)

    def _acquire(self, db: Connection, wanted: int) -> None:
        """Take up to `wanted` free or lapsed leases, then adopt them."""
        rows = db.execute(
            "WITH free AS (SELECT shard, node AS previous FROM leases "
            "WHERE shard < %s AND (node IS NULL OR expires_at IS NULL OR expires_at < now()) "
            "ORDER BY node IS NOT NULL, shard LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE leases SET node = %s, epoch = leases.epoch + 1, "
            "expires_at = now() + make_interval(secs => %s), acquired_at = now() "
            "FROM free WHERE leases.shard = free.shard "
            "RETURNING leases.shard, leases.epoch, free.previous",
            (self._shards, wanted, self.node, self.ttl)).fetchall()
        if not rows:
            return
        taken = {int(shard): int(epoch) for shard, epoch, _ in rows}
        failovers = sum(1 for _, _, previous in rows
                        if previous is not None and previous != self.node)
        self._figures.failovers += failovers
        self._held = self._held.having(taken)
        log.info("shards_acquired", node=self.node, shards=sorted(taken), failovers=failovers)
        self._adopt_or_release(db, taken)

    def _adopt_or_release(self, db: Connection, taken: Mapping[int, int]) -> None:
        """The engine takes these held shards on; if it cannot, they are released again."""
        new = frozenset(taken)
        assert self._adopt is not None
        try:
            self._adopt(new)
        except Exception as error:
            log.error("adopt_failed", node=self.node, shards=sorted(new), error=repr(error))
            self._held = self._held.without(new)
            self._release(db, dict(taken))

    def _resync(self, db: Connection, epochs: Mapping[int, int]) -> None:
        """The lease outlived its local deadline (a slow renewal): abandon and adopt again,
        so every timer is re-armed and every pending page resent from the store."""
        shards = frozenset(epochs)
        log.warning("shards_resynced", node=self.node, shards=sorted(shards))
        self._figures.shards_resynced += len(shards)
        self._call_abandon(shards, graceful=False)
        self._adopt_or_release(db, epochs)

    def _hand_over(self, db: Connection, excess: int) -> None:
        """A node joined: give up `excess` leases gracefully (the engine first, then the
        rows), the highest shards first."""
        held = self._held.epochs
        given = frozenset(sorted(held)[-excess:])
        epochs = {shard: held[shard] for shard in given}
        settled = self._call_abandon(given, graceful=True)
        self._held = self._held.without(given)
        self._figures.shards_handed_over += len(given)
        if not settled:  # a send may still be in flight: let the leases lapse, unrenewed
            log.warning("shards_left_to_lapse", node=self.node, shards=sorted(given))
            return
        self._release(db, epochs)
        log.info("shards_handed_over", node=self.node, shards=sorted(given))

    def _release(self, db: Connection, epochs: Mapping[int, int]) -> None:
        """Free these leases (at their epochs: one already taken over stays the other's) and
        tell the others."""
        shards = sorted(epochs)
        with db.transaction():
            db.execute(
                "WITH mine AS (SELECT l.shard FROM leases l "
                "JOIN unnest(%s::smallint[], %s::bigint[]) AS h(shard, epoch) "
                "ON l.shard = h.shard AND l.epoch = h.epoch "
                "WHERE l.node = %s ORDER BY l.shard FOR UPDATE OF l) "
                "UPDATE leases SET node = NULL, expires_at = NULL "
                "FROM mine WHERE leases.shard = mine.shard",
                (shards, [epochs[s] for s in shards], self.node))
            self._notify(db, "released")

    def _lose(self, lost: frozenset[int], why: str) -> None:
        """These leases are gone (already out of the local map): the engine lets go."""
        self._figures.shards_lost += len(lost)
        log.warning("shards_lost", node=self.node, shards=sorted(lost), why=why)
        self._call_abandon(lost, graceful=False)

    def _call_abandon(self, shards: frozenset[int], *, graceful: bool) -> bool:
        """The engine lets go; False if a graceful hand-over did not settle in time."""
        if self._abandon is None:
            return True
        try:
            return self._abandon(shards, graceful) is not False
        except Exception as error:  # the shards go anyway: the fence guards the store
            log.error("abandon_failed", node=self.node, shards=sorted(shards),
                      graceful=graceful, error=repr(error))
            return False

    def _expire_if_overdue(self) -> None:
        """Renewals failed until the lease's local end passed: every held shard is lost."""
        held = self._held
        if held.epochs and time.monotonic() >= held.renewed_at + self.ttl:
            self._held = HeldLeases(renewed_at=held.renewed_at)
            self._renewal_ok = False
            self._lose(frozenset(held.epochs), "renewals_failed")

    def _leave(self) -> None:
        """The end of the thread: hand everything over and forget the node."""
        epochs = dict(self._held.epochs)
        try:
            db = self._connection()
            with db.transaction():
                db.execute("UPDATE nodes SET leaving = TRUE WHERE node = %s", (self.node,))
                self._notify(db, "leaving")
        except psycopg.Error as error:
            log.warning("node_leave_failed", node=self.node, reason=self._target.reason(error))
            db = None
        settled = self._call_abandon(frozenset(epochs), graceful=True)
        self._held = HeldLeases()
        if not settled:  # a send may still be in flight: the leases lapse after ttl instead
            log.warning("shards_left_to_lapse", node=self.node, shards=sorted(epochs))
            epochs = {}
        try:
            if db is not None:
                self._release(db, epochs)
                db.execute("DELETE FROM nodes WHERE node = %s", (self.node,))
                self._figures.shards_handed_over += len(epochs)
        except psycopg.Error as error:  # the leases lapse by themselves after ttl
            log.warning("node_leave_failed", node=self.node, reason=self._target.reason(error))
        self._drop_connection()
        log.info("node_left", node=self.node, shards_released=len(epochs))

    # -- connections --------------------------------------------------------------

    def _connection(self) -> Connection:
        """The thread's connection, set up and LISTENing; a new one if the last was lost.
        Raises psycopg.Error."""
        if self._db is not None and not self._db.closed:
            return self._db
        self._drop_connection()
        self._db = self._open()
        self._db.execute(f"LISTEN {CHANNEL}")
        return self._db

    def _open(self) -> Connection:
        db: Connection = psycopg.connect(**self._target.params, autocommit=True)
        try:
            configure_session(db)
            db.execute(f"SET statement_timeout = '{self._statement_timeout}'")
        except BaseException:
            db.close()
            raise
        return db

    def _drop_connection(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def _notify(self, db: Connection, what: str) -> None:
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{what} {self.node}"))

    # -- status -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The cluster as the database sees it, for `GET /api/v1/cluster`: every node row
        (a node unseen for an hour is forgotten). Raises StoreError if it cannot be read,
        or once the keeper stopped. `config_mismatch`: a live node (seen within the ttl,
        not leaving) runs another configuration than this one."""
        with self._reader_lock, self._reading() as db:
            rows = db.execute(
                "SELECT n.node, n.last_seen, n.config_hash, n.leaving, "
                "n.last_seen > now() - make_interval(secs => %s) AS live, "
                "(SELECT count(*) FROM leases l WHERE l.node = n.node "
                "AND l.expires_at > now()) FROM nodes n ORDER BY n.node",
                (self.ttl,)).fetchall()
        nodes = [{"node": node, "shards_held": int(count), "last_renewal": seen.isoformat(),
                  "config_hash": config_hash, "config_matches": config_hash == self._config_hash,
                  "leaving": bool(leaving)}
                 for node, seen, config_hash, leaving, _, count in rows]
        mismatch = any(live and not leaving and config_hash != self._config_hash
                       for _, _, config_hash, leaving, live, _ in rows)
        return {"node": self.node, "shards": self._shards, "lease_ttl": self.ttl,
                "config_hash": self._config_hash, "nodes": nodes, "config_mismatch": mismatch}

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """status()'s connection (the reader lock held); StoreError if PostgreSQL fails."""
        if self._stopped:
            raise StoreError(f"node {self.node!r} has left the cluster")
        try:
            if self._reader is None or self._reader.closed:
                self._reader = self._open()
            yield self._reader
        except psycopg.Error as error:
            if self._reader is not None and self._reader.closed:
                self._reader = None
            raise StoreError(f"{self._target.where}: cannot read the cluster: "
                             f"{self._target.reason(error)}") from error
