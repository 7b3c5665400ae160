"""LeaseKeeper on a real PostgreSQL: shards shared fairly, handed over on join and stop, lost
when a node freezes or the database goes away, taken over with a new epoch; and the fence
in PostgresStore.commit, which refuses a transition whose shard lease moved on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.pg_cluster import LeaseKeeper
from adapters.postgres import PostgresStore
from pager_actors import NotOwnerError, Pager
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import MonitoredService, RaiseAlert, decide
from pager_actors.ports import (
    DeliveryResult,
    ShardLostError,
    StoreError,
    Transition,
    TransitionRefusedError,
)
from tests.conftest import two_level_policy
from tests.e2e.daemon import wait_for
from tests.pg import PASSWORD

TTL = 3.0
ALL = frozenset(range(SHARDS))
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class RecordingEngine:
    """What a pager would be told: the shards it runs, and every adopt and abandon call,
    with whether the lease row was still this node's when abandon was called."""

    def __init__(self, dsn: str, node: str) -> None:
        self.dsn = dsn
        self.node = node
        self.running: frozenset[int] = frozenset()
        self.calls: list[tuple[str, frozenset[int], bool]] = []
        self.leased_when_abandoned: list[bool] = []
        self.failing_adoptions = 0
        self.unsettled_hand_overs = 0  # graceful abandons that report running out of time
        self._lock = threading.Lock()

    def adopt(self, shards: frozenset[int]) -> None:
        with self._lock:
            if self.failing_adoptions:
                self.failing_adoptions -= 1
                raise StoreError("the store cannot be read")
            self.running |= shards
            self.calls.append(("adopt", shards, False))

    def abandon(self, shards: frozenset[int], graceful: bool) -> bool:
        if graceful:  # a hand-over: the rows must still be this node's
            still_mine = all(row[0] == self.node for shard, row
                             in lease_rows(self.dsn).items() if shard in shards)
        with self._lock:
            self.running -= shards
            self.calls.append(("abandon", shards, graceful))
            if graceful:
                self.leased_when_abandoned.append(still_mine)
                if self.unsettled_hand_overs:
                    self.unsettled_hand_overs -= 1
                    return False
            return True

    def abandoned(self, *, graceful: bool) -> frozenset[int]:
        with self._lock:
            return frozenset().union(*(shards for kind, shards, g in self.calls
                                       if kind == "abandon" and g == graceful))


def lease_rows(dsn: str) -> dict[int, tuple[str | None, int, bool]]:
    """Each shard's (node, epoch, unexpired) as another connection sees it."""
    with psycopg.connect(dsn, autocommit=True) as db:
        return {shard: (node, epoch, bool(live)) for shard, node, epoch, live in db.execute(
            "SELECT shard, node, epoch, coalesce(expires_at > now(), FALSE) FROM leases")}


def execute(dsn: str, sql: str, *params: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(sql, params)


def service_in(shards: frozenset[int], avoid: frozenset[int] = frozenset()) -> str:
    """A service id whose shard is in `shards` and not in `avoid`."""
    return next(f"svc-{n}" for n in range(10_000)
                if shard_of(f"svc-{n}") in shards - avoid)


def opened(service_id: str) -> Transition:
    decision = decide(MonitoredService(service_id, None, 0), RaiseAlert("down"),
                      two_level_policy(service_id), now=NOW, ack_timeout=timedelta(minutes=15))
    return Transition(0, decision.service, decision.effects)


def commit_what_the_store_takes(store: PostgresStore, transitions: list[Transition]
                                ) -> dict[str, TransitionRefusedError]:
    """As the engine's group committer does: a refused transition is dropped and the rest of
    the batch committed again. Returns the refusals."""
    refused: dict[str, TransitionRefusedError] = {}
    while True:
        batch = [t for t in transitions if t.state.service_id not in refused]
        try:
            store.commit(batch)
            return refused
        except TransitionRefusedError as error:
            refused[error.service_id] = error


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresStore]:
    """The store migrates the schema: the lease and node tables come with it."""
    store = PostgresStore(pg_dsn)
    yield store
    store.close()


Start = Callable[..., tuple[LeaseKeeper, RecordingEngine]]


