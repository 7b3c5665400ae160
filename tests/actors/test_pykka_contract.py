"""The Pykka behaviour the engine relies on (Pykka is pinned; these fail if it changes)."""

from __future__ import annotations

import threading

import pykka

from pager_actors._inbox import Envelope, InboxClosed, ServiceInbox


class Echo(pykka.ThreadingActor):
    @staticmethod
    def _create_actor_inbox():
        return ServiceInbox()

    def __init__(self, seen, crash_on=None, failed=None, stopped=None):
        super().__init__()
        self.seen, self.crash_on = seen, crash_on
        self.failed = failed or threading.Event()
        self.stopped = stopped or threading.Event()

    def on_receive(self, message):
        if message == self.crash_on:
            raise RuntimeError("crash")
        self.seen.append(message)

    def on_failure(self, *exc_info):
        self.failed.set()

    def on_stop(self):
        self.stopped.set()


def test_actor_loop_reads_our_envelopes_from_our_inbox():
    """Pykka uses _create_actor_inbox and reads .message/.reply_to from what it returns."""
    seen = []
    ref = Echo.start(seen)
    assert isinstance(ref.actor_inbox, ServiceInbox)
    ref.actor_inbox.put(Envelope("hello"))
    ref.stop(timeout=5)
    assert seen == ["hello"]


def test_exception_in_a_told_message_calls_on_failure_with_actor_stopped():
    """A raise from on_receive of a told message stops the actor and runs on_failure."""
    failed = threading.Event()
    ref = Echo.start([], crash_on="bad", failed=failed)
    ref.actor_inbox.put(Envelope("bad"))
    assert failed.wait(timeout=5)
    assert not ref.is_alive()


def test_on_stop_runs_after_stopped_flag_is_set():
    """on_stop runs once is_alive() is already False, so no new tell can reach the inbox."""
    seen = []

    class Probe(Echo):
        def on_stop(self):
            seen.append(self.actor_ref.is_alive())

    ref = Probe.start([])
    ref.stop(timeout=5)
    assert seen == [False]


def test_closed_inbox_refuses_puts_and_hands_over_leftovers():
    """close() drains under the lock; later puts raise InboxClosed."""
    inbox = ServiceInbox()
    inbox.put(Envelope(1))
    inbox.put(Envelope(2))
    handed = []
    inbox.close(lambda left: handed.extend(e.message for e in left))
    assert handed == [1, 2]
    try:
        inbox.put(Envelope(3))
    except InboxClosed:
        pass
    else:
        raise AssertionError("put on a closed inbox must raise")
