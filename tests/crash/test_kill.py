"""Crash recovery with a real kill -9: a child pager on SQLite dies, a new pager takes over."""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.sqlite import SqliteStore
from pager_actors import Health, Pager, ServiceStatus
from tests.crash.child import SERVICES, policy

ROOT = Path(__file__).resolve().parents[2]
PAGE = re.compile(r"^\[(?P<service>[^\]]+)\] level (?P<level>\d+) page, incident #(?P<n>\d+)")


def key(channel: str, to: str, text: str) -> str:
    """The delivery id of a page, rebuilt from what a port received. These runs have one
    round and no expired ack, so an incident's page number is its level."""
    match = PAGE.match(text)
    assert match, text
    scheme = "mailto" if channel == "mail" else "sms"
    level = match["level"]
    return f"{match['service']}/{match['n']}/r1/l{level}/p{level}/{scheme}:{to}"


class Child:
    """The child pager process, killed with SIGKILL."""

    def __init__(self, tmp: Path, mode: str, seed: int = 0) -> None:
        self.db, self.out = tmp / "pager.db", tmp / "out"
        self.out.mkdir()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.child", "--db", str(self.db), "--out",
             str(self.out), "--mode", mode, "--seed", str(seed)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)

    def wait_for(self, word: str, timeout: float = 60) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the child did not print {word} within {timeout} s"
        assert self.proc.stdout.readline().strip() == word

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def deliveries(self) -> list[str]:
        path = self.out / "deliveries"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [key(*line.split("|", 2)) for line in lines]

    def accepted(self) -> list[tuple[str, int]]:
        path = self.out / "accepted"
        if not path.exists():
            return []
        return [(s, int(v)) for s, v, _ in (line.split("|") for line in
                                             path.read_text().splitlines())]


def read_db(path: Path) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """(version by service, armed token by service, status by delivery id), read directly."""
    db = sqlite3.connect(path)
    versions = dict(db.execute("SELECT service_id, version FROM services"))
    armed = {service_id: token for service_id, timers in db.execute(
        "SELECT service_id, timers FROM services WHERE timers IS NOT NULL")
        for token, _deadline in json.loads(timers)}
    outbox = dict(db.execute("SELECT delivery_id, status FROM outbox"))
    db.close()
    return versions, armed, outbox


def recover(db: Path):
    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    store = SqliteStore(db)
    pager = Pager.start(policies=InMemoryPolicyRepository(policy(s) for s in SERVICES),
                        mail=mail, sms=sms, timer=timer, store=store)
    pager.flush(timeout=30)
    return pager, store, mail, sms, timer


def sent(mail: RecordingMailSender, sms: RecordingSmsSender) -> list[str]:
    return ([key("mail", m.to, m.body) for m in mail.sent]
            + [key("sms", s.to, s.text) for s in sms.sent])


def check_invariants(child: Child) -> None:
    """Everything the kill may not break, checked across both processes."""
    versions, armed, outbox = read_db(child.db)
    in_flight = {k for k, status in outbox.items() if status == "pending"}
    first = child.deliveries()
    assert not [k for k, n in Counter(first).items() if n > 1], "the child paged twice"
    assert set(first) <= set(outbox), "a page went out before its outbox row was committed"
    assert {k for k, s in outbox.items() if s == "delivered"} <= set(first)
    for service_id, version in child.accepted():
        assert versions.get(service_id, 0) >= version, f"accepted {service_id} v{version} lost"

    pager, store, mail, sms, timer = recover(child.db)
    try:
        resent = sent(mail, sms)
        assert sorted(resent) == sorted(in_flight), "recovery must resend exactly the in-flight"
        assert {(t.service_id, t.token) for t in timer.armed} == set(armed.items())
        assert len(timer.armed) == len(armed), "each incident re-armed once"
        for service_id in SERVICES:
            stored = store.load(service_id)
            expected = stored.status() if stored else ServiceStatus(Health.HEALTHY, None, False,
                                                                    None)
            assert pager.status(service_id) == expected
        mail.sent.clear()
        sms.sent.clear()
        outcomes = [f.get(timeout=10) for f in timer.advance(timedelta(minutes=15))]
        pager.flush(timeout=30)
        for outcome in outcomes:
            assert outcome.event in ("escalated", "escalation_exhausted")
        escalated = [o for o in outcomes if o.event == "escalated"]
        assert len({o.service_id for o in escalated}) == len(escalated), "escalated twice"
        after = sent(mail, sms)
        everything = Counter(first + resent + after)
        twice = {k for k, n in everything.items() if n > 1}
        assert twice <= in_flight, f"paged twice without being in flight: {sorted(twice)[:5]}"
        assert not {k for k, n in everything.items() if n > 2}
    finally:
        pager.stop()
        store.close()


@pytest.mark.timeout(120)
def test_scripted_incidents_survive_kill_9(tmp_path):
    """Statuses, re-armed timers and one escalation each come back exactly after SIGKILL."""
    child = Child(tmp_path, "script")
    child.wait_for("READY")
    child.kill()
    _, armed, outbox = read_db(child.db)
    assert set(outbox.values()) == {"delivered"}, "the child flushed before READY"
    expected_armed = {s for i, s in enumerate(SERVICES) if i % 5 != 0}
    assert set(armed) == expected_armed
    pager, store, *_ = recover(child.db)
    try:
        for i, s in enumerate(SERVICES):
            level = 2 if i % 3 >= 1 else 1
            assert pager.status(s) == ServiceStatus(Health.UNHEALTHY, level, i % 5 == 0,
                                                    f"incident on {s}")
    finally:
        pager.stop()
        store.close()
    check_invariants(child)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", range(20))
def test_kill_at_a_random_moment_of_a_storm(tmp_path, seed):
    """20 seeded runs: kill -9 mid-storm, then every durability invariant holds."""
    child = Child(tmp_path, "storm", seed)
    child.wait_for("STARTED")
    time.sleep(random.Random(seed).uniform(0.05, 0.8))
    child.kill()
    try:
        check_invariants(child)
    except AssertionError as error:
        raise AssertionError(f"seed {seed}: {error}") from error


def test_child_output_is_parseable(tmp_path):
    """The keys rebuilt from port calls match the engine's delivery ids."""
    assert key("sms", "+33610000001", "[svc-1] level 2 page, incident #3: x") == \
        "svc-1/3/r1/l2/p2/sms:+33610000001"
    assert json.dumps(key("mail", "a@b.c", "[s] level 1 page, incident #1: m")) == \
        '"s/1/r1/l1/p1/mailto:a@b.c"'