@pytest.fixture
def start_keeper(pg_dsn: str, store: PostgresStore) -> Iterator[Start]:
    """Starts a keeper with a recording engine; every keeper started is stopped after the
    test."""
    keepers: list[LeaseKeeper] = []

    def start(node: str, *, config_hash: str = "h1") -> tuple[LeaseKeeper, RecordingEngine]:
        keeper = LeaseKeeper(pg_dsn, node=node, ttl=TTL, config_hash=config_hash)
        engine = RecordingEngine(pg_dsn, node)
        keepers.append(keeper)
        keeper.start(engine.adopt, engine.abandon)
        return keeper, engine

    yield start
    for keeper in reversed(keepers):
        keeper.resume()
        keeper.stop()


def shares(*keepers: LeaseKeeper) -> list[int]:
    return [len(k.held()) for k in keepers]


def assert_no_shard_held_twice(*keepers: LeaseKeeper) -> None:
    """No two keepers claim one shard in their fence maps."""
    seen: dict[int, str] = {}
    for keeper in keepers:
        for shard in keeper.fence()[1]:
            assert shard not in seen, f"shard {shard}: {seen[shard]} and {keeper.node}"
            seen[shard] = keeper.node


def converged(dsn: str, *keepers: LeaseKeeper, expected: list[int]) -> bool:
    """The keepers hold `expected` shards each, no shard twice, every shard's row names the
    keeper holding it."""
    assert_no_shard_held_twice(*keepers)
    if shares(*keepers) != expected:
        return False
    rows = lease_rows(dsn)
    return all(rows[shard][0] == k.node and rows[shard][1] == epoch
               for k in keepers for shard, epoch in k.fence()[1].items())


# -- sharing ----------------------------------------------------------------------------


def test_a_lone_keeper_holds_every_shard_once_started(start_keeper, pg_dsn):
    """start() returns with all 64 leases taken at epoch 1 and adopted by the engine."""
    keeper, engine = start_keeper("a")
    assert keeper.held() == ALL and engine.running == ALL
    assert keeper.fence() == ("a", dict.fromkeys(ALL, 1))
    assert lease_rows(pg_dsn) == {shard: ("a", 1, True) for shard in ALL}
    assert keeper.owns("checkout") and keeper.may_send("checkout") and keeper.healthy()
    assert keeper.figures()["shards_held"] == SHARDS
    assert keeper.figures()["failovers"] == 0


def test_three_keepers_converge_to_a_fair_share(start_keeper, pg_dsn):
    """Keepers joining one by one end at 32/32, then 22/22/20, never two on one shard; the
    holders hand over gracefully, abandoning before their rows are released."""
    a, engine_a = start_keeper("a")
    b, engine_b = start_keeper("b")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32")
    c, engine_c = start_keeper("c")
    wait_for(lambda: converged(pg_dsn, a, b, c, expected=[22, 22, 20]), 10, "22/22/20")
    for keeper, engine in ((a, engine_a), (b, engine_b), (c, engine_c)):
        wait_for(lambda k=keeper, e=engine: e.running == k.held(), 5, "engines in step")
    assert engine_a.abandoned(graceful=True) and engine_b.abandoned(graceful=True)
    assert engine_a.abandoned(graceful=False) == engine_b.abandoned(graceful=False) == set()
    assert all(engine_a.leased_when_abandoned + engine_b.leased_when_abandoned)
    assert sum(k.figures()["shards_handed_over"] for k in (a, b)) == 32 + 20
    assert sum(k.figures()["failovers"] for k in (a, b, c)) == 0


def test_a_stopping_keeper_hands_its_shards_over_without_waiting_for_the_ttl(
        start_keeper, pg_dsn):
    """stop() abandons gracefully and releases; the other node, notified, takes every shard
    as a release (no failover, epochs + 1) and the stopped node's row is gone."""
    a, _ = start_keeper("a")
    b, engine_b = start_keeper("b")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32")
    b_shards, b_epochs = b.held(), dict(b.fence()[1])
    b.stop()
    assert engine_b.calls[-1] == ("abandon", b_shards, True) and engine_b.running == set()
    assert all(engine_b.leased_when_abandoned) and b.held() == set()
    wait_for(lambda: a.held() == ALL, TTL, "a holding every shard within one ttl")
    assert a.figures()["failovers"] == 0
    assert all(a.fence()[1][shard] == b_epochs[shard] + 1 for shard in b_shards)
    assert [node["node"] for node in a.status()["nodes"]] == ["a"]
    b.stop()  # idempotent
    with pytest.raises(StoreError, match="left the cluster"):
        b.status()


