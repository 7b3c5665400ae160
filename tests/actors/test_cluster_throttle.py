"""A contact's throttle budget over a cluster: two pagers, each running its own shards with its
own lanes, share one InMemorySendLedger and one hand-moved throttle clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemorySendLedger,
    InMemoryStore,
    ManualClock,
    RecordingSmsSender,
)
from pager_actors import EscalationPolicy, Level, RetryPolicy, SmsTarget, Throttle, Throttling
from pager_actors.cluster import shard_of
from pager_actors.ports import StoreError, TransientDeliveryError
from tests.actors.test_ownership import ALL, Clock, Cluster

PHONE = SmsTarget("+33600000001")
MINUTE = timedelta(minutes=1)
A_SERVICES = ["checkout"]
B_SERVICES = [s for s in ("search", "billing", "ledger", "catalog")
              if shard_of(s) != shard_of("checkout")][:2]


class TwoNodes:
    """Node A runs checkout's shard, node B every other one; both page PHONE, throttled to
    1 SMS a minute, counted in one ledger. `sms` and `options` are node A's."""

    def __init__(self, sms=None, **options) -> None:
        self.clock = ManualClock()
        self.ledger = InMemorySendLedger(self.clock.now)
        self.store = InMemoryStore()
        policies = InMemoryPolicyRepository(
            [EscalationPolicy(s, [Level([PHONE])]) for s in A_SERVICES + B_SERVICES])
        self.cluster = Cluster(self.store, policies, Clock())
        throttle = Throttling(sms=Throttle(1, MINUTE), clock=self.clock)
        checkout = frozenset({shard_of("checkout")})
        self.a = self.cluster.node(checkout, throttle=throttle, ledger=self.ledger, sms=sms,
                                   **options)
        self.b = self.cluster.node(ALL - checkout, throttle=throttle, ledger=self.ledger)

    def alert(self, node, service: str) -> None:
        node.pager.alert(service, "disk full").get(timeout=5)
        node.pager.flush(timeout=5)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for node in (self.a, self.b):
            node.pager.flush(timeout=5)

    def texts(self) -> list[str]:
        return [s.text for node in (self.a, self.b) for s in node.sms.sent]

    def stop(self) -> None:
        self.cluster.stop()


@pytest.fixture
def nodes():
    nodes = TwoNodes()
    yield nodes
    nodes.stop()


def test_a_page_from_another_node_waits_for_the_window_the_first_node_used(nodes):
    """A sends the first SMS; B's page is refused by the ledger, held, and goes alone once
    the window allows; its row is then delivered."""
    nodes.alert(nodes.a, "checkout")
    nodes.alert(nodes.b, B_SERVICES[0])
    assert len(nodes.a.sms.sent) == 1 and nodes.b.sms.sent == []
    assert nodes.b.pager.stats()["ledger_refusals"] == 1
    assert nodes.b.pager.mailbox_depths()["sms"] == 1
    nodes.advance(59.0)
    assert nodes.b.sms.sent == []
    nodes.advance(1.0)
    [sent] = nodes.b.sms.sent
    assert sent.text.startswith(f"[{B_SERVICES[0]}] level 1 page")
    assert nodes.store.undelivered() == [] and nodes.store.carried_by == {}
    assert nodes.ledger.sends("sms", PHONE.uri) == [60.0]


def test_pages_that_wait_on_the_other_node_leave_as_one_bundle(nodes):
    """B's refused page and the one that joined it go out as one bundle, the ledger counting
    it once: one SMS per window over both nodes."""
    nodes.alert(nodes.a, "checkout")
    for service in B_SERVICES:
        nodes.alert(nodes.b, service)
    assert nodes.b.sms.sent == []
    nodes.advance(60.0)
    [bundle] = nodes.b.sms.sent
    assert bundle.text.startswith("2 more pages: "), bundle.text
    assert len(set(nodes.store.carried_by.values())) == 1
    assert sorted(nodes.store.carried_by) == sorted(
        f"{service}/1/r1/l1/p1/{PHONE.uri}" for service in B_SERVICES)
    assert nodes.store.undelivered() == []
    assert nodes.ledger.sends("sms", PHONE.uri) == [60.0]
    nodes.alert(nodes.a, "checkout")  # still open: nothing new; A's budget is the cluster's
    assert len(nodes.texts()) == 2


def test_an_acknowledged_page_waiting_for_the_ledger_never_goes(nodes):
    """Acked while held after a refusal: withdrawn from its lane, its row withdrawn, and
    nothing is sent when the window allows."""
    nodes.alert(nodes.a, "checkout")
    nodes.alert(nodes.b, B_SERVICES[0])
    nodes.b.pager.acknowledge(B_SERVICES[0], by="alice").get(timeout=5)
    nodes.b.pager.flush(timeout=5)
    assert nodes.b.pager.mailbox_depths()["sms"] == 0
    nodes.advance(60.0)
    assert nodes.b.sms.sent == []
    page = f"{B_SERVICES[0]}/1/r1/l1/p1/{PHONE.uri}"
    assert page in nodes.store.withdrawn and nodes.store.undelivered() == []


def test_a_ledger_out_of_reach_lets_pages_go_and_the_nodes_own_budget_still_holds(nodes):
    """Fail open: with the ledger failing, each node sends by its own budget (one SMS each),
    counting the failure; a second page on B waits for B's own window."""
    nodes.ledger.failing = StoreError("PostgreSQL at db:5432/pager: cannot connect")
    nodes.alert(nodes.a, "checkout")
    nodes.alert(nodes.b, B_SERVICES[0])
    nodes.alert(nodes.b, B_SERVICES[1])
    assert len(nodes.a.sms.sent) == len(nodes.b.sms.sent) == 1
    assert nodes.b.pager.stats()["throttle_ledger_failures"] == 1
    nodes.ledger.failing = None
    nodes.advance(60.0)
    assert len(nodes.b.sms.sent) == 2 and nodes.store.undelivered() == []


def test_a_retry_is_not_claimed_again():
    """A page whose first attempt failed transiently was claimed once; its retry goes at its
    backoff without a second claim."""

    class FlakyOnce(RecordingSmsSender):
        failed = False

        def send_sms(self, to, text):
            if not self.failed:
                self.failed = True
                raise TransientDeliveryError("503")
            super().send_sms(to, text)

    nodes = TwoNodes(sms=FlakyOnce(), retry=RetryPolicy(attempts=3, backoff=0.01,
                                                         jitter=lambda: 1.0))
    try:
        nodes.alert(nodes.a, "checkout")  # flush waits for the retry
        assert len(nodes.a.sms.sent) == 1
        assert nodes.ledger.claims == [("sms", PHONE.uri, True)]
        assert nodes.a.pager.stats()["sms_retried"] == 1
    finally:
        nodes.stop()


def test_a_deferred_page_of_a_shard_handed_over_goes_from_its_new_node_once(nodes):
    """B abandons the shard of a page the ledger refused: the page leaves B's lanes (its row
    pending), A resends it when the window allows, and B never sends it."""
    service = B_SERVICES[0]
    nodes.alert(nodes.a, "checkout")
    nodes.alert(nodes.b, service)
    nodes.cluster.hand_over(nodes.b, nodes.a, frozenset({shard_of(service)}))
    assert nodes.b.pager.mailbox_depths()["sms"] == 0
    nodes.advance(60.0)
    assert nodes.b.sms.sent == []
    assert [s.text.split(" ")[0] for s in nodes.a.sms.sent] == ["[checkout]", f"[{service}]"]
    assert nodes.store.undelivered() == []
