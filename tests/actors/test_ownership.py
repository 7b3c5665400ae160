"""A pager that runs only the shards it owns: forwarding, adopt and abandon, fenced sends.

Nodes share one store (in memory, or one SQLite file opened once: its lock
allows one owner per process-wide file, so both pagers use the same store
object), each with its own senders, timer and `InMemoryOwnership`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import (
    InMemoryOwnership,
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualClock,
    ManualTimer,
    RecordingForwarder,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.sqlite import SqliteStore
from pager_actors import (
    EscalationPolicy,
    Level,
    NotOwnerError,
    Outcome,
    Pager,
    RetryPolicy,
    SmsTarget,
    Throttle,
    Throttling,
)
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import MonitoredService, Notify, PageFormat, RaiseAlert, decide
from pager_actors.ports import TransientDeliveryError
from tests.conftest import BACKUP_SMS, ONCALL_MAIL, ONCALL_SMS, two_level_policy

T = timedelta(minutes=15)
ALL = frozenset(range(SHARDS))
CHECKOUT, SEARCH = shard_of("checkout"), shard_of("search")


class Clock:
    """A wall clock the test moves by hand (the same for every node)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Node:
    pager: Pager
    mail: RecordingMailSender
    sms: RecordingSmsSender
    timer: ManualTimer
    ownership: InMemoryOwnership


class Cluster:
    """Starts nodes on one store; stops them all at the end of the test."""

    def __init__(self, store, policies, clock: Clock) -> None:
        self.store = store
        self.policies = policies
        self.clock = clock
        self.nodes: list[Node] = []

    def node(self, shards=ALL, adopt=True, ownership=None, sms=None, **options) -> Node:
        ownership = ownership or InMemoryOwnership(shards)
        mail, sms, timer = RecordingMailSender(), sms or RecordingSmsSender(), ManualTimer()
        pager = Pager.start(policies=self.policies, mail=mail, sms=sms, timer=timer,
                            store=self.store, clock=self.clock, ack_timeout=T,
                            ownership=ownership, **options)
        node = Node(pager, mail, sms, timer, ownership)
        self.nodes.append(node)
        if adopt:
            pager.adopt(shards)
        return node

    def hand_over(self, old: Node, new: Node, shards=ALL, graceful: bool = True) -> None:
        """`old` lets go of `shards` and `new` takes them, in the order a coordinator would."""
        old.pager.abandon(shards, graceful=graceful)
        old.ownership.drop(shards)
        new.ownership.hold(shards)
        new.pager.adopt(shards)
        new.pager.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.pager.stop()


@pytest.fixture(params=["memory", "sqlite"])
def cluster(request, policies, tmp_path):
    store = InMemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "p.db")
    cluster = Cluster(store, policies, Clock())
    yield cluster
    cluster.stop()
    store.close()


@pytest.fixture
def memory_cluster(policies):
    cluster = Cluster(InMemoryStore(), policies, Clock())
    yield cluster
    cluster.stop()


def a_page(service_id: str) -> Notify:
    decision = decide(MonitoredService(service_id), RaiseAlert("down"),
                      two_level_policy(service_id), now=datetime.now(UTC), ack_timeout=T)
    return next(e for e in decision.effects if isinstance(e, Notify))


# -- commands for services owned elsewhere -----------------------------------------


def test_a_command_for_a_service_owned_elsewhere_goes_to_the_forwarder(memory_cluster):
    """The forwarder gets the command and the caller's own future, which resolves with the
    owner's outcome; nothing runs or is stored here."""
    forwarder = RecordingForwarder()
    node = memory_cluster.node(ALL - {CHECKOUT}, forwarder=forwarder)
    future = node.pager.alert("checkout", "down")
    [sent] = forwarder.forwarded
    assert (sent.service_id, sent.command, sent.reply) == ("checkout", RaiseAlert("down"),
                                                          future)
    assert not future.done()
    answer = Outcome("checkout", 1, "incident_opened", None, MonitoredService("checkout"), ())
    sent.reply.set(answer)
    assert future.get(timeout=5) is answer
    stats = node.pager.stats()
    assert stats["commands_forwarded"] == 1 and stats["service_actors"] == 0
    assert memory_cluster.store.load("checkout") is None
    assert node.mail.sent == [] and node.sms.sent == []


