"""Command line: `python -m pager_actors demo [--ack-timeout SECONDS]`."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from adapters.log import LogMailSender, LogSmsSender
from adapters.memory import InMemoryPolicyRepository
from adapters.timer import ThreadedTimer
from pager_actors._demo import DEMO_POLICY, run_demo
from pager_actors.bootstrap import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pager_actors", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="play one incident: alert, escalation, ack")
    demo.add_argument("--ack-timeout", type=float, default=2.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    configure_logging()
    with ThreadedTimer() as timer:
        return run_demo(policies=InMemoryPolicyRepository([DEMO_POLICY]), mail=LogMailSender(),
                        sms=LogSmsSender(), timer=timer,
                        ack_timeout=timedelta(seconds=args.ack_timeout))


if __name__ == "__main__":
    sys.exit(main())
