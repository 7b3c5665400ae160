"""Incident semantics through the daemon: a window and a heartbeat survive a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(90)

SERVICES = """
[[services]]
id = "checkout"
levels = [["sms:+33600000001"], ["sms:+33600000002"]]

[[services]]
id = "cron"
levels = [["mailto:cron-oncall@example.com"]]
heartbeat = "10s"
"""


@pytest.fixture
def daemon(tmp_path):
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        config = tmp_path / "pager.toml"
        config.write_text(config_text(port=new_port(), state=tmp_path / "pager.db",
                                      smtp_port=smtp.port, sms_url=sms.base_url,
                                      ack_timeout="1h", services=SERVICES))
        daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
        try:
            yield daemon, smtp, sms
        finally:
            daemon.stop_quietly()


def test_a_window_ends_on_time_across_a_restart_and_what_fired_in_it_pages(daemon):
    """Suppressed during the window, the alert pages once the window ends, though the daemon
    restarted in between (SIGKILL): the window's end was stored and re-armed."""
    pager, _, sms = daemon
    pager.start()
    end = datetime.now(UTC) + timedelta(seconds=12)
    created = pager.api("POST", "/api/v1/services/checkout/maintenance",
                        json={"end": end.isoformat(), "reason": "deploy"})
    assert created.status_code == 201
    fired = pager.api("POST", "/api/v1/alerts", json={"service_id": "checkout",
                                                      "message": "p99", "key": "HighLatency"})
    assert fired.json()["event"] == "suppressed"
    pager.kill()
    pager.start()
    shown = pager.api("GET", "/api/v1/services/checkout").json()
    if datetime.now(UTC) < end - timedelta(seconds=1):  # a slow machine may be past it already
        assert shown["health"] == "healthy" and [w["id"] for w in shown["maintenance"]] == [1]
        assert sms.messages == []
    wait_for(lambda: len(sms.messages) == 1, 30, "the page after the window")
    assert datetime.now(UTC) >= end
    assert sms.messages[0].to == "+33600000001" and "p99" in sms.messages[0].body
    shown = pager.api("GET", "/api/v1/services/checkout").json()
    assert shown["health"] == "unhealthy" and shown["maintenance"] == []
    timeline = pager.api("GET", "/api/v1/services/checkout/incidents/1").json()["timeline"]
    assert [e["event"] for e in timeline][:3] == ["suppressed", "opened", "paged"]
    assert pager.terminate() == 0


def test_an_overdue_heartbeat_fires_at_once_after_a_restart(daemon):
    """The heartbeat deadline is stored: a daemon that was down past it pages on start."""
    pager, smtp, _ = daemon
    pager.start()
    assert pager.api("POST", "/api/v1/services/cron/heartbeat").status_code == 202
    beat_at = datetime.now(UTC)
    assert pager.terminate() == 0
    wait_for(lambda: datetime.now(UTC) > beat_at + timedelta(seconds=10.5), 15,
             "the heartbeat deadline to pass while the daemon is down")
    assert smtp.received == []
    pager.start()
    wait_for(lambda: len(smtp.received) == 1, 10, "the missed-heartbeat page")
    assert "no heartbeat for 10s" in smtp.received[0].data
    shown = pager.api("GET", "/api/v1/services/cron").json()
    assert [a["key"] for a in shown["alerts"]] == ["heartbeat"]
    healed = pager.api("POST", "/api/v1/services/cron/heartbeat").json()
    assert healed["event"] == "resolved"
    assert pager.terminate() == 0
