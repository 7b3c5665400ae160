"""A pager process for the crash tests: it works on a SQLite file until it is killed.

    python -m tests.crash.child --db PATH --out DIR --mode script|storm [--seed N]

Every page it sends is appended to DIR/deliveries (one line per port call),
and every command whose future resolved is appended to DIR/accepted, both
with plain os.write() so a SIGKILL loses nothing already written.

- script: opens incidents on every service, escalates some, acknowledges
  some, waits until all of it is delivered, prints READY and waits to die.
- storm: threads send random commands for ever; prints STARTED once running.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path

import structlog

from adapters.memory import InMemoryPolicyRepository, ManualTimer
from adapters.sqlite import SqliteStore
from pager_actors import EmailTarget, EscalationPolicy, Level, Pager, SmsTarget

SERVICES = [f"svc-{i}" for i in range(30)]


def policy(service_id: str) -> EscalationPolicy:
    n = int(service_id.split("-")[1])
    return EscalationPolicy(service_id, [
        Level([EmailTarget(f"l1-{n}@example.com"), SmsTarget(f"+3361{n:07d}")]),
        Level([SmsTarget(f"+3362{n:07d}")]),
        Level([EmailTarget(f"l3-{n}@example.com")]),
    ])


class AppendLog:
    """Appends lines to a file with one write() each: what was written survives SIGKILL."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, *fields: object) -> None:
        os.write(self._fd, ("|".join(map(str, fields)) + "\n").encode())


class FileMail:
    def __init__(self, log: AppendLog) -> None:
        self._log = log

    def send_mail(self, to: str, subject: str, body: str) -> None:
        self._log.line("mail", to, body.partition("\n")[0])  # the headline names the page


class FileSms:
    def __init__(self, log: AppendLog) -> None:
        self._log = log

    def send_sms(self, to: str, text: str) -> None:
        self._log.line("sms", to, text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=["script", "storm"], required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    out = Path(args.out)
    deliveries, accepted = AppendLog(out / "deliveries"), AppendLog(out / "accepted")
    timer = ManualTimer()
    pager = Pager.start(policies=InMemoryPolicyRepository(policy(s) for s in SERVICES),
                        mail=FileMail(deliveries), sms=FileSms(deliveries), timer=timer,
                        store=SqliteStore(args.db))

    def record(service_id: str, future) -> None:
        outcome = future.get(timeout=30)
        accepted.line(service_id, outcome.state.version, outcome.event)

    if args.mode == "script":
        for i, s in enumerate(SERVICES):
            record(s, pager.alert(s, f"incident on {s}"))
            if i % 3 >= 1:
                record(s, pager.ack_timeout(s))  # escalate to level 2
            if i % 5 == 0:
                record(s, pager.acknowledge(s))
        pager.flush(timeout=30)
        print("READY", flush=True)
    else:
        def storm(index: int) -> None:
            rng = random.Random(args.seed * 100 + index)
            while True:
                s = rng.choice(SERVICES)
                kind = rng.choice(["alert", "alert", "timeout", "timeout", "ack", "healthy"])
                if kind == "alert":
                    future = pager.alert(s, f"storm {index}")
                elif kind == "timeout":
                    future = pager.ack_timeout(s)
                elif kind == "ack":
                    future = pager.acknowledge(s)
                else:
                    future = pager.healthy(s)
                record(s, future)

        for i in range(4):
            threading.Thread(target=storm, args=(i,), daemon=True).start()
        print("STARTED", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
