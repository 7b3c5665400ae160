"""Pages that cannot be delivered: the next level is paged at once, not after the timeout."""

from __future__ import annotations

from datetime import timedelta

from adapters.memory import InMemoryPolicyRepository, ManualTimer, RecordingSmsSender
from pager_actors import Pager
from pager_actors.ports import PermanentDeliveryError
from tests.conftest import BACKUP_SMS, two_level_policy


class RefusingMail:
    def send_mail(self, to: str, subject: str, body: str) -> None:
        raise PermanentDeliveryError("550 no such mailbox")


class RefusingFirstNumber(RecordingSmsSender):
    def send_sms(self, to: str, text: str) -> None:
        if to == "+33600000001":
            raise PermanentDeliveryError("400 unknown number")
        super().send_sms(to, text)


def test_a_level_whose_every_page_failed_escalates_at_once():
    """Mail and SMS of level 1 both fail for good: level 2 is paged with no timer fired."""
    sms, timer = RefusingFirstNumber(), ManualTimer()
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=RefusingMail(), sms=sms, timer=timer,
                        ack_timeout=timedelta(minutes=15))
    try:
        pager.alert("checkout", "down").get(timeout=5)
        pager.flush(timeout=5)
        assert [s.to for s in sms.sent] == [BACKUP_SMS.number]
        assert pager.status("checkout").level == 2
        assert timer.now == timedelta(0)  # no timeout had to fire
        events = [e.event for e in pager.timeline("checkout", 1)]
        assert events.count("delivery_failed") == 2
        assert events.index("escalated") > max(i for i, e in enumerate(events)
                                               if e == "delivery_failed")
    finally:
        pager.stop()


def test_one_failed_page_of_two_waits_for_the_timeout():
    """Only one of level 1's pages failed: no early escalation."""
    sms = RecordingSmsSender()
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=RefusingMail(), sms=sms, timer=ManualTimer(),
                        ack_timeout=timedelta(minutes=15))
    try:
        pager.alert("checkout", "down").get(timeout=5)
        pager.flush(timeout=5)
        assert pager.status("checkout").level == 1 and len(sms.sent) == 1
    finally:
        pager.stop()
