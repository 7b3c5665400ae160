"""Operating the daemon: SIGHUP reloads services and rotations, test-page and healthcheck
from the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from pager_actors.cli import main
from tests.e2e.daemon import ROOT, Daemon, config_text, new_port, wait_for
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(90)

CHECKOUT = """
[[services]]
id = "checkout"
levels = [["sms:+33600000001"], ["sms:+33600000002"]]
"""
SEARCH = """
[[services]]
id = "search"
levels = [["mailto:search@example.com"]]
"""

# One person on the rotation, so who is on call does not depend on today's date.
ROTATION = """
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
time_zone = "Europe/Paris"
shift = "1w"
start = "2020-01-06T09:00"
users = [{users}]

[[services]]
id = "checkout"
levels = [["rotation:primary"]]
"""


@pytest.fixture
def gateways():
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        yield smtp, sms


def write(path, gateways, port, services, *, extra: str = "") -> None:
    smtp, sms = gateways
    path.write_text(config_text(port=port, state=path.parent / "pager.db", smtp_port=smtp.port,
                                sms_url=sms.base_url, ack_timeout="1h", services=services)
                    + extra)


def events(daemon: Daemon, name: str) -> list[dict[str, object]]:
    found = []
    for line in daemon.log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def hup_and_wait(daemon: Daemon, event: str, count: int) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(events(daemon, event)) >= count, 10, f"{event} #{count}")


def alert(daemon: Daemon, service_id: str) -> int:
    return daemon.api("POST", "/api/v1/alerts",
                      json={"service_id": service_id, "message": "down"}).status_code


def test_sighup_reloads_services_keeps_open_incidents_and_refuses_a_bad_file(tmp_path,
                                                                            gateways):
    """Added services page at once; a removed one stays until resolved; bad files change
    nothing; listen changes wait for a restart."""
    config = tmp_path / "pager.toml"
    port = new_port()
    write(config, gateways, port, CHECKOUT)
    daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
    try:
        daemon.start()
        assert alert(daemon, "checkout") == 202
        assert alert(daemon, "search") == 404

        write(config, gateways, port, SEARCH)  # checkout removed while its incident is open
        hup_and_wait(daemon, "config_reloaded", 1)
        [reloaded] = events(daemon, "config_reloaded")
        assert reloaded["added"] == ["search"] and reloaded["kept_until_resolved"] == ["checkout"]
        assert alert(daemon, "search") == 202
        assert daemon.api("POST", "/api/v1/services/checkout/acknowledge").status_code == 202
        assert daemon.api("POST", "/api/v1/services/checkout/healthy").status_code == 202

        config.write_text(config.read_text().replace('id = "search"', 'id = "a/b"'))
        hup_and_wait(daemon, "config_reload_refused", 1)
        assert alert(daemon, "search") == 202  # the running config stays in force

        write(config, gateways, new_port(), SEARCH)  # resolved now: checkout goes; new port
        hup_and_wait(daemon, "config_reloaded", 2)
        assert events(daemon, "config_reloaded")[1]["removed"] == ["checkout"]
        assert events(daemon, "config_reload_needs_restart")[0]["sections"] == ["[server]"]
        assert alert(daemon, "checkout") == 404
        assert daemon.api("GET", "/healthz").status_code == 200  # still on the old port
        healthcheck = subprocess.run(
            [sys.executable, "-m", "pager_actors", "healthcheck", "--config", str(config)],
            check=False, cwd=ROOT, capture_output=True, text=True, timeout=10)
        assert healthcheck.returncode == 1  # the file names the new port, nobody listens
    finally:
        assert daemon.terminate() == 0


def test_sighup_reloads_rotations_for_the_api_and_the_next_page(tmp_path, gateways):
    """The rotation's users change in the file: after SIGHUP the API names the new person
    on call and the next incident pages them, not the one before."""
    _, sms = gateways
    config = tmp_path / "pager.toml"
    port = new_port()
    write(config, gateways, port, ROTATION.format(users='"alice"'))
    daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
    try:
        daemon.start()
        assert daemon.api("GET", "/api/v1/rotations/primary/oncall").json()["user"] == "alice"
        assert alert(daemon, "checkout") == 202
        wait_for(lambda: len(sms.messages) == 1, 10, "the page to alice")
        assert sms.messages[0].to == "+33600000001"
        assert daemon.api("POST", "/api/v1/services/checkout/healthy").status_code == 202

        write(config, gateways, port, ROTATION.format(users='"bob"'))
        hup_and_wait(daemon, "config_reloaded", 1)
        answer = daemon.api("GET", "/api/v1/rotations/primary/oncall").json()
        assert (answer["user"], answer["override"]) == ("bob", False)
        assert [r["users"] for r in daemon.api("GET", "/api/v1/rotations").json()[
            "rotations"]] == [["bob"]]
        assert alert(daemon, "checkout") == 202
        wait_for(lambda: len(sms.messages) == 2, 10, "the page after the reload")
        assert sms.messages[1].to == "+33600000002"
        paged = [e for e in daemon.api("GET", "/api/v1/services/checkout/incidents/2").json()[
            "timeline"] if e["event"] == "paged"]
        assert [(e["user"], e["via"]) for e in paged] == [("bob", "rotation primary")]
    finally:
        assert daemon.terminate() == 0


def test_healthcheck_follows_the_configured_port(tmp_path, gateways):
    """`pager-actors healthcheck` asks /healthz on [server] listen's port: 0, then 1."""
    config = tmp_path / "pager.toml"
    write(config, gateways, new_port(), CHECKOUT)
    daemon = Daemon(config, tmp_path / "daemon.log", env={"PAGER_SMS_AUTH_TOKEN": "tok"})
    daemon.start()
    try:
        assert main(["healthcheck", "--config", str(config)]) == 0
    finally:
        assert daemon.terminate() == 0
    assert main(["healthcheck", "--config", str(config)]) == 1


