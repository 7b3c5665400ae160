"""Keyed alerts, resolves, acks, heartbeats and maintenance windows from many threads,
checked against an independent sequential model (tests/stress/incident_model.py)."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.sqlite import SqliteStore
from pager_actors import EscalationPolicy, Pager
from tests.conftest import two_level_policy
from tests.stress.conftest import pages, run_threads
from tests.stress.incident_model import IncidentModel

pytestmark = pytest.mark.stress

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
KINDS = ["alert"] * 4 + ["resolve"] * 3 + ["ack", "healthy", "heartbeat", "timer", "timer",
                                            "start_window", "end_window"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_random_incident_mix_from_12_threads_matches_the_model(store, tmp_path):
    """12 threads x 300 random commands over 60 services (policies that repeat once and
    whose acks expire) agree with the model: every event, every final state, every page
    (rounds and expired acks page a level again), every armed timer."""
    seed = int(os.environ.get("PAGER_STRESS_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    services = [f"svc-{i}" for i in range(60)]
    policies = [EscalationPolicy(s, two_level_policy(s).levels, repeat=1,
                                 ack_expiry=timedelta(hours=1), heartbeat=timedelta(minutes=5))
                for s in services]
    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    options = {"store": SqliteStore(tmp_path / "mix.db")} if store == "sqlite" else {}
    pager = Pager.start(policies=InMemoryPolicyRepository(policies), mail=mail, sms=sms,
                        timer=timer, clock=lambda: T0, **options)
    plans = [[(rng.choice(services), rng.choice(KINDS), rng.random()) for _ in range(300)]
             for _ in range(12)]
    results: list[tuple[str, str, object, object]] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for service, kind, roll in plans[index]:
            arg: object = None
            if kind in ("alert", "resolve"):
                arg = "abc"[int(roll * 3)]
                future = (pager.alert(service, f"{arg} fires", key=str(arg)) if kind == "alert"
                          else pager.resolve_alert(service, str(arg)))
            elif kind == "ack":
                future = pager.acknowledge(service)
            elif kind == "healthy":
                future = pager.healthy(service)
            elif kind == "heartbeat":
                future = pager.heartbeat(service)
            elif kind == "start_window":
                future = pager.start_maintenance(service, T0 + timedelta(hours=1))
            elif kind == "end_window":
                arg = 1 + int(roll * 3)
                future = pager.end_maintenance(service, int(arg))  # type: ignore[arg-type]
            else:  # a timer: whatever is armed, or a recorded (perhaps stale) token of any kind
                armed = [t.token for t in timer.armed if t.service_id == service]
                arg = armed[int(roll * len(armed))] if armed and roll < 0.7 else None
                future = pager.ack_timeout(service, arg)  # type: ignore[arg-type]
            with lock:
                results.append((service, kind, arg, future))

    run_threads(12, worker, timeout=120)
    pager.flush(timeout=60)
    applied: dict[str, list[tuple[int, str, object, str]]] = defaultdict(list)
    for service, kind, arg, future in results:
        outcome = future.get(timeout=10)  # type: ignore[attr-defined]
        applied[service].append((outcome.seq, kind, arg, outcome.event))
    counted = pages(mail, sms)
    timers = 0
    try:
        for service in services:
            commands = sorted(applied[service])
            assert [seq for seq, *_ in commands] == list(range(1, len(commands) + 1))
            model = IncidentModel(service, levels=2)
            for seq, kind, arg, event in commands:
                assert model.apply(kind, arg) == event, f"{service} #{seq} {kind}({arg})"
            state = pager.state(service)
            status = state.status()
            assert (status.health.value, status.level, status.acknowledged,
                    [a.key for a in state.alerts]) == model.status(), service
            assert {w.id for w in state.windows} == model.windows
            expected = Counter((service, n, level, to) for n, level in model.paged
                               for to in (["oncall@example.com", "+33600000001"] if level == 1
                                          else ["+33600000002"]))
            assert Counter({k: v for k, v in counted.items() if k[0] == service}) == expected, \
                f"{service}: the pages differ from the model's"
            timers += model.timers
        assert len(timer.armed) == timers, "one timer per page, heartbeat and window"
    except AssertionError as error:
        raise AssertionError(f"{error} (reproduce with PAGER_STRESS_SEED={seed})") from error
    finally:
        pager.stop()
        if "store" in options:
            options["store"].close()