def test_a_frozen_keeper_stops_sending_then_its_shards_fail_over(start_keeper, pg_dsn):
    """A keeper that stops renewing turns may_send off while its lease rows are still
    unexpired; after the ttl the other node takes them at epoch + 1, counted as failovers;
    thawed, the frozen keeper finds them lost and abandons them."""
    a, _ = start_keeper("a")
    b, engine_b = start_keeper("b")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32")
    b_shards, b_epochs = b.held(), dict(b.fence()[1])
    service = service_in(b_shards)
    b.suspend()
    wait_for(lambda: not b.may_send(service), TTL, "b's send deadline")
    rows = lease_rows(pg_dsn)
    assert all(rows[shard][0] == "b" and rows[shard][2] for shard in b_shards), (
        "may_send turned false only after the lease row expired")
    wait_for(lambda: a.held() == ALL, 3 * TTL, "a taking b's shards over")
    assert a.figures()["failovers"] == 32
    assert all(a.fence()[1][shard] == b_epochs[shard] + 1 for shard in b_shards)
    assert not b.owns(service) and not b.healthy()
    b.resume()
    wait_for(lambda: engine_b.abandoned(graceful=False) == b_shards, 2 * TTL,
             "b abandoning its lost shards")
    assert b.figures()["shards_lost"] == 32
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32 again")


def test_a_keeper_whose_adoption_fails_releases_and_takes_the_shards_later(
        start_keeper, pg_dsn):
    """adopt raising releases the leases just taken; a later tick takes them again at a new
    epoch and adopts them."""
    keeper = LeaseKeeper(pg_dsn, node="a", ttl=TTL)
    engine = RecordingEngine(pg_dsn, "a")
    engine.failing_adoptions = 1
    try:
        keeper.start(engine.adopt, engine.abandon)
        assert keeper.held() == set() and engine.running == set()
        assert all(node is None for node, _, _ in lease_rows(pg_dsn).values())
        wait_for(lambda: keeper.held() == ALL, 2 * TTL, "the next tick's adoption")
        assert engine.running == ALL and keeper.fence()[1] == dict.fromkeys(ALL, 2)
    finally:
        keeper.stop()


# -- PostgreSQL going away ---------------------------------------------------------------


def test_keepers_ride_out_a_postgresql_restart(start_keeper, pg_dsn, postgres):
    """A restart drops every connection; the keepers reconnect by themselves and go on
    renewing."""
    a, _ = start_keeper("a")
    b, _ = start_keeper("b")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32")
    renewals = a.figures()["lease_renewals"] + b.figures()["lease_renewals"]
    postgres.restart()
    wait_for(lambda: a.figures()["lease_renewals"] + b.figures()["lease_renewals"]
             > renewals + 4 and a.healthy() and b.healthy(), 4 * TTL, "renewals again")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32 again")


def test_keepers_lose_everything_while_postgresql_is_down_and_take_it_back(
        start_keeper, pg_dsn, postgres):
    """With PostgreSQL down past the ttl every held shard is lost and abandoned; once it is
    back the keepers acquire them again at new epochs and adopt them."""
    a, engine_a = start_keeper("a")
    b, engine_b = start_keeper("b")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32")
    before = {**a.fence()[1], **b.fence()[1]}
    with postgres.stopped():
        wait_for(lambda: a.held() == b.held() == set(), 3 * TTL, "leases lost")
        assert engine_a.running == engine_b.running == set()
        assert not a.healthy() and not b.healthy()
        assert a.figures()["lease_renewal_failures"] > 0
        with pytest.raises(StoreError) as refused:
            a.status()
        assert PASSWORD not in str(refused.value)
    wait_for(lambda: len(a.held() | b.held()) == SHARDS and a.healthy() and b.healthy(),
             6 * TTL, "leases taken again")
    epochs = {**a.fence()[1], **b.fence()[1]}
    assert all(epochs[shard] > before[shard] for shard in ALL)
    wait_for(lambda: engine_a.running | engine_b.running == ALL, 5, "shards adopted again")