def test_without_a_forwarder_a_command_for_a_service_owned_elsewhere_fails_not_owner(
        memory_cluster):
    """No forwarder: the command fails at once with NotOwnerError naming service and shard;
    owned services work as ever."""
    node = memory_cluster.node(ALL - {CHECKOUT})
    with pytest.raises(NotOwnerError, match=rf"'checkout' \(shard {CHECKOUT}\)"):
        node.pager.alert("checkout", "down").get(timeout=5)
    assert node.pager.alert("search", "down").get(timeout=5).event == "incident_opened"
    assert node.pager.stats()["commands_not_owned"] == 1


def test_a_command_forwarded_here_is_never_forwarded_again(memory_cluster):
    """`submit(forward=False)`, what a node does with a command forwarded to it, runs it here
    or fails NotOwnerError: a command never goes round between nodes."""
    forwarder = RecordingForwarder()
    node = memory_cluster.node(ALL - {CHECKOUT}, forwarder=forwarder)
    with pytest.raises(NotOwnerError):
        node.pager.submit("checkout", RaiseAlert("down"), forward=False).get(timeout=5)
    assert forwarder.forwarded == []
    outcome = node.pager.submit("search", RaiseAlert("down"), forward=False).get(timeout=5)
    assert outcome.event == "incident_opened"


def test_a_leased_shard_is_not_run_here_until_adopted(memory_cluster):
    """Holding the lease is not enough: until `adopt`, the service's commands are forwarded."""
    forwarder = RecordingForwarder()
    node = memory_cluster.node(ALL, adopt=False, forwarder=forwarder)
    node.pager.alert("checkout", "down")
    assert [f.service_id for f in forwarder.forwarded] == ["checkout"]
    node.pager.adopt({CHECKOUT})
    assert node.pager.alert("checkout", "down").get(timeout=5).event == "incident_opened"
    assert len(forwarder.forwarded) == 1


def test_timeouts_and_page_failures_of_a_service_owned_elsewhere_are_dropped_and_counted(
        memory_cluster):
    """A timer firing or a failed page for a service not owned is the owner's business:
    never forwarded, failed NotOwnerError, counted."""
    forwarder = RecordingForwarder()
    node = memory_cluster.node(ALL - {CHECKOUT}, forwarder=forwarder)
    with pytest.raises(NotOwnerError):
        node.pager.deliver_timeout("checkout", "checkout#1@1r1p1").get(timeout=5)
    with pytest.raises(NotOwnerError):
        node.pager.page_failed(a_page("checkout")).get(timeout=5)
    assert forwarder.forwarded == []
    stats = node.pager.stats()
    assert stats["timeouts_not_owned"] == 1 and stats["page_failures_not_owned"] == 1
    assert stats["service_actors"] == 0


def test_reads_of_a_service_owned_elsewhere_come_from_the_store(memory_cluster):
    """state, status, timeline and incidents of a service owned elsewhere are the store's
    committed ones, read without an actor and without forwarding."""
    owner = memory_cluster.node(ALL)
    owner.pager.alert("checkout", "down").get(timeout=5)
    owner.pager.flush()
    forwarder = RecordingForwarder()
    other = memory_cluster.node(frozenset(), forwarder=forwarder)
    status = other.pager.status("checkout")
    assert status.health.name == "UNHEALTHY" and status.level == 1
    assert other.pager.state("checkout") == memory_cluster.store.load("checkout")
    assert other.pager.timeline("checkout", 1) == owner.pager.timeline("checkout", 1)
    assert [i.number for i in other.pager.incidents("checkout")] == [1]
    assert other.pager.stats()["service_actors"] == 0 and forwarder.forwarded == []


class LeaseLostOnSecondLook(InMemoryOwnership):
    """Owns `checkout` the first time it is asked, and never again: the lease goes between
    the facade's look and the registry's."""

    def __init__(self) -> None:
        super().__init__(ALL)
        self._looks = 0

    def owns(self, service_id: str) -> bool:
        if service_id != "checkout":
            return super().owns(service_id)
        self._looks += 1
        return self._looks == 1


