"""Two nodes on one store hand shards back and forth while threads send them commands."""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from adapters.memory import (
    Forwarded,
    InMemoryOwnership,
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualTimer,
    RecordingForwarder,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import NotOwnerError, Pager
from pager_actors.cluster import SHARDS, shard_of
from tests.conftest import two_level_policy
from tests.stress.conftest import pages, run_threads

pytestmark = pytest.mark.stress

T = timedelta(minutes=15)
SERVICES = [f"svc{n:02}" for n in range(16)]
WORKERS, COMMANDS, HAND_OVERS = 4, 60, 12
STEP = WORKERS * COMMANDS // (HAND_OVERS + 1)  # commands done between two hand-overs


@dataclass
class Node:
    """A pager whose forwarder hands commands to the other node's pager, off the caller's
    thread, as a real forwarder would (`submit(forward=False)`: never bounced back)."""

    ownership: InMemoryOwnership
    mail: RecordingMailSender = field(default_factory=RecordingMailSender)
    sms: RecordingSmsSender = field(default_factory=RecordingSmsSender)
    timer: ManualTimer = field(default_factory=ManualTimer)
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="forwarder"))
    other: Node | None = None
    pager: Pager = field(init=False)

    def start(self, policies, store) -> None:
        self.pager = Pager.start(policies=policies, mail=self.mail, sms=self.sms,
                                 timer=self.timer, store=store, ack_timeout=T,
                                 ownership=self.ownership,
                                 forwarder=RecordingForwarder(to=self._forward))
        self.pager.adopt(self.ownership.shards)

    def _forward(self, sent: Forwarded) -> None:
        def run() -> None:
            assert self.other is not None
            try:
                outcome = self.other.pager.submit(sent.service_id, sent.command,
                                                  forward=False).get(timeout=15)
            except Exception as error:
                sent.reply.fail(error)
            else:
                sent.reply.set(outcome)
        self.executor.submit(run)


def fire(futures) -> None:
    """Wait for timeouts a ManualTimer delivered; one for a service not owned is dropped."""
    for future in futures:
        with contextlib.suppress(NotOwnerError):
            future.get(timeout=15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_overs_under_load_lose_no_command_timer_or_page_and_repeat_none(seed):
    """Commands from 4 threads to either node while 12 graceful hand-overs move shards:
    each command ran on one node exactly once or failed NotOwnerError; no page went twice;
    every stored timer is armed on its owner, and all of them escalate once."""
    store = InMemoryStore()
    policies = InMemoryPolicyRepository([two_level_policy(s) for s in SERVICES])
    a = Node(InMemoryOwnership(range(SHARDS // 2)))
    b = Node(InMemoryOwnership(range(SHARDS // 2, SHARDS)))
    a.other, b.other = b, a
    nodes = [a, b]
    for node in nodes:
        node.start(policies, store)
    results: list[tuple[str, str, object]] = []  # (kind, alert key, outcome or error)
    progress = threading.Condition()
    done = [0]
    moved: list[int] = []

    def send(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        for i in range(COMMANDS):
            node, service = rng.choice(nodes), rng.choice(SERVICES)
            kind = rng.choice(["alert", "alert", "alert", "ack", "healthy", "resolve"])
            key = f"w{index}-{i}"
            future = node.pager.alert(service, key, key=key) if kind == "alert" \
                else node.pager.acknowledge(service) if kind == "ack" \
                else node.pager.healthy(service) if kind == "healthy" \
                else node.pager.resolve_alert(service, key=f"w{index}-{rng.randrange(i + 1)}")
            try:
                result: object = future.get(timeout=15)
            except NotOwnerError as error:
                result = error
            results.append((kind, key, result))
            if index == 0 and i % 10 == 9:
                for other in nodes:
                    fire(other.timer.advance(T))
            with progress:
                done[0] += 1
                progress.notify_all()

    def hand_over() -> None:
        rng = random.Random(seed * 100 + 99)
        for k in range(HAND_OVERS):
            with progress:
                assert progress.wait_for(lambda k=k: done[0] >= (k + 1) * STEP, timeout=30)
            old, new = rng.sample(nodes, 2)
            if not old.ownership.shards:
                old, new = new, old
            shards = rng.sample(sorted(old.ownership.shards),
                                max(1, len(old.ownership.shards) // 2))
            old.pager.abandon(shards, graceful=True)
            old.ownership.drop(shards)
            new.ownership.hold(shards)
            new.pager.adopt(shards)
            moved.extend(shards)

    try:
        run_threads(WORKERS + 1, lambda i: hand_over() if i == WORKERS else send(i),
                    timeout=60)
        for node in nodes:
            node.executor.shutdown(wait=True)
            node.pager.flush(timeout=10)

        # Every command: an outcome from exactly one node, or NotOwnerError.
        assert len(results) == WORKERS * COMMANDS
        entries = Counter(
            entry.key for service in SERVICES
            for incident in store.incidents(service, limit=1000)
            for entry in store.timeline(service, incident.number)
            if entry.event in ("opened", "alert_added") and entry.key)
        for kind, key, result in results:
            if kind == "alert":
                ran = not isinstance(result, NotOwnerError)
                assert entries[key] == ran, (key, result)
        assert {e for e in entries.values()} <= {1}
        forwarded = sum(n.pager.stats().get("commands_forwarded", 0) for n in nodes)
        assert forwarded > 0 and len(set(moved) & {shard_of(s) for s in SERVICES}) > 0

        # No page twice; every stored timer is armed on its service's owner.
        def owner(service: str) -> Node:
            [node] = [n for n in nodes if shard_of(service) in n.ownership.shards]
            return node

        def check_pages() -> None:
            sent = pages(a.mail, a.sms) + pages(b.mail, b.sms)
            assert max(sent.values()) == 1, [page for page, n in sent.items() if n > 1]

        check_pages()
        for armed in store.armed_timers():
            waiting = {(t.service_id, t.token) for t in owner(armed.service_id).timer.pending()}
            assert (armed.service_id, armed.token) in waiting, armed

        # And every one of them acts: level 2, then nobody left; nothing stays pending.
        for _ in range(2):
            for node in nodes:
                fire(node.timer.advance(T))
                node.pager.flush(timeout=10)
        assert store.armed_timers() == []
        assert store.undelivered() == []
        check_pages()
    finally:
        for node in nodes:
            node.executor.shutdown(wait=True)
            node.pager.stop()