# -- the fence ---------------------------------------------------------------------------


def lapse(dsn: str, shard: int, node: str) -> None:
    """Shard `shard`'s lease lapses, while `node`'s others stay valid for a minute."""
    execute(dsn, "UPDATE leases SET expires_at = now() + interval '1 minute' "
                 "WHERE node = %s AND shard <> %s", node, shard)
    execute(dsn, "UPDATE leases SET expires_at = now() - interval '1 second' WHERE shard = %s",
            shard)


def test_a_commit_for_a_shard_taken_over_is_refused_and_the_rest_commits(
        start_keeper, store, pg_dsn):
    """Node a, frozen, still claims shard k at epoch 1 after node b took it at epoch 2: a's
    commit for a service of k is refused ShardLostError, nothing of it written, while the
    same batch's transition for a shard a still holds commits."""
    a, _ = start_keeper("a")
    lost_service = service_in(ALL)
    k = shard_of(lost_service)
    kept_service = service_in(ALL, avoid=frozenset({k}))
    a.suspend()
    lapse(pg_dsn, k, "a")
    b, _ = start_keeper("b")
    assert b.fence()[1] == {k: 2} and b.figures()["failovers"] == 1
    assert a.fence()[1][k] == 1
    store.set_fence(a.fence)
    refused = commit_what_the_store_takes(store, [opened(lost_service), opened(kept_service)])
    assert list(refused) == [lost_service]
    error = refused[lost_service]
    assert isinstance(error, ShardLostError)
    assert (error.shard, error.node, error.epoch) == (k, "a", 1)
    assert f"shard {k}" in str(error) and "'a'" in str(error) and "epoch 1" in str(error)
    assert store.load(lost_service) is None
    assert store.load(kept_service) is not None
    assert {row["service_id"] for row in store.outbox()} == {kept_service}


def test_the_fence_refuses_every_lost_service_of_a_batch_at_once(start_keeper, store, pg_dsn):
    """Two services of a lost shard in one batch: one ShardLostError names both, so the
    engine retries the batch once; the held shard's transition commits."""
    a, _ = start_keeper("a")
    first = service_in(ALL)
    k = shard_of(first)
    second = next(f"other-{n}" for n in range(10_000) if shard_of(f"other-{n}") == k)
    kept = service_in(ALL, avoid=frozenset({k}))
    a.suspend()
    lapse(pg_dsn, k, "a")
    start_keeper("b")
    store.set_fence(a.fence)
    with pytest.raises(ShardLostError) as refused:
        store.commit([opened(first), opened(kept), opened(second)])
    assert refused.value.service_ids == (first, second)
    store.commit([opened(kept)])
    assert store.load(kept) is not None and store.load(first) is None


def test_a_renewal_that_returns_past_the_leases_end_adopts_them_again(start_keeper, pg_dsn):
    """A renewal slow enough that `owns` said no meanwhile, then succeeded: the engine is
    told to abandon and adopt the same shards (timers and pages come back from the
    store), and keeps them."""
    keeper, engine = start_keeper("a")
    renew = keeper._renew
    slow = [True]

    def late_renewal(db):
        if slow[0]:  # the rows outlive the local end (the last renewal reached the database
            slow[0] = False  # late), and this one comes back just after that end
            execute(pg_dsn, "UPDATE leases SET expires_at = now() + interval '1 minute' "
                            "WHERE node = 'a'")
            time.sleep(max(keeper._held.renewed_at + TTL - time.monotonic(), 0) + 0.3)
        return renew(db)

    keeper._renew = late_renewal  # type: ignore[method-assign]
    wait_for(lambda: keeper.figures()["shards_resynced"] == SHARDS, 4 * TTL, "the resync")
    assert engine.abandoned(graceful=False) == ALL
    assert engine.running == ALL and keeper.held() == ALL
    assert all(node == "a" for node, _, _ in lease_rows(pg_dsn).values())