class LoadRecordingStore(InMemoryStore):
    """Records which services were loaded: a service actor loads its state as it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []

    def load(self, service_id):
        self.loaded.append(service_id)
        return super().load(service_id)


def test_the_registry_never_starts_an_actor_for_a_service_not_owned(policies):
    """A command routed while owned, but reaching the registry once the lease is gone, is
    forwarded: no actor starts (none loads the service), nothing is committed."""
    store = LoadRecordingStore()
    cluster = Cluster(store, policies, Clock())
    try:
        forwarder = RecordingForwarder()
        node = cluster.node(ALL, ownership=LeaseLostOnSecondLook(), forwarder=forwarder)
        node.pager.alert("checkout", "down")
        node.pager.flush()
        assert [f.command for f in forwarder.forwarded] == [RaiseAlert("down")]
        assert store.loaded == [] and store.load("checkout") is None
        assert node.pager.stats()["service_actors"] == 0
    finally:
        cluster.stop()


# -- hand-over ------------------------------------------------------------------------


def test_a_graceful_hand_over_escalates_once_on_the_new_owner_and_resends_nothing(cluster):
    """A pages level 1 and hands over; B re-arms the ack timeout with the time left and
    escalates to level 2 once; A's old timer is dropped; nothing A delivered goes again."""
    a = cluster.node(ALL)
    a.pager.alert("checkout", "down").get(timeout=5)
    a.pager.flush()
    assert (len(a.mail.sent), len(a.sms.sent)) == (1, 1)
    b = cluster.node(frozenset(), adopt=False)
    assert b.timer.pending() == []  # with an ownership, start recovers nothing
    cluster.clock.now += timedelta(minutes=5)
    cluster.hand_over(a, b)
    [rearmed] = b.timer.pending()
    assert (rearmed.service_id, rearmed.delay) == ("checkout", timedelta(minutes=10))
    b.pager.adopt(ALL)  # again: already adopted, nothing happens twice
    b.pager.flush()
    assert len(b.timer.pending()) == 1
    assert b.mail.sent == [] and b.sms.sent == []
    cluster.clock.now += timedelta(minutes=10)
    [late] = a.timer.advance(T)
    with pytest.raises(NotOwnerError):
        late.get(timeout=5)
    [fired] = b.timer.advance(timedelta(minutes=10))
    assert fired.get(timeout=5).event == "escalated"
    b.pager.flush()
    assert [s.to for s in b.sms.sent] == [BACKUP_SMS.number]
    assert (len(a.mail.sent), len(a.sms.sent)) == (1, 1)
    assert b.pager.status("checkout").level == 2
    assert a.pager.stats()["timeouts_not_owned"] == 1


class GatedPolicies(InMemoryPolicyRepository):
    """Once `armed`, the next policy look-up (a service actor deciding) waits for `release`."""

    def __init__(self, policies) -> None:
        super().__init__(policies)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def get(self, service_id):
        if self.armed:
            self.armed = False
            self.entered.set()
            assert self.release.wait(timeout=10)
        return super().get(service_id)


@pytest.fixture
def gated(request, tmp_path):
    """A cluster on a store (memory or SQLite) whose policy look-ups can be held up."""
    store = InMemoryStore() if getattr(request, "param", "memory") == "memory" \
        else SqliteStore(tmp_path / "p.db")
    policies = GatedPolicies([two_level_policy("checkout"), two_level_policy("search")])
    cluster = Cluster(store, policies, Clock())
    yield cluster
    policies.release.set()
    cluster.stop()
    store.close()


def queue_behind_a_busy_actor(node: Node, policies: GatedPolicies) -> list:
    """checkout's actor is busy with key k2 while k3 and k4 wait in its inbox."""
    node.pager.alert("checkout", "k1", key="k1").get(timeout=5)
    policies.armed = True
    futures = [node.pager.alert("checkout", "k2", key="k2")]
    assert policies.entered.wait(timeout=5)
    futures += [node.pager.alert("checkout", k, key=k) for k in ("k3", "k4")]
    return futures


@pytest.mark.parametrize("gated", ["memory", "sqlite"], indirect=True)
def test_a_graceful_hand_over_runs_what_was_queued_and_the_next_owner_loads_it(gated):
    """Commands queued for a service handed over gracefully run on the old owner and are
    committed before abandon returns: the new owner loads all of them."""
    a = gated.node(ALL)
    futures = queue_behind_a_busy_actor(a, gated.policies)
    abandon = threading.Thread(target=a.pager.abandon, args=(ALL,), kwargs={"graceful": True})
    abandon.start()
    gated.policies.release.set()
    abandon.join(timeout=10)
    assert not abandon.is_alive()
    assert [f.get(timeout=5).event for f in futures] == ["alert_added"] * 3
    a.ownership.drop(ALL)
    b = gated.node(ALL)
    assert {alert.key for alert in b.pager.state("checkout").alerts} == {"k1", "k2", "k3", "k4"}
    assert (a.pager.stats()["service_actors"], a.pager.stats()["known_services"]) == (0, 0)


