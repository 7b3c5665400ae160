"""The daemon end to end: real SMTP, a real HTTP SMS gateway, HTTP API, SIGTERM and SIGKILL."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from collections import Counter

import psycopg
import pytest

from tests.e2e.daemon import Daemon, config_text, new_port, wait_for
from tests.pg import PASSWORD
from tests.servers import SmsGateway, SmtpServer

pytestmark = pytest.mark.timeout(120)

TWO_LEVELS = """
[[services]]
id = "checkout"
levels = [
  ["mailto:oncall@example.com", "sms:+33600000001"],
  ["sms:+33600000002"],
]
"""

THREE_LEVELS = """
[[services]]
id = "checkout"
levels = [
  ["sms:+33600000001"],
  ["sms:+33600000002"],
  ["sms:+33600000003"],
]
"""


@pytest.fixture
def gateways():
    with SmtpServer() as smtp, SmsGateway(account_sid="AC42", auth_token="tok") as sms:
        yield smtp, sms


class State:
    """Where a daemon keeps its state: an SQLite file, or a PostgreSQL database whose URL
    (password included) comes from PAGER_STATE while the file names it without one."""

    def __init__(self, kind: str, tmp_path, dsn: str | None = None) -> None:
        self.kind, self.dsn = kind, dsn
        self.path = tmp_path / "pager.db"
        self.in_config = self.path if dsn is None else dsn.replace(f":{PASSWORD}@", "@")
        self.env = {} if dsn is None else {"PAGER_STATE": dsn}

    def pending(self) -> list[bool]:
        """Whether each outbox row is still pending."""
        query = "SELECT status = 'pending' FROM outbox"
        if self.dsn is None:
            db = sqlite3.connect(self.path)
            try:
                return [bool(flag) for (flag,) in db.execute(query)]
            finally:
                db.close()
        with psycopg.connect(self.dsn) as db:
            return [bool(flag) for (flag,) in db.execute(query)]


@pytest.fixture(params=["sqlite", "postgres"])
def state(request, tmp_path) -> State:
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    return State(request.param, tmp_path, dsn)


def daemon_for(tmp_path, gateways, services, ack_timeout="1s", state: State | None = None
               ) -> Daemon:
    smtp, sms = gateways
    state = state or State("sqlite", tmp_path)
    config = tmp_path / "pager.toml"
    config.write_text(config_text(port=new_port(), state=state.in_config,
                                  smtp_port=smtp.port, sms_url=sms.base_url,
                                  ack_timeout=ack_timeout, services=services))
    # The SMS token comes from the environment, as in production.
    return Daemon(config, tmp_path / "daemon.log",
                  env={"PAGER_SMS_AUTH_TOKEN": "tok", **state.env})


def metric(daemon: Daemon, line_start: str) -> float:
    for line in daemon.api("GET", "/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {line_start}")


def test_alert_escalates_over_real_gateways_then_is_acknowledged(tmp_path, gateways):
    """Level 1 by SMTP and HTTP, level 2 after the 1 s timeout, then ack; metrics move."""
    smtp, sms = gateways
    daemon = daemon_for(tmp_path, gateways, TWO_LEVELS).start()
    try:
        accepted = daemon.api("POST", "/api/v1/alerts",
                              json={"service_id": "checkout", "message": "p99 above 2s"})
        assert accepted.status_code == 202, accepted.text
        wait_for(lambda: smtp.received and sms.messages, 10, "level 1 by mail and SMS")
        assert smtp.received[0].recipients == ["oncall@example.com"]
        assert "p99 above 2s" in smtp.received[0].data
        assert sms.messages[0].to == "+33600000001"
        wait_for(lambda: len(sms.messages) >= 2, 10, "the escalation to level 2")
        assert sms.messages[1].to == "+33600000002" and "level 2" in sms.messages[1].body
        acked = daemon.api("POST", "/api/v1/services/checkout/acknowledge")
        assert acked.status_code == 202 and acked.json()["status"]["acknowledged"] is True
        status = daemon.api("GET", "/api/v1/services/checkout").json()
        assert (status["level"], status["acknowledged"]) == (2, True)
        assert metric(daemon, 'pager_notifications_sent_total{channel="sms"}') == 2
        assert metric(daemon, 'pager_notifications_sent_total{channel="mail"}') == 1
        assert metric(daemon, "pager_escalations_total") == 1
        assert metric(daemon, 'pager_alerts_received_total{source="api"}') == 1
        started = time.monotonic()
        assert daemon.terminate() == 0
        assert time.monotonic() - started < 10
    finally:
        daemon.stop_quietly()
    log = (tmp_path / "daemon.log").read_text()
    assert "+33600000002" not in log and "oncall@example.com" not in log, "unmasked contact"
    assert "o***@example.com" in log and "+336****0002" in log


def test_sigkill_mid_escalation_then_restart_continues(tmp_path, gateways, state):
    """Killed after level 1, restarted on the same SQLite file or PostgreSQL database:
    levels 2 and 3 follow, none twice; the database's password is never logged."""
    _, sms = gateways
    daemon = daemon_for(tmp_path, gateways, THREE_LEVELS, ack_timeout="2s",
                        state=state).start()
    try:
        assert daemon.api("POST", "/api/v1/alerts",
                          json={"service_id": "checkout", "message": "down"}).status_code == 202
        wait_for(lambda: sms.messages, 10, "level 1")
        daemon.kill()
        assert len(sms.messages) == 1, "killed before the 2 s timeout fired"
        [in_flight] = state.pending()
        daemon.start()
        status = daemon.api("GET", "/api/v1/services/checkout").json()
        assert status["health"] == "unhealthy" and status["level"] == 1

        def levels() -> Counter[str]:
            return Counter(re.search(r"level (\d)", m.body)[1] for m in sms.messages)

        wait_for(lambda: {"2", "3"} <= set(levels()), 15, "levels 2 and 3 after the restart")
    finally:
        daemon.stop_quietly()
    # Level 1 goes out again only if it was in flight (sent, not yet marked) at the kill.
    assert levels() == {"1": 2 if in_flight else 1, "2": 1, "3": 1}
    assert [m.to for m in sms.messages][-2:] == ["+33600000002", "+33600000003"]
    assert PASSWORD not in (tmp_path / "daemon.log").read_text()
    # SQLite's single owner is a lock file; a PostgreSQL state takes none.
    assert bool(list(tmp_path.glob("*.lock"))) == (state.kind == "sqlite")


