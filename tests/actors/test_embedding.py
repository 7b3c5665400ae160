"""Embedded in a host program, the engine prints nothing and logs through `logging`."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.e2e.daemon import ROOT

HOST = textwrap.dedent("""
    import logging, sys
    from datetime import timedelta
    from adapters.log import LogMailSender, LogSmsSender
    from adapters.memory import InMemoryPolicyRepository, ManualTimer
    from pager_actors import EmailTarget, EscalationPolicy, Level, Pager, SmsTarget

    class Broken:
        def send_sms(self, to, text):
            raise RuntimeError("gateway down for " + to)

    {setup}
    policy = EscalationPolicy("checkout", [Level([EmailTarget("oncall@example.com"),
                                                 SmsTarget("+33600000001")])])
    pager = Pager.start(policies=InMemoryPolicyRepository([policy]), mail=LogMailSender(),
                        sms=Broken(), timer=ManualTimer(), ack_timeout=timedelta(minutes=1))
    pager.alert("checkout", "p99 latency").get(timeout=5)
    pager.flush(timeout=5)
    pager.stop()
""")


def run_host(setup: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HOST.format(setup=setup)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)


def test_an_unconfigured_host_gets_nothing_on_stdout():
    """No logging set-up: stdout stays empty; the failed page is a warning on stderr."""
    done = run_host("")
    assert done.stdout == ""
    assert "sms_failed" in done.stderr and "+336****0001" in done.stderr
    assert "mail_out" not in done.stderr  # info events are below Python's default level


def test_the_host_logging_configuration_decides():
    """A host that asks for info on its own handler gets the engine's events there."""
    done = run_host("logging.basicConfig(level=logging.INFO, stream=sys.stderr, "
                    "format='%(name)s|%(levelname)s|%(message)s')")
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert any(line.startswith("pager_actors.service|INFO|incident_opened") for line in lines)
    assert any(line.startswith("pager_actors.adapters.log|INFO|mail_out to='o***@example.com'")
               for line in lines)