@pytest.mark.parametrize("forwarding", [True, False])
def test_commands_queued_for_a_service_whose_lease_was_lost_are_not_run(gated, forwarding):
    """The lease lapses while commands wait: the one running finishes; the waiting ones are
    forwarded in order (or fail NotOwnerError), never run here."""
    forwarder = RecordingForwarder() if forwarding else None
    a = gated.node(ALL, forwarder=forwarder)
    running, *waiting = queue_behind_a_busy_actor(a, gated.policies)
    a.ownership.drop(ALL)
    gated.policies.release.set()
    assert running.get(timeout=5).event == "alert_added"
    a.pager.abandon(ALL)
    if forwarder is not None:
        assert [f.command.key for f in forwarder.forwarded] == ["k3", "k4"]
        assert [f.reply for f in forwarder.forwarded] == waiting
    else:
        for future in waiting:
            with pytest.raises(NotOwnerError):
                future.get(timeout=5)
    assert {alert.key for alert in gated.store.load("checkout").alerts} == {"k1", "k2"}
    a.pager.flush()
    assert a.pager.stats()["service_actors"] == 0


# -- fenced sends ---------------------------------------------------------------------


def paused_past_its_deadline(cluster) -> tuple[Node, list[float]]:
    """A node that paged checkout's level 1, then found its lease's local deadline passed
    (its renewal is late) with search's level 1 and both level 2s decided."""
    lease = [0.0]
    a = cluster.node(ALL, ownership=InMemoryOwnership(ALL, clock=lambda: lease[0]))
    a.ownership.deadline = 10.0
    a.pager.alert("checkout", "down").get(timeout=5)
    a.pager.flush()
    assert (len(a.mail.sent), len(a.sms.sent)) == (1, 1)
    lease[0] = 11.0  # past the deadline
    a.pager.alert("search", "down").get(timeout=5)
    wait_until(lambda: len(a.timer.pending()) == 2, "search's timer armed")
    assert [f.get(timeout=5).event for f in a.timer.advance(T)] == ["escalated"] * 2
    wait_until(lambda: a.pager.stats().get("sends_waiting_for_lease", 0) >= 4,
               "four pages waiting for the lease")
    assert (len(a.mail.sent), len(a.sms.sent)) == (1, 1)
    return a, lease


def test_pages_past_the_lease_deadline_wait_and_go_once_it_is_renewed(cluster):
    """Past its lease's local deadline a node calls no gateway; its pages wait while the
    shard is still its own, and go out, once each, when the lease is renewed."""
    a, lease = paused_past_its_deadline(cluster)
    a.ownership.deadline = lease[0] + 10  # renewed
    a.pager.flush()
    assert [m.to for m in a.mail.sent] == [ONCALL_MAIL.address] * 2
    assert sorted(s.to for s in a.sms.sent) == sorted(
        [ONCALL_SMS.number, ONCALL_SMS.number, BACKUP_SMS.number, BACKUP_SMS.number])
    assert cluster.store.undelivered() == []


def test_pages_past_the_lease_deadline_are_fenced_once_the_shard_goes(cluster):
    """If the lease is lost instead, the waiting pages are fenced, their rows pending,
    counted and logged, and the next owner sends them."""
    a, _ = paused_past_its_deadline(cluster)
    b = cluster.node(frozenset(), adopt=False)
    cluster.hand_over(a, b, graceful=False)
    a.pager.flush()
    assert (len(a.mail.sent), len(a.sms.sent)) == (1, 1)
    assert a.pager.stats()["sends_fenced"] == 4
    assert [m.to for m in b.mail.sent] == [ONCALL_MAIL.address]
    assert sorted(s.to for s in b.sms.sent) == sorted(
        [ONCALL_SMS.number, BACKUP_SMS.number, BACKUP_SMS.number])
    assert cluster.store.undelivered() == []


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class FailsFirstSms(RecordingSmsSender):
    """The first SMS fails with a transient error (it will be retried); the others go."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = threading.Event()

    def send_sms(self, to, text):
        if not self.failed.is_set():
            self.failed.set()
            raise TransientDeliveryError("gateway 503")
        super().send_sms(to, text)


def test_a_retry_left_from_before_a_shard_came_back_is_not_sent_again(memory_cluster):
    """A page whose retry waits while its shard is abandoned and adopted again is sent once,
    by the adoption's resend; the stale retry is fenced."""
    sms = FailsFirstSms()
    a = memory_cluster.node(ALL, sms=sms, retry=RetryPolicy(backoff=0.5, jitter=lambda: 1.0))
    a.pager.alert("checkout", "down").get(timeout=5)
    assert sms.failed.wait(timeout=5)
    a.pager.abandon(ALL, graceful=True)
    a.pager.adopt(ALL)  # the lease never moved: this node takes its shards back
    a.pager.flush(timeout=5)  # the retry came back meanwhile
    assert [s.to for s in sms.sent] == [ONCALL_SMS.number]
    assert [m.to for m in a.mail.sent] == [ONCALL_MAIL.address]
    assert memory_cluster.store.undelivered() == []


