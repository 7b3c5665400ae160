"""Delivery retries: transient failures come back with backoff, permanent ones do not."""

from __future__ import annotations

import threading

from adapters.memory import ManualTimer, RecordingMailSender, RecordingSmsSender
from adapters.sqlite import SqliteStore
from pager_actors import Pager, RetryPolicy
from pager_actors.logs import capture_events
from pager_actors.ports import PermanentDeliveryError, TransientDeliveryError
from tests.conftest import ONCALL_MAIL, ONCALL_SMS

QUICK = RetryPolicy(attempts=4, backoff=0.01, jitter=lambda: 1.0)


class ScriptedSms(RecordingSmsSender):
    """Raises the scripted errors for `victim`, one per call, then delivers."""

    def __init__(self, victim: str, errors: list[Exception]) -> None:
        super().__init__()
        self.victim, self.errors = victim, errors
        self.calls = 0

    def send_sms(self, to, text):
        if to == self.victim:
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
        super().send_sms(to, text)


def start(policies, sms, **kwargs):
    return Pager.start(policies=policies, mail=RecordingMailSender(), sms=sms,
                       timer=ManualTimer(), retry=QUICK, **kwargs)


def test_transient_failures_are_retried_until_delivered(policies):
    """Two 503s, then success: the SMS is delivered once, after three attempts."""
    sms = ScriptedSms(ONCALL_SMS.number, [TransientDeliveryError("503"),
                                          TransientDeliveryError("503")])
    pager = start(policies, sms)
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush(timeout=5)
    assert sms.calls == 3 and [s.to for s in sms.sent] == [ONCALL_SMS.number]
    stats = pager.stats()
    assert stats["sms_sent"] == 1 and stats["sms_failed"] == 0 and stats["sms_retried"] == 2
    pager.stop()


def test_permanent_failure_is_not_retried_and_the_outbox_says_why(policies, tmp_path):
    """A 401 is tried once; the outbox row is failed with the reason."""
    sms = ScriptedSms(ONCALL_SMS.number, [PermanentDeliveryError("401 bad credentials")])
    store = SqliteStore(tmp_path / "p.db")
    pager = start(policies, sms, store=store)
    with capture_events() as logs:
        pager.alert("checkout", "down").get(timeout=5)
        pager.flush(timeout=5)
    assert sms.calls == 1
    [row] = [r for r in store.outbox() if r["target"] == f"sms:{ONCALL_SMS.number}"]
    assert row["status"] == "failed" and "401 bad credentials" in row["last_error"]
    [failure] = [e for e in logs if e["event"] == "sms_failed"]
    assert failure["attempts"] == 1 and failure["target"] == "+336****0001"
    pager.stop()
    store.close()


def test_retries_stop_after_the_last_attempt(policies, tmp_path):
    """Always 503: four attempts, then failed for good, logged and counted."""
    sms = ScriptedSms(ONCALL_SMS.number, [TransientDeliveryError("503 busy")] * 10)
    store = SqliteStore(tmp_path / "p.db")
    pager = start(policies, sms, store=store)
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush(timeout=5)
    assert sms.calls == 4
    assert pager.stats()["sms_failed"] == 1
    [row] = [r for r in store.outbox() if r["target"] == f"sms:{ONCALL_SMS.number}"]
    assert row["status"] == "failed" and "503 busy" in row["last_error"]
    pager.stop()
    store.close()


def test_a_retrying_target_holds_up_no_other_page(policies):
    """While one number waits for its retry, the next SMS and the mail still go out at once."""
    slow = RetryPolicy(attempts=2, backoff=30.0, jitter=lambda: 1.0)
    second = threading.Event()

    class Sms(ScriptedSms):
        def send_sms(self, to, text):
            super().send_sms(to, text)
            if to == "+33600000002":
                second.set()

    sms = Sms(ONCALL_SMS.number, [TransientDeliveryError("503")])
    mail = RecordingMailSender()
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=ManualTimer(), retry=slow)
    pager.alert("checkout", "down").get(timeout=5)
    pager.ack_timeout("checkout").get(timeout=5)  # level 2: +33600000002
    assert second.wait(timeout=5), "level 2 waited behind level 1's retry"
    assert [m.to for m in mail.sent] == [ONCALL_MAIL.address]
    assert pager.stats()["pending_work"] >= 1  # the retry is still scheduled
    pager.stop(timeout=2)