def test_a_hand_over_that_did_not_settle_lets_its_leases_lapse(start_keeper, pg_dsn):
    """When a node joins and the graceful hand-over runs out of time, the excess leases are
    not released but left to lapse, unrenewed; the newcomer takes them once they have."""
    a, engine = start_keeper("a")
    engine.unsettled_hand_overs = 1
    b, _ = start_keeper("b")
    wait_for(lambda: len(a.held()) == 32, 2 * TTL, "a's hand-over")
    given = ALL - a.held()
    rows = lease_rows(pg_dsn)
    assert all(rows[shard][0] in ("a", "b") for shard in given)
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 4 * TTL,
             "b holding what a left to lapse")
    assert b.figures()["failovers"] == 32  # taken lapsed, not released


def test_the_fence_compares_epochs_not_only_node_names(start_keeper, store, pg_dsn):
    """A node restarted under the same name holds shard k at epoch 2: the frozen old process,
    still claiming epoch 1, has its commit for k refused although the row names its node."""
    old, _ = start_keeper("a")
    service = service_in(ALL)
    k = shard_of(service)
    old.suspend()
    lapse(pg_dsn, k, "a")
    new, _ = start_keeper("a")
    assert new.fence()[1] == {k: 2} and old.fence()[1][k] == 1
    assert lease_rows(pg_dsn)[k] == ("a", 2, True)
    store.set_fence(old.fence)
    with pytest.raises(ShardLostError):
        store.commit([opened(service)])
    assert store.load(service) is None
    store.set_fence(new.fence)
    store.commit([opened(service)])
    assert store.load(service) is not None


def test_a_commit_after_the_lease_expired_is_refused_though_no_one_took_it(
        start_keeper, store, pg_dsn):
    """The database's clock decides: a lease past its expiry confirms nothing, even while its
    row still names this node at this epoch."""
    a, _ = start_keeper("a")
    service = service_in(ALL)
    a.suspend()
    lapse(pg_dsn, shard_of(service), "a")
    store.set_fence(a.fence)
    with pytest.raises(ShardLostError):
        store.commit([opened(service)])
    assert store.load(service) is None


def test_delivery_results_are_not_fenced(store):
    """A page already sent is a fact: its result is recorded even by a node that holds no
    lease any more."""
    service = "checkout"
    transition = opened(service)
    store.commit([transition])
    [row] = [r for r in store.outbox() if r["target"].startswith("mailto:")]
    store.set_fence(lambda: ("a", {}))
    store.commit([], [DeliveryResult(row["delivery_id"])])
    assert {r["status"] for r in store.outbox() if r["delivery_id"] == row["delivery_id"]} == {
        "delivered"}
    with pytest.raises(ShardLostError):
        store.commit([Transition(transition.state.version, transition.state, ())])


# -- with the engine ----------------------------------------------------------------------


class Node:
    """One pager process: its own fenced store, keeper, pager and recording senders, wired
    as the daemon will (pager first, keeper last; stopped in reverse)."""

    def __init__(self, dsn: str, name: str, services: list[str]) -> None:
        self.mail, self.sms = RecordingMailSender(), RecordingSmsSender()
        self.store = PostgresStore(dsn)
        self.keeper = LeaseKeeper(dsn, node=name, ttl=TTL)
        self.pager = Pager.start(
            policies=InMemoryPolicyRepository([two_level_policy(s) for s in services]),
            mail=self.mail, sms=self.sms, timer=ManualTimer(), store=self.store,
            ack_timeout=timedelta(minutes=15), ownership=self.keeper)
        self.store.set_fence(self.keeper.fence)
        self.keeper.start(self.pager.adopt,
                          lambda shards, graceful: self.pager.abandon(shards, graceful=graceful))

    def stop(self) -> None:
        try:
            self.keeper.stop()
            self.pager.stop()
        finally:
            self.store.close()