PHONE = SmsTarget("+33600000009")
THROTTLED = ["svc00", "svc01", "svc02"]  # shards 36, 50 and 8


def throttled(clock: ManualClock) -> tuple[Cluster, Node]:
    """A cluster whose first node throttles SMS to 1 a minute on `clock`."""
    repo = InMemoryPolicyRepository([EscalationPolicy(s, [Level([PHONE])]) for s in THROTTLED])
    wall = Clock()
    cluster = Cluster(InMemoryStore(clock=wall), repo, wall)
    return cluster, cluster.node(ALL, throttle=one_sms_a_minute(clock))


def one_sms_a_minute(clock: ManualClock) -> Throttling:
    return Throttling(sms=Throttle(1, timedelta(minutes=1)), clock=clock)


def test_a_bundle_sends_only_the_pages_of_services_still_leased():
    """A bundle whose pages span shards: the pages of a shard whose lease is gone are left
    out of the message and stay pending; the others go out in it and are settled."""
    clock = ManualClock()
    cluster, node = throttled(clock)
    store = cluster.store
    try:
        for service_id in THROTTLED:
            node.pager.alert(service_id, "down").get(timeout=5)
        node.pager.flush()
        assert len(node.sms.sent) == 1 and node.sms.sent[0].text.startswith("[svc00]")
        node.ownership.drop({shard_of("svc01")})  # lapsed; nobody called abandon yet
        clock.advance(60)
        node.pager.flush()
        assert len(node.sms.sent) == 2
        assert "svc02 L1 #1" in node.sms.sent[1].text and "svc01" not in node.sms.sent[1].text
        assert [p.service_id for p in store.undelivered()] == ["svc01"]
        assert node.pager.stats()["sends_fenced"] == 1
    finally:
        cluster.stop()


def test_abandon_takes_waiting_pages_out_of_the_lanes_and_leaves_their_rows_pending():
    """Pages a throttle holds for services being abandoned leave the lanes unsent and not
    withdrawn: their rows stay pending; the next owner, which counted the old owner's sends
    to that contact at its start, sends them once the window allows."""
    clock, b_clock = ManualClock(), ManualClock()
    cluster, a = throttled(clock)
    store = cluster.store
    try:
        for service_id in THROTTLED[:2]:
            a.pager.alert(service_id, "down").get(timeout=5)
        a.pager.flush()
        assert len(a.sms.sent) == 1 and a.pager.mailbox_depths()["sms"] == 1
        b = cluster.node(frozenset(), adopt=False, throttle=one_sms_a_minute(b_clock))
        cluster.hand_over(a, b)
        a.pager.flush()
        assert a.pager.mailbox_depths()["sms"] == 0 and store.withdrawn == set()
        clock.advance(60)
        a.pager.flush()
        assert len(a.sms.sent) == 1
        assert b.sms.sent == [] and [p.service_id for p in store.undelivered()] == ["svc01"]
        b_clock.advance(60)
        b.pager.flush()
        assert [s.text[:7] for s in b.sms.sent] == ["[svc01]"]
        assert store.undelivered() == []
    finally:
        cluster.stop()


# -- reply codes ----------------------------------------------------------------------


def test_reply_codes_belong_to_their_services_shard_and_any_node_finds_them(memory_cluster):
    """A cluster's codes are drawn from each shard's own part of the code space (code modulo
    64 is the shard), so two nodes never give one code; a node finds its own shards' codes
    in memory and every other code in the store."""
    fmt = PageFormat(reply_codes=True)
    services = ["checkout", "search", *(f"svc-{i}" for i in range(40))]
    memory_cluster.policies.replace([two_level_policy(sid) for sid in services])
    a = memory_cluster.node(ALL, page_format=fmt)
    codes = {sid: a.pager.alert(sid, "down").get(timeout=5).state.incident.reply_code
             for sid in services}
    assert all(int(code) % SHARDS == shard_of(sid) for sid, code in codes.items())
    assert len(set(codes.values())) == len(services)
    a.pager.flush()
    a.pager.abandon({CHECKOUT}, graceful=True)
    a.ownership.drop({CHECKOUT})
    b = memory_cluster.node({CHECKOUT}, page_format=fmt)
    for node in (a, b):
        for sid in ("checkout", "search"):
            assert node.pager.reply_code(codes[sid]) == (sid, 1, None)
    assert a.pager.reply_code(str(int(codes["checkout"]) + SHARDS)) is None
