"""Restart limits, quarantine, dead letters and adapter restarts."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pykka
import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import (
    DeadLetterError,
    Pager,
    ServiceQuarantinedError,
    Supervision,
)
from pager_actors.logs import capture_events
from tests.conftest import two_level_policy

FAST = Supervision(backoff_base=0.001, quarantine_for=60.0)


class RepoFailingFor(InMemoryPolicyRepository):
    """Raises for `victim` while `failures` lasts (None: for ever); other services work."""

    def __init__(self, victim: str, failures: int | None) -> None:
        super().__init__([two_level_policy(s) for s in ("checkout", "search", "broken")])
        self.victim, self.failures = victim, failures
        self.calls_for_victim = 0
        self._lock = threading.Lock()

    def get(self, service_id):
        if service_id == self.victim:
            with self._lock:
                self.calls_for_victim += 1
                # The first call comes from the facade checking the service exists.
                if self.calls_for_victim > 1 and (self.failures is None or self.failures > 0):
                    if self.failures is not None:
                        self.failures -= 1
                    raise ConnectionError("policy database unreachable")
        return super().get(service_id)


def start(repo, supervision=FAST, **kwargs):
    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    pager = Pager.start(policies=repo, mail=mail, sms=sms, timer=timer, supervision=supervision,
                        **kwargs)
    return pager, mail, sms, timer


def test_command_that_crashes_twice_is_dead_lettered_and_logged():
    """A poison command is retried once, then dropped with a DeadLetterError and a log line."""
    pager, *_ = start(RepoFailingFor("broken", failures=2))
    with capture_events() as logs, pytest.raises(DeadLetterError, match="RaiseAlert"):
        pager.alert("broken", "boom").get(timeout=5)
    [dead] = [e for e in logs if e["event"] == "dead_letter"]
    assert "boom" in dead["command"] and dead["log_level"] == "error"
    assert pager.stats()["dead_letters"] == 1
    assert pager.alert("broken", "next").get(timeout=5).event == "incident_opened"


def test_repository_failing_for_one_service_quarantines_only_that_service():
    """Past 3 restarts in 60 s the service is quarantined; other services keep paging."""
    pager, _, sms, _ = start(RepoFailingFor("broken", failures=None))
    with capture_events() as logs:
        with pytest.raises(DeadLetterError):  # crashes two actors: restarts 1 and 2
            pager.alert("broken", "a").get(timeout=5)
        with pytest.raises(DeadLetterError):  # restart 3, then a 4th crash: quarantine
            pager.alert("broken", "b").get(timeout=5)
        with pytest.raises(ServiceQuarantinedError, match="quarantined"):
            pager.alert("broken", "c").get(timeout=5)
    assert any(e["event"] == "service_quarantined" and e["log_level"] == "critical"
               for e in logs)
    assert pager.stats()["services_quarantined"] == 1
    assert pager.alert("checkout", "fine").get(timeout=5).event == "incident_opened"
    pager.flush()
    assert "+33600000001" in [s.to for s in sms.sent]


def test_quarantine_ends_and_the_service_pages_again():
    """After quarantine_for the service gets a fresh restart budget."""
    repo = RepoFailingFor("broken", failures=8)
    pager, *_ = start(repo, Supervision(backoff_base=0.001, quarantine_for=0.2))
    with pytest.raises(DeadLetterError):
        pager.alert("broken", "a").get(timeout=5)
    deadline = time.monotonic() + 10
    while True:
        try:
            outcome = pager.alert("broken", "later").get(timeout=5)
            break
        except (ServiceQuarantinedError, DeadLetterError):
            assert time.monotonic() < deadline, "the quarantine never ended"
            time.sleep(0.05)
    assert outcome.event == "incident_opened"


def test_restart_backoff_grows_exponentially():
    """Each restart within the window waits about twice as long as the one before."""
    delays = []
    rules = Supervision(backoff_base=0.01, max_restarts=3, jitter=lambda: 1.0)
    pager, *_ = start(RepoFailingFor("broken", failures=3), rules)
    with capture_events() as logs:
        with pytest.raises(DeadLetterError):
            pager.alert("broken", "a").get(timeout=5)
        pager.alert("broken", "b").get(timeout=5)
    delays = [e["delay_s"] for e in logs if e["event"] == "service_actor_restarting"]
    assert delays == [0.01, 0.02, 0.04]


def test_crashed_adapter_actor_is_restarted_without_losing_pages(policies):
    """An SMS actor that dies recording a delivery is replaced; later pages still go out."""

    class StoreFailingOnce(InMemoryStore):
        def __init__(self):
            super().__init__()
            self.fail = True

        def commit(self, transitions, deliveries=()):
            if deliveries and self.fail:
                self.fail = False
                raise OSError("disk full")
            super().commit(transitions, deliveries)

    store = StoreFailingOnce()
    pager, mail, sms, _ = start(policies, store=store)
    pager.alert("checkout", "a").get(timeout=5)
    pager.alert("search", "b").get(timeout=5)
    pager.flush()
    deadline = time.monotonic() + 10  # the crash is handled just after its delivery's work ends
    while pager.stats().get("adapter_restarts", 0) < 1:
        assert time.monotonic() < deadline, "the crashed adapter actor was not replaced"
        time.sleep(0.01)
    assert pager.stats()["adapter_restarts"] == 1
    assert len(sms.sent) == 2 and len(mail.sent) == 2
    # The delivery whose record failed stays in the outbox: it is sent again on recovery.
    assert len(store.undelivered()) == 1
    pager.stop()  # in step with the dispatcher, which may still be replacing the actor


def test_externally_stopped_actor_comes_back_without_quarantine(pager):
    """Stopping a service actor from outside is not a crash: it restarts, no budget used."""
    for _ in range(5):
        pager.alert("checkout", "down").get(timeout=5)
        [ref] = [r for r in pykka.ActorRegistry.get_all() if "ServiceActor" in str(r)]
        ref.stop(timeout=5)
        pager.healthy("checkout").get(timeout=5)
        [ref] = [r for r in pykka.ActorRegistry.get_all() if "ServiceActor" in str(r)]
        ref.stop(timeout=5)
    assert pager.status("checkout").health.value == "healthy"
    assert pager.stats().get("services_quarantined", 0) == 0


def test_timeout_reaches_a_quarantined_service_again_after_release():
    """A quarantined service's armed timeout is armed again when the quarantine ends."""
    repo = RepoFailingFor("broken", failures=0)
    pager, _, _, timer = start(repo, Supervision(backoff_base=0.001, quarantine_for=0.2))
    pager.alert("broken", "down").get(timeout=5)
    pager.flush()
    repo.failures = 4  # two dead letters, four crashes: quarantined
    for _ in range(2):
        with pytest.raises(DeadLetterError):
            pager.acknowledge("broken").get(timeout=5)
    deadline = time.monotonic() + 10
    while len(timer.armed) < 2:
        assert time.monotonic() < deadline, "no re-arm after the quarantine"
        time.sleep(0.05)
    assert timer.armed[-1].token == timer.armed[0].token
    assert timer.armed[-1].delay <= timedelta(minutes=15)