def test_test_page_sends_one_real_message_per_channel(tmp_path, gateways, capsys,
                                                      monkeypatch):
    """mailto: goes through SMTP, sms: through the gateway; the output masks the contact."""
    smtp, sms = gateways
    config = tmp_path / "pager.toml"
    write(config, gateways, new_port(), CHECKOUT)
    monkeypatch.setenv("PAGER_SMS_AUTH_TOKEN", "tok")
    assert main(["test-page", "--config", str(config), "mailto:alice@example.com"]) == 0
    assert main(["test-page", "--config", str(config), "sms:+33600000042"]) == 0
    out = capsys.readouterr().out
    assert "sent to a***@example.com via smtp" in out and "sent to +336****0042 via twilio" in out
    assert "alice@" not in out and "600000042" not in out
    [mail] = smtp.received
    assert mail.recipients == ["alice@example.com"] and "test page" in mail.data
    [text] = sms.messages
    assert text.to == "+33600000042" and "Test page" in text.body


def test_test_page_fails_loudly(tmp_path, gateways, capsys, monkeypatch):
    """A refused message, a log-only channel or a bad target exit non-zero, masked."""
    config = tmp_path / "pager.toml"
    write(config, gateways, new_port(), CHECKOUT)
    monkeypatch.setenv("PAGER_SMS_AUTH_TOKEN", "wrong")
    assert main(["test-page", "--config", str(config), "sms:+33600000042"]) == 1
    assert main(["test-page", "--config", str(config), "fax:123"]) == 2
    err = capsys.readouterr().err
    assert "failed to send to +336****0042 via twilio" in err and "401" in err
    assert "600000042" not in err
    config.write_text(config.read_text().replace('kind = "smtp"', 'kind = "log"'))
    assert main(["test-page", "--config", str(config), "mailto:alice@example.com"]) == 1
    assert 'kind is "log"' in capsys.readouterr().err
