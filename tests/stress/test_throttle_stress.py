"""Throttled delivery under load: 8 threads of alerts, acks, timeouts and closes over shared
contacts. No contact ever gets more than its limit in a window, every page has exactly one
fate (sent alone, carried by one bundle, or withdrawn by its incident's ack or close), and
every outbox row is settled."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualClock,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
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
from pager_actors.domain import Notify, PageFormat, Withdraw
from tests.stress.conftest import run_threads

pytestmark = pytest.mark.stress

WINDOW = 60.0
LIMITS = {"mail": 2, "sms": 1}
BUNDLE = re.compile(r"^(\[pager\] )?\d+ more pages?: ")


class Sends:
    """Every message the ports got, with the throttle clock's time; and sends in flight."""

    def __init__(self, clock: ManualClock, rng: random.Random) -> None:
        self.clock, self.rng = clock, rng
        self.lock = threading.Lock()
        self.at: dict[str, list[float]] = defaultdict(list)
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight = 0
        self.bundles = 0

    def send(self, to: str, text: str) -> None:
        with self.lock:
            self.in_flight[to] += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight[to])
            self.at[to].append(self.clock.now())
            self.bundles += bool(BUNDLE.match(text))
            slow = self.rng.random() < 0.2
        if slow:
            time.sleep(0.001)  # a gateway's latency, so that sends overlap
        with self.lock:
            self.in_flight[to] -= 1


class Mail(RecordingMailSender):
    def __init__(self, sends: Sends) -> None:
        super().__init__()
        self.sends = sends

    def send_mail(self, to, subject, body):
        self.sends.send(to, subject)
        super().send_mail(to, subject, body)


class Sms(RecordingSmsSender):
    def __init__(self, sends: Sends) -> None:
        super().__init__()
        self.sends = sends

    def send_sms(self, to, text):
        self.sends.send(to, text)
        super().send_sms(to, text)


def test_throttled_delivery_under_concurrent_commands():
    """Limits hold per contact and window; each page is sent alone, bundled once, or
    withdrawn by its own incident's ack or close; nothing is left pending."""
    seed = int(os.environ.get("PAGER_STRESS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    mails = [EmailTarget(f"oncall{i}@example.com") for i in range(3)]
    phones = [SmsTarget(f"+3361000000{i}") for i in range(5)]
    services = [f"svc-{i}" for i in range(40)]
    policies = [EscalationPolicy(s, [Level([rng.choice(mails), rng.choice(phones)]),
                                     Level([rng.choice(phones)])]) for s in services]
    kinds = ["alert", "alert", "alert", "timeout", "ack", "healthy"]
    plan = [[(rng.choice(services), rng.choice(kinds)) for _ in range(250)] for _ in range(8)]
    clock = ManualClock()
    sends, store = Sends(clock, random.Random(seed + 1)), InMemoryStore()
    pager = Pager.start(
        policies=InMemoryPolicyRepository(policies), mail=Mail(sends), sms=Sms(sends),
        timer=ManualTimer(), store=store, page_format=PageFormat(status_updates=True),
        mail_concurrency=3, sms_concurrency=3,
        throttle=Throttling(mail=Throttle(LIMITS["mail"], timedelta(seconds=WINDOW)),
                            sms=Throttle(LIMITS["sms"], timedelta(seconds=WINDOW)),
                            clock=clock))
    outcomes = []
    lock = threading.Lock()

    def caller(index: int) -> None:
        mine = []
        for service, kind in plan[index]:
            mine.append(pager.alert(service, f"c{index}") if kind == "alert"
                        else pager.ack_timeout(service) if kind == "timeout"
                        else pager.acknowledge(service) if kind == "ack"
                        else pager.healthy(service))
        with lock:
            outcomes.extend(mine)

    try:
        run_threads(8, caller)
        pager.flush(timeout=30)  # held pages are not waited for
        for _ in range(30):
            depths = pager.mailbox_depths()
            if depths["mail"] == depths["sms"] == 0:
                break
            clock.advance(WINDOW)
            pager.flush(timeout=30)
        assert pager.mailbox_depths()["sms"] == pager.mailbox_depths()["mail"] == 0

        effects = [e for f in outcomes for e in f.get(timeout=10).effects]
        keys = {e.key: e for e in effects if isinstance(e, Notify)}
        closed = {(e.service_id, e.incident) for e in effects if isinstance(e, Withdraw)}
        assert sends.max_in_flight == 1, "two sends in flight for one contact"
        for to, times in sends.at.items():
            limit = LIMITS["mail" if "@" in to else "sms"]
            times.sort()
            assert all(later - earlier >= WINDOW
                       for earlier, later in zip(times, times[limit:], strict=False)), (
                f"more than {limit} messages in a window to {to}: {times}")
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
        assert store.withdrawn and carriers, "nothing was withdrawn or bundled: proved nothing"
    except AssertionError as error:
        raise AssertionError(f"{error} (reproduce with PAGER_STRESS_SEED={seed})") from error
    finally:
        pager.stop()
