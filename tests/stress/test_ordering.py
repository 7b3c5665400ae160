"""One caller's commands are processed in the order it sent them, whatever stops the actor."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import pykka
import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import Pager, Supervision
from pager_actors._inbox import InboxClosed
from tests.conftest import two_level_policy

pytestmark = pytest.mark.stress


@pytest.fixture
def fast_switching():
    """Switch threads every 10 us, to make races show up in a short run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def test_commands_keep_their_order_while_the_actor_is_stopped_again_and_again(fast_switching):
    """A caller's alert/ack/healthy triples stay in order while another thread stops the actor."""
    repo = InMemoryPolicyRepository([two_level_policy("checkout")])
    pager = Pager.start(policies=repo, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer())
    done, stops = threading.Event(), [0]

    def stopper():
        while not done.is_set():
            for ref in pykka.ActorRegistry.get_by_class_name("ServiceActor"):
                with contextlib.suppress(InboxClosed, pykka.ActorDeadError):
                    ref.stop(block=False)
                    stops[0] += 1
            time.sleep(0.0005)

    killer = threading.Thread(target=stopper)
    killer.start()
    futures = []
    deadline = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline and len(futures) < 30_000:
            futures += [pager.alert("checkout", "m"), pager.acknowledge("checkout"),
                        pager.healthy("checkout")]
        outcomes = [f.get(timeout=10) for f in futures]
    finally:
        done.set()
        killer.join()
    seqs = [o.seq for o in outcomes]
    assert seqs == sorted(seqs), "a command overtook an earlier one from the same caller"
    triples = len(futures) // 3
    assert [o.event for o in outcomes] == ["incident_opened", "acknowledged", "resolved"] * triples
    assert stops[0] >= 20, "the actor was hardly stopped: the test proved nothing"
    pager.stop()


def test_restarted_actor_crashing_on_its_backlog_keeps_the_registry_alive():
    """A service that crashes while its backlog is re-queued loses nothing and harms no one."""

    class FlakyRepo(InMemoryPolicyRepository):
        def __init__(self):
            super().__init__([two_level_policy("broken"), two_level_policy("fine")])
            self.calls = 0

        def get(self, service_id):
            if service_id == "broken":
                self.calls += 1
                if 2 <= self.calls <= 7:
                    raise ConnectionError("policy store flapping")
            return super().get(service_id)

    pager = Pager.start(policies=FlakyRepo(), mail=RecordingMailSender(),
                        sms=RecordingSmsSender(), timer=ManualTimer(),
                        supervision=Supervision(backoff_base=0.001, max_restarts=100))
    futures = [pager.alert("broken", str(i)) for i in range(50)]
    settled = 0
    for future in futures:
        with contextlib.suppress(Exception):  # dead letters are fine here; hanging is not
            future.get(timeout=10)
        settled += 1
    assert settled == 50
    assert pager.alert("fine", "still routed").get(timeout=5).event == "incident_opened"
    pager.flush(timeout=10)
    pager.stop()
