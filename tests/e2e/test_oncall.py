"""On call through the daemon: a rotation level pages whoever is on call; an override made
through the API switches who is paged next. (The burst to one phone: test_throttling.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(90)

# A daily rotation that started long ago: today's turn is computed, not guessed.
START = datetime(2026, 1, 1, 9, 0)
PEOPLE = """
[[users]]
id = "alice"
name = "Alice"
contacts = ["sms:+33600000001"]

[[users]]
id = "bob"
name = "Bob"
contacts = ["sms:+33600000002"]

[[rotations]]
id = "primary"
time_zone = "UTC"
shift = "1d"
start = "2026-01-01T09:00"
users = ["alice", "bob"]

[[services]]
id = "checkout"
levels = [["rotation:primary"]]
"""


def on_call_now() -> str:
    days = (datetime.now(UTC).replace(tzinfo=None) - START) // timedelta(days=1)
    return ("alice", "bob")[days % 2]


def test_a_rotation_pages_who_is_on_call_and_an_override_switches_the_next_page(tmp_path):
    """Alert: today's person is paged. Override to the other one; the next incident pages
    them, and the timeline names both, with how they were found."""
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        config = tmp_path / "pager.toml"
        config.write_text(config_text(port=new_port(), state=tmp_path / "pager.db",
                                      smtp_port=smtp.port, sms_url=sms.base_url,
                                      ack_timeout="1h", services=PEOPLE)
                          .replace('kind = "twilio"', 'kind = "twilio"\nmax_per_contact = 0'))
        daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
        daemon.start()
        try:
            first = on_call_now()
            numbers = {"alice": "+33600000001", "bob": "+33600000002"}
            answer = daemon.api("GET", "/api/v1/rotations/primary/oncall").json()
            assert answer["user"] == first and answer["override"] is False
            daemon.api("POST", "/api/v1/alerts", json={"service_id": "checkout",
                                                       "message": "down"})
            wait_for(lambda: len(sms.messages) == 1, 10, "the first page")
            assert sms.messages[0].to == numbers[first]

            other = "bob" if first == "alice" else "alice"
            now = datetime.now(UTC)
            made = daemon.api("POST", "/api/v1/rotations/primary/overrides", json={
                "user": other, "start": (now - timedelta(minutes=1)).isoformat(),
                "end": (now + timedelta(hours=1)).isoformat()})
            assert made.status_code == 201, made.text
            assert daemon.api("GET", "/api/v1/rotations/primary/oncall").json()["override"]
            daemon.api("POST", "/api/v1/services/checkout/healthy")
            daemon.api("POST", "/api/v1/alerts", json={"service_id": "checkout",
                                                       "message": "again"})
            wait_for(lambda: len(sms.messages) == 2, 10, "the page after the override")
            assert sms.messages[1].to == numbers[other]
            paged = [e for n in (1, 2) for e in daemon.api(
                "GET", f"/api/v1/services/checkout/incidents/{n}").json()["timeline"]
                if e["event"] == "paged"]
            assert [(e["user"], e["via"]) for e in paged] == [
                (first, "rotation primary"), (other, "rotation primary")]
        finally:
            assert daemon.terminate() == 0
