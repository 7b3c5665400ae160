"""PgForwarder on a real PostgreSQL: two nodes on one database, A forwarding and B serving
with a real pager; answers, order, exactly-once under load, timeouts that say whether the
command was applied, PostgreSQL going away and coming back, close()."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from datetime import timedelta

import psycopg
import pytest

from adapters.command_json import encode_command
from adapters.memory import (
    InMemoryOwnership,
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.pg_forward import EXPIRED, PgForwarder
from adapters.postgres import PostgresStore
from pager_actors import CommandFuture, NotOwnerError, Pager, PagerStoppedError
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import Acknowledge, RaiseAlert, ResolveAlert, UnknownServiceError
from pager_actors.errors import ForwardTimeoutError
from pager_actors.ports import StoreError
from tests.conftest import two_level_policy
from tests.e2e.daemon import wait_for
from tests.pg import PASSWORD

ALL = frozenset(range(SHARDS))
SERVICES = [f"svc-{n}" for n in range(24)]
T = timedelta(minutes=15)


class Cluster:
    """Forwarders and pagers on one database; everything stopped and closed at the end."""

    def __init__(self, dsn: str, store: PostgresStore) -> None:
        self.dsn = dsn
        self.store = store
        self.policies = InMemoryPolicyRepository(
            [two_level_policy(s) for s in ["checkout", "search", *SERVICES]])
        self.pagers: list[Pager] = []
        self.forwarders: list[PgForwarder] = []

    def forwarder(self, node: str, *, timeout: float = 2.0, poll: float = 0.2,
                  dsn: str | None = None) -> PgForwarder:
        forwarder = PgForwarder(dsn or self.dsn, node=node, timeout=timeout, poll=poll)
        self.forwarders.append(forwarder)
        return forwarder

    def pager(self, forwarder: PgForwarder | None, shards=ALL, *, adopt=True) -> Pager:
        ownership = InMemoryOwnership(shards)
        pager = Pager.start(policies=self.policies, mail=RecordingMailSender(),
                            sms=RecordingSmsSender(), timer=ManualTimer(), store=self.store,
                            ack_timeout=T, ownership=ownership, forwarder=forwarder)
        self.pagers.append(pager)
        if adopt:
            pager.adopt(shards)
        return pager

    def serving_node(self, node: str = "b", **options) -> tuple[Pager, PgForwarder]:
        """A node holding every shard: its pager runs what its forwarder claims."""
        forwarder = self.forwarder(node, **options)
        pager = self.pager(forwarder)
        forwarder.serve(lambda service_id, command: pager.submit(service_id, command,
                                                                 forward=False),
                        lambda: ALL)
        return pager, forwarder

    def forwarding_node(self, node: str = "a", **options) -> tuple[Pager, PgForwarder]:
        """A node holding no shard: every command goes through its forwarder."""
        forwarder = self.forwarder(node, **options)
        return self.pager(forwarder, frozenset()), forwarder

    def close(self) -> None:
        for pager in self.pagers:  # the pagers first, so their answers go out
            pager.stop()
        for forwarder in self.forwarders:
            forwarder.close()


@pytest.fixture
def cluster(pg_dsn):
    store = PostgresStore(pg_dsn)  # creates the schema
    cluster = Cluster(pg_dsn, store)
    yield cluster
    cluster.close()
    store.close()


def rows(dsn: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        return db.execute(sql, params).fetchall()


def forwarded(forwarder: PgForwarder, service_id: str, command) -> CommandFuture:
    reply: CommandFuture = CommandFuture()
    forwarder.forward(service_id, command, reply)
    return reply


def test_an_alert_forwarded_from_a_gets_bs_committed_outcome(cluster):
    """A command sent to a node that does not own the service resolves with the owner's
    Outcome, committed: B's store and pager show the incident."""
    b_pager, b_forwarder = cluster.serving_node()
    a_pager, a_forwarder = cluster.forwarding_node()
    outcome = a_pager.alert("checkout", "disk full").get(timeout=10)
    assert (outcome.service_id, outcome.event, outcome.seq) == ("checkout", "incident_opened", 1)
    assert outcome.effects == ()
    assert outcome.state.incident is not None and outcome.state.incident.message == "disk full"
    assert cluster.store.load("checkout") == outcome.state
    assert b_pager.state("checkout") == outcome.state
    assert a_forwarder.figures() == {"commands_forwarded": 1, "forwarded_answered": 1,
                                     "forward_timeouts": 0, "forwarded_served": 0,
                                     "forward_failures": 0}
    assert b_forwarder.figures()["forwarded_served"] == 1
    wait_for(lambda: not rows(cluster.dsn, "SELECT id FROM commands"), 5,
             "the answered row to be deleted by its origin")


