"""The `pager-actors` command: run the daemon, check a config, or play the demo."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from adapters.log import LogMailSender, LogSmsSender
from adapters.memory import InMemoryPolicyRepository
from adapters.timer import ThreadedTimer
from pager_actors._demo import DEMO_POLICY, run_demo
from pager_actors.bootstrap import configure_logging
from pager_actors.daemon.config import ConfigError, load_config
from pager_actors.daemon.run import configure_stdlib_logging
from pager_actors.daemon.run import run as serve


def play_demo(ack_timeout: float) -> int:
    """One incident in memory with a real timer: alert, escalation, acknowledgement."""
    configure_logging()
    with ThreadedTimer() as timer:
        return run_demo(policies=InMemoryPolicyRepository([DEMO_POLICY]), mail=LogMailSender(),
                        sms=LogSmsSender(), timer=timer,
                        ack_timeout=timedelta(seconds=ack_timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pager-actors",
                                     description="On-call alert escalation daemon.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the daemon")
    run.add_argument("--config", required=True, help="path to pager.toml")
    check = commands.add_parser("check-config", help="validate a config: exit 0, or 2")
    check.add_argument("config", help="path to pager.toml")
    demo = commands.add_parser("demo", help="play one incident in memory: alert, escalation, ack")
    demo.add_argument("--ack-timeout", type=float, default=2.0, metavar="SECONDS")
    args = parser.parse_args(argv)

    if args.command == "demo":
        return play_demo(args.ack_timeout)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok ({len(config.services)} services)")
        return 0
    configure_logging()
    configure_stdlib_logging()
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
