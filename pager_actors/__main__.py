"""`python -m pager_actors ...`: the same commands as `pager-actors` (run, check-config, demo)."""

from __future__ import annotations

import sys
from datetime import timedelta

from adapters.log import LogMailSender, LogSmsSender
from adapters.memory import InMemoryPolicyRepository
from adapters.timer import ThreadedTimer
from pager_actors._demo import DEMO_POLICY, run_demo
from pager_actors.bootstrap import configure_logging


def demo(ack_timeout: float) -> int:
    """One incident in memory with a real timer: alert, escalation, acknowledgement."""
    configure_logging()
    with ThreadedTimer() as timer:
        return run_demo(policies=InMemoryPolicyRepository([DEMO_POLICY]), mail=LogMailSender(),
                        sms=LogSmsSender(), timer=timer,
                        ack_timeout=timedelta(seconds=ack_timeout))


if __name__ == "__main__":
    from pager_actors.cli import main

    sys.exit(main())