def test_gateway_hiccups_are_retried(tmp_path, gateways):
    """A 503 then a 429 from the SMS gateway: the page still arrives, once."""
    _, sms = gateways
    sms.fail_next(503, 429)
    daemon = daemon_for(tmp_path, gateways, TWO_LEVELS, ack_timeout="1h").start()
    try:
        daemon.api("POST", "/api/v1/alerts", json={"service_id": "checkout", "message": "x"})
        wait_for(lambda: sms.messages, 10, "the SMS after two retries")
        assert sms.requests == 3 and len(sms.messages) == 1
        wait_for(lambda: metric(daemon, 'pager_notification_retries_total{channel="sms"}') == 2,
                 5, "the retry counter")
        assert daemon.terminate() == 0
    finally:
        daemon.stop_quietly()


def test_bad_config_starts_nothing(tmp_path):
    """A config error: exit 2, one line, no port opened, no state file written."""
    config = tmp_path / "pager.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{new_port()}"\n[pager]\n'
                      'state = "x.db"\nack_timeout = "often"\n')
    daemon = Daemon(config, tmp_path / "daemon.log")
    with pytest.raises(AssertionError, match="exited with 2"):
        daemon.start()
    assert "[pager] ack_timeout: not a duration" in (tmp_path / "daemon.log").read_text()
    assert not (tmp_path / "x.db").exists()


def test_sigterm_with_a_hanging_mail_relay_still_exits_0_within_10_s(tmp_path):
    """A relay that accepts connections but never speaks cannot hold the shutdown hostage."""
    silent = socket.create_server(("127.0.0.1", 0))  # completes TCP handshakes, says nothing
    services = "".join(f'\n[[services]]\nid = "svc-{i}"\nlevels = [["mailto:a{i}@example.com"]]\n'
                       for i in range(6))
    with SmsGateway(account_sid="AC42", auth_token="tok") as sms, silent:
        config = tmp_path / "pager.toml"
        config.write_text(config_text(port=new_port(), state=tmp_path / "pager.db",
                                      smtp_port=silent.getsockname()[1], sms_url=sms.base_url,
                                      ack_timeout="1h", services=services)
                          .replace('sender = "pager@example.com"',
                                   'sender = "pager@example.com"\ntimeout = "3s"'))
        daemon = Daemon(config, tmp_path / "daemon.log",
                        env={"PAGER_SMS_AUTH_TOKEN": "tok"}).start()
        try:
            for i in range(6):
                assert daemon.api("POST", "/api/v1/alerts", json={
                    "service_id": f"svc-{i}", "message": "down"}).status_code == 202
            started = time.monotonic()
            assert daemon.terminate(timeout=15) == 0
            assert time.monotonic() - started < 10
        finally:
            daemon.stop_quietly()
    db = sqlite3.connect(tmp_path / "pager.db")
    statuses = {status for (status,) in db.execute("SELECT status FROM outbox")}
    db.close()
    assert "failed" not in statuses, "an undelivered mail was marked failed at shutdown"