def test_the_owners_refusal_travels_back_as_itself(cluster):
    """An error at the owner (here, an unknown service) is raised on the origin as the same
    type, with the owner's message."""
    cluster.serving_node()
    _, a_forwarder = cluster.forwarding_node()
    with pytest.raises(UnknownServiceError, match="nope"):
        forwarded(a_forwarder, "nope", RaiseAlert("x")).get(timeout=10)


def test_a_command_claimed_by_a_node_that_lost_its_shard_goes_to_the_next_owner(cluster):
    """A node that claims a command for a service it no longer runs (NotOwnerError) gives
    the row back instead of answering, and never claims it again; the shard's next owner
    runs it, and the origin gets that owner's outcome."""
    b_forwarder = cluster.forwarder("b")
    b_pager = cluster.pager(None, frozenset(), adopt=False)
    b_forwarder.serve(lambda s, c: b_pager.submit(s, c, forward=False), lambda: ALL)
    _, a_forwarder = cluster.forwarding_node(timeout=15)
    reply = forwarded(a_forwarder, "search", RaiseAlert("slow"))
    wait_for(lambda: rows(cluster.dsn, "SELECT count(*) FROM commands WHERE taken_by IS NULL "
                                       "AND answer IS NULL") == [(1,)]
             and b_forwarder.figures()["forwarded_served"] >= 1, 10, "b to give it back")
    assert not reply.done()
    cluster.serving_node("c", timeout=15)
    assert reply.get(timeout=15).event == "incident_opened"
    assert b_forwarder.figures()["forwarded_served"] == 1  # claimed once, never again


def test_wake_claims_at_once_what_waited_for_a_shard_just_adopted(cluster):
    """A command for a shard the server does not hold yet waits; wake() after the adoption
    claims it without waiting for the next poll (30 s here)."""
    held: set[int] = set()
    b_forwarder = cluster.forwarder("b", timeout=10, poll=30)
    b_pager = cluster.pager(b_forwarder)
    b_forwarder.serve(lambda s, c: b_pager.submit(s, c, forward=False), lambda: held)
    _, a_forwarder = cluster.forwarding_node(timeout=10)
    reply = forwarded(a_forwarder, "checkout", RaiseAlert("down"))
    wait_for(lambda: a_forwarder.figures()["commands_forwarded"] == 1, 5, "the insert")
    assert not reply.done()
    held.update(ALL)
    b_forwarder.wake()
    assert reply.get(timeout=8).event == "incident_opened"


def test_one_callers_commands_for_a_service_keep_their_order(cluster):
    """Many threads, each sending a run of commands to its own services through A: B
    numbers each thread's commands of a service in the order they were sent."""
    cluster.serving_node(timeout=20)
    a_pager, _ = cluster.forwarding_node(timeout=20)
    seqs: dict[tuple[int, str], list[int]] = defaultdict(list)
    errors: list[BaseException] = []

    def caller(number: int) -> None:
        try:
            futures = [(service, a_pager.alert(service, f"m{i}", key=f"t{number}-{i}"))
                       for i in range(15) for service in SERVICES[number::6]]
            for service, future in futures:
                seqs[number, service].append(future.get(timeout=30).seq)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(seqs) == len(SERVICES)
    for run in seqs.values():
        assert run == list(range(1, 16))


def test_hundreds_of_commands_from_many_threads_each_run_exactly_once(cluster):
    """Stress: 12 threads forward 600 commands over 24 services through A; every reply
    resolves once, B numbers each service's commands 1..n without gap or repeat, and
    every alert is in B's committed state."""
    b_pager, b_forwarder = cluster.serving_node(timeout=30)
    a_pager, a_forwarder = cluster.forwarding_node(timeout=30)
    lock = threading.Lock()
    seqs: dict[str, list[int]] = defaultdict(list)
    sent: dict[str, set[str]] = defaultdict(set)
    resolved: list[int] = []
    errors: list[BaseException] = []

    def caller(number: int) -> None:
        try:
            futures = []
            for i in range(50):
                service, key = SERVICES[(number * 7 + i) % len(SERVICES)], f"t{number}-{i}"
                future = a_pager.alert(service, "load", key=key)
                future.add_done_callback(lambda _: resolved.append(1))
                futures.append((service, key, future))
            for service, key, future in futures:
                outcome = future.get(timeout=60)
                with lock:
                    seqs[service].append(outcome.seq)
                    sent[service].add(key)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert len(resolved) == 600
    for service, numbers in seqs.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), service
        state = cluster.store.load(service)
        assert {alert.key for alert in state.alerts} == sent[service]
        assert b_pager.state(service) == state
    assert sum(len(numbers) for numbers in seqs.values()) == 600
    assert a_forwarder.figures()["forwarded_answered"] == 600
    assert b_forwarder.figures()["forwarded_served"] == 600
    assert a_forwarder.figures()["forward_timeouts"] == 0


