"""The real Prometheus Alertmanager (Debian's 0.25) pointed at the daemon's webhook."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(BINARY is None, reason="prometheus-alertmanager is not installed "
                                              "(apt-get install prometheus-alertmanager; "
                                              ".ci/run does it)"),
]

SERVICE = """
[[services]]
id = "checkout"
levels = [["sms:+33600000001"], ["sms:+33600000002"]]
"""


@pytest.fixture
def alertmanager(tmp_path):
    """Alertmanager on loopback, no clustering, sending to the webhook URL set by the test."""
    port = new_port()
    holder: dict[str, object] = {}

    def start(webhook: str) -> str:
        config = tmp_path / "alertmanager.yml"
        config.write_text(f"""
route:
  receiver: pager
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: pager
    webhook_configs:
      - url: {webhook}
        send_resolved: true
""")
        log = (tmp_path / "alertmanager.log").open("wb")
        holder["proc"] = subprocess.Popen(
            [str(BINARY), f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "Alertmanager to be ready")
        return url

    yield start
    proc = holder.get("proc")
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        proc.wait(timeout=10)


def test_alertmanager_pages_through_the_pager_and_resolves(tmp_path, alertmanager):
    """An alert posted to Alertmanager's API pages level 1; resolving it heals the service."""
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        config = tmp_path / "pager.toml"
        config.write_text(config_text(port=new_port(), state=tmp_path / "pager.db",
                                      smtp_port=smtp.port, sms_url=sms.base_url,
                                      ack_timeout="1h", services=SERVICE))
        daemon = Daemon(config, tmp_path / "daemon.log",
                        env={"PAGER_SMS_AUTH_TOKEN": "tok"}).start()
        try:
            am = alertmanager(f"{daemon.url}/api/v1/alertmanager")
            now = datetime.now(UTC)
            alert = {"labels": {"alertname": "HighLatency", "service": "checkout"},
                     "annotations": {"summary": "p99 above 2s"},
                     "startsAt": now.isoformat()}
            assert httpx.post(f"{am}/api/v2/alerts", json=[alert], timeout=10).status_code == 200
            wait_for(lambda: sms.messages, 30, "the page sent through the pager")
            assert sms.messages[0].to == "+33600000001"
            assert "p99 above 2s" in sms.messages[0].body
            status = daemon.api("GET", "/api/v1/services/checkout").json()
            assert status["health"] == "unhealthy"

            alert["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
            assert httpx.post(f"{am}/api/v2/alerts", json=[alert], timeout=10).status_code == 200
            wait_for(lambda: daemon.api("GET", "/api/v1/services/checkout").json()["health"]
                     == "healthy", 30, "the resolved notification to heal the service")
            assert len(sms.messages) == 1
        finally:
            daemon.stop_quietly()
