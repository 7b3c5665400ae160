"""The demo that `make run` plays."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_plays_alert_escalation_and_ack():
    """`python -m pager_actors demo` pages level 1, escalates to level 2, then acknowledges."""
    done = subprocess.run([sys.executable, "-m", "pager_actors", "demo", "--ack-timeout", "0.2"],
                          capture_output=True, text=True, timeout=60, check=True)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    names = [e["event"] for e in events]
    for expected in ("incident_opened", "mail_out", "sms_out", "escalated", "acknowledged"):
        assert expected in names, f"{expected} missing from the demo output"
    assert names.index("escalated") < names.index("acknowledged")
    final = [e for e in events if e["event"] == "demo_status"][-1]
    assert (final["page_level"], final["acknowledged"]) == (2, True)
    assert "+33600000002" not in done.stdout, "a phone number reached the log unmasked"
