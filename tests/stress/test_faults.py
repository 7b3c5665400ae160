"""Fault injection under load: a crashing port and a killed service actor lose nothing elsewhere."""

from __future__ import annotations

import threading
from collections import defaultdict

import pykka
import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from pager_actors import EmailTarget, EscalationPolicy, Level, Pager, Supervision
from tests.conftest import two_level_policy
from tests.stress.conftest import pages, run_threads

pytestmark = pytest.mark.stress

BROKEN = "broken@example.com"


class MailDownFor(RecordingMailSender):
    """Raises for one address, records everything else."""

    def send_mail(self, to, subject, body):
        if to == BROKEN:
            raise ConnectionError("mail gateway down")
        super().send_mail(to, subject, body)


class RepoThatCrashesOnce(InMemoryPolicyRepository):
    """Raises on the N-th lookup of one service, to kill its actor mid-run."""

    def __init__(self, policies, victim, crash_at):
        super().__init__(policies)
        self.victim, self.crash_at = victim, set(crash_at)
        self.lookups = 0
        self.lock = threading.Lock()

    def get(self, service_id):
        if service_id == self.victim:
            with self.lock:
                self.lookups += 1
                if self.lookups in self.crash_at:
                    raise RuntimeError("injected crash")
        return super().get(service_id)


def test_crashing_port_and_killed_actor_lose_no_other_message():
    """8 threads of traffic while one mail target fails and one service actor dies repeatedly."""
    services = [f"svc-{i}" for i in range(40)]
    policies = [two_level_policy(s) for s in services]
    policies.append(EscalationPolicy("mailless", [Level([EmailTarget(BROKEN)])]))
    repo = RepoThatCrashesOnce(policies, victim="svc-7", crash_at=range(20, 220, 25))
    mail, sms, timer = MailDownFor(), RecordingSmsSender(), ManualTimer()
    # Restart at once and never quarantine: this test is about losing nothing.
    rules = Supervision(max_restarts=1000, backoff_base=0.001)
    pager = Pager.start(policies=repo, mail=mail, sms=sms, timer=timer, supervision=rules)
    results: dict[str, list] = defaultdict(list)
    lock = threading.Lock()

    def worker(index: int) -> None:
        for round_ in range(30):
            for s in [*services[index::8], "svc-7", "mailless"]:
                command = (pager.alert(s, f"r{round_}") if round_ % 3 == 0
                           else pager.ack_timeout(s) if round_ % 3 == 1 else pager.healthy(s))
                with lock:
                    results[s].append(command)
            if index == 0 and round_ == 10:  # also stop an actor from outside, mid-run
                for ref in pykka.ActorRegistry.get_all():
                    if "ServiceActor" in str(ref):
                        ref.stop(block=False)
                        break

    run_threads(8, worker)
    pager.flush(timeout=30)
    for s, futures in results.items():
        seqs = sorted(future.get(timeout=10).seq for future in futures)
        if s == "mailless":  # its failed pages come back as commands of their own, between
            assert len(set(seqs)) == len(futures), f"{s}: a command was lost"
        else:
            assert seqs == list(range(1, len(futures) + 1)), f"{s}: a command was lost"
    stats = pager.stats()
    # svc-7 lookups 20, 45, ..., 195 crash its actor; each crashing command is retried once.
    assert stats["service_restarts"] >= 8 and stats.get("dead_letters", 0) == 0
    assert stats["mail_failed"] >= 1
    assert max(pages(mail, sms).values()) == 1
    pager.stop()
