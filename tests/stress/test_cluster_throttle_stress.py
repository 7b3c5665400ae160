"""A cluster's throttle under load: 3 pagers, each running a third of the shards with its own
lanes, share one store, one throttle clock and one InMemorySendLedger; 8 threads send alerts,
acks, timeouts and closes, each to its service's node. No contact ever gets more than its
limit in a window over all nodes, every page has exactly one fate (sent alone, carried by
one bundle, or withdrawn), and every outbox row is settled. With a ledger that fails one
claim in five, pages go anyway (fail open): each node's own limit still holds, and every
page still has exactly one fate."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import (
    InMemoryOwnership,
    InMemoryPolicyRepository,
    InMemorySendLedger,
    InMemoryStore,
    ManualClock,
    ManualTimer,
)
from pager_actors import (
    EmailTarget,
    EscalationPolicy,
    Level,
    Pager,
    SmsTarget,
    Throttle,
    Throttling,
)
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import Notify, PageFormat, Withdraw
from pager_actors.ports import StoreError
from tests.stress.conftest import run_threads
from tests.stress.test_throttle_stress import LIMITS, WINDOW, Mail, Sends, Sms

pytestmark = pytest.mark.stress

NODES = 3


class NodeSends(Sends):
    """Sends recorded over the cluster; sends in flight counted per node and contact (the
    lanes' guarantee is per node)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.node = threading.local()
        self.node_in_flight: Counter[tuple[int, str]] = Counter()
        self.max_node_in_flight = 0
        self.node_at: dict[tuple[int, str], list[float]] = defaultdict(list)

    def send(self, to: str, text: str) -> None:
        key = (self.node.index, to)
        with self.lock:
            self.node_at[key].append(self.clock.now())
            self.node_in_flight[key] += 1
            self.max_node_in_flight = max(self.max_node_in_flight, self.node_in_flight[key])
        try:
            super().send(to, text)
        finally:
            with self.lock:
                self.node_in_flight[key] -= 1


class NodeMail(Mail):
    def __init__(self, sends: NodeSends, index: int) -> None:
        super().__init__(sends)
        self.index = index

    def send_mail(self, to, subject, body):
        self.sends.node.index = self.index
        super().send_mail(to, subject, body)


class NodeSms(Sms):
    def __init__(self, sends: NodeSends, index: int) -> None:
        super().__init__(sends)
        self.index = index

    def send_sms(self, to, text):
        self.sends.node.index = self.index
        super().send_sms(to, text)


class FlakyLedger(InMemorySendLedger):
    """Fails one claim in five, at random (seeded): PostgreSQL out of reach now and then."""

    def __init__(self, clock: ManualClock, rng: random.Random) -> None:
        super().__init__(clock.now)
        self.rng = rng
        self.rng_lock = threading.Lock()

    def claim(self, channel: str, contact: str, limit: int, window: float) -> float | None:
        with self.rng_lock:
            fails = self.rng.random() < 0.2
        if fails:
            raise StoreError("PostgreSQL at db:5432/pager: cannot claim a send: gone")
        return super().claim(channel, contact, limit, window)


def within_limit(times: list[float], limit: int) -> bool:
    """No `limit + 1` of these instants fall inside one window."""
    times = sorted(times)
    return all(later - earlier >= WINDOW
               for earlier, later in zip(times, times[limit:], strict=False))


@pytest.mark.parametrize("flaky", [False, True], ids=["ledger", "flaky-ledger"])
def test_a_clusters_throttle_holds_over_every_node_under_concurrent_commands(flaky):
    """Limits hold per contact and window over 3 nodes (per node when the ledger fails);
    each page is sent alone, bundled once, or withdrawn by its own incident's ack or close;
    nothing is left pending."""
    seed = int(os.environ.get("PAGER_STRESS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    mails = [EmailTarget(f"oncall{i}@example.com") for i in range(3)]
    phones = [SmsTarget(f"+3361000000{i}") for i in range(5)]
    services = [f"svc-{i}" for i in range(40)]
    policies = InMemoryPolicyRepository(
        [EscalationPolicy(s, [Level([rng.choice(mails), rng.choice(phones)]),
                              Level([rng.choice(phones)])]) for s in services])
    kinds = ["alert", "alert", "alert", "timeout", "ack", "healthy"]
    plan = [[(rng.choice(services), rng.choice(kinds)) for _ in range(250)] for _ in range(8)]
    clock = ManualClock()
    ledger = FlakyLedger(clock, random.Random(seed + 2)) if flaky \
        else InMemorySendLedger(clock.now)
    sends, store = NodeSends(clock, random.Random(seed + 1)), InMemoryStore()
    throttle = Throttling(mail=Throttle(LIMITS["mail"], timedelta(seconds=WINDOW)),
                          sms=Throttle(LIMITS["sms"], timedelta(seconds=WINDOW)), clock=clock)
    wall = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    pagers: list[Pager] = []
    try:
        for index in range(NODES):
            shards = frozenset(s for s in range(SHARDS) if s % NODES == index)
            pager = Pager.start(
                policies=policies, mail=NodeMail(sends, index), sms=NodeSms(sends, index),
                timer=ManualTimer(), store=store, clock=lambda: wall,
                page_format=PageFormat(status_updates=True), mail_concurrency=3,
                sms_concurrency=3, throttle=throttle, ledger=ledger,
                ownership=InMemoryOwnership(shards))
            pagers.append(pager)
            pager.adopt(shards)
        outcomes = []
        lock = threading.Lock()

        def caller(index: int) -> None:
            mine = []
            for service, kind in plan[index]:
                pager = pagers[shard_of(service) % NODES]
                mine.append(pager.alert(service, f"c{index}") if kind == "alert"
                            else pager.ack_timeout(service) if kind == "timeout"
                            else pager.acknowledge(service) if kind == "ack"
                            else pager.healthy(service))
            with lock:
                outcomes.extend(mine)

        def waiting() -> int:
            return sum(p.mailbox_depths()["mail"] + p.mailbox_depths()["sms"] for p in pagers)

        run_threads(8, caller)
        for pager in pagers:
            pager.flush(timeout=30)  # held pages are not waited for
        for _ in range(60):
            if waiting() == 0:
                break
            clock.advance(WINDOW)
            for pager in pagers:
                pager.flush(timeout=30)
        assert waiting() == 0, "pages still waiting after 60 windows"

        effects = [e for f in outcomes for e in f.get(timeout=10).effects]
        keys = {e.key: e for e in effects if isinstance(e, Notify)}
        closed = {(e.service_id, e.incident) for e in effects if isinstance(e, Withdraw)}
        assert sends.max_node_in_flight == 1, "two sends in flight for one contact on a node"
        for (node, to), times in sends.node_at.items():
            limit = LIMITS["mail" if "@" in to else "sms"]
            assert within_limit(times, limit), (
                f"more than {limit} messages in a window to {to} from node {node}: {times}")
        for to, times in sends.at.items():
            limit = LIMITS["mail" if "@" in to else "sms"]
            assert flaky or within_limit(times, limit), (
                f"more than {limit} messages in a window to {to} over the cluster: {times}")
        assert store.undelivered() == [] and store.failed == {}
        assert store.withdrawn <= keys.keys() and store.carried_by.keys() <= keys.keys()
        for key in store.withdrawn:
            page = keys[key]
            assert "/status/" not in key and (page.service_id, page.incident) in closed
        assert not store.withdrawn & store.carried_by.keys()
        alone = keys.keys() - store.withdrawn - store.carried_by.keys()
        carriers = set(store.carried_by.values())
        assert sends.bundles == len(carriers)
        assert sum(len(t) for t in sends.at.values()) == len(alone) + len(carriers), (
            "a page was lost or sent twice")
        failures = sum(p.stats().get("throttle_ledger_failures", 0) for p in pagers)
        assert sum(1 for _, _, allowed in ledger.claims if allowed) + failures == \
            sum(len(t) for t in sends.at.values()), "a send not claimed, or claimed twice"
        refusals = sum(p.stats().get("ledger_refusals", 0) for p in pagers)
        assert store.withdrawn and carriers and refusals and (failures or not flaky), (
            "nothing was withdrawn, bundled, refused or failed by the ledger: proved nothing")
    except AssertionError as error:
        raise AssertionError(f"{error} (reproduce with PAGER_STRESS_SEED={seed})") from error
    finally:
        for pager in pagers:
            pager.stop()
