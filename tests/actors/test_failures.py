"""Failing and hanging ports, crashing service actors, and shutdown."""

from __future__ import annotations

import threading
from datetime import timedelta

import pykka
import pytest

from adapters.memory import InMemoryStore, RecordingMailSender, RecordingSmsSender
from pager_actors import (
    EscalationPolicy,
    Health,
    Level,
    Pager,
    PagerStoppedError,
    ServiceStatus,
    SmsTarget,
)
from pager_actors.logs import capture_events
from tests.conftest import ONCALL_MAIL, ONCALL_SMS


class GatewayDown(Exception):
    pass


class FlakySms(RecordingSmsSender):
    """Fails for the numbers in `down`, records the rest."""

    def __init__(self, down: set[str]) -> None:
        super().__init__()
        self.down = down

    def send_sms(self, to: str, text: str) -> None:
        if to in self.down:
            raise GatewayDown(f"gateway refused {to}")
        super().send_sms(to, text)


class HangingMail(RecordingMailSender):
    """Blocks every send until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_mail(self, to: str, subject: str, body: str) -> None:
        self.release.wait(timeout=30)
        super().send_mail(to, subject, body)


def test_failing_port_does_not_stop_other_targets(policies, mail, timer):
    """One refused SMS is logged and counted; the other targets are still paged."""
    first, second = SmsTarget("+33611111111"), SmsTarget("+33622222222")
    policies.put(EscalationPolicy("pay", [Level([first, ONCALL_MAIL, second])]))
    sms = FlakySms(down={first.number})
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer)
    with capture_events() as logs:
        pager.alert("pay", "down").get(timeout=5)
        pager.flush()
    assert [s.to for s in sms.sent] == [second.number]
    assert [m.to for m in mail.sent] == [ONCALL_MAIL.address]
    [failure] = [e for e in logs if e["event"] == "sms_failed"]
    assert failure["log_level"] == "warning"
    assert failure["target"] == "+336****1111" and "gateway refused" in failure["error"]
    assert pager.stats()["sms_failed"] == 1
    pager.alert("checkout", "still working").get(timeout=5)
    pager.flush()
    assert ONCALL_SMS.number in [s.to for s in sms.sent]


def test_hanging_port_blocks_neither_services_nor_callers(policies, sms, timer):
    """A mail gateway that hangs leaves commands, SMS and status working; flush is bounded."""
    mail = HangingMail()
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer)
    try:
        pager.alert("checkout", "a").get(timeout=5)
        pager.alert("search", "b").get(timeout=5)
        pager.acknowledge("checkout").get(timeout=5)
        assert pager.status("checkout").acknowledged is True
        with pytest.raises(TimeoutError, match="pending"):
            pager.flush(timeout=0.2)
        assert len(sms.sent) == 2  # the SMS channel is not behind the hung mail
    finally:
        mail.release.set()
    pager.flush(timeout=5)
    assert len(mail.sent) == 2


def test_stop_past_its_deadline_logs_the_sends_not_started_and_leaves_them_pending(
        policies, sms, timer):
    """Stop past its deadline logs the queued mail as dropped; undelivered rows stay pending."""
    mail, store = HangingMail(), InMemoryStore()
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer, store=store)
    try:
        pager.alert("checkout", "a").get(timeout=5)
        pager.alert("search", "b").get(timeout=5)  # the same address: waits behind the hung one
        assert pager.mailbox_depths()["mail"] == 1
        with capture_events() as logs:
            pager.stop(timeout=0.5)
        assert {n.target for n in store.undelivered()} == {ONCALL_MAIL}
        assert len(store.undelivered()) == 2
    finally:
        mail.release.set()
    [dropped] = [e for e in logs if e["event"] == "effect_dropped"]
    assert dropped["target"] == "o***@example.com" and dropped["reason"] == "pager stopped"


def test_crashed_service_actor_restarts_and_retries_the_command(policies, pager, sms):
    """A repository error kills the actor; the restarted actor retries it with the state intact."""
    pager.alert("checkout", "down").get(timeout=5)
    real_get = policies.get
    broken = threading.Event()

    def get_once_broken(service_id):
        if service_id == "checkout" and not broken.is_set():
            broken.set()
            raise RuntimeError("policy store unreachable")
        return real_get(service_id)

    policies.get = get_once_broken
    assert pager.acknowledge("checkout").get(timeout=5).event == "acknowledged"
    assert pager.status("checkout") == ServiceStatus(Health.UNHEALTHY, 1, True, "down")
    assert pager.stats()["service_restarts"] == 1


def test_messages_queued_behind_a_crash_are_not_lost(policies, pager, sms):
    """Commands queued after a crashing one run on the restarted actor, in order."""
    pager.alert("checkout", "down").get(timeout=5)
    gate, real_get = threading.Event(), policies.get
    calls = []

    def slow_then_broken(service_id):
        calls.append(service_id)
        if len(calls) == 1:
            gate.wait(timeout=5)
            raise RuntimeError("boom")
        return real_get(service_id)

    policies.get = slow_then_broken
    futures = [pager.ack_timeout("checkout"), pager.ack_timeout("checkout"),
               pager.acknowledge("checkout")]
    gate.set()
    outcomes = [f.get(timeout=5) for f in futures]
    assert [o.event for o in outcomes] == ["escalated", "escalation_exhausted", "acknowledged"]
    assert [o.seq for o in outcomes] == [2, 3, 4]


def test_stopped_service_actor_is_restarted_by_the_registry(pager):
    """An actor stopped from outside comes back on the next command, state intact."""
    pager.alert("checkout", "down").get(timeout=5)
    [ref] = [r for r in pykka.ActorRegistry.get_all() if "ServiceActor" in str(r)]
    ref.stop(timeout=5)
    assert pager.status("checkout").health is Health.UNHEALTHY
    assert pager.acknowledge("checkout").get(timeout=5).event == "acknowledged"


def test_commands_after_stop_fail_clearly(pager):
    """After stop() every command fails with PagerStoppedError; stop() is idempotent."""
    pager.alert("checkout", "a").get(timeout=5)
    pager.stop()
    pager.stop()
    with pytest.raises(PagerStoppedError):
        pager.alert("checkout", "b").get(timeout=1)
    assert pykka.ActorRegistry.get_all() == []


def test_stop_drains_queued_commands_and_deliveries(policies, mail, sms, timer):
    """Everything accepted before stop() is processed and delivered."""
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer)
    futures = [pager.alert(s, "a") for s in ("checkout", "search")]
    pager.stop()
    assert all(f.get(timeout=1).event == "incident_opened" for f in futures)
    assert len(sms.sent) == 2 and len(mail.sent) == 2 and len(timer.armed) == 2


def test_manual_timer_delivers_through_the_attached_pager(pager, timer, sms):
    """Pager.start attaches to a timer that can call back; advancing it escalates."""
    pager.alert("checkout", "a").get(timeout=5)
    pager.flush()
    [outcome] = [f.get(timeout=5) for f in timer.advance(timedelta(minutes=15))]
    assert outcome.event == "escalated"


class GatedRepo:
    """A policy repository whose lookups from service actors wait until `gate` opens."""

    def __init__(self, policies):
        self.policies, self.gate = policies, threading.Event()

    def get(self, service_id):
        if threading.current_thread().name.startswith("ServiceActor"):
            self.gate.wait(timeout=10)
        return self.policies.get(service_id)


def test_a_caller_past_the_in_flight_cap_waits_then_completes(policies, mail, sms, timer):
    """With 4 unsettled commands a caller's 5th waits; once they settle, all 200 complete."""
    repo = GatedRepo(policies)
    pager = Pager.start(policies=repo, mail=mail, sms=sms, timer=timer, max_in_flight=4)
    sent, futures = threading.Semaphore(0), []

    def caller():
        for i in range(200):
            futures.append(pager.alert("checkout", str(i)))
            sent.release()

    thread = threading.Thread(target=caller)
    thread.start()
    for _ in range(4):
        assert sent.acquire(timeout=5)
    thread.join(timeout=0.3)
    assert thread.is_alive() and len(futures) == 4, "the 5th command was not held back"
    repo.gate.set()
    thread.join(timeout=10)
    assert [f.get(timeout=5).seq for f in futures] == list(range(1, 201))


def test_timer_callbacks_are_never_held_back(policies, mail, sms, timer):
    """The timer delivers 40 timeouts at once even with 2 in flight allowed and actors blocked."""
    repo = GatedRepo(policies)
    pager = Pager.start(policies=repo, mail=mail, sms=sms, timer=timer, max_in_flight=2)
    repo.gate.set()
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    repo.gate.clear()
    for _ in range(39):
        timer.set_timeout("checkout", timedelta(minutes=15), "stale-token")
    firing = threading.Thread(target=timer.advance, args=(timedelta(minutes=15),))
    firing.start()
    firing.join(timeout=5)
    assert not firing.is_alive(), "the timer thread was held back by backpressure"
    repo.gate.set()
    pager.flush()
    assert pager.status("checkout").level == 2


def test_ack_timeout_must_be_positive(policies, mail, sms, timer):
    """A zero or negative ack timeout is rejected at start."""
    with pytest.raises(ValueError, match="positive"):
        Pager.start(policies=policies, mail=mail, sms=sms, timer=timer, ack_timeout=timedelta(0))
