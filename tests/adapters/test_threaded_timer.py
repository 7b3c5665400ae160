"""The real timer: one scheduler thread, due-order firing, within 50 ms of the due time."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from adapters.memory import RecordingSmsSender
from adapters.timer import ThreadedTimer
from pager_actors import Pager


class Fired:
    """Records (service, token, monotonic time) for each timeout, and wakes waiters."""

    def __init__(self, expected: int) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self.all_in = threading.Event()
        self.expected = expected

    def __call__(self, service_id: str, token: str) -> None:
        self.calls.append((service_id, token, time.monotonic()))
        if len(self.calls) >= self.expected:
            self.all_in.set()


@pytest.fixture
def timer():
    with ThreadedTimer() as timer:
        yield timer


def test_fires_within_50_ms_of_due_time(timer):
    """A 100 ms timeout fires no earlier than due and at most 50 ms late."""
    fired = Fired(expected=1)
    timer.attach(fired)
    armed_at = time.monotonic()
    timer.set_timeout("checkout", timedelta(milliseconds=100), "t1")
    assert fired.all_in.wait(timeout=5)
    [(service, token, at)] = fired.calls
    assert (service, token) == ("checkout", "t1")
    assert at - armed_at >= 0.1
    assert timer.max_lag < 0.05


def test_fires_in_due_order_whatever_the_arming_order(timer):
    """Timeouts armed out of order fire earliest first."""
    fired = Fired(expected=3)
    timer.attach(fired)
    for token, ms in (("c", 90), ("a", 30), ("b", 60)):
        timer.set_timeout("s", timedelta(milliseconds=ms), token)
    assert fired.all_in.wait(timeout=5)
    assert [token for _, token, _ in fired.calls] == ["a", "b", "c"]


def test_earlier_timeout_armed_later_wakes_the_scheduler(timer):
    """A short timeout armed after a long one is not held up by it."""
    fired = Fired(expected=1)
    timer.attach(fired)
    timer.set_timeout("s", timedelta(seconds=30), "late")
    armed_at = time.monotonic()
    timer.set_timeout("s", timedelta(milliseconds=20), "soon")
    assert fired.all_in.wait(timeout=5)
    assert fired.calls[0][1] == "soon" and fired.calls[0][2] - armed_at < 0.07
    assert timer.pending() == 1


def test_many_timeouts_share_one_thread(timer):
    """A thousand armed timeouts add no thread."""
    timer.attach(Fired(expected=10**6))
    before = threading.active_count()
    for i in range(1000):
        timer.set_timeout(f"s{i}", timedelta(seconds=60), str(i))
    assert threading.active_count() == before
    assert timer.pending() == 1000


def test_failing_callback_does_not_stop_the_timer(timer):
    """A callback that raises is logged; later timeouts still fire."""
    fired = Fired(expected=1)

    def callback(service_id, token):
        if token == "bad":
            raise RuntimeError("pager gone")
        fired(service_id, token)

    timer.attach(callback)
    timer.set_timeout("s", timedelta(milliseconds=5), "bad")
    timer.set_timeout("s", timedelta(milliseconds=20), "good")
    assert fired.all_in.wait(timeout=5)


def test_closed_timer_refuses_new_timeouts():
    """Arming a closed timer raises instead of silently dropping the timeout."""
    timer = ThreadedTimer()
    timer.attach(Fired(expected=1))
    timer.close()
    with pytest.raises(RuntimeError, match="closed"):
        timer.set_timeout("s", timedelta(seconds=1), "t")


def test_drives_a_real_pager_through_an_escalation(policies, mail):
    """With a 50 ms ack timeout the real timer escalates to level 2 by itself."""
    class SignallingSms(RecordingSmsSender):
        def __init__(self):
            super().__init__()
            self.second = threading.Event()

        def send_sms(self, to, text):
            super().send_sms(to, text)
            if len(self.sent) == 2:
                self.second.set()

    sms = SignallingSms()
    with ThreadedTimer() as timer:
        pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer,
                            ack_timeout=timedelta(milliseconds=50))
        pager.alert("checkout", "down").get(timeout=5)
        assert sms.second.wait(timeout=5)
        pager.acknowledge("checkout").get(timeout=5)
        assert pager.status("checkout").level == 2
        pager.stop()