class CountingReply:
    """A Reply that records every call made to it, to prove each is resolved once."""

    def __init__(self) -> None:
        self.calls: list[object] = []
        self.done = threading.Event()

    def set(self, value) -> None:
        self.calls.append(value)
        self.done.set()

    def fail(self, error) -> None:
        self.calls.append(error)
        self.done.set()


def test_every_reply_is_resolved_exactly_once_under_load(cluster):
    """Stress at the port: 8 threads forward 400 commands straight to A's forwarder; each
    reply gets exactly one call, an Outcome, and B ran 400 commands."""
    b_pager, b_forwarder = cluster.serving_node(timeout=30)
    a_forwarder = cluster.forwarder("a", timeout=30)
    replies = [CountingReply() for _ in range(400)]

    def caller(number: int) -> None:
        for i in range(number, 400, 8):
            a_forwarder.forward(SERVICES[i % len(SERVICES)], RaiseAlert("x", f"k{i}"),
                                replies[i])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for reply in replies:
        assert reply.done.wait(30)
    b_pager.flush()
    assert all(len(reply.calls) == 1 for reply in replies)
    assert all(type(reply.calls[0]).__name__ == "Outcome" for reply in replies)
    assert b_forwarder.figures()["forwarded_served"] == 400
    assert sum(len(b_pager.state(s).alerts) for s in SERVICES) == 400


def test_a_command_nobody_takes_times_out_not_applied_and_never_runs(cluster):
    """No node serves the shard: after the timeout the command is withdrawn
    (applied=False), and a server that appears later never runs it."""
    _, a_forwarder = cluster.forwarding_node()
    with pytest.raises(ForwardTimeoutError, match="it was not applied") as raised:
        forwarded(a_forwarder, "checkout", RaiseAlert("first")).get(timeout=10)
    assert raised.value.applied is False
    assert a_forwarder.figures()["forward_timeouts"] == 1
    cluster.serving_node()
    second = forwarded(a_forwarder, "checkout", RaiseAlert("second", "other")).get(timeout=10)
    # Claimed in id order: had the first been run, it would have come first.
    assert second.seq == 1
    assert [a.message for a in second.state.alerts] == ["second"]
    assert rows(cluster.dsn, "SELECT taken_by FROM commands") == [(EXPIRED,)]


def test_a_server_that_dies_before_answering_leaves_it_unknown(cluster):
    """A node took the command and never answered: the origin's timeout says whether it
    was applied is unknown (applied=None)."""
    took = threading.Event()

    def run_and_hang(service_id, command) -> CommandFuture:
        took.set()
        return CommandFuture()  # never settled: the node dies with it

    b_forwarder = cluster.forwarder("b")
    b_forwarder.serve(run_and_hang, lambda: ALL)
    _, a_forwarder = cluster.forwarding_node()
    reply = forwarded(a_forwarder, "checkout", Acknowledge("alice"))
    assert took.wait(10)
    b_forwarder.close()
    with pytest.raises(ForwardTimeoutError, match="whether it was applied is unknown") as raised:
        reply.get(timeout=10)
    assert raised.value.applied is None


def test_postgresql_down_fails_forwarding_promptly_then_it_works_again(cluster, postgres):
    """With PostgreSQL stopped, a forward fails StoreError well before its timeout, without
    the password; once it is back, forwarding works again through both nodes."""
    cluster.serving_node()
    _, a_forwarder = cluster.forwarding_node(timeout=10)
    forwarded(a_forwarder, "checkout", RaiseAlert("before")).get(timeout=10)
    with postgres.stopped():
        started = time.monotonic()
        with pytest.raises(StoreError) as raised:
            forwarded(a_forwarder, "checkout", RaiseAlert("during", "k2")).get(timeout=10)
        assert time.monotonic() - started < 8
        assert PASSWORD not in str(raised.value)
    assert a_forwarder.figures()["forward_failures"] == 1
    # B's store finds its writer's connection lost at its next write, then reconnects (its
    # own behaviour, tested with the store): spend that write here.
    with contextlib.suppress(StoreError):
        cluster.store.probe()
    after = forwarded(a_forwarder, "checkout", RaiseAlert("after", "k3")).get(timeout=15)
    assert {a.key for a in after.state.alerts} == {"default", "k3"}