def test_pagers_with_keepers_hand_live_incidents_over_without_paging_twice(pg_dsn, store):
    """Incidents opened on a lone node are acknowledged, once a second node joined, on the
    node each one's shard is with, one of them moved; every page went out once, and a node
    without the shard refuses."""
    low, high = service_in(frozenset(range(32))), service_in(frozenset(range(32, SHARDS)))
    nodes = [Node(pg_dsn, "a", [low, high])]
    try:
        for service in (low, high):
            nodes[0].pager.alert(service, "down").get(timeout=10)
        nodes[0].pager.flush(timeout=10)
        nodes.append(Node(pg_dsn, "b", [low, high]))
        a, b = nodes
        wait_for(lambda: converged(pg_dsn, a.keeper, b.keeper, expected=[32, 32]), 10, "32/32")
        assert {a.keeper.owns(low), a.keeper.owns(high)} == {True, False}
        for service in (low, high):
            owner, other = (a, b) if a.keeper.owns(service) else (b, a)
            outcome = owner.pager.acknowledge(service, by="ann").get(timeout=10)
            assert outcome.event == "acknowledged"
            with pytest.raises(NotOwnerError):
                other.pager.acknowledge(service).get(timeout=10)
        for node in nodes:
            node.pager.flush(timeout=10)
        assert len(a.mail.sent) + len(b.mail.sent) == 2
        assert len(a.sms.sent) + len(b.sms.sent) == 2
    finally:
        for node in reversed(nodes):
            node.stop()


# -- status and settings -----------------------------------------------------------------


def test_status_names_the_nodes_and_a_configuration_mismatch(start_keeper, pg_dsn):
    """status() lists each node with its shards, renewal time and configuration; a node on
    another configuration is flagged until its hash matches again."""
    a, _ = start_keeper("a", config_hash="h1")
    b, _ = start_keeper("b", config_hash="h2")
    wait_for(lambda: converged(pg_dsn, a, b, expected=[32, 32]), 10, "32/32")
    wait_for(lambda: a.figures()["nodes_config_mismatch"] == 1, 2 * TTL, "a mismatch seen")
    status = a.status()
    assert {key: status[key] for key in ("node", "shards", "lease_ttl", "config_hash",
                                         "config_mismatch")} == {
        "node": "a", "shards": SHARDS, "lease_ttl": TTL, "config_hash": "h1",
        "config_mismatch": True}
    assert [(n["node"], n["shards_held"], n["config_hash"], n["config_matches"], n["leaving"])
            for n in status["nodes"]] == [("a", 32, "h1", True, False),
                                          ("b", 32, "h2", False, False)]
    assert all(datetime.fromisoformat(n["last_renewal"]).tzinfo for n in status["nodes"])
    b.set_config_hash("h1")
    wait_for(lambda: not a.status()["config_mismatch"]
             and a.figures()["nodes_config_mismatch"] == 0, 3 * TTL, "the mismatch gone")


def test_a_ttl_under_three_seconds_is_refused(pg_dsn):
    """A lease shorter than 3 s leaves no room for a renewal and its margin."""
    with pytest.raises(ValueError, match="at least 3"):
        LeaseKeeper(pg_dsn, node="a", ttl=2.5)


def test_a_refused_login_names_no_password(postgres, store):
    """start() fails StoreError when PostgreSQL refuses the login; the message carries
    neither password."""
    wrong = "not-the-password-123"
    keeper = LeaseKeeper(postgres.dsn("postgres", password=wrong), node="a", ttl=TTL)
    calls: list[object] = []
    with pytest.raises(StoreError) as refused:
        keeper.start(calls.append, lambda shards, graceful: calls.append(shards))
    assert wrong not in str(refused.value) and PASSWORD not in str(refused.value)
    assert calls == []
    keeper.stop()


def test_a_keeper_before_and_after_its_life_holds_nothing(pg_dsn, store):
    """Unstarted or stopped, a keeper owns nothing, may send nothing and is not healthy."""
    keeper = LeaseKeeper(pg_dsn, node="a", ttl=TTL)
    assert not keeper.owns("checkout") and not keeper.may_send("checkout")
    assert not keeper.healthy() and keeper.held() == set()
    keeper.stop()
    with pytest.raises(RuntimeError):
        keeper.start(lambda shards: None, lambda shards, graceful: None)
