"""Passivation of idle service actors and the cap on live actors."""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import Health, Pager
from pager_actors.domain import Incident, MonitoredService
from tests.conftest import two_level_policy


def wait_until(condition, timeout=10.0, what="condition"):
    """Poll a condition with a deadline (for effects of a background clock, not of our calls)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def start(services, **kwargs):
    repo = InMemoryPolicyRepository([two_level_policy(s) for s in services])
    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    pager = Pager.start(policies=repo, mail=mail, sms=sms, timer=timer, **kwargs)
    return pager, mail, sms, timer


def test_idle_actors_are_passivated_and_threads_fall():
    """After passivate_after without a message, service actors stop and their threads end."""
    services = [f"svc-{i}" for i in range(50)]
    pager, *_ = start(services, passivate_after=timedelta(milliseconds=200))
    before = threading.active_count()
    for s in services:
        pager.alert(s, "down")
    pager.flush()
    assert pager.stats()["service_actors"] == 50
    wait_until(lambda: pager.stats()["service_actors"] == 0, what="passivation")
    wait_until(lambda: threading.active_count() <= before, what="threads to end")
    assert pager.stats()["passivations"] == 50
    pager.stop()


def test_passivated_service_answers_status_and_escalates_on_timeout():
    """A passivated service keeps its state, and its timeout re-activates it."""
    pager, _, sms, timer = start(["checkout"], passivate_after=timedelta(milliseconds=100))
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    wait_until(lambda: pager.stats()["service_actors"] == 0, what="passivation")
    assert pager.status("checkout").health is Health.UNHEALTHY
    assert pager.stats()["service_actors"] == 0, "status() must not wake the actor"
    [outcome] = [f.get(timeout=5) for f in timer.advance(timedelta(minutes=15))]
    assert outcome.event == "escalated"
    pager.flush()
    assert [s.to for s in sms.sent] == ["+33600000001", "+33600000002"]
    pager.stop()


def test_messages_racing_a_passivation_are_not_lost():
    """Commands sent while actors are being passivated are all processed, in order."""
    services = [f"svc-{i}" for i in range(20)]
    pager, *_ = start(services, passivate_after=timedelta(milliseconds=1))
    futures = {s: [] for s in services}
    for round_ in range(60):
        for s in services:
            command = pager.alert(s, "x") if round_ % 2 == 0 else pager.healthy(s)
            futures[s].append(command)
        time.sleep(0.002)  # let the passivation clock tick between rounds
    for s, fs in futures.items():
        assert [f.get(timeout=10).seq for f in fs] == list(range(1, 61)), s
    assert pager.stats()["passivations"] > 0
    pager.stop()


def test_live_actors_stay_under_the_cap():
    """With max_live_services=10, 200 alerting services never run more than 10 actors."""
    services = [f"svc-{i}" for i in range(200)]
    pager, mail, _, _ = start(services, max_live_services=10)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], pager.stats()["service_actors"])
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    futures = [pager.alert(s, "storm") for s in services]
    assert all(f.get(timeout=20).event == "incident_opened" for f in futures)
    pager.flush(timeout=20)
    stop.set()
    watcher.join()
    assert len(mail.sent) == 200
    assert peak[0] <= 10
    assert pager.stats()["evictions"] > 0
    pager.stop()


def deep_size(obj, shared=()) -> int:
    """Bytes reachable from obj, not counting the objects in `shared`."""
    seen, stack, total = {id(s) for s in shared}, [obj], 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
        elif hasattr(item, "__slots__"):
            stack.extend(getattr(item, name) for name in item.__slots__ if hasattr(item, name))
    return total


def test_passivated_service_record_is_under_one_and_a_half_kibibytes():
    """An open incident's record in InMemoryStore, its firing alert included, weighs under
    1.5 KiB (the policy is shared)."""
    store = InMemoryStore()
    pager, *_ = start(["checkout-service-with-a-long-name"], store=store)
    pager.alert("checkout-service-with-a-long-name", "p99 latency above 2 s").get(timeout=5)
    pager.stop()
    record = store.load("checkout-service-with-a-long-name")
    assert isinstance(record, MonitoredService) and isinstance(record.incident, Incident)
    assert deep_size(record, shared=[record.incident.policy]) < 1536