def test_close_fails_the_replies_still_waiting(cluster):
    """close() fails a waiting reply with PagerStoppedError (its command withdrawn, so never
    applied), and any forward after it at once."""
    _, a_forwarder = cluster.forwarding_node(timeout=30)
    reply = forwarded(a_forwarder, "checkout", RaiseAlert("down"))
    wait_for(lambda: a_forwarder.figures()["commands_forwarded"] == 1, 5, "the insert")
    a_forwarder.close()
    with pytest.raises(PagerStoppedError, match="not applied"):
        reply.get(timeout=5)
    with pytest.raises(PagerStoppedError):
        forwarded(a_forwarder, "checkout", ResolveAlert("default")).get(timeout=1)
    assert rows(cluster.dsn, "SELECT taken_by FROM commands") == [(EXPIRED,)]
    a_forwarder.close()  # idempotent


def test_a_closing_server_gives_back_what_it_claimed_and_did_not_run(cluster):
    """Commands claimed but not yet handed to the engine when a node closes are given back
    for the next holder of their shard, which runs them."""
    release = threading.Event()
    started = threading.Event()

    def slow_run(service_id, command) -> CommandFuture:
        started.set()
        release.wait(10)  # the engine's backpressure, say
        future: CommandFuture = CommandFuture()
        future.fail(NotOwnerError(service_id, shard_of(service_id)))
        return future

    b_forwarder = cluster.forwarder("b")
    b_forwarder.serve(slow_run, lambda: ALL)
    _, a_forwarder = cluster.forwarding_node(timeout=15)
    first = forwarded(a_forwarder, "checkout", RaiseAlert("one"))
    assert started.wait(10)
    second = forwarded(a_forwarder, "checkout", RaiseAlert("two", "k2"))
    wait_for(lambda: rows(cluster.dsn, "SELECT count(*) FROM commands WHERE taken_by = 'b'")
             == [(2,)], 10, "node b to claim the second command")
    closing = threading.Thread(target=b_forwarder.close)
    closing.start()
    wait_for(lambda: b_forwarder.closed, 5, "close() to begin")
    release.set()
    closing.join(20)
    cluster.serving_node("c", timeout=15)
    assert [a.key for a in first.get(timeout=15).state.alerts] == ["default"]
    outcome = second.get(timeout=15)
    assert {a.key for a in outcome.state.alerts} == {"default", "k2"}


def test_a_command_older_than_the_timeout_is_never_run(cluster):
    """A waiting row its origin could not withdraw (PostgreSQL was away) is left alone once
    the timeout has passed: the command does not run late."""
    with psycopg.connect(cluster.dsn, autocommit=True) as db:
        db.execute("INSERT INTO commands (shard, service_id, command, origin, created_at) "
                   "VALUES (%s, 'checkout', %s, 'a', now() - interval '10 seconds')",
                   (shard_of("checkout"), encode_command(RaiseAlert("stale", "stale"))))
    cluster.serving_node()
    _, a_forwarder = cluster.forwarding_node()
    fresh = forwarded(a_forwarder, "checkout", RaiseAlert("fresh", "fresh")).get(timeout=10)
    assert (fresh.seq, [a.key for a in fresh.state.alerts]) == (1, ["fresh"])
    assert rows(cluster.dsn, "SELECT taken_by FROM commands WHERE command LIKE '%%stale%%'") \
        == [(None,)]


def test_old_rows_are_swept(cluster):
    """Rows older than an hour (never read, withdrawn, orphaned) are deleted by a node's
    listener; recent ones stay."""
    command = encode_command(RaiseAlert("old"))
    with psycopg.connect(cluster.dsn, autocommit=True) as db:
        db.execute("INSERT INTO commands (shard, service_id, command, origin, created_at, "
                   "taken_by) VALUES (1, 'x', %s, 'gone', now() - interval '2 hours', "
                   "'(expired)'), (1, 'y', %s, 'gone', now(), '(expired)')",
                   (command, command))
    cluster.forwarder("a")
    wait_for(lambda: rows(cluster.dsn, "SELECT service_id FROM commands") == [("y",)], 10,
             "the old row to be swept")


def test_no_message_carries_the_password(cluster, postgres):
    """A refused login fails the reply with StoreError; the password is masked."""
    secret = "wrong-Pa55word-4-forward"
    database = cluster.dsn.rsplit("/", 1)[1]
    forwarder = cluster.forwarder("a", dsn=postgres.dsn(database, password=secret))
    with pytest.raises(StoreError) as raised:
        forwarded(forwarder, "checkout", RaiseAlert("x")).get(timeout=10)
    assert secret not in str(raised.value)
    assert "PostgreSQL at 127.0.0.1" in str(raised.value)
